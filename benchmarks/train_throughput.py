"""Training throughput (img/s) of one train_step on this machine, for a few model configurations.

    python benchmarks/train_throughput.py [--steps 6] [--crop 128] [--batch 8] [--json]

Synthetic batches (data loading excluded); stage-1 losses: L1 + perceptual + GQ + commitment + GAN.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wetok.config import TokenizerConfig
from wetok_train.config import TrainConfig, load_config
from wetok_train.loop import load_perceptual_loss, train_step
from wetok_train.losses import GeneratorLoss
from wetok_train.state import build_state

CANDIDATES = {
    "default (examples/train_default.toml)": load_config(
        Path(__file__).resolve().parents[1] / "examples" / "train_default.toml"
    ).model,
    "cpu-f16 (g4)": TokenizerConfig.preset("cpu-f16"),
    "ch32 1,1,2,4,8 g5": TokenizerConfig(ch=32, ch_mult=(1, 1, 2, 4, 8), num_res_blocks=1, groups=5),
}


def measure(model: TokenizerConfig, args: argparse.Namespace, **groups: dict) -> float:
    cfg = TrainConfig.from_dict({"crop": args.crop, "batch_size": args.batch, **groups})
    cfg.model = model
    state = build_state(cfg, torch.device("cpu"), 1)
    loss_fn = GeneratorLoss(cfg, load_perceptual_loss(cfg, torch.device("cpu")))
    x = torch.rand(args.batch, 3, args.crop, args.crop) * 2 - 1
    train_step(state, loss_fn, cfg, x)  # warm-up
    t = time.perf_counter()
    for _ in range(args.steps):
        train_step(state, loss_fn, cfg, x)
    return args.steps * args.batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for name, model in CANDIDATES.items():
        params = sum(p.numel() for p in __import__("wetok").Tokenizer(model).parameters()) / 1e6
        for label, kw in [
            ("rec only", {"loss": {"adversarial": 0.0, "perceptual_net": "none"}}),
            ("+perc", {"loss": {"adversarial": 0.0}}),
            ("+perc+gan32", {"disc": {"channels": 32}}),
            ("+perc+gan64", {"disc": {"channels": 64}}),
        ]:
            rows.append(
                {
                    "model": name,
                    "params_M": round(params, 2),
                    "losses": label,
                    "img_per_s": round(measure(model, args, **kw), 2),
                }
            )
            if not args.json:
                r = rows[-1]
                print(
                    f"{r['model']:<22} {r['params_M']:>6.2f}M {r['losses']:<14} {r['img_per_s']:>6.2f} img/s",
                    flush=True,
                )
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "crop": args.crop, "rows": rows}))


if __name__ == "__main__":
    main()
