"""Context-model ideas that were measured and not shipped (float simulations, ideal code length on Kodak).

* ``adaptive``: the model's logits plus a per-image running bias per bit position, updated after every
  wavefront by ``rate · Σ (bit − p)`` (CABAC-like adaptation of each bit's probability to the image).
* ``hidden``: a ReLU hidden layer on the neighbour features (12 neighbours), beside the linear terms and the
  own-bit terms, trained with Adam in torch.

Both need the token caches written by ``benchmarks/context_gain.py --cache DIR --variants TRAIN_DIR``.

    .venv/bin/python benchmarks/context_experiments.py --cache DIR [--hidden 256] [--epochs 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from wetok.context import ContextModel, token_bits, wavefronts
from wetok.context_fit import WIDER, neighbour_features
from wetok.zoo import load_codec


def load_grids(cache: Path, split: str, model_id: str) -> list[np.ndarray]:
    z = np.load(cache / f"{split}-{model_id}.npz")
    return [z[k].astype(np.int64) for k in sorted(z.files) if k.endswith(".tokens")]


def adaptive(model: ContextModel, grids: list[np.ndarray], rate: float) -> float:
    """Bits/token with a per-image running bias per bit position (``rate`` 0: the model as shipped)."""
    total, count = 0.0, 0
    for g in grids:
        logit = model.logits(g).astype(np.float64) * 2.0**-model.weight_bits
        bits = token_bits(g, model.group_bits).astype(np.float64)
        offset = np.zeros(model.token_bits)
        for rows, cols in wavefronts(*g.shape[:2]):
            p = 1 / (1 + np.exp(-(logit[rows, cols] + offset)))
            y = bits[rows, cols]
            total -= float(np.sum(y * np.log2(p) + (1 - y) * np.log2(1 - p)))
            offset += rate * (y - p).sum(0)
        count += g.shape[0] * g.shape[1]
    return total / count


def hidden(
    train: list[np.ndarray], kodak: list[np.ndarray], group_bits: int, width: int, epochs: int
) -> float:
    """Kodak bits/token of linear + ReLU(width) on the 12-neighbour features, plus own earlier bits."""
    torch.manual_seed(0)

    def features(grids: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.concatenate([neighbour_features(g, WIDER, group_bits) for g in grids])
        y = np.concatenate([token_bits(g, group_bits).reshape(-1, g.shape[-1] * group_bits) for g in grids])
        return torch.from_numpy(x).float(), torch.from_numpy(y).float()

    xt, yt = features(train)
    xk, yk = features(kodak)
    d = yt.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], width), torch.nn.ReLU(), torch.nn.Linear(width, d))
    linear = torch.nn.Linear(xt.shape[1], d)
    own = torch.nn.Parameter(torch.zeros(d, d))
    mask = torch.triu(torch.ones(d, d), 1)
    params = [*net.parameters(), *linear.parameters(), own]
    opt = torch.optim.Adam(params, 2e-3)
    steps, step = epochs * (len(xt) // 4096), 0

    def logits(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return net(x) + linear(x) + y @ (own * mask)

    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt) - 4095, 4096):
            idx = perm[i : i + 4096]
            step += 1
            for group in opt.param_groups:
                group["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(xt[idx], yt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        nats = torch.nn.functional.binary_cross_entropy_with_logits(logits(xk, yk), yk, reduction="sum")
    return float(nats) / len(xk) / np.log(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    codec = load_codec(args.model)
    kodak = load_grids(args.cache, "kodak", codec.model_id_hex)
    for rate in (0.0, 0.005, 0.01, 0.02):
        print(
            f"adaptive bias, rate {rate}: Kodak {adaptive(codec.context, kodak, rate):.3f} bits/token",
            flush=True,
        )
    train = load_grids(args.cache, "train", codec.model_id_hex)
    start = time.perf_counter()
    bits = hidden(train, kodak, codec.model.config.group_bits, args.hidden, args.epochs)
    print(
        f"hidden layer {args.hidden}, {args.epochs} epochs: Kodak {bits:.3f} bits/token "
        f"({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
