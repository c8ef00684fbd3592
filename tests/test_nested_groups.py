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
    cfg = _cfg(
        data,
        tmp_path / "b",
        adversarial_weight=0.0,
        steps=3,
        init_from=str(first),
        widen_groups=3,
        group_dropout=1.0,
        min_groups=2,  # below the widened model's 3 groups, not below the init_from model's 2
    )
    out = train(cfg, quiet=True)
    assert Tokenizer.from_pretrained(out).config.groups == 3


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory):
    """Data and a 2-group stage-1 model (tiny) trained on it, and the same with a generative decoder."""
    root = tmp_path_factory.mktemp("nested")
    data = _make_images(root / "data")
    first = train(_cfg(data, root / "s1", adversarial_weight=0.0, steps=2), quiet=True)
    return data, first


def _train_cli(data, out, *settings: str):
    from click.testing import CliRunner

    from wetok_cli.main import cli

    common = ["-s", 'model="tiny"', "-s", "crop=32", "-s", "batch_size=2", "-s", 'loss.perceptual_net="none"']
    common += ["-s", "loss.adversarial=0", "-s", "prior_images=2", "-s", "steps=1", "-q"]
    flags = [x for s in settings for x in ("-s", s)]
    return CliRunner().invoke(cli, ["train", *common, *flags, "--data", str(data), "--out", str(out)])


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (["rate.widen_groups=1"], "at least the init_from model's 2 groups"),  # below the model's
        (["rate.widen_groups=1025"], "at most 1024"),
        (["widen_groups=2000"], "at most 1024"),  # the older flat name, the same check
        (["rate.group_dropout=0.5", "rate.min_groups=2"], "below the model's 2 groups"),
        (["rate.group_dropout=0.5", "rate.min_groups=5"], "below the model's 2 groups"),
    ],
)
def test_rate_options_that_cannot_work_are_usage_errors(tmp_path, stage1, settings, fragment) -> None:
    data, first = stage1
    result = _train_cli(data, tmp_path / "run", "rate.widen_groups=0", f'init_from="{first}"', *settings)
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "internal" not in result.output
    assert ("widen_groups" in result.output) or ("min_groups" in result.output)
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model").exists()


def test_min_groups_is_checked_without_init_from_too(tmp_path, stage1) -> None:
    data, _ = stage1
    result = _train_cli(data, tmp_path / "run", "rate.group_dropout=0.5", "rate.min_groups=2")
    assert result.exit_code == 2 and "rate.min_groups must be below the model's 2 groups" in result.output
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
    assert _train_cli(data, tmp_path / "ok", "rate.group_dropout=0.5", "rate.min_groups=1").exit_code == 0


def test_widening_a_generative_model_is_a_usage_error(tmp_path, stage1) -> None:
    data, first = stage1
    second = train(
        _cfg(data, tmp_path / "s2", stage=2, init_from=str(first), adversarial_weight=0.0, steps=1),
        quiet=True,
    )
    assert Tokenizer.from_pretrained(second).config.generative
    result = _train_cli(data, tmp_path / "run", f'init_from="{second}"', "rate.widen_groups=3")
    assert result.exit_code == 2, result.output
    assert "rate.widen_groups: init_from is a generative model" in result.output
