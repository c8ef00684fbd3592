"""Fitting a :class:`~wetok.context.ContextModel` on training tokens (float maths is fine here: only the
quantised integer model it returns is ever used for coding).

The model is a logistic regression per token bit (``D = g·d'`` outputs) on the bits of the causal neighbour
tokens, a presence flag per neighbour, and the token's own earlier bits, trained with Adam on the mean
binary cross-entropy (numpy, float32, mini-batches), then rounded to integers in units of ``2^-weight_bits``
nats. The probability table maps ``logit >> table_shift`` to ``round(2^24 · sigmoid(·))``, clipped to
``[1, 2^24 - 1]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from wetok.context import PROB_TOTAL, ContextModel, token_bits
from wetok.errors import ContextModelError
from wetok.prior import Prior

LEFT_UP = ((0, -1), (-1, -1), (-1, 0), (-1, 1))  # left, up-left, up, up-right: the baseline neighbourhood
WIDE = (*LEFT_UP, (0, -2), (-2, 0), (-1, -2), (-2, 1))  # plus two left, two up, up-left-left, up-up-right
WIDER = (*WIDE, (-2, -1), (-2, 2), (0, -3), (-3, 0))  # 12 neighbours: the default (benchmarks/README.md)
WEIGHT_BITS = 8  # weights in 1/256 nat
TABLE_SHIFT = 2  # table step 1/64 nat
TABLE_RANGE_NATS = 10  # logits clipped to ±10 nats: P(bit) within [4.5e-5, 1 - 4.5e-5]


def as_grids(token_batches: Iterable) -> list[np.ndarray]:
    """Token batches ``[B, h, w, g]`` or grids ``[h, w, g]`` (numpy or torch) → list of uint-valued grids."""
    grids = []
    for batch in token_batches:
        t = np.asarray(batch.cpu() if hasattr(batch, "cpu") else batch)
        grids += list(t) if t.ndim == 4 else [t]
    return grids


def neighbour_features(grid: np.ndarray, offsets: tuple[tuple[int, int], ...], group_bits: int) -> np.ndarray:
    """Grid ``[h, w, g]`` → uint8 ``[h·w, K·D + K]``: each neighbour's bit row (zeros outside the grid), then
    one presence flag per neighbour."""
    h, w, _ = grid.shape
    bits = token_bits(grid, group_bits)
    d = bits.shape[-1]
    m = max(max(abs(a), abs(b)) for a, b in offsets)
    padded = np.zeros((h + m, w + 2 * m, d + 1), dtype=np.uint8)
    padded[m:, m : m + w, :d] = bits
    padded[m:, m : m + w, d] = 1
    parts = [padded[m + dr : m + dr + h, m + dc : m + dc + w] for dr, dc in offsets]
    rows = [p[..., :d] for p in parts] + [p[..., d:] for p in parts]
    return np.concatenate(rows, axis=-1).reshape(h * w, -1)


def fit_context_model(
    token_batches: Iterable,
    groups: int,
    group_bits: int,
    offsets: tuple[tuple[int, int], ...] = WIDER,
    epochs: int = 12,
    batch_size: int = 4096,
    lr: float = 0.02,
    l2: float = 1e-6,
    seed: int = 0,
) -> ContextModel:
    """Fit a context model to token grids (``[B, h, w, g]`` batches or ``[h, w, g]`` grids).

    Memory is ``(K + 1)·D + K`` bytes per token (the features as uint8); time is about a second per epoch per
    400 k tokens of a 5x8-bit model on one core.
    """
    grids = as_grids(token_batches)
    if not grids:
        raise ContextModelError("no tokens to fit a context model on")
    if any(g.shape[-1] != groups or int(g.min()) < 0 or int(g.max()) >= 1 << group_bits for g in grids):
        raise ContextModelError(f"tokens must be [.., {groups}] with values in [0, {1 << group_bits})")
    x = np.concatenate([neighbour_features(g, offsets, group_bits) for g in grids])
    y = np.concatenate([token_bits(g, group_bits).reshape(-1, groups * group_bits) for g in grids])
    w_in, w_own, bias = _adam_logistic(x, y, epochs, batch_size, lr, l2, seed)
    return quantise(groups, group_bits, offsets, w_in, w_own, bias)


def _adam_logistic(
    x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, lr: float, l2: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimise the mean cross-entropy of ``y [N, D]`` given ``x [N, F]`` and ``y``'s earlier columns."""
    n, d = y.shape
    rng = np.random.default_rng(seed)
    upper = np.triu(np.ones((d, d), dtype=np.float32), k=1)
    mean = np.clip(y.mean(0, dtype=np.float64), 1e-4, 1 - 1e-4)
    params = [
        np.zeros((x.shape[1], d), np.float32),
        np.zeros((d, d), np.float32),
        np.log(mean / (1 - mean)).astype(np.float32),
    ]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    steps = epochs * -(-n // batch_size)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = np.sort(order[start : start + batch_size])
            xb, yb = x[idx].astype(np.float32), y[idx].astype(np.float32)
            logits = xb @ params[0] + yb @ (params[1] * upper) + params[2]
            g = (1.0 / (1.0 + np.exp(-logits)) - yb) / len(idx)
            grads = [xb.T @ g + l2 * params[0], (yb.T @ g) * upper, g.sum(0)]
            step += 1
            rate = lr * 0.5 * (1 + np.cos(np.pi * step / steps))  # cosine decay to zero
            for p, gr, (m1, m2) in zip(params, grads, moments, strict=True):
                m1 *= 0.9
                m1 += 0.1 * gr
                m2 *= 0.999
                m2 += 0.001 * gr * gr
                p -= rate * (m1 / (1 - 0.9**step)) / (np.sqrt(m2 / (1 - 0.999**step)) + 1e-8)
    return params[0], params[1] * upper, params[2]


def quantise(
    groups: int,
    group_bits: int,
    offsets: tuple[tuple[int, int], ...],
    w_in: np.ndarray,
    w_own: np.ndarray,
    bias: np.ndarray,
    weight_bits: int = WEIGHT_BITS,
    table_shift: int = TABLE_SHIFT,
    range_nats: float = TABLE_RANGE_NATS,
) -> ContextModel:
    """Float weights (``w_in [K·D + K, D]`` as :func:`neighbour_features` orders its columns) → integers."""
    d, k = groups * group_bits, len(offsets)
    scale = float(1 << weight_bits)

    def q(a: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(a, np.float64) * scale).astype(np.int32)

    step = 2.0 ** (table_shift - weight_bits)  # nats per table entry
    half = int(round(range_nats / step))
    z = np.arange(-half, half + 1, dtype=np.float64) * step
    table = np.clip(np.round(PROB_TOTAL / (1 + np.exp(-z))), 1, PROB_TOTAL - 1).astype(np.int32)
    return ContextModel(
        groups=groups,
        group_bits=group_bits,
        offsets=tuple(offsets),
        weight_bits=weight_bits,
        table_shift=table_shift,
        bias=q(bias),
        present=q(w_in[k * d :].reshape(k, d)),
        neighbour=q(w_in[: k * d].reshape(k, d, d)),
        own=q(np.triu(w_own, k=1)),
        table=table,
    )


def bits_report(grids: list[np.ndarray], prior: Prior | None, context: ContextModel | None) -> dict:
    """Bits per token of ``grids`` under the static prior, the context model and the empirical per-group
    entropy (what the best static table fitted to these very tokens would get)."""
    tokens = sum(g.shape[0] * g.shape[1] for g in grids)
    out: dict = {"tokens": tokens}
    if tokens == 0:
        return out
    flat = np.concatenate([g.reshape(-1, g.shape[-1]) for g in grids])
    entropy = 0.0
    for j in range(flat.shape[1]):
        p = np.bincount(flat[:, j]).astype(np.float64) / len(flat)
        p = p[p > 0]
        entropy -= float((p * np.log2(p)).sum())
    out["empirical_entropy"] = entropy
    if prior is not None:
        out["static"] = prior.ideal_bits(flat) / tokens
    if context is not None:
        out["context"] = sum(context.ideal_bits(g) for g in grids) / tokens
    return out


def fit_entropy_tables(
    token_batches: Iterable,
    groups: int,
    group_bits: int,
    directory: str | Path,
    *,
    static: bool = True,
    context: bool = True,
    offsets: tuple[tuple[int, int], ...] = WIDER,
) -> dict:
    """Fit and save a model directory's entropy tables on training tokens: ``prior.json`` (``static``)
    and ``context.json`` (``context``; skipped when ``g·d'`` is too large for a context model). Returns
    :func:`bits_report` on the fitting tokens (what training export and ``wetok fit-prior`` print)."""
    from wetok.context import MAX_TOKEN_BITS
    from wetok.prior import fit_prior

    grids = as_grids(token_batches)
    prior = fit_prior(grids, groups, group_bits) if static else _existing_prior(directory, groups, group_bits)
    model = None
    if context and groups * group_bits <= MAX_TOKEN_BITS:
        model = fit_context_model(grids, groups, group_bits, offsets=offsets)
    if static:
        prior.save(directory)
    if model is not None:
        model.save(directory)
    return bits_report(grids, prior, model)


def _existing_prior(directory: str | Path, groups: int, group_bits: int) -> Prior:
    from wetok.prior import PRIOR_NAME

    path = Path(directory) / PRIOR_NAME
    return Prior.load(path) if path.is_file() else Prior.uniform(groups, group_bits)


__all__ = [
    "LEFT_UP",
    "WIDE",
    "WIDER",
    "as_grids",
    "bits_report",
    "fit_context_model",
    "fit_entropy_tables",
    "neighbour_features",
    "quantise",
]
