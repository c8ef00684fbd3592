"""The rate knob without retraining: code a resampled image.

The encoder resizes the photo by a scale ``s`` before tokenizing and writes the coded size into the file
(format version 3); the decoder paints the coded size and resizes back to the original. Tokens, and so bits,
grow about as ``s²``: ``s = 0.5`` is about a quarter of today's rate, ``s = 2`` about four times (AV1's
super-resolution frames, VVC's reference picture resampling and JPEG XL's low-quality downsampling do the
same). This module is the policy; :class:`wetok.codec.Codec` only calls it.

* ``quality`` ``Q`` in 0..100: the scale ``2 ** ((Q - 50) / 25)``: 0 → 0.25, 25 → 0.5, 50 → 1 (the image's
  own size: today's file), 75 → 2, 100 → 4. Every 25 steps double the scale (about 4× the rate).
* ``bpp`` / ``size``: the largest file not above the target, by search over the rungs ``2 ** (k / 8)``,
  ``k = -16 … 16`` (0.25 … 4; each rung about +19 % rate). The first try is scale 1; its size predicts
  the rung (bits ∝ s²); then one rung at a time, up while the next rung still fits, down until one fits;
  it stops when the next step up would exceed the target. Each try is one encode. Among the fitting files
  found (the two largest scales) the encoder keeps the one whose decode is closest to the original by
  MS-SSIM, a distance no training loss of wetok optimises (L1, effnet-lite0 and the discriminator do).
  When even scale 0.25 is too big, its file is returned with ``reached=False``.
* No knob: scale 1, nothing resampled: exactly today's tokens and bytes.

Resampling is Pillow's ``LANCZOS`` (a = 3) on 8-bit RGB, both ways: deterministic, and what
``docs/format.md`` names as part of decoding. A scale whose coded size would pass the pixel limit
(:mod:`wetok.limits`) or the format's limits is lowered to the largest that fits, with a note.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from wetok import format as fmt
from wetok.limits import max_pixels

MIN_RUNG, MAX_RUNG, RUNGS_PER_OCTAVE = -16, 16, 8  # search scales 2^(k/8): 0.25 … 4
MIN_SCALE, MAX_SCALE = 2.0 ** (MIN_RUNG / RUNGS_PER_OCTAVE), 2.0 ** (MAX_RUNG / RUNGS_PER_OCTAVE)
KEEP = 2  # fitting candidates scored by MS-SSIM (the largest scales found)


class File(Protocol):
    """A coded file: its bytes (:class:`wetok.info.WtkFile`, kept parsed so nobody parses it back)."""

    @property
    def data(self) -> bytes: ...


Code = Callable[[float | None], File]  # scale (None: the image as it is) -> the file
Score = Callable[[File], float]  # a file -> closeness of its decode to the original (higher is better)


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` picked: the file, the scale it was coded at (1.0: not resampled), whether it is
    not above the target (always true without one), how many encodes and scoring decodes it took, its wall
    time, and notes for the user (a capped scale, an unreachable target)."""

    file: File
    scale: float
    reached: bool = True
    tries: int = 1
    scored: int = 0
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def data(self) -> bytes:
        return self.file.data


def quality_scale(quality: float) -> float:
    """The scale of ``-q quality`` (0..100): ``2 ** ((quality - 50) / 25)``."""
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must lie in 0..100, not {quality!r}")
    return 2.0 ** ((quality - 50) / 25)


def quality_of_scale(scale: float) -> float:
    """The quality whose scale is ``scale`` (the inverse of :func:`quality_scale`), for sweeps by scale."""
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise ValueError(f"scale {scale!r} outside {MIN_SCALE:g}..{MAX_SCALE:g}")
    return min(100.0, max(0.0, 50 + 25 * math.log2(scale)))


def rung_scale(rung: int) -> float:
    return 2.0 ** (rung / RUNGS_PER_OCTAVE)


def target_bytes(height: int, width: int, bpp: float | None = None, size: int | None = None) -> int | None:
    """The byte budget of ``bpp`` (bits per original pixel) or ``size``; ``None`` without either."""
    if bpp is not None and size is not None:
        raise ValueError("give a bits-per-pixel target or a size target, not both")
    if bpp is not None:
        if not (isinstance(bpp, (int, float)) and math.isfinite(bpp) and bpp > 0):
            raise ValueError(f"a bits-per-pixel target must be a positive number, not {bpp!r}")
        return int(bpp * height * width / 8)
    if size is not None:
        if type(size) is not int or size < 1:
            raise ValueError(f"a size target must be a positive number of bytes, not {size!r}")
    return size


