"""Exact tiling (wetok.tiling): a tiled encode gives the untiled tokens and a tiled decode the untiled
picture, checked with the bundled default model on a real photo and with generative decoders.

Tiles change where the whole-image buffers live (memory or a temporary file), blocks where the image is
cut for the convolutions; the engine runs the same calls whatever the tile, so a tiled run equals an
untiled one bit for bit. Against the plain ``Tokenizer`` forward (whole image in one convolution) the
engine is exact up to float rounding: the tests bound that difference.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model

import wetok.tiling as tiling
from wetok import zoo
from wetok.codec import Codec
from wetok.image import array_to_tensor, open_image, pad_to_multiple, tensor_to_array
from wetok.tiling import decode_tiled, encode_tiled
from wetok.tokenizer import Tokenizer

PHOTO = Path(__file__).parents[1] / "examples" / "washington_monument.png"  # 512x384: 32x24 tokens


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


@pytest.fixture(scope="module")
def default() -> Codec:
    return zoo.load_codec("default")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return open_image(PHOTO)


@pytest.fixture(scope="module")
def photo_tokens(default: Codec, photo: np.ndarray) -> torch.Tensor:
    return encode_tiled(default.model, pad_to_multiple(array_to_tensor(photo), 16), tile=0)


@pytest.fixture
def disk_uses(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per engine run, whether its buffers went to the temporary file."""
    uses: list[bool] = []
    real = tiling._Store.__init__

    def spy(self, on_disk: bool, *args) -> None:
        uses.append(on_disk)
        real(self, on_disk, *args)

    monkeypatch.setattr(tiling._Store, "__init__", spy)
    return uses


def test_default_model_tiled_tokens_are_the_untiled_ones(
    default: Codec, photo: np.ndarray, photo_tokens: torch.Tensor, disk_uses: list[bool]
) -> None:
    model = default.model
    x = pad_to_multiple(array_to_tensor(photo), 16)
    for tile, block in [(2, 1), (5, 3), (0, 1)]:  # tiny tiles, blocks of 1 and 3 token rows
        assert torch.equal(encode_tiled(model, x, tile=tile, block=block), photo_tokens), (tile, block)
    assert disk_uses == [True, True, False]
    # The plain forward (one convolution over the whole image) rounds differently, not differently enough
    # to move a sign on this photo; allow a token in a thousand on other CPUs' convolution kernels.
    assert (model.encode(x) == photo_tokens).float().mean() >= 0.999


def test_default_model_tiled_picture_is_the_untiled_one(
    default: Codec, photo: np.ndarray, photo_tokens: torch.Tensor, disk_uses: list[bool]
) -> None:
    model = default.model
    for block in (None, 1, 3):  # the picture does not depend on the tile
        untiled = decode_tiled(model, photo_tokens, tile=0, block=block)
        assert np.array_equal(decode_tiled(model, photo_tokens, tile=2, block=block), untiled)
    assert disk_uses == [False, True] * 3
    plain = tensor_to_array(model.decode(photo_tokens))
    cut = decode_tiled(model, photo_tokens, tile=2, block=1)  # a block boundary after every token row
    assert np.abs(cut.astype(int) - plain).max() <= 1  # no seam: every pixel within one level
    assert psnr(cut, plain) > 60
    h, w = photo.shape[:2]
    assert abs(psnr(cut[:h, :w], photo) - psnr(plain[:h, :w], photo)) < 0.1


def test_codec_with_small_tiles_writes_and_reads_the_same(default: Codec, photo: np.ndarray) -> None:
    small = Codec(default.model, default.prior, context=default.context, tile_tokens=3)
    data = default.compress(photo)
    assert small.compress(photo) == data
    assert np.array_equal(
        np.asarray(small.decompress(data).image), np.asarray(default.decompress(data).image)
    )


def _randomise_noise(model: Tokenizer, seed: int = 0) -> Tokenizer:
    """Non-zero weights on every noise input (conv_in's noise channels, each NoiseInjection)."""
    gen = torch.Generator().manual_seed(seed)
    dec = model.decoder
    with torch.no_grad():
        d = model.config.latent_dim
        dec.conv_in.weight[:, d:] = 0.05 * torch.randn(dec.conv_in.weight[:, d:].shape, generator=gen)
        for level in dec.up:
            for inj in getattr(level, "noise", []):
                inj.weight.copy_(0.2 * torch.randn(inj.weight.shape, generator=gen))
        if hasattr(dec, "head"):  # zero-initialised: give it weights that change the picture
            for p in (dec.head.noise.weight, dec.head.conv_out.weight):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def test_generative_level_noise_tiles_exactly() -> None:
    model = _randomise_noise(tiny_model(generative=True, level_noise=True))
    tokens = torch.randint(0, 16, (1, 13, 11, 2))
    untiled = decode_tiled(model, tokens, tile=0, seed=5)
    assert np.array_equal(decode_tiled(model, tokens, tile=3, seed=5), untiled)
    plain = tensor_to_array(model.decode(tokens, seed=5))
    for block in (1, 2, 5):
        cut = decode_tiled(model, tokens, tile=0, seed=5, block=block)
        assert np.array_equal(decode_tiled(model, tokens, tile=3, seed=5, block=block), cut)
        assert np.abs(cut.astype(int) - plain).max() <= 1
    assert not np.array_equal(decode_tiled(model, tokens, tile=3, seed=6), untiled)  # the noise matters


