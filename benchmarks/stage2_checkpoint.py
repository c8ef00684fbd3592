"""A stage-2 run's progress: its checkpoint's EMA decoder, attached to its init_from model, on a few images.

    .venv/bin/python benchmarks/stage2_checkpoint.py RUN_DIR KODAK_DIR [--images 4] [--realism 0,1]
        [--threads 1]

Prints per realism: PSNR, MS-SSIM, detail kept (decoded / original Laplacian energy) and the seed spread
(mean |seed 0 - seed 1| on 0..255), means over the first N images. The decoder goes through an fp16 round
trip, as it is shipped. TRAINING.md's stage-2 table was measured with it while the run trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from wetok.fileio import find_images
from wetok.image import open_image
from wetok.metrics import detail_ratio, ms_ssim, psnr
from wetok.setting import DecoderSetting
from wetok.tokenizer import Tokenizer
from wetok.zoo import load_codec
from wetok_train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from wetok_train.config import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("images", type=Path)
    ap.add_argument("--images", dest="count", type=int, default=4)
    ap.add_argument("--realism", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.run / CHECKPOINT_NAME)
    cfg = TrainConfig.from_dict(ckpt["config"])
    trained = Tokenizer(cfg.model)
    trained.load_state_dict(ckpt["ema"])
    codec = load_codec(cfg.init_from)
    codec.model.attach_generative_decoder(trained.decoder.half().float())
    print(f"step {ckpt['step']}")
    originals = [open_image(p) for p in find_images([args.images])[: args.count]]
    coded = [codec.encode_tokens(o) for o in originals]
    for realism in (float(r) for r in args.realism.split(",")):
        rows = []
        for orig, (tokens, size) in zip(originals, coded, strict=True):
            a, b = (np.asarray(codec.decode_tokens(tokens, size, DecoderSetting(realism, s))) for s in (0, 1))
            spread = np.abs(a.astype(float) - b.astype(float)).mean()
            rows.append((psnr(a, orig), ms_ssim(a, orig), detail_ratio(orig, a), spread))
        p, m, d, s = np.mean(rows, axis=0)
        print(
            f"realism {realism:.2f}: PSNR {p:.2f} dB, MS-SSIM {m:.4f}, detail kept {d:.3f}, "
            f"seed spread {s:.2f}"
        )


if __name__ == "__main__":
    main()