def coded_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(Hc, Wc)``: each side ``max(1, round(scale * side))``, as the format requires."""
    return max(1, round(scale * height)), max(1, round(scale * width))


def fits(height: int, width: int, scale: float) -> bool:
    """Whether the coded size at ``scale`` lies within the pixel limit and the format's side limits."""
    hc, wc = coded_size(height, width, scale)
    return hc * wc <= min(max_pixels(), fmt.MAX_PIXELS) and max(hc, wc) <= fmt.MAX_SIDE


def cap_scale(height: int, width: int, scale: float) -> tuple[float, str | None]:
    """``scale``, or the largest below it whose coded size fits (:func:`fits`), with a note saying so."""
    if fits(height, width, scale):
        return scale, None
    limit = min(max_pixels(), fmt.MAX_PIXELS)
    capped = min(math.sqrt(limit / (height * width)), fmt.MAX_SIDE / max(height, width))
    while capped > 0 and not fits(height, width, capped):  # rounding may land a pixel over
        capped *= 0.999
    note = (
        f"scale {scale:.2f} would code {width}x{height} at more than the limit of {limit:,} pixels; "
        f"coded at scale {capped:.3f} instead"
    )
    return capped, note


def resample(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` → ``[size[0], size[1], 3]`` with Pillow's Lanczos (the same image if equal)."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.LANCZOS))


def choose(
    height: int,
    width: int,
    code: Code,
    score: Score | None = None,
    *,
    quality: float | None = None,
    bpp: float | None = None,
    size: int | None = None,
) -> Choice:
    """The file of an ``height x width`` image for one knob (none: ``code(None)``, today's file).

    ``code(scale)`` encodes at a scale; ``score(file)`` rates a candidate (needed only to choose among
    several fitting files; without it the largest scale wins)."""
    given = [name for name, v in (("quality", quality), ("bpp", bpp), ("size", size)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give one rate knob, not {' and '.join(given)}")
    start = time.perf_counter()
    target = target_bytes(height, width, bpp, size)
    if target is not None:
        choice = search(height, width, code, target, score)
    elif quality is not None:
        scale, note = cap_scale(height, width, quality_scale(quality))
        choice = Choice(code(scale), scale, notes=(note,) if note else ())
    else:
        choice = Choice(code(None), 1.0)
    return _timed(choice, time.perf_counter() - start)


def search(height: int, width: int, code: Code, target: int, score: Score | None = None) -> Choice:
    """The largest file not above ``target`` bytes over the rungs (see the module docstring)."""
    # The image itself is within the limits (the codec checked), so rung 0 fits; larger ones may not.
    top = max((k for k in range(0, MAX_RUNG + 1) if fits(height, width, rung_scale(k))), default=0)
    files: dict[int, File] = {}

    def size_at(k: int) -> int:
        if k not in files:
            files[k] = code(rung_scale(k))
        return len(files[k].data)

    ratio = target / size_at(0)  # bits grow about as s², i.e. 2^(k/4): predict the rung from scale 1
    k = int(np.clip(math.floor(RUNGS_PER_OCTAVE / 2 * math.log2(max(ratio, 1e-9))), MIN_RUNG, top))
    if size_at(k) <= target:
        while k < top and size_at(k + 1) <= target:
            k += 1
    else:
        while k > MIN_RUNG and size_at(k) > target:
            k -= 1
    notes = _capped_note(height, width, top) if k == top and top < MAX_RUNG else ()
    fitting = sorted((r for r, d in files.items() if len(d.data) <= target), reverse=True)[:KEEP]
    if not fitting:
        notes += (
            f"even the smallest scale ({MIN_SCALE:g}) gives {len(files[MIN_RUNG].data)} bytes, above the "
            f"target of {target} bytes: that smallest file is written",
        )
        return Choice(files[MIN_RUNG], rung_scale(MIN_RUNG), False, len(files), notes=notes)
    best = fitting[0]
    if score is not None and len(fitting) > 1:
        best = max(fitting, key=lambda r: score(files[r]))  # ties keep the larger scale (first)
    scored = len(fitting) if score is not None and len(fitting) > 1 else 0
    return Choice(files[best], rung_scale(best), True, len(files), scored, notes=notes)


def _capped_note(height: int, width: int, top: int) -> tuple[str, ...]:
    return (
        f"{width}x{height} cannot be coded above scale {rung_scale(top):.2f} within the pixel limit of "
        f"{min(max_pixels(), fmt.MAX_PIXELS):,}: the target may allow a larger file",
    )


def _timed(choice: Choice, seconds: float) -> Choice:
    return Choice(
        choice.file, choice.scale, choice.reached, choice.tries, choice.scored, seconds, choice.notes
    )


def closeness(decoded: np.ndarray, original: np.ndarray) -> float:
    """How close a candidate's decode is to the original: the seed search's distance (MS-SSIM, SSIM or PSNR
    by image size, :func:`wetok.setting.seed_score`): the encoder's two choices agree on what closer means."""
    from wetok.setting import seed_score

    return seed_score(decoded, original)
