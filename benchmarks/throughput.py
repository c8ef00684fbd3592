"""Encode / decode speed of each shipped model on a 768×512 image, against this machine's measured peak.

    .venv/bin/python benchmarks/throughput.py [--model NAME_OR_DIR]... [--preset NAME]... [--repeats 3]
                                              [--device auto|cpu|cuda|all] [--size 768x512] [--json]

Models: the ``--model``/``--preset`` given, else every model in the registry (``wetok models``), else the
``cpu-f16`` and ``cpu-f16-gd`` presets with random weights (speed does not depend on the weights).
Devices: the CPU, and the GPU too when one is present (``--device all``, the default when CUDA works).

Per model: the network alone (``Tokenizer.encode`` / ``decode``, float32 tensors in and out) and the whole
codec (``Codec.compress`` / ``decompress``: uint8 image → ``.wtk`` bytes → image, with padding, tiling and
range coding), median wall time of ``--repeats`` runs after one warm-up. ``%pk``: achieved GFLOP/s as a
share of the measured conv peak. GFLOP counts matmul and convolution
FLOPs (``torch.utils.flop_counter.FlopCounterMode``: 2 per multiply-add; norms and activations are not
counted). Peaks are measured here: the best of 3 float32 matmuls (2048² on CPU, 8192² on GPU, TF32 off)
and of 3 3×3 convolutions (128→128 channels on 8×64×64, the decoder's dominant shape class).

A ``--size`` other than 768×512 also prints the whole codec's time per pixel there beside 768×512's, and
their ratio (tiling, context coding and pixel conversions included). Beyond :data:`NETWORK_MAX_PIXELS` the
network-alone columns are left out (the plain forward holds the whole image's activations: gigabytes) and
the codec runs ``--repeats`` times without warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from wetok import Tokenizer, TokenizerConfig
from wetok.codec import Codec
from wetok.image import array_to_tensor

FALLBACK_PRESETS = ("cpu-f16", "cpu-f16-gd")
REFERENCE_SIZE = (768, 512)
NETWORK_MAX_PIXELS = 4 << 20


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peaks(device: str) -> dict[str, float]:
    """Measured float32 GFLOP/s of a large matmul and of a 3×3 convolution on ``device``."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device)
    mm = min(timed(lambda: a @ a, device, 1, 1) for _ in range(3))
    x = torch.randn(8, 128, 64, 64, device=device)
    w = torch.randn(128, 128, 3, 3, device=device)
    conv = min(timed(lambda: torch.nn.functional.conv2d(x, w, padding=1), device, 1, 1) for _ in range(3))
    conv_flops = 2 * 8 * 128 * 128 * 9 * 64 * 64
    return {"matmul_gflops": 2 * n**3 / mm / 1e9, "conv_gflops": conv_flops / conv / 1e9}


def flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def test_image(height: int, width: int) -> np.ndarray:
    """A smooth synthetic photo stand-in (uint8 RGB): speed of the network does not depend on content."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([np.sin(9 * x), np.cos(7 * y), np.sin(5 * (x + y))], -1) * 100 + 128
    return np.clip(img + np.random.default_rng(0).normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def bench_model(codec: Codec, device: str, rgb: np.ndarray, repeats: int) -> dict:
    model = codec.model.to(device)
    x = array_to_tensor(rgb).to(device)
    tokens = model.encode(x)
    enc_s = timed(lambda: model.encode(x), device, repeats)
    dec_s = timed(lambda: model.decode(tokens, seed=0), device, repeats)
    data = codec.compress(rgb)
    mpix = rgb.shape[0] * rgb.shape[1] / 1e6
    row = {
        "model": codec.name,
        "device": device,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "enc_ms": 1000 * enc_s,
        "dec_ms": 1000 * dec_s,
        "enc_mp_s": mpix / enc_s,
        "dec_mp_s": mpix / dec_s,
        "enc_gflop": flops(lambda: model.encode(x)),
        "dec_gflop": flops(lambda: model.decode(tokens, seed=0)),
        "codec_enc_ms": 1000 * timed(lambda: codec.compress(rgb), device, repeats),
        "codec_dec_ms": 1000 * timed(lambda: codec.decompress(data), device, repeats),
        "file_bytes": len(data),
    }
    row["enc_gflop_s"] = row["enc_gflop"] / enc_s
    row["dec_gflop_s"] = row["dec_gflop"] / dec_s
    return row


def bench_codec(codec: Codec, device: str, rgb: np.ndarray, repeats: int, warmup: int = 1) -> dict:
    """Whole codec only: ``Codec.compress`` / ``decompress`` wall time and nanoseconds per pixel."""
    codec.model.to(device)
    data = codec.compress(rgb)
    enc = timed(lambda: codec.compress(rgb), device, repeats, warmup)
    dec = timed(lambda: codec.decompress(data), device, repeats, warmup)
    pixels = rgb.shape[0] * rgb.shape[1]
    return {
        "model": codec.name,
        "device": device,
        "size": f"{rgb.shape[1]}x{rgb.shape[0]}",
        "codec_enc_ms": 1000 * enc,
        "codec_dec_ms": 1000 * dec,
        "enc_ns_px": 1e9 * enc / pixels,
        "dec_ns_px": 1e9 * dec / pixels,
        "file_bytes": len(data),
    }


def _per_pixel_table(rows: list[dict]) -> None:
    print("whole codec, time per pixel (ratio: this size over 768x512, same model and device)")
    print(
        f"{'model':<28} {'dev':<4} {'size':>10} {'enc ms':>9} {'dec ms':>9} {'enc ns/px':>9} {'dec ns/px':>9}"
    )
    ref: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["model"], r["device"])
        ratio = ""
        if key in ref:
            b = ref[key]
            enc, dec = r["enc_ns_px"] / b["enc_ns_px"], r["dec_ns_px"] / b["dec_ns_px"]
            both = (r["enc_ns_px"] + r["dec_ns_px"]) / (b["enc_ns_px"] + b["dec_ns_px"])
            ratio = f"  ratio enc {enc:.2f}x dec {dec:.2f}x codec {both:.2f}x"
        else:
            ref[key] = r
        ms = f"{r['codec_enc_ms']:>9.0f} {r['codec_dec_ms']:>9.0f}"
        print(
            f"{r['model']:<28} {r['device']:<4} {r['size']:>10} {ms} "
            f"{r['enc_ns_px']:>9.1f} {r['dec_ns_px']:>9.1f}{ratio}"
        )


def load_codecs(models: list[str], presets: list[str]) -> tuple[list[Codec], str]:
    from wetok.zoo import list_models, load_codec

    if models or presets:
        codecs = [load_codec(m) for m in models]
    else:
        codecs = []
        for m in list_models():
            codecs.append(load_codec(str(m.path)))
            codecs[-1].name = m.name  # the registry's name: two releases may both call themselves "default"
        presets = [] if codecs else list(FALLBACK_PRESETS)
    for name in presets:
        torch.manual_seed(0)
        codecs.append(Codec(Tokenizer(TokenizerConfig.preset(name)), name=f"{name} (random weights)"))
    source = "registry" if codecs and not presets else "presets with random weights"
    return codecs, source


def _devices(choice: str) -> list[str]:
    has_cuda = torch.cuda.is_available()
    if choice == "auto":
        return ["cpu", "cuda"] if has_cuda else ["cpu"]
    if choice in ("cuda", "all") and not has_cuda:
        raise SystemExit("no CUDA device is available")
    return ["cpu", "cuda"] if choice == "all" else [choice]


def _table(result: dict) -> None:
    for dev, p in result["peaks"].items():
        print(
            f"{dev}: matmul peak {p['matmul_gflops']:.1f} GFLOP/s, conv3x3 peak {p['conv_gflops']:.1f} "
            f"GFLOP/s (float32, {result['threads']} CPU threads); image {result['size']}"
        )
    cols = [
        ("model", "<28", "model"),
        ("dev", "<4", "device"),
        ("params M", ">8.2f", "params_m"),
        ("enc ms", ">8.1f", "enc_ms"),
        ("dec ms", ">8.1f", "dec_ms"),
        ("enc MP/s", ">8.2f", "enc_mp_s"),
        ("dec MP/s", ">8.2f", "dec_mp_s"),
        ("enc GFLOP", ">9.1f", "enc_gflop"),
        ("dec GFLOP", ">9.1f", "dec_gflop"),
        ("enc GF/s", ">8.1f", "enc_gflop_s"),
        ("dec GF/s", ">8.1f", "dec_gflop_s"),
        ("enc %pk", ">7.0f", "enc_pct_peak"),
        ("dec %pk", ">7.0f", "dec_pct_peak"),
        ("codec enc ms", ">12.1f", "codec_enc_ms"),
        ("codec dec ms", ">12.1f", "codec_dec_ms"),
    ]
    print(" ".join(f"{h:{fmt.split('.')[0]}}" for h, fmt, _ in cols))
    for r in result["rows"]:
        print(" ".join(f"{r[k]:{fmt}}" for _, fmt, k in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=[], help="model name or directory (repeatable)")
    ap.add_argument("--preset", action="append", default=[], help="preset with random weights (repeatable)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda", "all"], default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="768x512", help="WIDTHxHEIGHT")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    rgb = test_image(height, width)
    codecs, source = load_codecs(args.model, args.preset)
    devices = _devices(args.device)
    result = {
        "size": f"{width}x{height}",
        "threads": torch.get_num_threads(),
        "models_from": source,
        "peaks": {d: peaks(d) for d in devices},
        "rows": [],
    }
    big = width * height > NETWORK_MAX_PIXELS
    if (width, height) != REFERENCE_SIZE:
        ref_rgb = test_image(REFERENCE_SIZE[1], REFERENCE_SIZE[0])
        per_pixel = []
        with torch.inference_mode():
            for codec in codecs:
                for dev in devices:
                    per_pixel.append(bench_codec(codec, dev, ref_rgb, args.repeats))
                    per_pixel.append(bench_codec(codec, dev, rgb, args.repeats, warmup=0 if big else 1))
        result["per_pixel"] = per_pixel
    if big:
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            _per_pixel_table(result["per_pixel"])
        return
    with torch.inference_mode():
        for codec in codecs:
            for dev in devices:
                row = bench_model(codec, dev, rgb, args.repeats)
                conv_peak = result["peaks"][dev]["conv_gflops"]
                row["enc_pct_peak"] = 100 * row["enc_gflop_s"] / conv_peak
                row["dec_pct_peak"] = 100 * row["dec_gflop_s"] / conv_peak
                result["rows"].append(row)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _table(result)
        if "per_pixel" in result:
            _per_pixel_table(result["per_pixel"])


if __name__ == "__main__":
    main()
