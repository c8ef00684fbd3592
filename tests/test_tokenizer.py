"""The Tokenizer API: shapes, save/load, seeded generative decoding, stage-2 widening."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config, tiny_model
from wetok import PRESETS, Tokenizer, TokenizerConfig
from wetok.layers import style_stats


def _images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 12, 20), (2, 4, 36)])
def test_any_multiple_of_f_and_batches(model: Tokenizer, shape: tuple[int, int, int]) -> None:
    b, h, w = shape
    f, g = model.config.downsample, model.config.groups
    tokens = model.encode(_images(b, h, w))
    assert tokens.shape == (b, h // f, w // f, g) and tokens.dtype == torch.int64
    assert int(tokens.max()) < 2**model.config.group_bits
    images = model.decode(tokens)
    assert images.shape == (b, 3, h, w) and images.abs().max() <= 1


def test_encode_rejects_sizes_not_multiple_of_f(model: Tokenizer) -> None:
    with pytest.raises(ValueError, match="multiples of 2"):
        model.encode(_images(1, 9, 8))


def test_decode_rejects_out_of_range_tokens(model: Tokenizer) -> None:
    with pytest.raises(ValueError, match="token values"):
        model.decode(torch.full((1, 2, 2, 2), 16))


def test_batch_decode_equals_single_decodes(model: Tokenizer) -> None:
    tokens = model.encode(_images(2, 8, 8))
    both = model.decode(tokens)
    assert torch.allclose(both[1], model.decode(tokens[1:])[0], atol=1e-5)


def test_save_load_round_trip_is_bit_exact(tmp_path: Path, model: Tokenizer) -> None:
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["groups"] == 2
    loaded = Tokenizer.from_pretrained(tmp_path)
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert loaded.weights_sha256 == model.weights_sha256
    x = _images(1, 8, 8)
    assert torch.equal(loaded.encode(x), model.encode(x))


def test_fp16_export_changes_weights_sha256_but_loads_as_float32(tmp_path: Path, model: Tokenizer) -> None:
    model.save_pretrained(tmp_path, dtype=torch.float16)
    loaded = Tokenizer.from_pretrained(tmp_path)
    assert loaded.dtype == torch.float32
    assert loaded.weights_sha256 == model.weights_sha256  # save_pretrained hashes what it wrote
    assert loaded.weights_sha256 != tiny_model().weights_sha256


def test_from_pretrained_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a wetok model directory"):
        Tokenizer.from_pretrained(tmp_path)


def test_seeded_decode_is_deterministic_and_seeds_differ(generative_model: Tokenizer) -> None:
    tokens = generative_model.encode(_images(1, 16, 16))
    a, b = generative_model.decode(tokens, seed=3), generative_model.decode(tokens, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, generative_model.decode(tokens, seed=4))


def test_explicit_noise_and_noise_scale(generative_model: Tokenizer) -> None:
    tokens = generative_model.encode(_images(1, 16, 16))
    noise = torch.randn((1, 8, 8, 8), generator=torch.Generator().manual_seed(5))  # what seed 5 draws
    assert torch.equal(generative_model.decode(tokens, noise=noise), generative_model.decode(tokens, seed=5))
    zero = generative_model.decode(tokens, noise=torch.zeros(1, 8, 8, 8))
    assert torch.equal(generative_model.decode(tokens, seed=9, noise_scale=0.0), zero)


def test_zero_init_widening_reproduces_stage1_for_any_noise(model: Tokenizer) -> None:
    widened = model.to_generative()
    assert widened.config.generative
    assert widened.decoder.conv_in.weight.shape[1] == 2 * model.config.latent_dim
    tokens = model.encode(_images(2, 12, 8))
    expected = model.decode(tokens)
    for seed in (0, 1):
        assert torch.equal(widened.decode(tokens, seed=seed, noise_scale=10.0), expected)
    assert torch.equal(widened.encode(_images(1, 8, 8)), model.encode(_images(1, 8, 8)))


def test_style_override_matches_own_statistics(model: Tokenizer) -> None:
    tokens = model.encode(_images(1, 8, 8))
    style = style_stats(model.tokens_to_codes(tokens))
    assert torch.equal(model.decode(tokens, style=style), model.decode(tokens))


def test_one_token_latent_has_finite_output(model: Tokenizer) -> None:
    assert torch.isfinite(model.decode(torch.zeros(1, 1, 1, 2, dtype=torch.long))).all()


def test_forward_returns_losses_for_training(model: Tokenizer) -> None:
    out = model.train()(_images(2, 8, 8))
    assert out.recon.shape == (2, 3, 8, 8)
    assert {"gq/entropy", "gq/commitment", "gq/token_entropy", "gq/codebook_entropy"} <= set(out.losses)


def test_config_validation_and_presets() -> None:
    with pytest.raises(ValueError, match="norm_groups"):
        TokenizerConfig(ch=48)
    with pytest.raises(KeyError, match="unknown preset"):
        TokenizerConfig.preset("nope")
    with pytest.raises(ValueError, match="unknown config keys"):
        TokenizerConfig.from_dict({"chh": 3})
    assert PRESETS["wetok-gd-ratio768"].downsample == 32 and PRESETS["wetok-gd-ratio768"].generative
    assert PRESETS["wetok-imagenet-f16"].bpp == 0.125
    assert tiny_config().bits_per_token == 8


def test_patch_stem_downsamples_by_patch_times_levels(tmp_path: Path) -> None:
    cfg = TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, groups=2, group_bits=4, patch_size=4)
    assert cfg.downsample == 8
    model = Tokenizer(cfg).eval()
    assert model.encoder.conv_in.in_channels == 48 and model.decoder.conv_out.out_channels == 48
    tokens = model.encode(_images(2, 16, 24))
    assert tokens.shape == (2, 2, 3, 2)
    assert model.decode(tokens).shape == (2, 3, 16, 24)
    model.save_pretrained(tmp_path)
    assert torch.equal(Tokenizer.from_pretrained(tmp_path).encode(_images(2, 16, 24)), tokens)
    with pytest.raises(ValueError, match="patch_size"):
        TokenizerConfig(patch_size=3)


def test_config_dict_without_patch_stem_is_unchanged() -> None:
    # Model ids hash the config dict: a field added later must not change the ids of existing models.
    assert "patch_size" not in TokenizerConfig().to_dict()
    assert TokenizerConfig(patch_size=2).to_dict()["patch_size"] == 2
    assert TokenizerConfig.from_dict(TokenizerConfig(patch_size=2).to_dict()).patch_size == 2
