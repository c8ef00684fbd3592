"""Bjøntegaard deltas between two rate–distortion curves (VCEG-M33, 2001; the cubic-fit form of JCTVC's
and CompressAI's reports).

``bd_rate``: the mean rate difference, in percent, of ``test`` against ``reference`` at equal quality;
``bd_psnr``: the mean quality difference, in dB, at equal rate. Both fit a cubic (a lower degree below four
points) to each curve, in log-rate, and average over the interval where the curves overlap; ``None`` when
they do not overlap or have fewer than two points. Negative BD-rate: ``test`` needs fewer bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _points(rates: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    pairs = sorted({(float(r), float(q)) for r, q in zip(rates, quality, strict=True) if r > 0})
    if len(pairs) < 2:
        return None
    r, q = np.array(pairs).T
    return np.log10(r), q


def _mean_gap(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> float | None:
    """Mean of ``y2(x) - y1(x)`` over the overlap of the two ``x`` ranges, from polynomial fits."""
    lo, hi = max(x1.min(), x2.min()), min(x1.max(), x2.max())
    if not hi > lo:
        return None
    integrals = []
    for x, y in ((x1, y1), (x2, y2)):
        poly = np.polyint(np.polyfit(x, y, min(3, len(x) - 1)))
        integrals.append(np.polyval(poly, hi) - np.polyval(poly, lo))
    return float((integrals[1] - integrals[0]) / (hi - lo))


def bd_rate(
    ref_rates: Sequence[float], ref_psnr: Sequence[float], rates: Sequence[float], psnr: Sequence[float]
) -> float | None:
    """Percent rate change of the test curve against the reference at equal PSNR (over their overlap)."""
    ref, test = _points(ref_rates, ref_psnr), _points(rates, psnr)
    if ref is None or test is None:
        return None
    gap = _mean_gap(ref[1], ref[0], test[1], test[0])  # log-rate as a function of quality
    return None if gap is None else float((10**gap - 1) * 100)


def bd_psnr(
    ref_rates: Sequence[float], ref_psnr: Sequence[float], rates: Sequence[float], psnr: Sequence[float]
) -> float | None:
    """Mean PSNR difference (dB) of the test curve against the reference at equal rate, over the overlap."""
    ref, test = _points(ref_rates, ref_psnr), _points(rates, psnr)
    if ref is None or test is None:
        return None
    return _mean_gap(ref[0], ref[1], test[0], test[1])
