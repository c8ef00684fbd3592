"""Training configuration: one TOML file plus ``key=value`` overrides; the resolved config is saved.

A run is reproducible from its ``config.resolved.json`` alone: every hyperparameter the loop, the data and
the export use is a field here. Fields added later get defaults equal to the earlier hard-wired values, so
the configs of older runs and checkpoints load and mean what they meant.

``phases`` change some values for the first steps of a run (a schedule), e.g. in TOML::

    [[phases]]
    until = 1112              # steps 0 … 1111
    perceptual_weight = 0.1   # then the top-level value
"""

from __future__ import annotations

import dataclasses
import json
import math
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
    crop: int = 128
    batch_size: int = 8
    num_workers: int = 0
    steps: int = 1000
    lr: float = 1e-4
    lr_drops: tuple[int, ...] = ()  # steps at which the lr is multiplied by 0.1
    warmup_steps: int = 0  # linear lr warm-up: a fresh optimizer on trained weights needs a few hundred
    betas: tuple[float, float] = (0.5, 0.9)
    ema_decay: float = 0.999
    ema_warmup: int = 10  # EMA decay is min(ema_decay, (1 + step) / (ema_warmup + step)); 0: no warm-up
    # Loss weights (the WeTok paper's, Zhuang et al. 2026).
    l1_weight: float = 1.0
    perceptual: str = "effnet-lite0"  # "effnet-lite0", "lpips-vgg" or "none"
    perceptual_weight: float = 1.0
    entropy_weight: float = 0.1
    commitment_weight: float = 0.25
    adversarial_weight: float = 0.1  # 0 disables the discriminator entirely
    disc_start: int = 0
    disc_channels: int = 64
    lecam_weight: float = 0.05
    lecam_decay: float = 0.999  # EMA of the discriminator's mean logits that LeCam pulls towards
    r1_weight: float = 0.0  # R1 gradient penalty on real images, applied every r1_every steps (lazy R1)
    r1_every: int = 16
    disc_augment: tuple[str, ...] = ()  # DiffAugment policy for the discriminator: color, translation, cutout
    disc_lr: float = 0.0  # the discriminator's learning rate (same schedule as lr); 0: lr
    disc_warmup: int = 0  # first steps in which only the discriminator trains (generator frozen)
    # Stage 2: noise inputs after every decoder block (level_noise) and a mode-seeking term that pushes the
    # decodes of two noise draws apart (on diversity_fraction of the batch, decoded twice).
    level_noise: bool = False
    head_channels: int = 0  # a full-resolution head of this width on the generative decoder (0: none)
    diversity_weight: float = 0.0
    diversity_target: float = 0.02  # mean |decode(z1) - decode(z2)| on the [-1, 1] scale (2.55 on 0..255)
    diversity_fraction: float = 0.5  # share of the batch decoded a second time for the diversity term
    # Rates: widen_groups > 0 widens the init_from model to that many groups before training (stage 1; the
    # new channels are zero in the decoder, issue 21); group_dropout is the share of samples whose decoder
    # sees only a random prefix of min_groups … G - 1 groups (nested dropout: every prefix decodes).
    widen_groups: int = 0
    group_dropout: float = 0.0
    min_groups: int = 1
    # Stage 2: export the init_from model unchanged, the trained decoder beside it as
    # decoder_generative.safetensors (realism > 0), so its tokens, files and model id stay what they were.
    attach_decoder: bool = False
    # Schedule: values that differ before step ``until`` (see the module docstring).
    phases: tuple[dict[str, Any], ...] = ()
    # Data augmentation: with probability zoom_prob a crop covers up to 1/zoom_min times more of the image
    # (downscaled to ``crop``), so the model sees more content per crop; then a horizontal flip, p = 0.5.
    zoom_prob: float = 0.5
    zoom_min: float = 0.5
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
        self.lr_drops, self.betas = tuple(self.lr_drops), tuple(self.betas)  # type: ignore[assignment]
        if isinstance(self.disc_augment, (list, tuple)):
            self.disc_augment = tuple(self.disc_augment)
        self.phases = tuple(sorted((_check_phase(p) for p in self.phases), key=lambda p: p["until"]))

    def at(self, step: int) -> TrainConfig:
        """The config in effect at ``step``: the first phase whose ``until`` lies beyond it, else self."""
        for phase in self.phases:
            if step < phase["until"]:
                return dataclasses.replace(
                    self, **{k: v for k, v in phase.items() if k != "until"}, phases=()
                )
        return self

    def max_over_phases(self, name: str) -> float:
        """The largest value ``name`` takes in any phase (whether a loss is ever used)."""
        return max([getattr(self, name), *(p[name] for p in self.phases if name in p)])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training config keys: {', '.join(unknown)}")
        model = d.pop("model", None)
        if isinstance(model, str):
            model = TokenizerConfig.preset(model)
        elif isinstance(model, dict):
            model = dict(model)
            base = TokenizerConfig.preset(model.pop("preset")) if "preset" in model else TokenizerConfig()
            model = base.replace(**TokenizerConfig.known_keys(model))
        try:
            cfg = cls(**d) if model is None else cls(model=model, **d)
        except TypeError as e:
            raise ConfigError(f"bad training config: {e}") from None
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first key of a wrong type or out of range, before anything
        is built or trained (``steps = "many"``, ``checkpoint_every = 0``, ``device = "tpu"``)."""
        for name in _POSITIVE_INTS + _NONNEGATIVE_INTS:
            value, low = getattr(self, name), 1 if name in _POSITIVE_INTS else 0
            if type(value) is not int or not low <= value <= _MAX_INT:
                raise ConfigError(f"{name} must be an integer >= {low}, not {value!r}")
        for name in _WEIGHTS + ("lr", "disc_lr", "ema_decay"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, not {value!r}")
        _check(self.lr > 0, f"lr must be > 0, not {self.lr!r}")
        _check(self.ema_decay < 1, f"ema_decay must be below 1, not {self.ema_decay!r}")
        betas = self.betas
        _check(
            isinstance(betas, (list, tuple))
            and len(betas) == 2
            and all(type(b) in (int, float) and 0 <= b < 1 for b in betas),
            f"betas must be two numbers in [0, 1), not {betas!r}",
        )
        _check(
            isinstance(self.lr_drops, (list, tuple))
            and all(type(s) is int and s >= 0 for s in self.lr_drops),
            f"lr_drops must be a list of steps, not {self.lr_drops!r}",
        )
        _check(self.stage in (1, 2) and type(self.stage) is int, f"stage must be 1 or 2, not {self.stage!r}")
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            _check(value in allowed, f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        _check(
            self.device in DEVICE_CHOICES
            or (isinstance(self.device, str) and re.fullmatch(r"cuda:\d+", self.device) is not None),
            f"device must be one of {', '.join(DEVICE_CHOICES)} or cuda:N, not {self.device!r}",
        )
        for name in ("bf16", "level_noise", "attach_decoder"):
            _check(
                type(getattr(self, name)) is bool,
                f"{name} must be true or false, not {getattr(self, name)!r}",
            )
        _check(
            isinstance(self.disc_augment, tuple) and all(a in AUGMENTATIONS for a in self.disc_augment),
            f"disc_augment must be a list of {', '.join(AUGMENTATIONS)}, not {self.disc_augment!r}",
        )
        _check(
            type(self.diversity_fraction) in (int, float) and 0 < self.diversity_fraction <= 1,
            f"diversity_fraction must be in (0, 1], not {self.diversity_fraction!r}",
        )
        _check(
            type(self.group_dropout) in (int, float) and 0 <= self.group_dropout <= 1,
            f"group_dropout must be in [0, 1], not {self.group_dropout!r}",
        )
        _check(
            not self.widen_groups or (self.stage == 1 and self.init_from),
            "widen_groups widens an init_from model in stage 1",
        )
        _check(
            not self.attach_decoder or self.stage == 2,
            "attach_decoder is a stage-2 option (stage = 2)",
        )
        for name in ("init_from", "data", "out"):
            _check(
                isinstance(getattr(self, name), str), f"{name} must be a string, not {getattr(self, name)!r}"
            )
        _check(isinstance(self.model, TokenizerConfig), "model must be a preset name or a table")

    def save(self, path: str | Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")


def _check_phase(phase: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(phase, dict) or not isinstance(phase.get("until"), int) or phase["until"] < 1:
        raise ConfigError(f"phase {phase!r}: needs until = <first step after the phase, >= 1>")
    unknown = sorted(set(phase) - PHASE_KEYS - {"until"})
    if unknown:
        raise ConfigError(
            f"phase {phase!r}: cannot change {', '.join(unknown)} (only {', '.join(sorted(PHASE_KEYS))})"
        )
    return dict(phase)


EXPORT_DTYPE_NAMES = ("float16", "float32", "bfloat16")  # precisions the exported weights may have
_POSITIVE_INTS = (
    "crop",
    "batch_size",
    "steps",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "prior_images",
    "disc_channels",
    "r1_every",
    "min_groups",
)
_NONNEGATIVE_INTS = (
    "num_workers",
    "warmup_steps",
    "disc_start",
    "disc_warmup",
    "threads",
    "seed",
    "widen_groups",
    "head_channels",
)
_WEIGHTS = (
    "l1_weight",
    "perceptual_weight",
    "entropy_weight",
    "commitment_weight",
    "adversarial_weight",
    "lecam_weight",
    "r1_weight",
    "diversity_weight",
    "diversity_target",
)
# Values a phase may change: the schedule of the optimisation, not what is trained or on what.
PHASE_KEYS = frozenset({"lr", *_WEIGHTS})
_CHOICES = {
    "perceptual": ("effnet-lite0", "lpips-vgg", "none"),
    "export_dtype": EXPORT_DTYPE_NAMES,
}
AUGMENTATIONS = ("color", "translation", "cutout")  # DiffAugment's (wetok_train.losses.diff_augment)
_MAX_INT = 2**63 - 1  # torch seeds and step counters are int64


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as TOML, else taken as strings) to a nested dict."""
    d = json.loads(json.dumps(d))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        *parents, leaf = key.strip().split(".")
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
    if isinstance(d.get("model"), str):
        d["model"] = {"preset": d["model"]}
    d.update(values or {})
    return TrainConfig.from_dict(apply_overrides(d, list(overrides)))
