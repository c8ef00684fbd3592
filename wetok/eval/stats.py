"""Set-level statistics for ``wetok eval``: per-image quality scores, FID / KID on patches with a feature
cache, and codebook usage per token group.

* Per image: PSNR, SSIM and MS-SSIM on 8-bit RGB (:mod:`wetok.metrics`), and a perceptual distance, true
  LPIPS (VGG) when its weights are on disk, else the named EfficientNet-Lite0 substitute.
* FID (Heusel et al., 2017) and KID (Bińkowski et al., 2018) with the standard TF FID Inception. With few
  images they are computed on non-overlapping square patches (as image-compression papers do, e.g.
  Mentzer et al., "High-Fidelity Generative Image Compression", 2020), and the sample count goes with them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wetok import metrics
from wetok.fileio import atomic_path, cache_dir
from wetok.image import array_to_tensor
from wetok.prior import PRIOR_TOTAL, Prior

WHOLE_IMAGE_FID_FROM = 500  # with at least this many images FID uses whole images, else patches


# ---- per-image scores ---------------------------------------------------------------------------------


def load_distance(name: str) -> tuple[torch.nn.Module | None, str | None, str | None]:
    """``(network, its name, note)`` for ``--perceptual``: ``auto`` (true LPIPS when its weights are
    present, else ``effnet-lite0``), ``lpips-vgg``, ``effnet-lite0`` or ``none``."""
    from wetok.perceptual import load_perceptual

    if name == "none":
        return None, None, None
    if name != "auto":
        net = load_perceptual(name)
        return net, name, None
    try:
        return load_perceptual("lpips-vgg"), "lpips-vgg", None
    except RuntimeError as e:
        missing = f"true LPIPS unavailable ({e})"
    try:
        note = f"{missing}; perceptual column is effnet-lite0, an LPIPS-style substitute, not LPIPS"
        return load_perceptual("effnet-lite0"), "effnet-lite0", note
    except RuntimeError as e:
        return None, None, f"{missing}; no perceptual distance ({e})"


class _RecentFeatures(torch.nn.Module):
    """Wraps a feature network and keeps the outputs of its two most recent inputs (by identity)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self._recent: list[tuple[torch.Tensor, object]] = []

    def forward(self, x: torch.Tensor) -> object:
        for i, (seen, out) in enumerate(self._recent):
            if seen is x:
                self._recent.append(self._recent.pop(i))
                return out
        out = self.inner(x)
        self._recent = [*self._recent[-1:], (x, out)]
        return out


