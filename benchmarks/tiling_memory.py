"""Peak memory of tiled encoding and decoding of a large image, and how tiling changes the result.

Each measurement runs in a fresh child process and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
(peak resident set size, the whole process: Python, torch, the model, image buffers) before the work
(``baseline_mb``) and after it (``peak_mb``). The model is an untrained tokenizer of the chosen preset
(``cpu-f16`` by default): memory and time do not depend on its weights.

The seam check encodes and decodes a smaller image with and without tiling and reports the share of equal
tokens, the PSNR between the tiled and untiled reconstructions, and the mean absolute pixel step across tile
seams relative to the mean step elsewhere (1.0 = no visible seam).

    .venv/bin/python benchmarks/tiling_memory.py [--size 4096] [--preset cpu-f16] [--tile N] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from wetok import Tokenizer, TokenizerConfig
from wetok.codec import Codec, decode_tiled, encode_tiled
from wetok.image import array_to_tensor, tile_spans


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_codec(preset: str, tile: int | None) -> Codec:
    torch.manual_seed(0)
    return Codec(Tokenizer(TokenizerConfig.preset(preset)), tile_tokens=tile)


def child(task: str, size: int, preset: str, tile: int | None) -> dict:
    """Run one task in this process and report its peak RSS."""
    codec = make_codec(preset, tile)
    f, g = codec.model.config.downsample, codec.model.config.groups
    rng = np.random.default_rng(0)
    baseline = rss_mb()
    start = time.perf_counter()
    if task == "encode":
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        baseline = rss_mb()
        tokens, _ = codec.encode_tokens(image)
        assert tokens.shape == (1, size // f, size // f, g)
    else:
        tokens = torch.from_numpy(rng.integers(0, 256, (1, size // f, size // f, g)))
        data = codec.pack_tokens(tokens, (size, size), "raw")
        baseline = rss_mb()
        start = time.perf_counter()
        assert codec.decompress(data).size == (size, size)
    return {
        "task": task,
        "size": size,
        "preset": preset,
        "tile_tokens": codec.tile_tokens,
        "baseline_mb": baseline,
        "peak_mb": rss_mb(),
        "seconds": time.perf_counter() - start,
    }


def run_child(task: str, size: int, preset: str, tile: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", task, "--size", str(size), "--preset", preset]
    cmd += ["--tile", str(tile)] if tile is not None else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def seam_check(size: int, preset: str, tile: int) -> dict:
    """Tiled vs untiled on a ``size``² image (small enough to run untiled)."""
    codec = make_codec(preset, tile)
    model, f = codec.model, codec.model.config.downsample
    yy, xx = np.mgrid[0:size, 0:size] / size
    smooth = np.stack([yy, xx, (yy + xx) / 2], axis=2) * 255  # a smooth image: seams would stand out
    x = array_to_tensor(smooth.round().astype(np.uint8))
    whole, tiled = encode_tiled(model, x, 0), encode_tiled(model, x, tile)
    a = decode_tiled(model, whole, 0).astype(np.float64)
    b = decode_tiled(model, whole, tile).astype(np.float64)
    psnr = 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12))
    bits = torch.arange(codec.model.config.group_bits)
    same_bits = ((whole[..., None] >> bits) & 1) == ((tiled[..., None] >> bits) & 1)
    return {
        "seam_image": size,
        "seam_tile_tokens": tile,
        "equal_symbols_%": 100 * float((whole == tiled).float().mean()),
        "equal_bits_%": 100 * float(same_bits.float().mean()),
        "tiled_vs_untiled_psnr_db": psnr,
        "seam_step_ratio": seam_ratio(b, size // f, tile, f),
        "untiled_seam_step_ratio": seam_ratio(a, size // f, tile, f),
    }


def seam_ratio(img: np.ndarray, n: int, tile: int, f: int) -> float:
    """Mean |column step| in the blend bands of the tiled layout over the mean |column step| elsewhere."""
    steps = np.abs(np.diff(img, axis=1)).mean(axis=(0, 2))  # [W - 1]
    band = np.zeros_like(steps, dtype=bool)
    spans = tile_spans(n, tile, min(4, tile // 3))
    for (_, e), (s, _) in zip(spans[:-1], spans[1:], strict=True):
        band[s * f : e * f] = True
    return float(steps[band].mean() / steps[~band].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--preset", default="cpu-f16")
    parser.add_argument("--tile", type=int, default=None, help="tile side in tokens (default: automatic)")
    parser.add_argument("--seam-size", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["encode", "decode"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.preset, args.tile)))
        return
    rows = [run_child(task, args.size, args.preset, args.tile) for task in ("encode", "decode")]
    seams = seam_check(args.seam_size, args.preset, min(args.tile or 24, args.seam_size // 32))
    if args.json:
        print(json.dumps({"rows": rows, "seams": seams}, indent=2))
        return
    print(f"{'task':>8} {'image':>11} {'tile':>5} {'baseline MB':>12} {'peak RSS MB':>12} {'seconds':>8}")
    for r in rows:
        print(
            f"{r['task']:>8} {r['size']:>5}x{r['size']:<5} {r['tile_tokens']:>5} {r['baseline_mb']:>12.0f} "
            f"{r['peak_mb']:>12.0f} {r['seconds']:>8.1f}"
        )
    print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in seams.items()))


if __name__ == "__main__":
    main()
