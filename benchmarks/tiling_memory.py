"""Peak memory of tiled encoding and decoding of a large image, and how tiling changes the result.

Each measurement runs in a fresh child process and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
(peak resident set size, the whole process: Python, torch, the model, image buffers) before the work
(``baseline_mb``) and after it (``peak_mb``). The model is the bundled ``default`` (``--model``), or an
untrained tokenizer of ``--preset``. The encode child codes a random image, the decode child random tokens
(memory and time do not depend on the content).

The seam check codes the example photo (examples/washington_monument.png) with tiles forced to
``--seam-tile`` tokens and blocks of one token row (a cut after every token row), and without tiling, and
reports the share of equal tokens, the PSNR between the tiled and untiled pictures, and the largest pixel
difference and PSNR against the plain whole-image forward (``Tokenizer.encode``/``decode``).

    .venv/bin/python benchmarks/tiling_memory.py [--size 4096] [--model default | --preset NAME] [--tile N]
                                                 [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wetok import Tokenizer, TokenizerConfig
from wetok.codec import Codec
from wetok.image import array_to_tensor, open_image, pad_to_multiple, tensor_to_array
from wetok.tiling import decode_tiled, encode_tiled

PHOTO = Path(__file__).parents[1] / "examples" / "washington_monument.png"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_codec(model: str, preset: str | None, tile: int | None) -> Codec:
    if preset:
        torch.manual_seed(0)
        return Codec(Tokenizer(TokenizerConfig.preset(preset)), tile_tokens=tile)
    from wetok.zoo import load_codec

    base = load_codec(model)
    return Codec(base.model, base.prior, name=base.name, context=base.context, tile_tokens=tile)


def model_args(model: str, preset: str | None) -> list[str]:
    return ["--preset", preset] if preset else ["--model", model]


def child(task: str, size: int, model: str, preset: str | None, tile: int | None) -> dict:
    """Run one task in this process and report its peak RSS."""
    codec = make_codec(model, preset, tile)
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
        assert codec.decompress(data).image.size == (size, size)
    return {
        "task": task,
        "size": size,
        "model": preset or model,
        "tile_tokens": codec.tile_tokens,
        "baseline_mb": baseline,
        "peak_mb": rss_mb(),
        "seconds": time.perf_counter() - start,
    }


def run_child(task: str, size: int, model: str, preset: str | None, tile: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", task, "--size", str(size), *model_args(model, preset)]
    cmd += ["--tile", str(tile)] if tile is not None else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def seam_check(model: str, preset: str | None, tile: int) -> dict:
    """Tiled (``tile`` tokens, blocks of one token row) vs untiled on the example photo."""
    codec = make_codec(model, preset, tile)
    net, f = codec.model, codec.model.config.downsample
    x = pad_to_multiple(array_to_tensor(open_image(PHOTO)), f)
    whole, tiled = encode_tiled(net, x, 0), encode_tiled(net, x, tile, block=1)
    a = decode_tiled(net, whole, 0)
    b = decode_tiled(net, whole, tile, block=1)
    plain = tensor_to_array(net.decode(whole))
    bits = torch.arange(net.config.group_bits)
    same_bits = ((whole[..., None] >> bits) & 1) == ((tiled[..., None] >> bits) & 1)
    return {
        "seam_image": f"{x.shape[-1]}x{x.shape[-2]}",
        "seam_tile_tokens": tile,
        "equal_symbols_%": 100 * float((whole == tiled).float().mean()),
        "equal_bits_%": 100 * float(same_bits.float().mean()),
        "equal_to_plain_encode_%": 100 * float((whole == net.encode(x)).float().mean()),
        "tiled_vs_untiled_psnr_db": psnr(a, b),
        "tiled_vs_plain_psnr_db": psnr(b, plain),
        "tiled_vs_plain_max_diff": int(np.abs(b.astype(int) - plain).max()),
    }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--model", default="default", help="registry name or model directory")
    parser.add_argument("--preset", default=None, help="an untrained preset instead of --model")
    parser.add_argument("--tile", type=int, default=None, help="tile side in tokens (default: automatic)")
    parser.add_argument("--seam-tile", type=int, default=4, help="tile side (tokens) of the seam check")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["encode", "decode"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.model, args.preset, args.tile)))
        return
    rows = [run_child(task, args.size, args.model, args.preset, args.tile) for task in ("encode", "decode")]
    seams = seam_check(args.model, args.preset, args.seam_tile)
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
