"""What ``wetok compress --bpp T`` gives and costs: per target, the files' rates, PSNR and the search's time.

    .venv/bin/python benchmarks/rate_search.py ../shared/data/kodak [--model NAME_OR_DIR]
        [--bpp 0.02,0.04,0.08,0.16] [--limit N] [--threads N] [--markdown OUT.md] [--json]

Per image and target: ``Codec.compress_choice(image, bpp=T)`` (:mod:`wetok.rate`: search over the scale,
each try one encode, up to two fitting candidates decoded and compared by MS-SSIM), then one decode of the
file. Checked, not assumed: every file is at most ``T · pixels / 8`` bytes unless the search says even the
smallest scale could not get there, and decodes to the original size. Per target the table gives the mean
rate, its range, the mean PSNR (8-bit RGB), the scales chosen, the encodes and scoring decodes per file and
the search's wall time per file (against one plain encode of the image at its own size, measured first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wetok.fileio import find_images
from wetok.image import open_image
from wetok.metrics import psnr
from wetok.zoo import load_codec


def run(codec, images: list[tuple[str, np.ndarray]], targets: list[float]) -> list[dict]:
    rows = []
    plain = []
    for _, rgb in images:
        t0 = time.perf_counter()
        codec.compress(rgb)
        plain.append(time.perf_counter() - t0)
    for target in targets:
        per = []
        for name, rgb in images:
            print(f"  --bpp {target}: {name}", file=sys.stderr)
            t0 = time.perf_counter()
            choice = codec.compress_choice(rgb, bpp=target)
            seconds = time.perf_counter() - t0
            decoded = np.asarray(codec.decompress(choice.data).image)
            pixels = rgb.shape[0] * rgb.shape[1]
            assert decoded.shape == rgb.shape, (name, decoded.shape)
            assert not choice.reached or len(choice.data) <= int(target * pixels / 8), name
            per.append(
                {
                    "bpp": 8 * len(choice.data) / pixels,
                    "psnr": psnr(rgb, decoded),
                    "scale": choice.scale,
                    "reached": choice.reached,
                    "tries": choice.tries,
                    "scored": choice.scored,
                    "seconds": seconds,
                }
            )
        rows.append(_summary(target, per, statistics.mean(plain)))
    return rows


def _summary(target: float, per: list[dict], plain_s: float) -> dict:
    def mean(key: str) -> float:
        return statistics.mean(p[key] for p in per)

    return {
        "target_bpp": target,
        "images": len(per),
        "reached": sum(p["reached"] for p in per),
        "bpp": mean("bpp"),
        "bpp_min": min(p["bpp"] for p in per),
        "bpp_max": max(p["bpp"] for p in per),
        "psnr": mean("psnr"),
        "scale_min": min(p["scale"] for p in per),
        "scale_max": max(p["scale"] for p in per),
        "encodes": mean("tries"),
        "scoring_decodes": mean("scored"),
        "search_s": mean("seconds"),
        "plain_encode_s": plain_s,
    }


def markdown(rows: list[dict], model: str, threads: int) -> str:
    lines = [
        f"`wetok compress --bpp T`, model `{model}`, {rows[0]['images']} images, {threads} CPU thread(s):",
        "",
        "| target bpp | files ≤ target | mean bpp (min–max) | PSNR dB | scales | encodes | scoring decodes "
        "| search s / file | × plain encode |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target_bpp']:g} | {r['reached']}/{r['images']} | {r['bpp']:.4f} ({r['bpp_min']:.4f}–"
            f"{r['bpp_max']:.4f}) | {r['psnr']:.2f} | {r['scale_min']:.2f}–{r['scale_max']:.2f} | "
            f"{r['encodes']:.1f} | {r['scoring_decodes']:.1f} | {r['search_s']:.2f} | "
            f"{r['search_s'] / r['plain_encode_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("images", type=Path, help="folder of images (Kodak)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--bpp", default="0.02,0.04,0.08,0.16")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    codec = load_codec(args.model)
    paths = find_images([args.images])[: args.limit]
    images = [(p.name, open_image(p)) for p in paths]
    rows = run(codec, images, [float(v) for v in args.bpp.split(",")])
    text = markdown(rows, codec.name, torch.get_num_threads())
    if args.markdown:
        args.markdown.write_text(text)
    print(json.dumps(rows, indent=2) if args.json else text)


if __name__ == "__main__":
    main()
