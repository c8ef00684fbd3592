"""Images/s of ``wetok tokenize`` beside the model's encoder alone, so the tool's overhead is visible.

    .venv/bin/python benchmarks/tokenize_throughput.py [--model default] [--images 64] [--size 256]
        [--batch-sizes 1,16] [--workers 0,2] [--repeats 3] [--device auto] [--json]

Inputs: ``--images`` synthetic photo-like JPEGs (quality 90, 1.5× the side, so every one is decoded,
resized and centre-cropped), written to a temporary folder; or ``--from DIR`` (its images, first
``--images`` of them).
Rows (``bN``: batch size, each of ``--batch-sizes``; ``wN``: DataLoader workers, each of ``--workers``):
- ``encoder only bN``: ``Tokenizer.encode`` on batches of preprocessed float tensors already in memory.
- ``encode_tokens b1``: ``Codec.encode_tokens`` image by image (the ``wetok compress`` path).
- ``tokenize wN bN``: :func:`wetok.tokenize_images.tokenize_images` end to end: JPEG decoding, resizing,
  batching, encoding and shard writing, into a fresh folder.
Each is timed ``--repeats`` times after a warm-up batch, the rows interleaved; the best (least disturbed)
time counts: images/s = images / seconds. On a shared machine compare rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wetok.device import resolve_device
from wetok.fileio import find_images
from wetok.image import array_to_tensor
from wetok.tokenize_images import Preprocess, TokenizeOptions, tokenize_images
from wetok.zoo import load_codec


def synthetic_jpegs(folder: Path, n: int, side: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    h, w = int(side * 1.5), int(side * 1.5 * 4 / 3)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    for i in range(n):
        f = rng.uniform(2, 12, 3)
        base = np.stack([np.sin(f[0] * x + i), np.cos(f[1] * y), np.sin(f[2] * (x + y))], -1) * 90 + 128
        img = np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(str(folder / f"{i:05d}.jpg"))
        Image.fromarray(img).save(paths[-1], quality=90)
    return paths


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    codec = load_codec(args.model, device=device)
    prep = Preprocess(args.size, "center")
    with tempfile.TemporaryDirectory() as tmp:
        if args.source:
            sources = [str(p) for p in find_images([args.source])[: args.images]]
        else:
            sources = synthetic_jpegs(Path(tmp), args.images, args.size)
        arrays = [prep.load(s)[0] for s in sources]
        codec.model.encode(array_to_tensor(arrays[0]))  # warm-up
        jobs = {"encode_tokens b1": lambda: [codec.encode_tokens(a) for a in arrays]}
        for bs in args.batch_sizes:
            batches = [
                torch.cat([array_to_tensor(a) for a in arrays[i : i + bs]]) for i in range(0, len(arrays), bs)
            ]
            jobs[f"encoder only b{bs}"] = lambda bb=batches: [codec.model.encode(b) for b in bb]
            for workers in args.workers:
                options = TokenizeOptions(prep, shard_size=1024, batch_size=bs, workers=workers)
                jobs[f"tokenize w{workers} b{bs}"] = lambda op=options: tokenize_images(
                    codec, sources, Path(tempfile.mkdtemp(dir=tmp)), op
                )
        best = {name: float("inf") for name in jobs}
        for _ in range(args.repeats):
            for name, job in jobs.items():
                best[name] = min(best[name], _timed(job))
        rows = [_row(name, len(sources), seconds) for name, seconds in best.items()]
    return {
        "model": codec.name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "size": args.size,
        "images": len(sources),
        "rows": rows,
    }


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _row(name: str, n: int, seconds: float) -> dict:
    return {"what": name, "images": n, "seconds": seconds, "images_per_s": n / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--from", dest="source", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16])
    ap.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")], default=[0, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"model {result['model']} on {result['device']} ({result['threads']} threads), "
        f"{result['images']} images at {result['size']}²; bN: batch size, wN: DataLoader workers"
    )
    print(f"{'what':<16} {'images':>6} {'seconds':>8} {'images/s':>9}")
    for r in result["rows"]:
        print(f"{r['what']:<16} {r['images']:>6} {r['seconds']:>8.2f} {r['images_per_s']:>9.2f}")


if __name__ == "__main__":
    main()
