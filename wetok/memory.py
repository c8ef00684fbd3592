"""The memory policy of the blocked executor (:mod:`wetok.tiling`): the automatic tile, and a check that
coding an image fits in free memory before any work starts.

It models the executor's buffers (whole-image activations in memory up to a tile, in a scratch file beyond
it; one block's working set), so it belongs beside the executor and changes with it.
"""

from __future__ import annotations

import math

from wetok.config import TokenizerConfig
from wetok.errors import ImageTooLargeError
from wetok.tiling import block_token_rows, on_disk

MIN_TILE_TOKENS = 12  # the automatic tile is never smaller
TILE_BUDGET_BYTES = 640 << 20


def auto_tile_tokens(config: TokenizerConfig, budget_bytes: int = TILE_BUDGET_BYTES) -> int:
    """Largest grid side (tokens) coded with its buffers in memory: about ``budget_bytes`` of whole-image
    activations at the rate :func:`estimate_peak_bytes` assumes (beyond that the executor keeps them in a
    temporary file). 116 tokens (1,856 px) for the default model."""
    # ~8 float32 maps of the widest full-resolution level, which runs at 1/patch_size of the image side.
    pixels = config.patch_size * math.sqrt(budget_bytes / (8 * 4 * config.ch * config.ch_mult[0]))
    return max(MIN_TILE_TOKENS, int(pixels) // config.downsample)


def estimate_peak_bytes(config: TokenizerConfig, height: int, width: int, tile_tokens: int) -> int:
    """Peak memory (bytes, beyond the model) of coding an ``H x W`` image with :mod:`wetok.tiling`:
    whole-image pixel buffers (the float input, uint8 copies: ~24 B/pixel), the engine's whole-image
    activations when they stay in memory (three maps of the first level, at most as wide as its second
    level's channels; on disk when the grid is larger than a ``tile_tokens``² tile), and the working set of
    one block (~8 such maps over the block's pixels)."""
    f, p = config.downsample, config.patch_size
    h, w = -(-height // f), -(-width // f)
    pixels = h * f * w * f
    per_pixel = 4 * config.ch * max(config.ch_mult[:2]) / p**2  # one first-level map, bytes per pixel
    buffers = 0 if on_disk(h, w, tile_tokens) else 3 * per_pixel * pixels
    block = 8 * per_pixel * block_token_rows(w, h) * w * f * f
    return int(24 * pixels + buffers + block)


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``); ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(config: TokenizerConfig, height: int, width: int, tile_tokens: int, action: str) -> None:
    """Fail fast with :class:`ImageTooLargeError` when coding the image would not fit in free memory."""
    need, free = estimate_peak_bytes(config, height, width, tile_tokens), available_memory()
    if free is not None and need > free:
        raise ImageTooLargeError(
            f"a {width}x{height} image needs about {need / 2**30:.1f} GiB to {action}, but only "
            f"{free / 2**30:.1f} GiB of memory is free"
        )
