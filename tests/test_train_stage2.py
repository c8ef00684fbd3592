"""Stage-2 training on tiny models: the probe options (perceptual weight, feature matching, a discriminator
that sees the codes, EMA decay), the validation split and the detail log, and the shipped discriminator that
a later stage 2 continues from."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open
from torch import nn

from tests.conftest import tiny_model
from tests.test_train import _cfg, _make_images
from wetok import Codec
from wetok.device import resolve_device
from wetok.modeldir import GENERATIVE_DECODER_NAME, read_model_id
from wetok_cli.main import cli
from wetok_train.data import CropDataset
from wetok_train.discriminator import DISCRIMINATOR_NAME, Critic, PatchDiscriminator
from wetok_train.loop import train, train_step
from wetok_train.losses import GeneratorLoss, feature_matching_loss
from wetok_train.state import build_state
from wetok_train.validation import SALT, is_validation, split_images

CPU = resolve_device("cpu")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Training images and a stage-1 model folder (tiny, random weights) to start stage 2 from."""
    root = tmp_path_factory.mktemp("stage2")
    Codec(tiny_model()).save_pretrained(root / "stage1")
    return _make_images(root / "data"), root / "stage1"


def _stage2(setup, out: Path, **kw: object):
    data, stage1 = setup
    base = dict(stage=2, init_from=str(stage1), level_noise=True, attach_decoder=True, adversarial_weight=0.1)
    return _cfg(data, out, **(base | kw))


def _run_steps(cfg, steps: int = 3, perceptual: nn.Module | None = None):
    state = build_state(cfg, CPU, 1)
    loss_fn = GeneratorLoss(cfg, perceptual)
    ds = CropDataset(cfg.data, cfg.crop, split="all")
    results = []
    for step in range(steps):
        batch = torch.stack([ds[step * cfg.batch_size + k] for k in range(cfg.batch_size)])
        results.append(train_step(state, loss_fn, cfg, batch).terms)
    return state, results


def _finite(terms: dict) -> bool:
    return all(math.isfinite(float(v)) for v in terms.values())


