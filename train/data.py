"""Training data: any folder of images, random crops and flips, deterministic per (seed, sample index).

Every sample is a pure function of ``(seed, index)``, so a resumed run sees exactly the batches the
uninterrupted run would have seen, whatever the number of worker processes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from wetok import fileio
from wetok.image import uint8_to_unit
from wetok_train.validation import split_images

log = logging.getLogger(__name__)


def find_images(root: str | Path) -> list[Path]:
    """All image files under ``root``, recursively, in sorted order."""
    if not Path(root).exists():
        raise FileNotFoundError(f"no such data folder: {root}")
    return fileio.find_images([root])


def _load_rgb(path: Path, min_side: int) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if min(im.size) < min_side:
                warnings.warn(f"skipping {path}: smaller than {min_side}px", stacklevel=2)
                return None
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
        return None


class CropDataset(Dataset):
    """Random ``crop``×``crop`` patches in ``[-1, 1]`` (``[3, crop, crop]``), with flips and random zoom-out.

    With probability ``zoom_prob`` a patch covers a larger square (side up to ``crop / zoom_min``) scaled
    down to ``crop``. Images are decoded once and kept in memory as uint8 (small datasets; CPU decoding is
    the bottleneck). ``split``: ``train`` leaves out the validation photos (:mod:`wetok_train.validation`),
    ``all`` takes every image.
    """

    def __init__(
        self,
        root: str | Path,
        crop: int,
        seed: int = 0,
        zoom_prob: float = 0.5,
        zoom_min: float = 0.5,
        split: str = "all",
    ) -> None:
        self.crop, self.seed, self.zoom_prob, self.zoom_min = crop, seed, zoom_prob, zoom_min
        arrays = [_load_rgb(p, crop) for p in split_images(find_images(root), split)]
        self.images = [a for a in arrays if a is not None]
        if not self.images:
            kept = " outside the validation split" if split == "train" else ""
            raise ValueError(f"no usable images (at least {crop}px on the short side){kept} under {root}")

    def __len__(self) -> int:
        return 1 << 62  # an endless stream: index = global sample number

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        img = self.images[int(rng.integers(len(self.images)))]
        h, w = img.shape[:2]
        scale = 1.0
        if self.zoom_prob > 0 and rng.random() < self.zoom_prob:  # zoom out: more content per crop
            scale = rng.uniform(max(self.crop / min(h, w), self.zoom_min), 1.0)
        size = int(round(self.crop / scale))
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        patch = img[y : y + size, x : x + size]
        if size != self.crop:
            patch = np.asarray(Image.fromarray(patch).resize((self.crop, self.crop), Image.BICUBIC))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return uint8_to_unit(torch.from_numpy(np.array(patch)).permute(2, 0, 1))


class StepSampler(Sampler[int]):
    """Global sample indices for this rank, starting at ``start_step``: step ``s`` of rank ``r`` takes
    samples ``(s·world + r)·batch … + batch`` (a distributed sampler over an endless stream)."""

    def __init__(self, batch_size: int, start_step: int = 0, rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.start_step, self.rank, self.world = batch_size, start_step, rank, world

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            base = (step * self.world + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            step += 1

    def __len__(self) -> int:
        return 1 << 62
