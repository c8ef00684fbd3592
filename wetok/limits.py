"""Resource limits on what wetok reads: one pixel limit for every image (files, arrays, ``.wtk`` headers).

The default is Pillow's own (about 9459 x 9459 pixels), so a picture Pillow opens without complaint is
accepted, and a decompression bomb is refused before any pixel memory is allocated. ``wetok --max-pixels``
or ``$WETOK_MAX_PIXELS`` raise or lower it. This module imports neither torch nor Pillow, so the command line
can set the limit without loading them.
"""

from __future__ import annotations

import os

from wetok.errors import ImageTooLargeError

DEFAULT_MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS
MAX_PIXELS_ENV = "WETOK_MAX_PIXELS"
_max_pixels_set: int | None = None


def max_pixels() -> int:
    """The pixel limit: :func:`set_max_pixels`, else ``$WETOK_MAX_PIXELS``, else the default."""
    if _max_pixels_set is not None:
        return _max_pixels_set
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise ImageTooLargeError(f"{MAX_PIXELS_ENV}={text!r} is not a whole number of pixels") from None
    if value < 1:
        raise ImageTooLargeError(f"{MAX_PIXELS_ENV}={text!r} must be at least 1")
    return value


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit for this process (``None``: back to the environment / default)."""
    global _max_pixels_set
    if limit is not None and limit < 1:
        raise ValueError("the pixel limit must be at least 1")
    _max_pixels_set = limit


def check_pixels(width: int, height: int, what: str = "image") -> None:
    """Raise :class:`ImageTooLargeError` if a ``width x height`` image is above :func:`max_pixels`."""
    limit = max_pixels()
    if width * height > limit:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {width * height:,} pixels, above the limit of {limit:,} "
            f"(raise it with --max-pixels or {MAX_PIXELS_ENV})"
        )