# -- the probe options -----------------------------------------------------------------------------------
class _SquaredError(nn.Module):
    """A stand-in perceptual network: per-sample mean squared error."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).pow(2).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("weight", [0.03, 1.0])
def test_perceptual_weight_scales_its_term(setup, tmp_path: Path, weight: float) -> None:
    cfg = _stage2(setup, tmp_path, loss__perceptual=weight)
    _, results = _run_steps(cfg, 2, _SquaredError())
    for terms in results:
        assert _finite(terms) and float(terms["rec/perceptual"]) > 0
        expected = sum(
            w * float(terms[k])
            for k, w in (("rec/l1", 1.0), ("rec/perceptual", weight), ("adv/gen", 0.1))
            if k in terms
        )
        assert float(terms["loss/total"]) == pytest.approx(expected, rel=1e-5)


def test_feature_matching_adds_its_term_and_moves_the_decoder(setup, tmp_path: Path) -> None:
    torch.manual_seed(0)
    on, on_terms = _run_steps(_stage2(setup, tmp_path / "on", loss__feature_matching=2.0))
    torch.manual_seed(0)
    off, off_terms = _run_steps(_stage2(setup, tmp_path / "off"))
    assert all(_finite(t) and float(t["adv/feature_matching"]) > 0 for t in on_terms)
    assert all("adv/feature_matching" not in t for t in off_terms)
    t = on_terms[-1]
    expected = float(t["rec/l1"]) + 0.1 * float(t["adv/gen"]) + 2.0 * float(t["adv/feature_matching"])
    assert float(t["loss/total"]) == pytest.approx(expected, rel=1e-5)
    moved = [not torch.equal(a, b) for a, b in zip(on.ema.parameters(), off.ema.parameters(), strict=True)]
    assert any(moved)
    with pytest.raises(ValueError, match="loss.feature_matching .* needs loss.adversarial"):
        _stage2(setup, tmp_path, loss__feature_matching=1.0, adversarial_weight=0.0)


def test_feature_matching_pairs_real_and_fake_through_the_same_augmentation() -> None:
    torch.manual_seed(0)
    critic = Critic(PatchDiscriminator(4).eval(), ("color", "translation", "cutout"), None)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a, b, c = critic.features(x, seed=5), critic.features(x, seed=5), critic.features(x, seed=6)
    assert feature_matching_loss(a[:-1], b[:-1]).item() == 0.0  # same seed: the same view
    assert feature_matching_loss(a[:-1], c[:-1]).item() > 0
    assert len(a) == 5 and a[-1].shape[1] == 1  # four LeakyReLU outputs, then the logits


def test_conditioned_discriminator_sees_the_codes(setup, tmp_path: Path) -> None:
    cfg = _stage2(
        setup, tmp_path, disc__conditioned=True, disc_augment=["color", "translation"], group_dropout=0.5
    )
    state, results = _run_steps(cfg)
    assert all(_finite(t) for t in results) and "adv/gen" in results[-1]
    latent = state.tokenizer.config.latent_dim
    assert state.disc.main[0].in_channels == 3 + latent
    torch.manual_seed(1)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = torch.randint(0, 2, (2, latent, 8, 8)).float() * 2 - 1
    disc = state.disc.eval()
    seen = Critic(disc, (), codes).logits(images)
    assert not torch.equal(seen, Critic(disc, (), -codes).logits(images))  # other codes, other verdict
    with pytest.raises(RuntimeError):
        Critic(disc, (), None).logits(images)  # it needs them


def test_ema_decay_is_what_the_ema_keeps(setup, tmp_path: Path) -> None:
    state, _ = _run_steps(_stage2(setup, tmp_path / "a", ema_decay=0.0, ema_warmup=0), steps=2)
    pairs = zip(state.ema.parameters(), state.tokenizer.parameters(), strict=True)
    assert all(torch.equal(e, p) for e, p in pairs)
    state, _ = _run_steps(_stage2(setup, tmp_path / "b", ema_decay=0.99, ema_warmup=0), steps=2)
    pairs = zip(state.ema.parameters(), state.tokenizer.parameters(), strict=True)
    assert any(not torch.equal(e, p) for e, p in pairs)


# -- the validation split --------------------------------------------------------------------------------
# The split of the project's 195 training photos (TRAINING.md): a golden list, so that changing the rule
# (salt, modulus, hashing the path instead of the name) cannot pass unnoticed.
VALIDATION_PHOTOS = [
    "debian_backgrounds_mate_nature_RainDrops.jpg",
    "debian_kphotoalbum_demo_grand_canyon_2.jpg",
    "debian_libdlib19.1_examples_faces_2008_001322.jpg",
    "debian_libdlib19.1_examples_faces_2008_004176.jpg",
    "debian_libjxl-testdata_external_wesaturate_500px_tmshre_riaphotographs_srgb8.jpg",
    "debian_lxqt_wallpapers_after-the-rain.jpg",
    "debian_opencv-examples_data_ela_original.jpg",
    "debian_opencv-examples_data_smarties.jpg",
    "debian_pixmaps_faces_headphones.jpg",
    "debian_plasma_avatars_photos_Cat.jpg",
    "wikipedia_020.jpg",
    "wikipedia_031.jpg",
    "wikipedia_036.jpg",
    "wikipedia_049.jpg",
]


def test_validation_split_is_fixed_by_file_name() -> None:
    assert SALT == b"wetok-validation-v1\0"
    assert all(is_validation(Path("/any/folder") / name) for name in VALIDATION_PHOTOS)
    others = ("wikipedia_021.jpg", "debian_backgrounds_Wine_by_Jakkub_Mede.jpg")
    assert not any(is_validation(n) for n in others)
    names = [Path(f"photo_{i:04d}.jpg") for i in range(1300)]
    val, train_ = split_images(names, "val"), split_images(names, "train")
    assert sorted(val + train_) == names and not set(val) & set(train_)
    assert 70 <= len(val) <= 130  # about 1 in 13
    with pytest.raises(ValueError, match="split must be one of"):
        split_images(names, "test")


def _coloured_folder(folder: Path, count: int) -> dict[str, int]:
    """Flat images of distinct grey levels, by name; returns each name's level."""
    folder.mkdir(parents=True)
    levels = {}
    for i in range(count):
        name = f"flat_{i:03d}.png"
        levels[name] = 4 * i + 10
        Image.new("RGB", (40, 40), (levels[name],) * 3).save(folder / name)
    return levels