class PerceptualScorer:
    """``scorer(a, b)``: the distance between uint8 ``[H, W, 3]`` images (0 for identical ones).

    An original is scored against several reconstructions in a row, so its input tensor and feature maps
    are reused while ``a`` stays the same array.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        if hasattr(net, "features"):
            net.features = _RecentFeatures(net.features)
        self._orig: tuple[np.ndarray, torch.Tensor] | None = None

    @torch.inference_mode()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        if self._orig is None or self._orig[0] is not a:
            self._orig = (a, array_to_tensor(a))
        return float(self.net(self._orig[1], array_to_tensor(b))[0])


# ---- FID / KID on patches -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FidResult:
    """FID and KID of one set of reconstructions against the originals, on ``n`` samples each."""

    fid: float
    kid: float
    kid_std: float
    n: int
    patch: int  # patch side in pixels; 0 = whole images (resized to 299)


def auto_patch(images: list[np.ndarray]) -> int:
    """0 (whole images) for large sets, else the largest of 256 / 128 that fits every image, else 0."""
    if len(images) >= WHOLE_IMAGE_FID_FROM:
        return 0
    side = min(min(im.shape[:2]) for im in images)
    return next((p for p in (256, 128) if side >= p), 0)


def patches(rgb: np.ndarray, patch: int) -> np.ndarray:
    """Non-overlapping ``patch``² tiles of a uint8 ``[H, W, 3]`` image on a grid from the top-left corner
    (remainders dropped) → ``[n, patch, patch, 3]``; ``patch = 0`` gives the whole image ``[1, H, W, 3]``."""
    if patch <= 0:
        return rgb[None]
    h, w = rgb.shape[0] // patch, rgb.shape[1] // patch
    tiles = rgb[: h * patch, : w * patch].reshape(h, patch, w, patch, 3).swapaxes(1, 2)
    return np.ascontiguousarray(tiles.reshape(-1, patch, patch, 3))


def default_cache_dir() -> Path:
    return cache_dir() / "fid-features"


class FeatureBank:
    """FID Inception features of images' patches, cached on disk by the SHA-256 of the patch pixels.

    Originals and classic-codec reconstructions are deterministic, so a second evaluation of the same set
    runs the network only on the new model's reconstructions.
    """

    def __init__(self, cache_dir: Path | None = None, batch_size: int = 16) -> None:
        from wetok.perceptual import FIDInception

        self.net = FIDInception(batch_size=batch_size)
        self.cache_dir = cache_dir
        self.computed = 0

    def _path(self, tiles: np.ndarray) -> Path | None:
        if self.cache_dir is None:
            return None
        h = hashlib.sha256(f"fid-tf-inception-pool3|{tiles.shape}".encode())
        h.update(tiles.tobytes())
        return self.cache_dir / f"{h.hexdigest()[:32]}.npy"

    def features(self, images: list[np.ndarray], patch: int) -> np.ndarray:
        """Features ``[N, 2048]`` of all patches of ``images``, computed in batches for cache misses."""
        tiles = [patches(im, patch) for im in images]
        paths = [self._path(t) for t in tiles]
        out = [np.load(p) if p is not None and p.is_file() else None for p in paths]
        todo = [i for i, f in enumerate(out) if f is None]
        if todo and patch > 0:  # equal-size patches: one batched pass over every cache miss
            feats = self.net.features(np.concatenate([tiles[i] for i in todo]))
            fresh = np.split(feats, np.cumsum([len(tiles[i]) for i in todo])[:-1])
        else:  # whole images of differing sizes: one at a time
            fresh = [self.net.features(tiles[i]) for i in todo]
        for i, f in zip(todo, fresh, strict=True):
            out[i] = f
            self.computed += len(f)
            self._store(paths[i], f)
        return np.concatenate(out)  # type: ignore[arg-type]

    def _store(self, path: Path | None, feats: np.ndarray) -> None:
        if path is None:
            return
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, feats)


def fid_kid(real: np.ndarray, fake: np.ndarray, patch: int) -> FidResult:
    """FID and KID (clean-fid's 100 subsets of up to 1000) between two feature sets ``[N, 2048]``."""
    kid = metrics.kernel_inception_distance(real, fake)
    return FidResult(
        metrics.frechet_distance(real, fake), kid.mean, kid.std, int(min(len(real), len(fake))), patch
    )


# ---- codebook usage -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupStats:
    """Token statistics of one group over the evaluated set.

    ``used``: distinct symbols seen, of ``size = 2^d'``. ``entropy``: empirical entropy of the group's
    symbols (bits/token, the best a static code fitted to this very set could do). ``prior_bits``:
    cross-entropy under the model's prior (bits/token the range coder aims at). ``perplexity = 2^entropy``.
    """

    group: int
    used: int
    size: int
    entropy: float
    prior_bits: float

    @property
    def usage(self) -> float:
        return self.used / self.size

    @property
    def perplexity(self) -> float:
        return 2.0**self.entropy


@dataclass(frozen=True)
class CodebookStats:
    """Per-group statistics plus the coded cost: ``coded_bits`` = payload bits per token of the files."""

    groups: list[GroupStats]
    tokens: int
    coded_bits: float

    @property
    def prior_bits(self) -> float:
        return sum(g.prior_bits for g in self.groups)

    @property
    def entropy(self) -> float:
        return sum(g.entropy for g in self.groups)

    def to_dict(self) -> dict:
        rows = [
            {
                "group": g.group,
                "used": g.used,
                "size": g.size,
                "usage": g.usage,
                "entropy_bits": g.entropy,
                "perplexity": g.perplexity,
                "prior_bits": g.prior_bits,
            }
            for g in self.groups
        ]
        return {
            "tokens": self.tokens,
            "coded_bits_per_token": self.coded_bits,
            "prior_bits_per_token": self.prior_bits,
            "entropy_bits_per_token": self.entropy,
            "groups": rows,
        }


def codebook_stats(tokens: list[np.ndarray], prior: Prior, payload_bytes: int) -> CodebookStats:
    """Statistics of token grids ``[1, h, w, g]`` (all from one model) and their total payload bytes."""
    g = prior.groups
    flat = np.concatenate([np.asarray(t).reshape(-1, g) for t in tokens])
    log_p = np.log2(prior.frequencies.astype(np.float64) / PRIOR_TOTAL)
    rows = []
    for j in range(g):
        counts = np.bincount(flat[:, j], minlength=1 << prior.group_bits)
        p = counts[counts > 0] / len(flat)
        entropy = float(-(p * np.log2(p)).sum())
        cross = float(-(counts * log_p[j]).sum() / len(flat))
        rows.append(GroupStats(j, int((counts > 0).sum()), 1 << prior.group_bits, entropy, cross))
    return CodebookStats(rows, len(flat), 8.0 * payload_bytes / len(flat))


def finite_or_none(x: float | None) -> float | None:
    """JSON-safe number: ``inf`` / ``nan`` (e.g. PSNR of a lossless file) become None."""
    return None if x is None or not math.isfinite(x) else float(x)
