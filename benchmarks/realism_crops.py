"""Texture side by side: grass, foliage and faces of Kodak, as each decoder and codec paints them.

    .venv/bin/python benchmarks/realism_crops.py ../shared/data/kodak [--model default]
        [--out docs/results/realism_crops.png] [--seed 0] [--threads 2]

Per region: the original, wetok's faithful decoder (realism 0), its generative decoder (realism 1, seed
``--seed``), and JPEG 2000 and AVIF at the largest file not above wetok's realism-1 file (the same tokens
at both realisms: the file differs by the 2-byte setting). Each crop is 160 px of the image, shown at 2x
(nearest neighbour) so that grain and blocks stay visible; captions give the whole image's bpp and PSNR.
Prints one line per region. Needs the bundled model (or ``--model``) and Pillow with AVIF and JPEG 2000.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from wetok import fileio
from wetok.eval import classic
from wetok.image import open_image
from wetok.metrics import psnr
from wetok.zoo import load_codec

# (image, region, top-left x, y) of 160-px windows chosen by eye on the Kodak set
REGIONS = [
    ("kodim20", "grass", 40, 340),
    ("kodim22", "grass", 300, 350),
    ("kodim13", "foliage", 60, 150),
    ("kodim07", "foliage", 560, 200),
    ("kodim04", "face", 170, 230),
    ("kodim15", "face", 380, 230),
]
CROP, ZOOM = 160, 2


def paint(codec, rgb: np.ndarray, seed: int) -> list[tuple[str, np.ndarray, int]]:
    """``(label, decoded image, file bytes)`` for realism 0, realism 1 and the matched classic codecs."""
    data = codec.compress(rgb, realism=1, seed=seed)
    tokens, size = codec.encode_tokens(rgb)
    out = [("wetok realism 0", np.asarray(codec.decode_tokens(tokens, size)), len(data) - 2)]
    out.append(("wetok realism 1", np.asarray(codec.decompress(data).image), len(data)))
    for name in (classic.BD_REFERENCE, "avif"):  # JPEG 2000, the rate sweep's reference, and AVIF
        c = classic.get_codec(name)
        if classic.unavailable_reason(c):
            continue
        match = classic.match_size(c, rgb, len(data))
        label = c.label if match.reached else f"{c.label} (smallest)"
        out.append((label, classic.decode(match.data), len(match.data)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kodak", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=Path("docs/results/realism_crops.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_codec(args.model)
    tile, cap = CROP * ZOOM, 36
    font = ImageFont.load_default(size=14)
    sheet = None
    for row, (name, region, x, y) in enumerate(REGIONS):
        rgb = open_image(args.kodak / f"{name}.png")
        tiles = [("original", rgb, 0), *paint(codec, rgb, args.seed)]
        if sheet is None:
            sheet = Image.new(
                "RGB", (len(tiles) * (tile + 4) + 4, len(REGIONS) * (tile + cap + 4) + 4), "white"
            )
            draw = ImageDraw.Draw(sheet)
        top = 4 + row * (tile + cap + 4)
        line = [f"{name} {region}"]
        for col, (label, img, nbytes) in enumerate(tiles):
            crop = Image.fromarray(np.ascontiguousarray(img[y : y + CROP, x : x + CROP]))
            left = 4 + col * (tile + 4)
            sheet.paste(crop.resize((tile, tile), Image.Resampling.NEAREST), (left, top))
            bpp = 8 * nbytes / (rgb.shape[0] * rgb.shape[1])
            caption = f"{name} {region}" if col == 0 else f"{bpp:.3f} bpp, {psnr(rgb, img):.2f} dB"
            draw.text((left + 2, top + tile + 2), label, fill="black", font=font)
            draw.text((left + 2, top + tile + 19), caption, fill="#444444", font=font)
            if col:
                line.append(f"{label}: {bpp:.3f} bpp {psnr(rgb, img):.2f} dB")
        print(" | ".join(line), flush=True)
    with fileio.atomic_path(args.out) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
