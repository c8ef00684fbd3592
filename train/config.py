"""Training configuration: one TOML file plus ``key=value`` overrides; the resolved config is saved.

A run is reproducible from its ``config.resolved.json`` alone: every hyperparameter the loop, the data and
the export use is a field here. The fields are grouped by concern, one TOML table each::

    model = "cpu-f16"            # the run: what, on which data, how long, logging, export
    data = "photos"
    steps = 1000
    [optim]                      # optimiser and EMA: lr, lr_drops, warmup_steps, betas, ema_decay ...
    lr = 1e-4
    [loss]                       # the weights of the generator's total loss, Σ weight·term
    perceptual = 0.03
    [disc]                       # the discriminator and its own loss (LeCam, R1, DiffAugment)
    channels = 32
    [stage2]                     # the generative decoder: noise inputs, attaching it, the diversity term
    level_noise = true
    [rate]                       # widening to more groups, nested group dropout
    [validation]                 # the held-out photos and the per-step detail log

``phases`` change some values for the first steps of a run (a schedule)::

    [[phases]]
    until = 1112                 # steps 0 … 1111
    loss.perceptual = 0.1        # then the value of [loss]

Configs in the older flat form (every resolved config and checkpoint written before the groups existed,
e.g. ``lr = 1e-4``, ``adversarial_weight = 0.1``) still load: each flat key has exactly one new place
(:data:`FLAT_KEYS`), and giving both is refused. They are accepted rather than refused because checkpoints
embed their config and ``init_from`` and ``--resume`` must keep reading them. A config in the flat form
predates the validation split, so it keeps meaning what it meant: no photos held out. Fields added later
get defaults equal to the earlier hard-wired values, for the same reason.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wetok.config import TokenizerConfig
from wetok.device import DEVICE_CHOICES
from wetok.errors import ConfigError
from wetok.fileio import write_atomic
from wetok_train.config_groups import (
    TERM_WEIGHTS,
    DiscConfig,
    LossWeights,
    OptimConfig,
    RateConfig,
    Stage2Config,
    ValidationConfig,
    check,
    check_bool,
    check_choice,
    check_integer,
    check_number,
)

EXPORT_DTYPE_NAMES = ("float16", "float32", "bfloat16")  # precisions the exported weights may have


GROUPS: dict[str, type] = {
    "optim": OptimConfig,
    "loss": LossWeights,
    "disc": DiscConfig,
    "stage2": Stage2Config,
    "rate": RateConfig,
    "validation": ValidationConfig,
}
# The flat keys of older configs and the group each now lives in (with its name there).
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{k: ("optim", k) for k in ("lr", "lr_drops", "warmup_steps", "betas", "ema_decay", "ema_warmup")},
    **{f"{k}_weight": ("loss", k) for k in ("l1", "perceptual", "entropy", "commitment", "adversarial")},
    "diversity_weight": ("loss", "diversity"),
    "perceptual": ("loss", "perceptual_net"),
    **{f"disc_{k}": ("disc", k) for k in ("start", "channels", "augment", "lr", "warmup")},
    **{k: ("disc", k) for k in ("lecam_weight", "lecam_decay", "r1_weight", "r1_every")},
    **{
        k: ("stage2", k)
        for k in ("level_noise", "head_channels", "attach_decoder", "diversity_target", "diversity_fraction")
    },
    **{k: ("rate", k) for k in ("widen_groups", "group_dropout", "min_groups")},
}
# Values a phase may change: the schedule of the optimisation, not what is trained or on what.
PHASE_KEYS: dict[str, frozenset[str]] = {
    "optim": frozenset({"lr"}),
    "loss": frozenset(TERM_WEIGHTS.values()),
    "disc": frozenset({"lecam_weight", "r1_weight"}),
    "stage2": frozenset({"diversity_target"}),
}


@dataclass
class TrainConfig:
    """Everything a run needs. Stage 1 and stage 2 differ by ``stage`` (and ``init_from``), not by code."""

    model: TokenizerConfig = field(default_factory=lambda: TokenizerConfig.preset("cpu-f16"))
    stage: int = 1  # 1: reconstruction; 2: generative decoder fine-tuning (needs init_from)
    # Stage 2: the stage-1 model to start from. Stage 1: optional, continue training a model (a model
    # directory, a training checkpoint or an installed model name such as "default") with a fresh optimizer.
    init_from: str = ""
    data: str = ""
    out: str = "runs/wetok"
    steps: int = 1000
    crop: int = 128
    batch_size: int = 8
    num_workers: int = 0
    # Data augmentation: with probability zoom_prob a crop covers up to 1/zoom_min times more of the image
    # (downscaled to ``crop``), so the model sees more content per crop; then a horizontal flip, p = 0.5.
    zoom_prob: float = 0.5
    zoom_min: float = 0.5
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    disc: DiscConfig = field(default_factory=DiscConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    rate: RateConfig = field(default_factory=RateConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # Schedule: values that differ before step ``until`` (see the module docstring).
    phases: tuple[dict[str, Any], ...] = ()
    # Engineering.
    seed: int = 0
    device: str = "auto"  # "cpu", "cuda" or "auto"
    bf16: bool = True  # autocast on CUDA only
    threads: int = 0  # CPU threads, 0 = torch default
    log_every: int = 20
    sample_every: int = 500
    checkpoint_every: int = 200
    export_dtype: str = "float16"
    prior_images: int = 64  # training images encoded to fit the exported entropy tables
    prior_crop: int = 256  # their crop side (at least ``crop``; ``crop`` if the images are smaller)

    def __post_init__(self) -> None:
        self.phases = tuple(sorted((_check_phase(p) for p in self.phases), key=lambda p: p["until"]))

    def at(self, step: int) -> TrainConfig:
        """The config in effect at ``step``: the first phase whose ``until`` lies beyond it, else self."""
        for phase in self.phases:
            if step < phase["until"]:
                changes = {k: v for k, v in phase.items() if k != "until"}
                groups = {g: dataclasses.replace(getattr(self, g), **v) for g, v in changes.items()}
                return dataclasses.replace(self, **groups, phases=())
        return self

    def max_over_phases(self, group: str, name: str) -> float:
        """The largest value ``group.name`` takes in any phase (whether a loss is ever used)."""
        values = [p[group][name] for p in self.phases if name in p.get(group, {})]
        return max([getattr(getattr(self, group), name), *values])

    @property
    def uses_discriminator(self) -> bool:
        return self.max_over_phases("loss", "adversarial") > 0

    @property
    def training_split(self) -> str:
        """The photos of ``data`` the run trains on (and fits its entropy tables on): all but the
        validation split, unless ``validation.holdout`` is off (configs written before the split)."""
        return "train" if self.validation.holdout else "all"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A validated config from a dict in the grouped form or the older flat one (not both for a key)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a training config is a table of keys, not {type(d).__name__}")
        d = grouped(d)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown training config keys: {', '.join(unknown)}")
        groups = {name: _group(name, d.pop(name, {})) for name in GROUPS}
        if "model" in d:
            d["model"] = _model_config(d["model"])
        try:
            cfg = cls(**d, **groups)
        except TypeError as e:
            raise ConfigError(f"bad training config: {e}") from None
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first key of a wrong type or out of range, or options that
        cannot work together, before anything is built or trained (``steps = "many"``, ``device = "tpu"``)."""
        self._validate_run()
        for name in GROUPS:
            getattr(self, name).validate()
        check(
            self.stage == 1 or self.init_from,
            "stage 2 needs init_from: the stage-1 model to start from (a model folder, checkpoint or name)",
        )
        check(
            not self.rate.widen_groups or (self.stage == 1 and self.init_from),
            "rate.widen_groups widens an init_from model in stage 1",
        )
        check(
            not self.stage2.attach_decoder or self.stage == 2,
            "stage2.attach_decoder is a stage-2 option (stage = 2)",
        )
        # A decoder attached beside a model is loaded as one with noise at every level; without it the
        # export would write a decoder that no model folder can load.
        check(
            not self.stage2.attach_decoder or self.stage2.level_noise,
            "stage2.attach_decoder needs stage2.level_noise = true (an attached decoder has noise at every "
            "level: without it, the exported model folder could not be loaded)",
        )
        check(
            self.max_over_phases("loss", "feature_matching") == 0 or self.uses_discriminator,
            "loss.feature_matching matches the discriminator's features: it needs loss.adversarial > 0",
        )
        if not self.init_from:  # with init_from, the loaded model's groups are checked (check_model_fits)
            check_min_groups(self, self.model.groups)

    def _validate_run(self) -> None:
        for name in ("crop", "batch_size", "steps", "log_every", "sample_every", "checkpoint_every"):
            check_integer(name, getattr(self, name), 1)
        check_integer("prior_images", self.prior_images, 1)
        for name in ("num_workers", "threads", "seed", "prior_crop"):
            check_integer(name, getattr(self, name), 0)
        check(self.stage in (1, 2) and type(self.stage) is int, f"stage must be 1 or 2, not {self.stage!r}")
        check_choice("export_dtype", self.export_dtype, EXPORT_DTYPE_NAMES)
        check(
            self.device in DEVICE_CHOICES
            or (isinstance(self.device, str) and re.fullmatch(r"cuda:\d+", self.device) is not None),
            f"device must be one of {', '.join(DEVICE_CHOICES)} or cuda:N, not {self.device!r}",
        )
        check_bool("bf16", self.bf16)
        check_number("zoom_prob", self.zoom_prob, low=0)
        check_number("zoom_min", self.zoom_min, low=0, strict=True)
        for name in ("init_from", "data", "out"):
            check(
                isinstance(getattr(self, name), str), f"{name} must be a string, not {getattr(self, name)!r}"
            )
        check(isinstance(self.model, TokenizerConfig), "model must be a preset name or a table")

    def save(self, path: str | Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")


def check_min_groups(cfg: TrainConfig, groups: int) -> None:
    """Group dropout draws prefixes of ``min_groups`` … ``groups - 1`` groups: there must be one."""
    check(
        cfg.rate.group_dropout == 0 or cfg.rate.min_groups < groups,
        f"rate.min_groups must be below the model's {groups} groups for group dropout, "
        f"not {cfg.rate.min_groups}",
    )


def grouped(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict in the grouped form. One in the flat form predates the validation split: it keeps
    training on every photo (``validation.holdout = false``) unless it says otherwise."""
    flat_form = any(k in FLAT_KEYS for k in d) and not any(k in GROUPS for k in d)
    d = nest(d)
    if flat_form:
        d.setdefault("validation", {}).setdefault("holdout", False)
    return d


def nest(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with every flat key of the older form moved into its group (:data:`FLAT_KEYS`)."""
    out = {k: (dict(v) if k in GROUPS and isinstance(v, dict) else v) for k, v in d.items()}
    for old in [k for k in d if k in FLAT_KEYS]:
        group, new = FLAT_KEYS[old]
        table = out.setdefault(group, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{group} must be a table, not {table!r}")
        if new in table:
            raise ConfigError(f"{old} and {group}.{new} both given: keep {group}.{new}")
        table[new] = out.pop(old)
    return out


def nested_key(key: str) -> str:
    """The grouped name of an override key: ``adversarial_weight`` → ``loss.adversarial``."""
    return ".".join(FLAT_KEYS[key]) if key in FLAT_KEYS else key


def _group(name: str, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{name} must be a table of keys, not {table!r}")
    cls = GROUPS[name]
    unknown = sorted(set(table) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"unknown training config keys in [{name}]: {', '.join(unknown)}")
    return cls(**table)


def _model_config(model: Any) -> TokenizerConfig:
    if isinstance(model, str):
        return TokenizerConfig.preset(model)
    if isinstance(model, dict):
        model = dict(model)
        base = TokenizerConfig.preset(model.pop("preset")) if "preset" in model else TokenizerConfig()
        return base.replace(**TokenizerConfig.known_keys(model))
    return model


def _check_phase(phase: Any) -> dict[str, Any]:
    if not isinstance(phase, dict) or type(phase.get("until")) is not int or phase["until"] < 1:
        raise ConfigError(f"phase {phase!r}: needs until = <first step after the phase, >= 1>")
    nested = nest(phase)
    wrong = [
        f"{g}.{k}" if isinstance(v, dict) else g
        for g, v in nested.items()
        if g != "until"
        for k in (v if isinstance(v, dict) else [None])
        if not isinstance(v, dict) or k not in PHASE_KEYS.get(g, ())
    ]
    if wrong:
        allowed = sorted(f"{g}.{k}" for g, keys in PHASE_KEYS.items() for k in keys)
        raise ConfigError(f"phase {phase!r}: cannot change {', '.join(wrong)} (only {', '.join(allowed)})")
    for g, values in nested.items():
        for k, v in values.items() if g != "until" else ():
            check_number(f"phase {phase['until']}: {g}.{k}", v, low=0)
    return nested


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as TOML, else taken as strings) to a nested dict; a
    flat key of the older form sets its grouped place (``-s lr=1e-3`` is ``-s optim.lr=1e-3``)."""
    d = json.loads(json.dumps(d))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        *parents, leaf = nested_key(key.strip()).split(".")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p} is not a table")
        node[leaf] = _parse_value(value.strip())
    return d


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), values: dict[str, Any] | None = None
) -> TrainConfig:
    """Read a TOML (or JSON) config file, set ``values`` (already typed, e.g. from CLI flags), then apply
    the ``key=value`` text overrides, and validate."""
    d: dict[str, Any] = {}
    if path:
        text = Path(path).read_text()
        d = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: a training config is a table of keys")
    d = grouped(d)  # the file as written decides its form, before overrides add grouped keys
    if isinstance(d.get("model"), str):
        d["model"] = {"preset": d["model"]}
    d.update(values or {})
    return TrainConfig.from_dict(apply_overrides(d, list(overrides)))
