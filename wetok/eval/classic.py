"""Classic image codecs through Pillow, and size matching by bisection on their quality knob.

Codecs: JPEG (libjpeg, ``optimize=True``, 4:2:0), WebP (libwebp, ``method=6``), AVIF (libavif through
Pillow ≥ 11, default speed 6, 4:2:0) and JPEG 2000 (OpenJPEG, 9/7 irreversible wavelet, colour transform
on, one quality layer in ``rates`` mode). Each has one knob that grows the file: ``quality`` for the first
three, the nominal bits per pixel for JPEG 2000 (its compression ratio is ``24 / bpp``).

``match_size`` finds the largest file not over a byte budget: integer bisection on quality (7–8 encodes),
geometric bisection on the nominal rate for JPEG 2000. When even the smallest setting is too big, the
smallest file is returned with ``reached=False`` so that callers can say so.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, features


@dataclass(frozen=True)
class ClassicCodec:
    """A Pillow codec with one size knob ``setting`` in ``[low, high]`` (file size grows with it)."""

    name: str  # CLI name: "jpeg", "webp", "avif", "jpeg2000"
    label: str  # display name
    pil_format: str
    feature: str  # PIL.features name that must be present
    knob: str  # "q" (quality) or "bpp" (nominal rate)
    low: float
    high: float
    integer: bool
    sweep: tuple[float, ...]  # default settings of an RD sweep, low to high rate
    color: str  # in plots

    def save_kwargs(self, setting: float) -> dict:
        if self.name == "jpeg":
            return {"quality": int(setting), "optimize": True}
        if self.name == "webp":
            return {"quality": int(setting), "method": 6}
        if self.name == "avif":
            return {"quality": int(setting)}
        return {"quality_mode": "rates", "quality_layers": [24.0 / setting], "irreversible": True, "mct": 1}

    def describe(self, setting: float) -> str:
        """``q=37`` or ``bpp=0.123`` (nominal rate for JPEG 2000)."""
        return f"q={int(setting)}" if self.integer else f"bpp={setting:.3g}"


CLASSIC_CODECS: dict[str, ClassicCodec] = {
    "jpeg": ClassicCodec("jpeg", "JPEG", "JPEG", "jpg", "q", 1, 95, True, (2, 5, 10, 25), "#1f77b4"),
    "webp": ClassicCodec("webp", "WebP", "WEBP", "webp", "q", 0, 100, True, (0, 10, 30, 60), "#2ca02c"),
    "avif": ClassicCodec("avif", "AVIF", "AVIF", "avif", "q", 0, 100, True, (0, 15, 35, 60), "#9467bd"),
    "jpeg2000": ClassicCodec(
        "jpeg2000",
        "JPEG 2000",
        "JPEG2000",
        "jpg_2000",
        "bpp",
        0.005,
        8.0,
        False,
        (0.05, 0.1, 0.2, 0.4),
        "#ff7f0e",
    ),
}


BD_REFERENCE = "jpeg2000"  # the curve BD-rates are measured against (the rate sweep, wetok.eval.bd)


def get_codec(name: str) -> ClassicCodec:
    key = name.strip().lower().replace("-", "").replace("j2k", "jpeg2000").replace("jpg", "jpeg")
    if key not in CLASSIC_CODECS:
        raise ValueError(f"unknown classic codec {name!r}; choose from {', '.join(CLASSIC_CODECS)}")
    return CLASSIC_CODECS[key]


def unavailable_reason(codec: ClassicCodec) -> str | None:
    """Why this Pillow cannot run ``codec`` (None when it can)."""
    try:
        ok = features.check(codec.feature)
    except ValueError:
        ok = False
    return None if ok else f"{codec.label} skipped: this Pillow build lacks '{codec.feature}' support"


def encode(codec: ClassicCodec, rgb: np.ndarray, setting: float) -> bytes:
    """uint8 RGB ``[H, W, 3]`` → the whole file, as Pillow writes it (headers included)."""
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, codec.pil_format, **codec.save_kwargs(setting))
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    """File bytes → uint8 RGB ``[H, W, 3]``."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


@dataclass(frozen=True)
class Match:
    """Result of :func:`match_size`: the chosen setting and file; ``reached`` is False when the codec could
    not get under the target and its smallest file is returned instead."""

    setting: float
    data: bytes
    reached: bool
    encodes: int
    encode_s: float  # wall time of the one encode that made ``data``


def largest_under(
    size_at: Callable[[float], int],
    low: float,
    high: float,
    target: int,
    integer: bool,
    iters: int = 8,
    guess: tuple[float, float] | None = None,
) -> tuple[float, bool]:
    """Largest setting in ``[low, high]`` whose size is ≤ ``target``, assuming size grows with the setting.

    Integer knobs bisect until adjacent (``high`` itself is tried last, if ever); real knobs bisect
    geometrically for ``iters`` steps inside the bracket ``guess`` (widened when it does not hold).
    Returns ``(setting, reached)``; ``(low, False)`` if even ``low`` is over the target.
    """
    lo, hi = guess if guess is not None else (low, high)
    if size_at(lo) > target:
        if lo == low or size_at(low) > target:
            return low, False
        lo, hi = low, lo
    if integer:
        hi = hi + 1 if hi == high else hi  # exclusive bound: `high + 1` is never encoded
    elif size_at(hi) <= target:
        if hi == high:
            return high, True
        lo, hi = hi, high
    for _ in range(iters if not integer else 64):
        if integer and hi - lo <= 1:
            break
        mid = (lo + hi) // 2 if integer else math.sqrt(lo * hi)
        if size_at(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo, True


def match_size(codec: ClassicCodec, rgb: np.ndarray, target_bytes: int, iters: int = 8) -> Match:
    """The largest ``codec`` file of ``rgb`` not over ``target_bytes`` (see :func:`largest_under`)."""
    cache: dict[float, tuple[bytes, float]] = {}

    def size_at(setting: float) -> int:
        if setting not in cache:
            t0 = time.perf_counter()
            data = encode(codec, rgb, setting)
            cache[setting] = (data, time.perf_counter() - t0)
        return len(cache[setting][0])

    guess = None
    if not codec.integer:  # the nominal rate lands near the real one: bracket it
        bpp = 8.0 * target_bytes / (rgb.shape[0] * rgb.shape[1])
        guess = (max(codec.low, bpp / 3), min(codec.high, bpp * 1.5))
    setting, reached = largest_under(
        size_at, codec.low, codec.high, target_bytes, codec.integer, iters, guess
    )
    # Sizes are not strictly monotone in the knob: keep the largest fitting file seen on the way.
    fitting = [(len(d), s) for s, (d, _) in cache.items() if len(d) <= target_bytes]
    if reached and fitting:
        setting = max(fitting)[1]
    size_at(setting)
    data, seconds = cache[setting]
    return Match(setting, data, reached, len(cache), seconds)
