"""The validation split: photos of the training folder that training never sees, for choosing recipes and
checkpoints (Kodak and the hidden photos stay the test: nothing is chosen on them).

A photo is held out when the SHA-256 of ``wetok-validation-v1\\0`` + its file name (not its folder) is 0
modulo 13: deterministic, the same on every machine, and independent of which other photos the folder
holds (adding photos never moves one between the splits). Of the project's 195 training photos, 14 are
held out; TRAINING.md lists them.

:func:`measure` gives what a checkpoint is chosen on: PSNR, detail kept (decoded / original Laplacian
energy, :func:`wetok.metrics.detail_ratio`) and the seed spread (mean |seed 0 - seed 1| on 0..255).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wetok import fileio
from wetok.image import tensor_to_array, uint8_to_unit
from wetok.metrics import detail_ratio, psnr

SALT = b"wetok-validation-v1\0"
MODULUS = 13
SPLITS = ("train", "val", "all")


def is_validation(path: str | Path) -> bool:
    """Whether the photo at ``path`` belongs to the validation split (by its file name alone)."""
    digest = hashlib.sha256(SALT + Path(path).name.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % MODULUS == 0


def split_images(paths: Sequence[Path], split: str) -> list[Path]:
    """The ``paths`` of ``split``: ``train`` (the validation photos left out), ``val`` or ``all``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if split == "all":
        return list(paths)
    return [p for p in paths if is_validation(p) == (split == "val")]


def validation_images(data: str | Path, folder: str | Path = "") -> list[Path]:
    """The validation photos: every image of ``folder`` when given, else the validation split of ``data``."""
    if folder:
        return fileio.find_images([folder])
    return split_images(fileio.find_images([data]), "val")


def centre_crops(paths: Sequence[Path], crop: int, multiple: int, count: int) -> torch.Tensor:
    """One centre crop per photo, ``[N, 3, c, c]`` in ``[-1, 1]``: the first ``count`` photos (by name) at
    least ``crop`` pixels on the short side, ``c`` = ``crop`` rounded down to ``multiple``."""
    side = crop - crop % multiple
    crops = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                if min(w, h) < side:
                    continue
                left, top = (w - side) // 2, (h - side) // 2
                crops.append(np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8))
        except (OSError, ValueError) as e:  # as the training data does: skip it, say so
            warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
        if len(crops) == count:
            break
    if not crops or side < 3:
        raise ValueError(f"no validation photo of at least {crop}px on the short side")
    return uint8_to_unit(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2))


def measure(pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Means over ``(original, decoded with seed 0, decoded with seed 1)`` uint8 ``[H, W, 3]`` triples."""
    rows = [
        (psnr(a, o), detail_ratio(o, a), float(np.abs(a.astype(float) - b.astype(float)).mean()))
        for o, a, b in pairs
    ]
    p, d, s = np.mean(rows, axis=0)
    return {"psnr": round(float(p), 3), "detail_kept": round(float(d), 4), "seed_spread": round(float(s), 3)}


@torch.no_grad()
def measure_model(
    decode: Callable[[torch.Tensor, int], torch.Tensor], encode: Callable, crops: torch.Tensor
) -> dict[str, float]:
    """:func:`measure` of a model on ``crops`` ``[N, 3, c, c]``: tokens from ``encode``, then
    ``decode(tokens, seed)`` at seeds 0 and 1, one crop at a time (memory stays that of one crop)."""
    triples = []
    for crop in crops.split(1):
        tokens = encode(crop)
        a, b = (tensor_to_array(decode(tokens, s)[0].float().cpu()) for s in (0, 1))
        triples.append((tensor_to_array(crop[0]), a, b))
    return measure(triples)