def test_default_generative_and_realism_tile_exactly(default: Codec, photo_tokens: torch.Tensor) -> None:
    path = default.path
    gen = _randomise_noise(Tokenizer.from_pretrained(path).to_generative(level_noise=True).eval())
    untiled = decode_tiled(gen, photo_tokens, tile=0, seed=1, block=1)
    assert np.array_equal(decode_tiled(gen, photo_tokens, tile=2, seed=1, block=1), untiled)
    assert psnr(untiled, tensor_to_array(gen.decode(photo_tokens, seed=1))) > 60
    base = Tokenizer.from_pretrained(path)
    base.attach_generative_decoder(gen.decoder)
    for realism in (0.5, 1.0):
        untiled = decode_tiled(base, photo_tokens, tile=0, seed=2, realism=realism, block=2)
        tiled = decode_tiled(base, photo_tokens, tile=3, seed=2, realism=realism, block=2)
        assert np.array_equal(tiled, untiled)
        assert psnr(untiled, tensor_to_array(base.decode(photo_tokens, seed=2, realism=realism))) > 60


def test_odd_grids_and_single_tokens() -> None:
    model = tiny_model()
    for h, w in [(1, 1), (1, 7), (9, 1), (5, 6)]:
        x = torch.rand(1, 3, 4 * h, 4 * w) * 2 - 1
        tokens = encode_tiled(model, x, tile=0)
        assert torch.equal(encode_tiled(model, x, tile=1, block=1), tokens)
        if (h, w) != (1, 1):
            assert (model.encode(x) == tokens).float().mean() >= 0.9
        image = decode_tiled(model, tokens, tile=0)
        assert image.shape == (4 * h, 4 * w, 3)
        assert np.array_equal(decode_tiled(model, tokens, tile=1, block=1), image)


# -- the one walk on both executors -------------------------------------------------------------------------
def _random_configs(n: int) -> list[dict]:
    """Small configs drawn to cover every option of the walk: patch stem, widths, blocks per level, norm
    groups, generative input noise and noise at every level."""
    rng = np.random.default_rng(7)
    configs = []
    for k in range(n):
        levels = int(rng.integers(1, 4))
        norm_groups = int(rng.choice([4, 8]))
        configs.append(
            {
                "ch": 8 * int(rng.integers(1, 3)),
                "ch_mult": tuple(int(m) for m in rng.choice([1, 2], size=levels)),
                "num_res_blocks": int(rng.integers(1, 3)),
                "patch_size": int(rng.choice([1, 2, 4])),
                "norm_groups": norm_groups,
                "groups": int(rng.integers(1, 4)),
                "group_bits": 4,
                "generative": k % 2 == 1,
                "level_noise": k % 4 == 3,
                "head_channels": 8 if k % 4 == 1 else 0,
            }
        )
    return configs


def _blocked(model: Tokenizer, walk, out_shape: tuple[int, ...]) -> torch.Tensor:
    """What the blocked executor's last stage streams, in blocks of one token row and buffers on disk."""
    out = torch.zeros(out_shape)

    def keep(r0: int, r1: int, y: torch.Tensor) -> None:
        out[:, :, r0:r1] = y

    tiling._run(model, out_shape[2], out_shape[3], 1, 1, walk, keep)
    return out


@pytest.mark.parametrize(
    "changes", _random_configs(8), ids=lambda c: f"p{c['patch_size']}x{len(c['ch_mult'])}"
)
@torch.inference_mode()
def test_both_executors_run_the_same_walk(changes: dict) -> None:
    """The dense executor (training) and the blocked one (the codec) compute the same network: the encoder's
    latent and the decoder's picture agree to float rounding, at odd grid sizes, with blocks of one row."""
    torch.manual_seed(0)
    model = tiny_model(**changes)
    model = _randomise_noise(model) if changes["generative"] else model
    f, d = model.config.downsample, model.config.latent_dim
    for h, w in [(3, 5), (2, 1)]:
        x = torch.rand(1, 3, h * f, w * f) * 2 - 1
        latent = _blocked(model, partial(model.encoder.walk, x=x), (1, d, h, w))
        assert torch.allclose(latent, model.encoder(x), atol=1e-4, rtol=1e-4)
        codes = model.tokens_to_codes(torch.randint(0, 16, (1, h, w, model.config.groups)))
        noise = model.random_noise(codes.shape)
        walk = partial(model.decoder.walk, codes=codes, noise=noise, style=tiling.style_stats(codes))
        picture = _blocked(model, walk, (1, 3, h * f, w * f))
        assert torch.allclose(picture, model.decoder(codes, noise), atol=1e-4, rtol=1e-4)


def test_a_full_temporary_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No room for the scratch file: one line naming TMPDIR and what to do, through the CLI too (exit 1,
    nothing written), not a bare "No space left on device"."""
    import errno

    from click.testing import CliRunner

    from wetok_cli.main import cli

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tiling.os, "posix_fallocate", full)
    monkeypatch.setattr(tiling.tempfile, "tempdir", str(tmp_path))
    model = tiny_model()
    with pytest.raises(tiling.ScratchSpaceError, match=f"{tmp_path} \\(TMPDIR\\).*set TMPDIR"):
        encode_tiled(model, torch.zeros(1, 3, 32, 32), tile=2)
    Codec(model).save_pretrained(tmp_path / "m")
    image = tmp_path / "big.png"
    from PIL import Image

    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(image)
    monkeypatch.setattr("wetok.codec.auto_tile_tokens", lambda *_: 2)  # beyond 2x2 tokens: on disk
    result = CliRunner().invoke(cli, ["compress", str(image), "-m", str(tmp_path / "m")])
    assert result.exit_code == 1 and "(TMPDIR)" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "big.wtk").exists()
