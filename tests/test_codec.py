"""The codec API: images of any size and mode, bit-exact token round trips, model ids, registry, tiling."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wetok import Tokenizer, TokenizerConfig, zoo
from wetok.codec import Codec, compress, decompress
from wetok.errors import ModelMismatchError, WtkFormatError
from wetok.image import ImageConversionWarning, pad_to_multiple, to_rgb_array
from wetok.info import read_info
from wetok.prior import fit_prior
from wetok.tiling import decode_tiled, encode_tiled


def tiny_model(seed: int = 0, generative: bool = False) -> Tokenizer:
    torch.manual_seed(seed)
    return Tokenizer(TokenizerConfig.preset("tiny").replace(generative=generative)).eval()


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry folder with two tiny models: ``tiny-a`` (fitted prior) and ``tiny-b`` (no prior)."""
    root = tmp_path_factory.mktemp("models")
    model = tiny_model(0)
    model.save_pretrained(root / "tiny-a")
    tokens = [model.encode(torch.rand(2, 3, 32, 32) * 2 - 1)]
    fit_prior(tokens, 2, 4).save(root / "tiny-a")
    tiny_model(1).save_pretrained(root / "tiny-b")
    return root


@pytest.fixture
def registry(model_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("WETOK_MODELS", str(model_root))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return model_root


@pytest.fixture(scope="module")
def codec(model_root: Path) -> Codec:
    return Codec.from_pretrained(model_root / "tiny-a")


# -- round trips ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["raw", "static"])
@pytest.mark.parametrize("size", [(37, 29), (1, 1), (16, 16), (3, 50)])
def test_tokens_round_trip_bit_exact(codec: Codec, mode: str, size: tuple[int, int]) -> None:
    tokens, got_size = codec.encode_tokens(noise_image(*size))
    assert got_size == size and tokens.shape == (1, -(-size[0] // 2), -(-size[1] // 2), 2)
    data = codec.pack_tokens(tokens, size, mode)
    back, back_size = codec.unpack_tokens(data)
    assert back_size == size and torch.equal(back, tokens)


def test_pack_tokens_checks_shape_and_range(codec: Codec) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        codec.pack_tokens(torch.zeros(1, 3, 3, 2, dtype=torch.int64), (8, 8))
    with pytest.raises(ValueError, match="must lie in"):
        codec.pack_tokens(torch.full((1, 4, 4, 2), 16), (8, 8))


def test_compress_decompress_keeps_size(codec: Codec) -> None:
    data = codec.compress(noise_image(37, 29))
    image = codec.decompress(data).image
    assert image.mode == "RGB" and image.size == (29, 37)


def test_static_is_used_when_it_saves_bytes(codec: Codec) -> None:
    tokens = torch.zeros(1, 8, 8, 2, dtype=torch.int64) + torch.from_numpy(codec.prior.frequencies.argmax(1))
    assert read_info(codec.pack_tokens(tokens, (16, 16))).mode == "static"
    assert read_info(codec.pack_tokens(tokens, (16, 16), mode="raw")).mode == "raw"


def test_read_info(codec: Codec) -> None:
    data = codec.compress(noise_image(20, 30))
    info = read_info(io.BytesIO(data), codec)
    assert (info.height, info.width, info.groups, info.group_bits, info.downsample) == (20, 30, 2, 4, 2)
    assert info.bytes == len(data) and info.model_id == codec.model_id
    assert info.bpp == pytest.approx(8 * len(data) / 600)
    assert info.ideal_bytes is not None and info.ideal_bytes <= len(data) + 1
    assert read_info(data).ideal_bytes is None


def test_module_level_wrappers_accept_a_bare_tokenizer() -> None:
    model = tiny_model(2)
    data = compress(noise_image(10, 12), model, mode="static")
    assert read_info(data).mode == "raw"  # uniform prior: static never saves bytes
    assert decompress(data, model).image.size == (12, 10)
    with pytest.raises(TypeError):
        compress(noise_image(4, 4), object())


def test_file_object_versions(codec: Codec, tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.fromarray(noise_image(9, 11)).save(png, format="PNG")
    png.seek(0)
    out = io.BytesIO()
    n = codec.compress_file(png, out)
    assert n == len(out.getvalue())
    out.seek(0)
    image = codec.decompress_file(out, tmp_path / "x.png").image
    assert Image.open(tmp_path / "x.png").size == image.size == (11, 9)
    codec.compress_file(tmp_path / "x.png", tmp_path / "x.wtk")
    buf = io.BytesIO()
    codec.decompress_file(tmp_path / "x.wtk", buf)
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_generative_seed_reproducible() -> None:
    codec = Codec(tiny_model(3, generative=True))
    data = codec.compress(noise_image(12, 12))
    a, b = np.asarray(codec.decompress(data, seed=5).image), np.asarray(codec.decompress(data, seed=5).image)
    np.testing.assert_array_equal(a, b)
    # conv_in's noise weights are random here, so another seed gives other pixels
    assert not np.array_equal(a, np.asarray(codec.decompress(data, seed=6).image))


# -- model ids --------------------------------------------------------------------------------------------
def test_model_id_covers_weights_and_prior(model_root: Path, codec: Codec) -> None:
    plain = Codec(codec.model)
    assert len(codec.model_id) == 6 and codec.model_id != plain.model_id
    assert Codec.from_pretrained(model_root / "tiny-a").model_id == codec.model_id
    assert zoo.read_model_id(model_root / "tiny-a") == codec.model_id


def test_wrong_model_is_refused_by_name(registry: Path, codec: Codec) -> None:
    data = codec.compress(noise_image(8, 8))
    other = Codec.from_pretrained(registry / "tiny-b")
    with pytest.raises(ModelMismatchError, match=f"needs model {codec.model_id_hex}, but") as err:
        other.decompress(data)
    assert (err.value.expected, err.value.actual) == (codec.model_id, other.model_id)
    assert "\n" not in str(err.value)
    # The codec knows no registry; the caller that does names the model the file needs.
    assert f"{codec.model_id_hex} (tiny-a), but the loaded model is tiny" in str(zoo.name_mismatch(err.value))


def test_errors_share_one_base_class() -> None:
    from wetok import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.WetokError)
    assert issubclass(errors.WtkFormatError, ValueError) and issubclass(
        errors.ModelNotFoundError, LookupError
    )


def test_header_shape_must_match_model(codec: Codec) -> None:
    from wetok import format as fmt

    header, payload = fmt.unpack(codec.compress(noise_image(8, 8), mode="raw"))
    bad = fmt.Header(header.model_id, "raw", 8, 8, downsample=1, groups=2, group_bits=4)
    with pytest.raises(WtkFormatError, match="do not match"):
        codec.unpack_tokens(fmt.pack(bad, b"\0" * bad.raw_payload_bytes))


# -- registry ---------------------------------------------------------------------------------------------
def test_registry(registry: Path, codec: Codec) -> None:
    models = zoo.list_models()
    assert [m.name for m in models][:2] == ["tiny-a", "tiny-b"] and not models[0].bundled  # bundled ones last
    assert models[0].model_id_hex == codec.model_id_hex and models[0].config.groups == 2
    assert zoo.load_codec("tiny-a").model_id == codec.model_id
    assert zoo.load_codec(registry / "tiny-b").path == registry / "tiny-b"
    assert zoo.load_codec(str(registry / "tiny-a")).model_id == codec.model_id
    assert zoo.find_codec_by_model_id(codec.model_id).path == registry / "tiny-a"
    assert zoo.model_dirs()[0] == registry


def test_registry_errors(registry: Path, tmp_path: Path) -> None:
    with pytest.raises(zoo.ModelNotFoundError, match="tiny-a, tiny-b"):
        zoo.load_codec("nope")
    if not any(m.name == zoo.DEFAULT_MODEL for m in zoo.list_models()):
        with pytest.raises(zoo.ModelNotFoundError, match="no model named 'default'"):
            zoo.load_codec()
    with pytest.raises(zoo.ModelNotFoundError, match="not a model directory"):
        zoo.load_codec(tmp_path)
    with pytest.raises(zoo.ModelNotFoundError, match="0102030405ff"):
        zoo.find_codec_by_model_id(bytes.fromhex("0102030405ff"))


def test_find_by_model_id_in_extra_dirs(
    model_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WETOK_MODELS", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("WETOK_MODELS", str(model_root / "tiny-b"))  # an entry may be a model itself
    assert [m.name for m in zoo.list_models()][:1] == ["tiny-b"]
    monkeypatch.setenv("WETOK_MODELS", "")
    fp = zoo.read_model_id(model_root / "tiny-b")
    assert zoo.find_codec_by_model_id(fp, extra=[model_root]).path == model_root / "tiny-b"
    assert zoo.find_codec_by_model_id(fp, extra=[model_root / "tiny-b"]).path == model_root / "tiny-b"


# -- image conversion -------------------------------------------------------------------------------------
def pil(mode: str) -> Image.Image:
    return Image.fromarray(noise_image(6, 5)).convert(mode)


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "YCbCr", "RGB"])
def test_modes_convert_silently(mode: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = to_rgb_array(pil(mode))
    assert rgb.shape == (6, 5, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_alpha_is_dropped_with_a_warning(mode: str) -> None:
    with pytest.warns(ImageConversionWarning, match="alpha channel dropped"):
        assert to_rgb_array(pil(mode)).shape == (6, 5, 3)


def test_palette_with_transparency_warns() -> None:
    img = pil("P")
    img.info["transparency"] = 0
    with pytest.warns(ImageConversionWarning):
        to_rgb_array(img)


def test_sixteen_bit_png(tmp_path: Path) -> None:
    a = np.array([[0, 257, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    img = Image.open(tmp_path / "g16.png")
    assert img.mode.startswith("I")
    np.testing.assert_array_equal(to_rgb_array(img)[0, :, 0], [0, 1, 255])


def test_arrays() -> None:
    assert to_rgb_array(np.zeros((3, 4), np.uint8)).shape == (3, 4, 3)
    np.testing.assert_array_equal(to_rgb_array(np.full((2, 2, 1), 65535, np.uint16)), 255)
    np.testing.assert_array_equal(to_rgb_array(np.full((2, 2, 3), 0.5)), 128)
    np.testing.assert_array_equal(to_rgb_array(np.ones((2, 2), bool)), 255)
    np.testing.assert_array_equal(to_rgb_array(Image.fromarray(np.full((2, 2), 300.0, np.float32))), 255)
    with pytest.warns(ImageConversionWarning):
        to_rgb_array(np.zeros((2, 2, 4), np.uint8))
    for bad in (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2), np.int8), np.zeros((0, 3, 3), np.uint8)):
        with pytest.raises(ValueError):
            to_rgb_array(bad)


def test_padding() -> None:
    x = torch.arange(12.0).view(1, 1, 3, 4)
    y = pad_to_multiple(x, 4)
    assert y.shape == (1, 1, 4, 4) and torch.equal(y[..., 3, :], x[..., 1, :])  # reflect
    assert torch.equal(pad_to_multiple(x, 4, "replicate")[..., 3, :], x[..., 2, :])
    tiny = pad_to_multiple(torch.ones(1, 3, 1, 1), 16)  # too small to reflect: replicates
    assert tiny.shape == (1, 3, 16, 16) and bool((tiny == 1).all())
    with pytest.raises(ValueError):
        pad_to_multiple(x, 4, "zeros")


# -- tiling -----------------------------------------------------------------------------------------------
def test_tiled_real_model_equals_untiled(codec: Codec) -> None:
    """The exact engine (details in tests/test_tiling.py): tiles and blocks change nothing."""
    x = torch.rand(1, 3, 40, 48) * 2 - 1
    whole = encode_tiled(codec.model, x, tile=0)
    assert torch.equal(whole, codec.model.encode(x))
    assert torch.equal(encode_tiled(codec.model, x, tile=12), whole)
    assert torch.equal(
        encode_tiled(codec.model, x, tile=3, block=2), encode_tiled(codec.model, x, 0, block=2)
    )
    image = decode_tiled(codec.model, whole, tile=0)
    assert image.shape == (40, 48, 3) and np.array_equal(decode_tiled(codec.model, whole, tile=5), image)
