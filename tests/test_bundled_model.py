"""The bundled default model: present in the package, small, and a working codec; the first released default
still there under its own name (more in test_released_models.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import wetok
from wetok.metrics import psnr
from wetok.zoo import load_codec

BUNDLED = Path(wetok.__file__).parent / "models" / "default"


def test_bundled_files_are_small_and_complete() -> None:
    names = {p.name for p in BUNDLED.iterdir()}
    assert {"config.json", "model.safetensors", "prior.json", "context.json"} <= names
    # Two decoders since the generative one joined (11.8 MB of fp16 beside the 19 MB model): 32 MiB.
    assert sum(p.stat().st_size for p in BUNDLED.iterdir()) <= 32 * 1024 * 1024


@pytest.fixture(scope="module")
def codec() -> wetok.Codec:
    return load_codec(BUNDLED)


def _photo_like(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.6 * xx + 0.2, 0.5 * yy + 0.3 * xx, 0.8 - 0.5 * yy], axis=-1)
    img += 0.05 * np.sin(40 * xx)[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def test_default_model_round_trip(codec: wetok.Codec) -> None:
    cfg = codec.model.config
    assert cfg.downsample == 16
    image = _photo_like(96, 136)  # not a multiple of 16: padded and cropped back
    data = codec.compress(image)
    assert len(data) < 96 * 136 * 3 // 100
    out = np.asarray(codec.decompress(data, seed=0).image)
    assert out.shape == image.shape
    assert psnr(image, out) > 20  # trained: 25.5 dB (default-v1: 16.3 dB)
    assert np.array_equal(out, np.asarray(codec.decompress(data, seed=0).image))


def test_first_default_model_keeps_its_id_and_codes_context() -> None:
    """Adding context.json left the model id of every old .wtk file of the first default model unchanged."""
    codec = load_codec(BUNDLED.parent / "default-v1")
    assert codec.model_id_hex == "e05400c6dcf8"
    assert codec.default_mode == "context" and codec.context.model_id.hex() == "3de109a0"
    tokens, size = codec.encode_tokens(_photo_like(64, 96))
    context, static = codec.pack_tokens(tokens, size), codec.pack_tokens(tokens, size, "static")
    assert wetok.read_info(context).mode == "context" and len(context) < len(static)
    assert (codec.unpack_tokens(context)[0] == tokens).all()
