"""Context-model coding on real images: `.wtk` sizes of the default mode vs static, tokens unchanged.

For every image in KODAK (never used for fitting) the model's tokens are packed in the default mode (context
when the model has a context model) and in static mode; both files are decoded and their tokens compared
with the encoder's. Prints bits/token of each mode, total bytes, how much smaller the default files are, and
the context decode time per image. With ``--variants TRAIN_DIR`` it also fits context models with other
neighbourhoods on the tokens of TRAIN_DIR and scores them on the same Kodak tokens (ideal code length), with
their decode time on a 768x512 grid: what a wider context buys and costs.

    .venv/bin/python benchmarks/context_gain.py [--model default] [--kodak ../shared/data/kodak]
        [--variants ../shared/data/train] [--cache DIR] [--json]

``--cache DIR`` keeps the encoded tokens (``DIR/<split>.npz``) so later runs skip the encoder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wetok import format as fmt
from wetok.codec import Codec
from wetok.context_fit import LEFT_UP, WIDE, WIDER, bits_report, fit_context_model
from wetok.entropy import ContextCoder
from wetok.zoo import load_codec

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VARIANTS = {"left/up (4)": LEFT_UP, "wide (8)": WIDE, "wider (12)": WIDER}


def image_tokens(codec: Codec, folder: Path, cache: Path | None, split: str) -> dict[str, tuple]:
    """``name -> (tokens [1, h, w, g] int64, (H, W))`` for every image in ``folder``, cached if asked."""
    path = cache / f"{split}-{codec.model_id_hex}.npz" if cache else None
    if path is not None and path.is_file():
        z = np.load(path)
        return {
            k[:-7]: (torch.from_numpy(z[k].astype(np.int64))[None], tuple(z[k[:-7] + ".size"]))
            for k in z.files
            if k.endswith(".tokens")
        }
    out = {}
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
        out[image.name] = codec.encode_tokens(image)
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        arrays = {f"{k}.tokens": t[0].numpy().astype(np.uint32) for k, (t, _) in out.items()}
        arrays.update({f"{k}.size": np.array(s) for k, (_, s) in out.items()})
        np.savez(path, **arrays)
    return out


def file_sizes(codec: Codec, tokens: dict[str, tuple]) -> dict:
    """Sizes of the default-mode and static files, with the tokens of both decoded and compared."""
    total = {
        "tokens": 0,
        "default_bytes": 0,
        "static_bytes": 0,
        "default_payload": 0,
        "static_payload": 0,
        "decode_s": 0.0,
        "modes": set(),
        "identical": True,
    }
    for t, size in tokens.values():
        default, static = codec.pack_tokens(t, size), codec.pack_tokens(t, size, "static")
        start = time.perf_counter()
        back, _ = codec.unpack_tokens(default)
        total["decode_s"] += time.perf_counter() - start
        total["identical"] &= bool(torch.equal(back, t) and torch.equal(codec.unpack_tokens(static)[0], t))
        total["modes"].add(fmt.unpack(default)[0].mode)
        total["tokens"] += t.shape[1] * t.shape[2]
        total["default_bytes"] += len(default)
        total["static_bytes"] += len(static)
        total["default_payload"] += len(fmt.unpack(default)[1])
        total["static_payload"] += len(fmt.unpack(static)[1])
    n = total["tokens"]
    return {
        "images": len(tokens),
        "tokens": n,
        "default_modes": sorted(total["modes"]),
        "static_bits_per_token": 8 * total["static_payload"] / n,
        "default_bits_per_token": 8 * total["default_payload"] / n,
        "static_bytes": total["static_bytes"],
        "default_bytes": total["default_bytes"],
        "smaller_%": 100 * (1 - total["default_bytes"] / total["static_bytes"]),
        "tokens_identical": total["identical"],
        "decode_ms_per_image": 1e3 * total["decode_s"] / len(tokens),
    }


def variants(codec: Codec, train: dict[str, tuple], kodak: dict[str, tuple]) -> list[dict]:
    cfg = codec.model.config
    train_grids = [t[0].numpy() for t, _ in train.values()]
    kodak_grids = [t[0].numpy() for t, _ in kodak.values()]
    probe = (
        next(g for g in kodak_grids if g.shape[:2] == (32, 48))
        if any(g.shape[:2] == (32, 48) for g in kodak_grids)
        else kodak_grids[0]
    )
    rows = []
    for name, offsets in VARIANTS.items():
        start = time.perf_counter()
        model = fit_context_model(train_grids, cfg.groups, cfg.group_bits, offsets=offsets)
        fit_s = time.perf_counter() - start
        coder = ContextCoder(model)
        data = coder.encode(probe)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            coder.decode(data, *probe.shape[:2])
            times.append(time.perf_counter() - start)
        report = bits_report(kodak_grids, codec.prior, model)
        rows.append(
            {
                "context": name,
                "neighbours": len(offsets),
                "kodak_bits_per_token": report["context"],
                "static_bits_per_token": report["static"],
                "fit_s": fit_s,
                "decode_ms_768x512": 1e3 * min(times),
                "probe_grid": list(probe.shape[:2]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("--variants", type=Path, metavar="TRAIN_DIR", help="fit neighbourhood variants here")
    parser.add_argument("--cache", type=Path, help="folder for encoded tokens")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    codec = load_codec(args.model)
    kodak = image_tokens(codec, args.kodak, args.cache, "kodak")
    result = {"model": codec.name, "model_id": codec.model_id_hex, "files": file_sizes(codec, kodak)}
    if args.variants:
        result["variants"] = variants(codec, image_tokens(codec, args.variants, args.cache, "train"), kodak)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    f = result["files"]
    print(f"{codec.name} ({codec.model_id_hex}) on {f['images']} images, {f['tokens']} tokens")
    print(f"  static:  {f['static_bits_per_token']:.2f} bits/token, {f['static_bytes']} bytes")
    print(
        f"  default ({'/'.join(f['default_modes'])}): {f['default_bits_per_token']:.2f} bits/token, "
        f"{f['default_bytes']} bytes: {f['smaller_%']:.1f} % smaller; "
        f"tokens identical: {f['tokens_identical']}; decode {f['decode_ms_per_image']:.1f} ms/image"
    )
    for row in result.get("variants", []):
        print(
            f"  {row['context']:<12} Kodak {row['kodak_bits_per_token']:.2f} bits/token (ideal; static "
            f"{row['static_bits_per_token']:.2f}), fit {row['fit_s']:.1f} s, "
            f"decode {row['decode_ms_768x512']:.1f} ms on a "
            f"{row['probe_grid'][1]}x{row['probe_grid'][0]} grid"
        )


if __name__ == "__main__":
    main()
