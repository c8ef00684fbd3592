"""Training: both stages end to end through the CLI, exact resume, atomic checkpoints, DDP replicas."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner
from PIL import Image

from wetok import Codec, Tokenizer
from wetok_cli.cmd_train import train_cmd
from wetok_train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from wetok_train.config import FLAT_KEYS, TrainConfig, load_config, nested_key
from wetok_train.data import CropDataset
from wetok_train.loop import train


def _make_images(folder: Path, n: int = 6, size: int = 48) -> Path:
    """Smooth random colour images (gradients + blobs), plus one too small and one unreadable file."""
    rng = np.random.default_rng(0)
    sub = folder / "nested"
    sub.mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        a = rng.uniform(0, 1, (3, 3))
        img = np.stack(
            [a[c, 0] * xx + a[c, 1] * yy + a[c, 2] * np.sin(6 * xx * (i + 1)) for c in range(3)], -1
        )
        Image.fromarray((np.clip(img / img.max(), 0, 1) * 255).astype(np.uint8)).save(sub / f"img{i}.png")
    Image.new("RGB", (8, 8)).save(folder / "small.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_images(tmp_path_factory.mktemp("data"))


def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    """A tiny run's config; ``kw`` by grouped name (``loss__adversarial``, ``__`` for the dot) or by the
    older flat name (``adversarial_weight``), either way into the grouped form."""
    base = {
        "model": "tiny",
        "data": str(data),
        "out": str(out),
        "crop": 32,
        "batch_size": 4,
        "steps": 6,
        "optim.lr": 1e-3,
        "loss.perceptual_net": "none",
        "disc.channels": 8,
        "log_every": 2,
        "sample_every": 3,
        "checkpoint_every": 3,
        "prior_images": 4,
    }
    base.update({nested_key(k.replace("__", ".")): v for k, v in kw.items()})
    d: dict = {}
    for key, value in base.items():
        *group, leaf = key.split(".")
        (d.setdefault(group[0], {}) if group else d)[leaf] = value
    return TrainConfig.from_dict(d | {"model": {"preset": d["model"]}})


def test_dataset_skips_small_and_broken_images(data: Path) -> None:
    with pytest.warns(UserWarning, match="skipping"):
        ds = CropDataset(data, 16)
    assert len(ds.images) == 6
    assert torch.equal(ds[5], ds[5]) and ds[5].shape == (3, 16, 16)
    assert ds[5].min() >= -1 and ds[5].max() <= 1


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('model = "tiny"\nsteps = 5\n')
    cfg = load_config(path, ["model.groups=4", "optim.lr_drops=[3]", "out=runs/x"])
    assert cfg.steps == 5 and cfg.model.groups == 4 and cfg.optim.lr_drops == (3,) and cfg.out == "runs/x"
    with pytest.raises(ValueError, match="unknown training config keys"):
        load_config(path, ["stepz=1"])
    odd = 'runs/it\'s \\ "here"'  # flag values are set as they are, never re-parsed as TOML
    assert load_config(path, ["steps=7"], {"out": odd, "steps": 6}).out == odd
    assert load_config(path, ["steps=7"], {"steps": 6}).steps == 7  # --set wins over flags


def test_both_stages_end_to_end_through_cli(tmp_path: Path, data: Path) -> None:
    runner = CliRunner()
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    common = [  # stage 2 takes its model from --init-from, so only stage 1 names one
        "-s",
        "crop=32",
        "-s",
        "batch_size=4",
        "-s",
        "optim.lr=2e-3",
        "-s",
        'loss.perceptual_net="none"',
        "-s",
        "disc.channels=8",
        "-s",
        "log_every=5",
        "-s",
        "sample_every=20",
        "-s",
        "prior_images=4",
        "-q",
        "--data",
        str(data),
    ]
    stage1 = ["-s", 'model="tiny"', "-s", "steps=40", "-s", "loss.adversarial=0"]
    r = runner.invoke(train_cmd, [*common, *stage1, "--out", str(s1)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (s1 / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["rec/l1"] < rows[0]["rec/l1"]  # it learns
    assert len(rows[-1]["gq/usage"]) == 2 and rows[-1]["img_per_s"] > 0
    assert (s1 / "config.resolved.json").is_file() and list((s1 / "samples").glob("*.png"))
    model1 = Tokenizer.from_pretrained(s1 / "model")
    assert not model1.config.generative and (s1 / "model" / "prior.json").is_file()

    r = runner.invoke(
        train_cmd,
        [*common, "--out", str(s2), "--stage", "2", "--init-from", str(s1 / "model"), "-s", "steps=6"],
    )
    assert r.exit_code == 0, r.output
    model2 = Tokenizer.from_pretrained(s2 / "model")
    assert model2.config.generative
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(model2.encode(x), model1.encode(x))  # encoder and quantizer frozen in stage 2
    rows = [json.loads(line) for line in (s2 / "metrics.jsonl").read_text().splitlines()]
    assert "adv/gen" in rows[-1] and "gq/entropy" not in rows[-1]
    assert len(rows[-1]["gq/usage"]) == 2  # usage counted on the stage-1 model's groups
    assert Codec.from_pretrained(s2 / "model").prior.groups == 2  # entropy tables fitted on its tokens


def test_cli_usage_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(train_cmd, ["-s", "steps=1"])
    assert r.exit_code == 2 and "no training data" in r.output
    r = CliRunner().invoke(train_cmd, ["--data", str(tmp_path), "-s", "bogus=1"])
    assert r.exit_code == 2 and "bogus" in r.output
    r = CliRunner().invoke(train_cmd, ["--data", str(tmp_path), "--stage", "2", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "stage 2 needs init_from" in r.output and not (tmp_path / "r").exists()


def test_resume_is_exact(tmp_path: Path, data: Path) -> None:
    train(_cfg(data, tmp_path / "a"), quiet=True)
    train(_cfg(data, tmp_path / "b", steps=3), quiet=True)
    train(_cfg(data, tmp_path / "b"), resume=True, quiet=True)
    a, b = (
        load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME),
        load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME),
    )
    assert a["step"] == b["step"] == 6
    for part in ("model", "ema", "disc"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_sigterm_saves_a_checkpoint_and_stops(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    import wetok_train.loop as loop

    real_step = loop.train_step

    def step_then_signal(state, *args):  # noqa: ANN001, ANN202
        out = real_step(state, *args)
        if state.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    with pytest.raises(loop.TrainingStopped, match="stopped at step 2"):
        train(_cfg(data, tmp_path, adversarial_weight=0.0), quiet=True)
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint({"step": 1}, path)

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # a kill in the middle of writing

    import wetok_train.checkpoint

    monkeypatch.setattr(wetok_train.checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temporary file left behind


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, result: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from wetok.device import resolve_device
    from wetok_train.loop import train_step
    from wetok_train.losses import GeneratorLoss
    from wetok_train.state import build_state

    cfg = _cfg(Path(data), Path(out), steps=3)
    device = resolve_device("cpu")
    dist.init_process_group("gloo")
    state = build_state(cfg, device, world)
    loss_fn = GeneratorLoss(cfg, None)
    ds = CropDataset(cfg.data, cfg.crop)
    for step in range(cfg.steps):
        batch = torch.stack([ds[(step * world + rank) * cfg.batch_size + k] for k in range(cfg.batch_size)])
        train_step(state, loss_fn, cfg, batch)
    flat = torch.cat([p.detach().flatten() for p in state.tokenizer.parameters()])
    torch.save(flat, f"{result}.{rank}")
    dist.destroy_process_group()


def test_ddp_replicas_stay_identical(tmp_path: Path, data: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = str(tmp_path / "params")
    mp.spawn(_ddp_worker, args=(2, port, str(data), str(tmp_path / "run"), result), nprocs=2, join=True)
    p0, p1 = torch.load(f"{result}.0"), torch.load(f"{result}.1")
    assert torch.equal(p0, p1)
    torch.manual_seed(0)
    assert not torch.equal(
        p0, torch.cat([p.flatten() for p in Tokenizer(_cfg(data, tmp_path).model).parameters()])
    )


def test_stage1_continues_from_a_model_with_fresh_optimizer_and_warmup(tmp_path: Path, data: Path) -> None:
    first = train(_cfg(data, tmp_path / "a", adversarial_weight=0.0, steps=4), quiet=True)
    start = Tokenizer.from_pretrained(first)  # fp16 export, loaded as float32
    assert all(p.dtype == torch.float32 for p in start.parameters())
    cfg = _cfg(data, tmp_path / "b", adversarial_weight=0.0, steps=3, warmup_steps=4, init_from=str(first))
    cfg.model = TrainConfig().model  # the config file's model is ignored: the weights define the model
    before = cfg.to_dict()
    train(cfg, quiet=True)
    assert cfg.to_dict() == before  # the caller's config is not changed; the run saved its own copy
    resolved = json.loads((tmp_path / "b" / "config.resolved.json").read_text())
    assert resolved["model"] == start.config.to_dict()
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    # Logged values are means over the log window (log_every=2): the lr of steps 1 and 2 of a 4-step ramp.
    assert rows[0]["lr"] == pytest.approx(1e-3 * (1 / 4 + 2 / 4) / 2)
    ckpt = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert ckpt["step"] == 3 and ckpt["config"]["model"] == start.config.to_dict()
    moved = Tokenizer(start.config)
    moved.load_state_dict(ckpt["model"])
    assert any(not torch.equal(a, b) for a, b in zip(moved.parameters(), start.parameters(), strict=True))
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        train(_cfg(data, tmp_path / "c", init_from="no-such-model"), quiet=True)


# A run's resolved config from before the fields of later versions existed (the default recipe's stage-1
# run of 2026-12-01, trimmed): it must load, and the new fields must default to the old fixed behaviour.
OLD_RESOLVED = {
    "model": {"ch": 32, "ch_mult": [3, 4, 6], "num_res_blocks": 2, "groups": 6, "group_bits": 8,
              "generative": False, "in_channels": 3, "patch_size": 4, "norm_groups": 32,
              "entropy_temperature": 0.01, "codebook_entropy": "pooled", "name": "default", "extra": {}},
    "stage": 1, "init_from": "", "data": "/data", "out": "/runs/x", "crop": 128, "batch_size": 8,
    "num_workers": 0, "steps": 20000, "lr": 0.0002, "lr_drops": [17000], "betas": [0.5, 0.9],
    "ema_decay": 0.999, "l1_weight": 1.0, "perceptual": "none", "perceptual_weight": 0.0,
    "entropy_weight": 0.1, "commitment_weight": 0.25, "adversarial_weight": 0.0, "disc_start": 0,
    "disc_channels": 64, "lecam_weight": 0.05, "seed": 0, "device": "auto", "bf16": True, "threads": 2,
    "log_every": 50, "sample_every": 2000, "checkpoint_every": 500, "export_dtype": "float16",
    "prior_images": 64,
}  # fmt: skip


def test_old_resolved_configs_load_with_the_old_behaviour() -> None:
    cfg = TrainConfig.from_dict(OLD_RESOLVED)
    assert cfg.model.patch_size == 4 and cfg.optim.lr_drops == (17000,) and cfg.phases == ()
    # Every flat key landed in its group.
    assert (cfg.optim.lr, cfg.loss.perceptual_net, cfg.loss.commitment, cfg.disc.channels) == (
        0.0002,
        "none",
        0.25,
        64,
    )
    # Hyperparameters that were hard-wired before they became fields keep their values; a flat config
    # predates the validation split, so it trains on every photo, as it did.
    assert (cfg.optim.ema_warmup, cfg.disc.lecam_decay, cfg.zoom_prob, cfg.zoom_min, cfg.prior_crop) == (
        10,
        0.999,
        0.5,
        0.5,
        256,
    )
    assert cfg.validation.holdout is False and cfg.training_split == "all"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # and the resolved config round-trips, grouped
    assert "optim" in cfg.to_dict() and "lr" not in cfg.to_dict()
    assert TrainConfig.from_dict({"model": "tiny"}).validation.holdout is True  # new configs hold out


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).parents[1].glob("wetok/models/*/train_*.json")), ids=lambda p: p.parent.name
)
def test_the_released_models_training_configs_still_load(path: Path) -> None:
    flat = json.loads(path.read_text())
    cfg = TrainConfig.from_dict(flat)
    from wetok_train.config import GROUPS

    for key, value in flat.items():  # every value where its flat key now lives (or its group, if grouped)
        if key in ("model", "phases"):
            continue
        if key in GROUPS:
            for name, inner in value.items():
                got = getattr(getattr(cfg, key), name)
                assert got == (tuple(inner) if isinstance(inner, list) else inner), f"{key}.{name}"
            continue
        group, name = FLAT_KEYS.get(key, (None, key))
        got = getattr(getattr(cfg, group), name) if group else getattr(cfg, key)
        assert got == (tuple(value) if isinstance(value, list) else value), key
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_flat_and_grouped_keys_map_one_to_one(tmp_path: Path) -> None:
    from wetok_train.config import GROUPS

    for flat, (group, name) in FLAT_KEYS.items():  # every old key has a field to go to
        assert name in {f.name for f in __import__("dataclasses").fields(GROUPS[group])}, flat
    with pytest.raises(ValueError, match="adversarial_weight and loss.adversarial both given"):
        TrainConfig.from_dict({"adversarial_weight": 0.1, "loss": {"adversarial": 0.2}})
    with pytest.raises(ValueError, match=r"unknown training config keys in \[loss\]: adversarial_weight"):
        TrainConfig.from_dict({"loss": {"adversarial_weight": 0.1}})
    path = tmp_path / "c.toml"
    path.write_text('model = "tiny"\nadversarial_weight = 0.2\n')  # a flat file, a grouped override
    cfg = load_config(path, ["loss.adversarial=0.3", "lr=0.5"])
    assert (cfg.loss.adversarial, cfg.optim.lr, cfg.validation.holdout) == (0.3, 0.5, False)


@pytest.mark.parametrize("grouped", [True, False])
def test_phases_schedule_values_in_the_config(tmp_path: Path, data: Path, grouped: bool) -> None:
    path = tmp_path / "c.toml"
    text = (
        'model = "tiny"\n[optim]\nlr = 0.001\n[loss]\nperceptual = 0.03\n'
        "[[phases]]\nuntil = 2\noptim.lr = 0.01\nloss.perceptual = 0.1\n"
        "[[phases]]\nuntil = 1\noptim.lr = 0.1\n"
    )
    if not grouped:  # the older flat form means the same
        text = text.replace("[optim]\n", "").replace("[loss]\nperceptual", "perceptual_weight")
        text = text.replace("optim.lr", "lr").replace("loss.perceptual", "perceptual_weight")
    path.write_text(text)
    cfg = load_config(path)
    assert [p["until"] for p in cfg.phases] == [1, 2]  # sorted
    assert (cfg.at(0).optim.lr, cfg.at(1).optim.lr, cfg.at(2).optim.lr) == (0.1, 0.01, 0.001)
    perceptual = [cfg.at(s).loss.perceptual for s in (0, 1, 5)]
    assert perceptual == [0.03, 0.1, 0.03]
    assert cfg.max_over_phases("loss", "perceptual") == 0.1
    with pytest.raises(ValueError, match="cannot change steps"):
        TrainConfig.from_dict({"phases": [{"until": 3, "steps": 5}]})
    with pytest.raises(ValueError, match="cannot change loss.perceptual_net"):
        TrainConfig.from_dict({"phases": [{"until": 3, "loss": {"perceptual_net": "none"}}]})
    with pytest.raises(ValueError, match="needs until"):
        TrainConfig.from_dict({"phases": [{"lr": 1.0}]})

    from wetok.device import resolve_device
    from wetok_train.loop import train_step
    from wetok_train.losses import GeneratorLoss
    from wetok_train.state import build_state

    run = _cfg(data, tmp_path / "run", adversarial_weight=0.0, phases=[{"until": 2, "optim": {"lr": 0.5}}])
    state = build_state(run, resolve_device("cpu"), 1)
    loss_fn = GeneratorLoss(run, None)
    batch = torch.stack([CropDataset(run.data, run.crop)[i] for i in range(run.batch_size)])
    results = [train_step(state, loss_fn, run, batch) for _ in range(3)]
    assert [float(r.terms["lr"]) for r in results] == pytest.approx([0.5, 0.5, 1e-3])
    assert all("_indices" not in r.terms and r.indices.shape[-1] == 2 for r in results)


def test_attach_decoder_without_level_noise_is_refused(tmp_path: Path, data: Path) -> None:
    # It used to validate, train, and export a decoder that no model folder could load.
    with pytest.raises(ValueError, match="stage2.attach_decoder needs stage2.level_noise"):
        _cfg(data, tmp_path, stage=2, init_from="default", attach_decoder=True)
    r = CliRunner().invoke(
        train_cmd,
        ["--data", str(data), "--out", str(tmp_path / "r"), "--stage", "2", "--init-from", "default"]
        + ["-s", "stage2.attach_decoder=true"],
    )
    assert r.exit_code == 2 and "stage2.level_noise" in r.output and not (tmp_path / "r").exists()
    fixed = _cfg(data, tmp_path, stage=2, init_from="x", attach_decoder=True, level_noise=True)
    assert fixed.stage2.attach_decoder and fixed.stage2.level_noise


def test_the_total_loss_is_the_weighted_sum_of_its_terms(data: Path, tmp_path: Path) -> None:
    from wetok.device import resolve_device
    from wetok_train.loop import train_step
    from wetok_train.losses import GeneratorLoss
    from wetok_train.state import build_state

    cfg = _cfg(data, tmp_path, loss__adversarial=0.3, loss__entropy=0.2, loss__commitment=0.5)
    state = build_state(cfg, resolve_device("cpu"), 1)
    batch = torch.stack([CropDataset(cfg.data, cfg.crop)[i] for i in range(cfg.batch_size)])
    terms = train_step(state, GeneratorLoss(cfg, None), cfg, batch).terms
    weights = {"rec/l1": 1.0, "gq/entropy": 0.2, "gq/commitment": 0.5, "adv/gen": 0.3}
    assert float(terms["loss/total"]) == pytest.approx(sum(w * float(terms[k]) for k, w in weights.items()))
    hinge_and_lecam = float(terms["adv/disc"]) + cfg.disc.lecam_weight * float(terms["adv/lecam"])
    assert float(terms["adv/total"]) == pytest.approx(hinge_and_lecam)


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).parents[1].glob("examples/*.toml")), ids=lambda p: p.name
)
def test_the_example_configs_validate_in_the_grouped_form(path: Path) -> None:
    import tomllib

    raw = tomllib.loads(path.read_text())
    assert not set(raw) & set(FLAT_KEYS), "examples use the grouped form"
    for phase in raw.get("phases", []):
        assert not set(phase) & set(FLAT_KEYS)
    cfg = load_config(path)
    assert cfg.validation.holdout  # new recipes never train on the validation photos
