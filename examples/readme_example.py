"""Make docs/example.png: the example photo beside what the bundled default model rebuilds from its .wtk file.

    python examples/readme_example.py [--model default] [--out docs/example.png]

Prints the file size, bpp and PSNR that the README quotes.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from wetok import read_info
from wetok.fileio import write_atomic
from wetok.metrics import psnr
from wetok.zoo import load_codec

PHOTO = Path(__file__).parent / "washington_monument.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "docs" / "example.png")
    args = ap.parse_args()
    codec = load_codec(args.model)
    original = np.asarray(Image.open(PHOTO).convert("RGB"))
    data = codec.compress(original)
    decoded = np.asarray(codec.decompress(data, seed=0).image)
    info = read_info(data)
    side_by_side = np.concatenate([original, np.full((original.shape[0], 8, 3), 255, np.uint8), decoded], 1)
    png = io.BytesIO()
    Image.fromarray(side_by_side).save(png, format="PNG", optimize=True)
    write_atomic(args.out, png.getvalue())
    quality = f"PSNR {psnr(original, decoded):.2f} dB"
    print(f"{len(data)} bytes, {info.bpp:.4f} bpp ({info.mode}), {quality} -> {args.out}")


if __name__ == "__main__":
    main()