def test_training_never_sees_the_validation_photos(tmp_path: Path) -> None:
    levels = _coloured_folder(tmp_path / "data", 40)
    held = {lvl for name, lvl in levels.items() if is_validation(name)}
    assert held and len(held) < len(levels)
    cfg = _cfg(tmp_path / "data", tmp_path / "run", adversarial_weight=0.0)
    assert cfg.training_split == "train"
    from wetok_train.loop import make_loader

    seen = {int(img[0, 0, 0]) for img in make_loader(cfg, 0, 0, 1).dataset.images}
    assert seen == set(levels.values()) - held
    everything = _cfg(tmp_path / "data", tmp_path / "run", adversarial_weight=0.0, validation__holdout=False)
    assert len(make_loader(everything, 0, 0, 1).dataset.images) == len(levels)


def test_the_run_logs_detail_kept_on_validation_crops(setup, tmp_path: Path) -> None:
    data, _ = setup
    val = tmp_path / "val"
    _make_images(val, n=2, size=40)
    cfg = _stage2(
        setup, tmp_path / "run", steps=4, validation__every=2, validation__crop=32, validation__data=str(val)
    )
    train(cfg, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4]
    for r in rows:
        assert math.isfinite(r["psnr"]) and r["detail_kept"] > 0 and r["seed_spread"] >= 0
    assert rows[0]["seed_spread"] == 0  # zero-initialised noise inputs: the stage-1 decoder, any seed
    train(dataclasses.replace(cfg, steps=2), quiet=True, force=True)  # starting over starts a new curve
    rows = [json.loads(line) for line in (tmp_path / "run" / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2]
    too_large = {"validation__every": 2, "validation__crop": 512, "validation__data": str(val)}
    bad = _stage2(setup, tmp_path / "bad", **too_large)
    with pytest.raises(ValueError, match="validation.every: .* 512px"):
        train(bad, quiet=True)


def test_plot_helper_draws_the_curves(setup, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import importlib.util

    spec = importlib.util.spec_from_file_location("plot_detail", Path("examples/plot_detail.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "psnr": 20 + s, "detail_kept": 0.1 * s, "seed_spread": 1.0} for s in (0, 2, 2, 4)]
    (run / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["step"] for r in module.read_curve(run)] == [0, 2, 4]
    out = module.plot([run], tmp_path / "d.png")
    assert Image.open(out).size[0] > 100


# -- the shipped discriminator ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped(setup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-2 run's exported model folder: stage 1 unchanged + generative decoder + discriminator."""
    root = tmp_path_factory.mktemp("shipped")
    return train(_stage2(setup, root / "run", steps=3, disc__channels=8), quiet=True)


def test_stage2_ships_its_discriminator_without_touching_the_model(setup, shipped: Path) -> None:
    _, stage1 = setup
    assert (shipped / GENERATIVE_DECODER_NAME).is_file() and (shipped / DISCRIMINATOR_NAME).is_file()
    with safe_open(str(shipped / DISCRIMINATOR_NAME), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
        assert f.metadata()["format"] == "wetok-discriminator"
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    assert read_model_id(shipped) == read_model_id(stage1)
    assert Codec.from_pretrained(shipped).model_id == Codec.from_pretrained(stage1).model_id
    assert (shipped / "model.safetensors").read_bytes() == (stage1 / "model.safetensors").read_bytes()


def test_stage2_continues_from_the_shipped_state(setup, shipped: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    cfg = _stage2(setup, tmp_path / "next", init_from=str(shipped), disc__channels=8)
    state = build_state(cfg, CPU, 1)
    decoder = load_file(str(shipped / GENERATIVE_DECODER_NAME))
    for k, v in state.tokenizer.decoder.state_dict().items():
        assert torch.equal(v, decoder[k].float()), k  # the generator continues the shipped decoder
    disc = load_file(str(shipped / DISCRIMINATOR_NAME))
    for k, v in state.disc.state_dict().items():
        assert torch.equal(v, disc[f"disc.{k}"].to(v.dtype)), k
    assert float(state.adv.ema_real) == float(disc["lecam.ema_real"])
    fresh = build_state(_stage2(setup, tmp_path / "fresh", init_from=str(shipped), disc__channels=8,
                                stage2__continue_shipped=False), CPU, 1)  # fmt: skip
    assert not torch.equal(fresh.tokenizer.decoder.conv_out.weight, state.tokenizer.decoder.conv_out.weight)
    assert not torch.equal(fresh.disc.main[0].weight, state.disc.main[0].weight)
    # The continued run trains and ships again (a chain of runs).
    again = _stage2(setup, tmp_path / "run", init_from=str(shipped), disc__channels=8, steps=2)
    out = train(again, quiet=True)
    assert (out / DISCRIMINATOR_NAME).is_file() and read_model_id(out) == read_model_id(shipped)


def test_a_shipped_discriminator_that_does_not_fit_is_a_usage_error(setup, shipped: Path, tmp_path: Path):
    data, _ = setup
    args = ["train", "-s", "crop=32", "-s", "batch_size=2", "-s", 'loss.perceptual_net="none"', "-q"]
    args += ["--stage", "2", "--init-from", str(shipped), "--data", str(data), "-s", "steps=1"]
    args += ["-s", "stage2.level_noise=true", "-s", "stage2.attach_decoder=true", "-s", "disc.channels=16"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert DISCRIMINATOR_NAME in result.output and "stage2.continue_shipped = false" in result.output
    flags = ["-s", "stage2.level_noise=false", "-s", "stage2.attach_decoder=false"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run2"), *flags])
    assert result.exit_code == 2 and "shipped generative decoder needs stage2.level_noise" in result.output


def test_a_discriminator_without_a_generative_decoder_is_refused(setup, shipped: Path, tmp_path: Path):
    import shutil

    folder = tmp_path / "odd"
    shutil.copytree(shipped, folder)
    (folder / GENERATIVE_DECODER_NAME).unlink()
    with pytest.raises(ValueError, match="no generative decoder to continue"):
        build_state(_stage2(setup, tmp_path / "r", init_from=str(folder), disc__channels=8), CPU, 1)
    (folder / DISCRIMINATOR_NAME).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    shutil.copy(shipped / GENERATIVE_DECODER_NAME, folder)
    with pytest.raises(ValueError, match="not a discriminator file"):
        build_state(_stage2(setup, tmp_path / "r", init_from=str(folder), disc__channels=8), CPU, 1)


def test_uint8_measure_of_identical_images() -> None:
    from wetok_train.validation import measure

    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    row = measure([(img, img, img)])
    assert row["psnr"] == math.inf and row["detail_kept"] == 1.0 and row["seed_spread"] == 0.0


def test_a_generative_decoder_without_a_discriminator_continues_against_a_fresh_one(
    setup, shipped: Path, tmp_path: Path
) -> None:
    import shutil

    from safetensors.torch import load_file

    folder = tmp_path / "no-disc"  # as the bundled default ships today: no discriminator yet
    shutil.copytree(shipped, folder)
    (folder / DISCRIMINATOR_NAME).unlink()
    torch.manual_seed(0)
    state = build_state(_stage2(setup, tmp_path / "r", init_from=str(folder), disc__channels=8), CPU, 1)
    decoder = load_file(str(folder / GENERATIVE_DECODER_NAME))
    assert torch.equal(state.tokenizer.decoder.conv_out.weight, decoder["conv_out.weight"].float())
    trained = load_file(str(shipped / DISCRIMINATOR_NAME))["disc.main.0.weight"].float()
    assert not torch.allclose(state.disc.main[0].weight, trained, atol=1e-3)  # a fresh discriminator
    assert float(state.adv.ema_real) == 0.0
