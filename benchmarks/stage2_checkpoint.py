"""A stage-2 run's progress: its checkpoint's EMA decoder, attached to its init_from model, on the
validation photos: what recipes and checkpoints are chosen on.

    .venv/bin/python benchmarks/stage2_checkpoint.py RUN_DIR|CHECKPOINT [IMAGES] [--split val] [--images N]
        [--realism 0,1] [--threads 1] [--json]

IMAGES defaults to the run's training folder (``data`` of its config); ``--split val`` (the default) takes
its validation split (:mod:`wetok_train.validation`, photos the run never trained on), ``--split all``
every image of IMAGES: that is for a final report on a test set such as Kodak, never for choosing.
Prints per realism: PSNR, MS-SSIM (images over 160 px a side), detail kept (decoded / original Laplacian
energy) and the seed spread (mean |seed 0 - seed 1| on 0..255), means over the first N images (0: all).
The decoder goes through an fp16 round trip, as it is shipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from wetok.fileio import find_images
from wetok.image import open_image
from wetok.metrics import ms_ssim
from wetok.setting import DecoderSetting
from wetok.tokenizer import Tokenizer
from wetok.zoo import load_codec
from wetok_train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from wetok_train.config import TrainConfig
from wetok_train.validation import SPLITS, measure, split_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("folder", type=Path, nargs="?", help="images (default: the run's training folder)")
    ap.add_argument("--split", choices=SPLITS, default="val")
    ap.add_argument("--images", dest="count", type=int, default=0)
    ap.add_argument("--realism", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="one JSON line per realism")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.run if args.run.is_file() else args.run / CHECKPOINT_NAME)
    cfg = TrainConfig.from_dict(ckpt["config"])
    trained = Tokenizer(cfg.model)
    trained.load_state_dict(ckpt["ema"])
    codec = load_codec(cfg.init_from)
    codec.model.attach_generative_decoder(trained.decoder.half().float())
    paths = split_images(find_images([args.folder or cfg.data]), args.split)
    paths = paths[: args.count] if args.count else paths
    if not paths:
        raise SystemExit(f"no images in the {args.split} split of {args.folder or cfg.data}")
    try:
        originals = [open_image(p) for p in paths]
    except (OSError, ValueError) as e:
        raise SystemExit(f"stage2_checkpoint.py: {e}") from None
    coded = [codec.encode_tokens(o) for o in originals]
    if not args.json:
        print(f"step {ckpt['step']}, {len(paths)} images ({args.split} split)")
    for realism in (float(r) for r in args.realism.split(",")):
        triples, ssims = [], []
        for orig, (tokens, size) in zip(originals, coded, strict=True):
            a, b = (np.asarray(codec.decode_tokens(tokens, size, DecoderSetting(realism, s))) for s in (0, 1))
            triples.append((orig, a, b))
            if min(orig.shape[:2]) > 160:
                ssims.append(ms_ssim(a, orig))
        row = {"step": ckpt["step"], "realism": realism, "split": args.split, **measure(triples)}
        row["ms_ssim"] = round(float(np.mean(ssims)), 4) if ssims else None
        print(json.dumps(row) if args.json else _line(row), flush=True)


def _line(row: dict) -> str:
    ssim = f"{row['ms_ssim']:.4f}" if row["ms_ssim"] is not None else "-"
    return (
        f"realism {row['realism']:.2f}: PSNR {row['psnr']:.2f} dB, MS-SSIM {ssim}, "
        f"detail kept {row['detail_kept']:.3f}, seed spread {row['seed_spread']:.2f}"
    )


if __name__ == "__main__":
    main()
