"""The bundled default's generative decoder (issue 20): beside the model, outside its id; opt-in."""

from __future__ import annotations

import numpy as np
import pytest

from wetok import format as fmt
from wetok.image import open_image
from wetok.setting import default_setting
from wetok.zoo import load_codec

EXAMPLE = "examples/washington_monument.png"


@pytest.fixture(scope="module")
def codec():
    return load_codec("default")


def test_default_files_are_version_1_and_unchanged(codec) -> None:
    assert codec.model_id_hex == "2deb5936b66a"  # adding the decoder changed no file
    assert codec.model.has_generative_decoder and default_setting(codec.model) is None
    data = codec.compress(open_image(EXAMPLE)[:128, :160])
    assert data[2] == fmt.VERSION  # written as always: the measured bar for a generative default was missed


def test_realism_one_paints_with_seeds_that_matter(codec) -> None:
    image = open_image(EXAMPLE)[:128, :160]
    data = codec.compress(image, realism=1, seed=3)
    assert fmt.unpack(data)[0].seed == 3
    a, b = np.asarray(codec.decompress(data).image), np.asarray(codec.decompress(data).image)
    other = np.asarray(codec.decompress(data, seed=4).image)
    faithful = np.asarray(codec.decompress(data, realism=0).image)
    assert np.array_equal(a, b)  # same seed, same device: the same bytes
    assert np.abs(a.astype(float) - other).mean() > 0.5  # another seed, other texture
    assert np.abs(a.astype(float) - faithful).mean() > 0.5
    plain = np.asarray(codec.decompress(codec.compress(image)).image)
    assert np.array_equal(faithful, plain)  # realism 0 is the model's own decoder
