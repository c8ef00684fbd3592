"""The decoder setting (wetok.setting): which decoder paints, the noise it draws, how a file's setting is
resolved, the seed search, and what the command line does with --realism, --seed and --seed-search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.conftest import tiny_model, with_generative_decoder
from wetok import Codec, Tokenizer, setting
from wetok import format as fmt
from wetok.errors import DecoderSettingError, RealismError
from wetok.setting import DecoderSetting, for_decode, for_file
from wetok_cli.main import cli


def _tokens(model: Tokenizer, h: int = 5, w: int = 7) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, 2**model.config.group_bits, (1, h, w, model.config.groups))


def _image(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- which decoder, which noise -----------------------------------------------------------------------------
def test_noise_maps_are_drawn_from_the_seed_release_noise_first() -> None:
    model = with_generative_decoder()
    shape = (1, model.config.latent_dim, 5, 7)
    maps = setting.draw_noise(model, DecoderSetting(1, 4), shape)
    again = setting.draw_noise(model, DecoderSetting(1, 4), shape)
    assert [tuple(m.shape) for m in maps] == model.generative_decoder.noise_shapes(shape)
    assert all(torch.equal(a, b) for a, b in zip(maps, again, strict=True))
    # A released generative model's noise is what it always drew: the input's map first, from the seed.
    assert torch.equal(maps[0], torch.randn(shape, generator=torch.Generator().manual_seed(4)))
    half = setting.draw_noise(model, DecoderSetting(1, 4, noise_scale=0.5), shape)
    assert all(torch.equal(h, m * 0.5) for h, m in zip(half, maps, strict=True))
    assert setting.draw_noise(model, DecoderSetting(0, 4), shape) is None  # the own decoder takes none
    tokens = _tokens(model)
    a, b = model.decode(tokens, seed=0, realism=1), model.decode(tokens, seed=1, realism=1)
    assert torch.equal(a, model.decode(tokens, seed=0, realism=1))
    assert (a - b).abs().mean() > 0.01  # seeds matter


def test_realism_picks_or_blends_the_decoders() -> None:
    model = with_generative_decoder()
    assert (
        setting.decoder_for(model, None) is model.decoder and setting.decoder_for(model, 0) is model.decoder
    )
    generative = setting.decoder_for(model, 1)
    assert generative is model.generative_decoder
    blend = setting.decoder_for(model, 0.5)
    assert setting.decoder_for(model, 0.5) is blend  # blended once, not per decode
    half, base = blend.state_dict(), model.decoder.state_dict()
    for key, value in generative.state_dict().items():
        if key in base and base[key].shape == value.shape:
            assert torch.allclose(half[key], (base[key] + value) / 2, atol=1e-6)
    noise = half["up.0.noise.0.weight"]
    assert torch.allclose(noise, generative.state_dict()["up.0.noise.0.weight"] / 2)
    with pytest.raises(RealismError, match="no generative decoder"):
        setting.decoder_for(tiny_model(), 0.5)
    with pytest.raises(RealismError, match=r"\[0, 1\]"):
        setting.decoder_for(model, 1.5)
    with pytest.raises(RealismError, match=r"\[0, 1\]"):
        setting.decoder_for(model, float("nan"))


# -- resolution ---------------------------------------------------------------------------------------------
def test_a_file_gets_the_models_default_then_what_is_asked() -> None:
    model = with_generative_decoder()  # default realism 0.8
    assert for_file(model) == DecoderSetting(0.8, 0)
    assert for_file(model, seed=7) == DecoderSetting(0.8, 7)
    assert for_file(model, realism=0.333) == DecoderSetting(0.33, 0)  # a file holds hundredths
    assert for_file(model, realism=0, seed=2) == DecoderSetting(0, 2)
    with pytest.raises(DecoderSettingError, match=str(fmt.MAX_SEED)):
        for_file(model, seed=fmt.MAX_SEED + 1)
    with pytest.raises(RealismError):
        for_file(tiny_model(), realism=0.5)


def test_a_decode_uses_the_files_setting_then_the_overrides() -> None:
    written = DecoderSetting(0.8, 5)
    assert for_decode(written) == written
    assert for_decode(written, realism=0) == DecoderSetting(0, 5)
    assert for_decode(written, seed=-3, noise_scale=0.5) == DecoderSetting(0.8, -3, 0.5)
    assert for_decode(None) == DecoderSetting(0, 0)  # version 1: the model's own decoder, seed 0
    with pytest.raises(DecoderSettingError):
        for_decode(None, noise_scale=-1)


def test_a_default_realism_of_zero_survives_saving(tmp_path: Path) -> None:
    model = with_generative_decoder()
    model.default_realism = 0.0
    Codec(model).save_pretrained(tmp_path)
    model.save_generative_decoder(tmp_path)
    loaded = Codec.from_pretrained(tmp_path).model
    assert loaded.default_realism == 0.0 and setting.default_setting(loaded) is None


# -- issue 28 item 14: a seed where no decoder takes noise, seed searches that cannot or only partly run ----
def test_a_model_without_a_generative_decoder_writes_version_1_for_seed_or_realism_0() -> None:
    codec = Codec(tiny_model())
    image = _image(1)
    plain = codec.compress(image)
    assert plain[2] == fmt.VERSION
    assert codec.compress(image, seed=5) == plain  # the seed means nothing there: no bytes for it
    assert codec.compress(image, realism=0) == plain
    assert codec.compress(image, realism=0, seed=9) == plain
    # A model whose own decoder is generative does use the seed: the file keeps it.
    own = Codec(tiny_model(generative=True))
    assert fmt.unpack(own.compress(image, seed=5))[0].seed == 5


def test_a_seed_search_needs_a_decoder_that_takes_noise() -> None:
    image = _image(2)
    with pytest.raises(DecoderSettingError, match="no seed to search"):
        Codec(tiny_model()).compress(image, seed_search=4)
    with pytest.raises(DecoderSettingError, match="seed search"):
        Codec(with_generative_decoder()).compress(image, realism=0, seed_search=4)


def test_seed_search_keeps_the_closest_decode() -> None:
    rng = np.random.default_rng(2)
    original = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    noisy = {
        s: np.clip(original + rng.normal(0, 5 + 40 * abs(s - 13), original.shape), 0, 255)
        for s in range(10, 18)
    }
    best = setting.search_seed(lambda s: noisy[s].astype(np.uint8), original, DecoderSetting(1.0, 10), 8)
    assert best == DecoderSetting(1.0, 13)
    assert setting.seed_candidates(DecoderSetting(1.0, fmt.MAX_SEED - 1), 8) == range(
        fmt.MAX_SEED - 1, fmt.MAX_SEED + 1
    )
    codec = Codec(with_generative_decoder())
    searched = fmt.unpack(codec.compress(_image(3, 24, 24), realism=1, seed_search=4))[0]
    assert 0 <= searched.seed < 4
    # The model's default realism (0.8) is a realism above 0: no --realism needed.
    searched = fmt.unpack(codec.compress(_image(3, 24, 24), seed=10, seed_search=3))[0]
    assert searched.realism == 0.8 and 10 <= searched.seed < 13


# -- the command line ---------------------------------------------------------------------------------------
@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A model folder without a generative decoder, one with (default realism 0.8), and an image."""
    plain, generative = tmp_path / "plain", tmp_path / "gen"
    Codec(tiny_model()).save_pretrained(plain)
    model = with_generative_decoder()
    Codec(model).save_pretrained(generative)
    model.save_generative_decoder(generative)
    image = tmp_path / "a.png"
    Image.fromarray(_image(4)).save(image)
    return plain, generative, image


