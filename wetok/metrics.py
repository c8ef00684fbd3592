"""Image-quality metrics on 8-bit RGB: PSNR, SSIM, MS-SSIM, and the FID / KID statistics on feature sets.

SSIM and MS-SSIM follow Wang et al. ("Image quality assessment: from error visibility to structural
similarity", 2004; "Multi-scale structural similarity", 2003) exactly as `pytorch_msssim` computes them:
11-tap Gaussian window (sigma 1.5), "valid" filtering (no padding), K1 = 0.01, K2 = 0.03, data range 255,
mean over channels. FID is the Fréchet distance of Heusel et al. (2017); KID the unbiased polynomial-kernel
MMD of Bińkowski et al. (2018), as computed by clean-fid.

Images are `[H, W, C]` (or `[H, W]`) arrays, numpy or torch, holding 8-bit values 0 … 255 (any dtype); use
`to_uint8_rgb` to turn a model's `[-1, 1]` output into that. Feature sets are `[N, D]` arrays.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from wetok.image import unit_to_uint8

ArrayLike = np.ndarray | torch.Tensor

_WIN_SIZE = 11
_WIN_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def to_uint8_rgb(x: torch.Tensor) -> np.ndarray:
    """Quantise `[3, H, W]` or `[B, 3, H, W]` values in [-1, 1] to uint8 `[H, W, 3]` / `[B, H, W, 3]`."""
    return unit_to_uint8(x.cpu()).movedim(-3, -1).numpy()


def _as_float64(img: ArrayLike) -> torch.Tensor:
    if isinstance(img, np.ndarray):
        return torch.from_numpy(np.asarray(img, dtype=np.float64))
    return img.detach().cpu().to(torch.float64)


def psnr(a: ArrayLike, b: ArrayLike, max_val: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two same-shape images with values in [0, max_val].

    Computed from the MSE over every element (all channels together), in float64. Returns `inf` for
    identical inputs. For a set of images, average the per-image values.
    """
    x, y = _as_float64(a), _as_float64(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = float(torch.mean((x - y) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(max_val**2 / mse)


def _to_nchw(img: ArrayLike) -> torch.Tensor:
    """`[H, W]` or `[H, W, C]` image → float64 `[1, C, H, W]`."""
    x = _as_float64(img)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise ValueError(f"expected an [H, W] or [H, W, C] image, got shape {tuple(x.shape)}")
    return x.permute(2, 0, 1)[None].contiguous()


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _to_nchw(a), _to_nchw(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y


def _gaussian_window(size: int = _WIN_SIZE, sigma: float = _WIN_SIGMA) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _gaussian_filter(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filter of `[N, C, H, W]`, per channel, as shifted in-place sums (about 3x faster
    on CPU than a grouped float64 conv2d, equal to round-off)."""
    k = win.numel()
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    rows = x[..., :w] * win[0]
    for i in range(1, k):
        rows.add_(x[..., i : i + w], alpha=float(win[i]))
    out = rows[..., :h, :] * win[0]
    for i in range(1, k):
        out.add_(rows[..., i : i + h, :], alpha=float(win[i]))
    return out


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel SSIM and contrast-structure term, each `[N, C]`; the five local moments in one pass."""
    if min(x.shape[-2:]) < _WIN_SIZE:
        raise ValueError(f"image side {min(x.shape[-2:])} is smaller than the {_WIN_SIZE}-tap SSIM window")
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    moments = _gaussian_filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), _gaussian_window())
    mu_x, mu_y, xx, yy, xy = moments.split(x.shape[1], dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.mean(dim=(-2, -1)), cs_map.mean(dim=(-2, -1))


def detail_energy(img: ArrayLike) -> float:
    """Fine detail of an image: the mean squared 4-neighbour Laplacian of its grey (BT.601 luma) values."""
    grey = _as_float64(img)
    if grey.ndim == 3:
        grey = grey @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    if min(grey.shape) < 3:
        raise ValueError(f"detail energy needs images of at least 3x3 pixels, got {tuple(grey.shape)}")
    c = grey[1:-1, 1:-1]
    lap = 4 * c - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float((lap**2).mean())


def detail_ratio(original: ArrayLike, decoded: ArrayLike) -> float:
    """How much of the original's fine detail a decode has (:func:`detail_energy` of decoded over that of
    the original): ~0.05 for a smooth regression decoder, ~1 for one that paints texture back."""
    return detail_energy(decoded) / max(detail_energy(original), 1e-12)


def ssim(a: ArrayLike, b: ArrayLike, data_range: float = 255.0) -> float:
    """Structural similarity of two `[H, W, C]` images (values 0 … data_range), mean over channels.

    Returns a value in [-1, 1]; 1 for identical images. Both sides must be ≥ 11 pixels.
    """
    x, y = _pair(a, b)
    return float(_ssim_and_cs(x, y, data_range)[0].mean())


def ms_ssim(a: ArrayLike, b: ArrayLike, data_range: float = 255.0) -> float:
    """Multi-scale SSIM (5 scales, weights `MS_SSIM_WEIGHTS`) of two `[H, W, C]` images, mean over channels.

    Between scales the images are 2x average-pooled (odd sides padded, as pytorch_msssim does). Returns a
    value in [0, 1]; 1 for identical images. The shorter side must exceed 160 pixels, so that the
    11-tap window still fits at the coarsest scale (e.g. 256x256 and Kodak's 768x512 are fine).
    """
    x, y = _pair(a, b)
    min_side = (_WIN_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1)
    if min(x.shape[-2:]) <= min_side:
        raise ValueError(f"MS-SSIM needs both image sides > {min_side} pixels, got {tuple(x.shape[-2:])}")
    return _ms_ssim(x, y, data_range, _ssim_and_cs(x, y, data_range))


def _ms_ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float, first: tuple[torch.Tensor, torch.Tensor]
) -> float:
    ssim_c, cs_c = first
    factors = []
    for _ in range(1, len(MS_SSIM_WEIGHTS)):
        factors.append(torch.relu(cs_c))
        padding = [s % 2 for s in x.shape[-2:]]
        x, y = F.avg_pool2d(x, 2, padding=padding), F.avg_pool2d(y, 2, padding=padding)
        ssim_c, cs_c = _ssim_and_cs(x, y, data_range)
    factors.append(torch.relu(ssim_c))
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64).view(-1, 1, 1)
    return float(torch.prod(torch.stack(factors) ** weights, dim=0).mean())


def ssim_and_ms_ssim(
    a: ArrayLike, b: ArrayLike, data_range: float = 255.0
) -> tuple[float | None, float | None]:
    """``(SSIM, MS-SSIM)`` sharing the full-resolution pass; MS-SSIM is None when a side is ≤ 160 pixels,
    both are None when a side is below the 11-pixel window (a 1x1 image has no structure to compare)."""
    x, y = _pair(a, b)
    if min(x.shape[-2:]) < _WIN_SIZE:
        return None, None
    first = _ssim_and_cs(x, y, data_range)
    if min(x.shape[-2:]) <= (_WIN_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1):
        return float(first[0].mean()), None
    return float(first[0].mean()), _ms_ssim(x, y, data_range, first)


# ---- FID / KID on feature sets ------------------------------------------------------------------------


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and (unbiased) covariance `[D, D]` of a feature set `[N, D]`, in float64."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"expected features [N >= 2, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues → 0)."""
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance_from_stats(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """Fréchet distance `|μa - μb|² + tr(Σa + Σb - 2 (Σa Σb)^½)` between two Gaussians.

    `tr((Σa Σb)^½)` equals `tr((Σa^½ Σb Σa^½)^½)`, whose argument is symmetric PSD, so two `eigh` calls
    suffice (no scipy).
    """
    sqrt_a = _psd_sqrt(np.asarray(sigma_a, dtype=np.float64))
    inner = sqrt_a @ np.asarray(sigma_b, dtype=np.float64) @ sqrt_a
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = np.asarray(mu_a, dtype=np.float64) - np.asarray(mu_b, dtype=np.float64)
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * tr_covmean)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID-style Fréchet distance between the Gaussian fits of two feature sets `[N, D]` and `[M, D]`.

    Strongly biased upwards for small N: report the sample count (or KID) beside it.
    """
    return frechet_distance_from_stats(*feature_stats(feats_a), *feature_stats(feats_b))


class KID(NamedTuple):
    """Kernel inception distance: mean and standard deviation over random subsets."""

    mean: float
    std: float


def kernel_inception_distance(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> KID:
    """Unbiased MMD² with the kernel `k(x, y) = (x·y / D + 1)³`, over `subsets` random subsets.

    Each subset draws `m = min(N, M, subset_size)` rows from each set without replacement (as clean-fid
    does). Near 0 (can be slightly negative) for samples of one distribution.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected features [N, D] and [M, D], got {a.shape} and {b.shape}")
    m = min(a.shape[0], b.shape[0], subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    dim = a.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values[i] = within - 2.0 * k_xy.mean()
    return KID(mean=float(values.mean()), std=float(values.std()))
