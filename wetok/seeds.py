"""Seed search: the encoder has the original, so it can pick the noise seed whose decode looks closest.

The distance is MS-SSIM, which no training loss of wetok optimises (L1, effnet-lite0 and the discriminator
do), so a better seed by this measure is a better seed, not one the decoder was trained to please.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wetok.format import MAX_SEED, DecoderSetting
from wetok.metrics import ms_ssim, psnr, ssim


def search_seed(
    decode: Callable[[int], np.ndarray], original: np.ndarray, setting: DecoderSetting, tries: int
) -> DecoderSetting:
    """The setting with the seed among ``setting.seed … setting.seed + tries - 1`` whose ``decode(seed)``
    (``[H, W, 3]`` uint8) has the highest MS-SSIM against ``original``; ties keep the lower seed."""
    if tries < 1:
        raise ValueError(f"seed search needs at least 1 try, not {tries}")
    best, best_score = setting.seed, -np.inf
    for seed in range(setting.seed, min(setting.seed + tries, MAX_SEED + 1)):
        score = seed_score(decode(seed), original)
        if score > best_score:
            best, best_score = seed, score
    return DecoderSetting(setting.realism, best)


def seed_score(decoded: np.ndarray, original: np.ndarray) -> float:
    """MS-SSIM where the image is large enough for its five scales (sides over 160 px), SSIM below that,
    PSNR for images too small even for SSIM's window (a seed hardly matters there)."""
    side = min(original.shape[:2])
    if side > 160:
        return float(ms_ssim(decoded, original))
    return float(ssim(decoded, original)) if side >= 11 else psnr(decoded, original)