def _compress(*args: str) -> object:
    return CliRunner().invoke(cli, ["compress", *args, "--force"])


def test_cli_seed_or_realism_0_without_a_generative_decoder_writes_version_1(folders, tmp_path) -> None:
    plain, _, image = folders
    for extra in (["--seed", "5"], ["--realism", "0"], ["--realism", "0", "--seed", "3"]):
        r = _compress(str(image), "-m", str(plain), "-o", str(tmp_path / "a.wtk"), *extra)
        assert r.exit_code == 0, r.output
        assert (tmp_path / "a.wtk").read_bytes()[2] == fmt.VERSION, extra
        assert ", realism" not in r.output  # the summary line names no decoder setting


def test_cli_seed_search_that_cannot_run_is_a_usage_error(folders, tmp_path) -> None:
    plain, generative, image = folders
    out = str(tmp_path / "a.wtk")
    for args, why in (
        (["-m", str(plain)], "no generative decoder"),
        (["-m", str(generative), "--realism", "0"], "realism above 0"),
    ):
        r = _compress(str(image), "-o", out, "--seed-search", "4", *args)
        assert r.exit_code == 2 and "--seed-search 4" in r.output and why in r.output, r.output
        assert not Path(out).exists()


def test_cli_seed_search_near_the_largest_seed_says_it_tries_fewer(folders, tmp_path) -> None:
    _, generative, image = folders
    out = tmp_path / "a.wtk"
    start = fmt.MAX_SEED - 1
    args = ["-m", str(generative), "-o", str(out), "--seed-search", "8"]
    r = _compress(str(image), *args, "--seed", str(start))
    assert r.exit_code == 0, r.output
    assert "tries 2 seeds, not 8" in r.output
    assert fmt.unpack(out.read_bytes())[0].seed in (start, start + 1)
    r = _compress(str(image), *args, "--seed", "5")
    assert r.exit_code == 0 and "tries" not in r.output, r.output


def test_cli_reads_and_parses_each_file_once(folders, tmp_path, monkeypatch) -> None:
    _, generative, image = folders
    calls = []
    unpack = fmt.unpack
    monkeypatch.setattr(fmt, "unpack", lambda data: calls.append(1) or unpack(data))
    assert _compress(str(image), "-m", str(generative), "-o", str(tmp_path / "a.wtk")).exit_code == 0
    assert calls == []  # compress describes the file it wrote without parsing it back
    args = ["decompress", str(tmp_path / "a.wtk"), "-m", str(generative), "-o", str(tmp_path / "d.png")]
    r = CliRunner().invoke(cli, [*args, "--compare", str(image), "--json"])
    assert r.exit_code == 0, r.output
    assert calls == [1]
    record = json.loads(r.output.splitlines()[0])
    assert (record["realism"], record["seed"], record["noise_scale"]) == (0.8, 0, 1.0)  # what painted it
