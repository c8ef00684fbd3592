"""Images in and out of the codec: mode conversion, tensors and padding.

Pixels are uint8 RGB ``[H, W, 3]`` arrays at the boundary and float tensors ``[1, 3, H, W]`` in ``[-1, 1]``
inside (``x = uint8 / 127.5 - 1``; back: ``((y + 1) * 127.5).round().clamp(0, 255)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from wetok.limits import check_pixels

PAD_MODES = ("reflect", "replicate")
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


class ImageConversionWarning(UserWarning):
    """An input image lost information on its way to 8-bit RGB (alpha dropped)."""


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Pillow's bomb check off while wetok's (same default, one setting) runs instead."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def open_image(source: str | Path | BinaryIO) -> np.ndarray:
    """Open an image file, check its size against :func:`max_pixels` before decoding any pixel, apply its
    EXIF orientation (as browsers do), and convert it with :func:`to_rgb_array`.

    Of an animation or a multi-page file, the first frame is used, with an :class:`ImageConversionWarning`."""
    with _own_pixel_limit(), Image.open(source) as img:
        check_pixels(*img.size)
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            warnings.warn(
                f"{img.format} file with {frames} frames: only the first is used",
                ImageConversionWarning,
                stacklevel=2,
            )
        img.load()
        return to_rgb_array(ImageOps.exif_transpose(img))


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image or array → uint8 RGB ``[H, W, 3]``.

    Grayscale, palette, CMYK, YCbCr, 16-bit (``I;16``, scaled by 1/257), 32-bit integer (``I``) and float
    (``F``) images are converted: ``I`` as 8-bit values when none exceeds 255, else as 16-bit; ``F`` as
    0-1 when none exceeds 1, else as 0-255;
    an alpha channel is dropped with an :class:`ImageConversionWarning`. Arrays may be ``[H, W]``,
    ``[H, W, 1|3|4]`` of uint8, uint16 (scaled by 1/257), bool, or float in ``[0, 1]``.
    """
    arr = _pil_to_array(image) if isinstance(image, Image.Image) else _array_to_rgb(np.asarray(image))
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise ValueError(f"cannot make an RGB image of shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _warn_alpha(mode: str) -> None:
    warnings.warn(
        f"{mode} image: alpha channel dropped (the codec stores RGB)", ImageConversionWarning, stacklevel=3
    )


def _pil_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        mode, img = "PA", img.convert("RGBA")
    if mode in _ALPHA_MODES:
        _warn_alpha(mode)
        return np.asarray(img.convert("RGBA"))[..., :3]
    if mode in _SIXTEEN_BIT:
        return _gray(_scale16(np.asarray(img)))
    if mode == "I":  # 32-bit integers: usually 0-255 values in a TIFF, or a 16-bit PNG in older Pillows
        a = np.asarray(img)
        return _gray(np.clip(a, 0, 255) if a.size and a.max() <= 255 else _scale16(np.clip(a, 0, 65535)))
    if mode == "F":  # floats: 0-1 (the usual scientific TIFF) or 0-255
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        scale = 255.0 if a.size and np.abs(a).max() <= 1.0 else 1.0
        return _gray(np.clip(a * scale, 0, 255).round())
    try:
        return np.asarray(img.convert("RGB"))
    except ValueError as e:
        raise ValueError(f"cannot convert a {img.mode} image to RGB: {e}") from None


def _scale16(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a.astype(np.float64) / 257.0), 0, 255)


def _gray(a: np.ndarray) -> np.ndarray:
    return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an array [H, W] or [H, W, 1|3|4], got shape {a.shape}")
    if a.shape[2] == 4:
        _warn_alpha("RGBA array")
        a = a[..., :3]
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = _scale16(a)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        a = np.clip(np.nan_to_num(a.astype(np.float64)) * 255.0, 0, 255).round()
    else:
        raise ValueError(f"unsupported array dtype {a.dtype}; use uint8, uint16, bool or float in [0, 1]")
    return np.broadcast_to(a, a.shape[:2] + (3,)).astype(np.uint8)


# -- the one pixel convention: uint8 levels <-> float in [-1, 1] -----------------------------------------
def uint8_to_unit(x: Tensor) -> Tensor:
    """8-bit levels (any dtype, any layout) → float32 in ``[-1, 1]``: ``x / 127.5 - 1``."""
    return x.float().div_(127.5).sub_(1.0)


def unit_to_uint8(x: Tensor) -> Tensor:
    """Values in ``[-1, 1]`` (any layout) → uint8 levels: ``round((x + 1) · 127.5)`` clamped to 0 … 255."""
    return ((x.detach().float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def array_to_tensor(rgb: np.ndarray) -> Tensor:
    """uint8 ``[H, W, 3]`` → float32 ``[1, 3, H, W]`` in ``[-1, 1]``."""
    rgb = np.ascontiguousarray(rgb)
    if not rgb.flags.writeable:  # torch cannot wrap read-only memory (PIL's arrays) without a warning
        rgb = rgb.copy()
    return uint8_to_unit(torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0))


def tensor_to_array(x: Tensor, rows: int = 256) -> np.ndarray:
    """``[1, 3, H, W]`` or ``[3, H, W]`` in ``[-1, 1]`` → uint8 ``[H, W, 3]``, converted ``rows`` rows at a
    time (no float copy of a large image)."""
    x = x.detach().cpu().reshape(3, *x.shape[-2:])
    out = np.empty((x.shape[1], x.shape[2], 3), dtype=np.uint8)
    for r in range(0, x.shape[1], rows):
        out[r : r + rows] = unit_to_uint8(x[:, r : r + rows]).permute(1, 2, 0).numpy()
    return out


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect") -> Tensor:
    """Pad ``[B, C, H, W]`` at the bottom and right to multiples of ``multiple``.

    ``reflect`` mirrors without repeating the edge; where the image is too small to mirror that far it
    falls back to ``replicate``.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode must be one of {PAD_MODES}, not {mode!r}")
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return x
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def to_pil(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb, mode="RGB")
