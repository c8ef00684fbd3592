"""Groundwork of the rate knob (issue 21): widening a trained model to more groups, and nested group
dropout in training (the decoder sees a random prefix of the groups)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_model
from tests.test_train import _cfg, _make_images
from wetok import Tokenizer
from wetok_train.loop import _kept_groups, train


def test_widened_model_paints_the_old_groups_as_before() -> None:
    model = tiny_model()
    wide = model.with_groups(4)
    assert wide.config.groups == 4
    torch.manual_seed(0)
    tokens = torch.randint(0, 16, (1, 3, 5, 2))
    extra = torch.randint(0, 16, (1, 3, 5, 2))  # whatever the new groups hold: their weights are zero
    assert torch.allclose(wide.decode(torch.cat([tokens, extra], dim=-1)), model.decode(tokens), atol=1e-6)
    x = torch.rand(1, 3, 16, 20) * 2 - 1
    assert torch.equal(wide.encode(x)[..., :2], model.encode(x))  # the old groups' tokens are unchanged
    assert wide.encode(x)[..., 2:].unique().numel() > 1  # the new channels are alive, not constant
    with pytest.raises(ValueError):
        model.with_groups(1)
    with pytest.raises(ValueError):
        tiny_model(generative=True).with_groups(3)


def test_keep_prefix_zeroes_the_dropped_groups() -> None:
    model = tiny_model()
    codes = torch.ones(2, 8, 2, 2)
    kept = model.keep_prefix(codes, torch.tensor([1, 2]))
    assert kept[0, :4].eq(1).all() and kept[0, 4:].eq(0).all() and kept[1].eq(1).all()


def test_kept_groups_draws_prefixes() -> None:
    cfg = _cfg_plain(group_dropout=1.0, min_groups=1)
    keep = _kept_groups(4, cfg, 1000, torch.device("cpu"))
    assert keep.min() == 1 and keep.max() == 3  # every sample a strict prefix
    assert _kept_groups(4, _cfg_plain(), 8, torch.device("cpu")) is None


def _cfg_plain(**kw):
    from wetok_train.config import TrainConfig

    return TrainConfig.from_dict({"model": {"preset": "tiny"}, **kw})


def test_training_widens_and_drops_groups(tmp_path) -> None:
    data = _make_images(tmp_path / "data")
    first = train(_cfg(data, tmp_path / "a", adversarial_weight=0.0, steps=2), quiet=True)
    cfg = _cfg(data, tmp_path / "b", adversarial_weight=0.0, steps=3, init_from=str(first), widen_groups=3)
    cfg.group_dropout, cfg.min_groups = 1.0, 1
    out = train(cfg, quiet=True)
    assert Tokenizer.from_pretrained(out).config.groups == 3
