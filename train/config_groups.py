"""The groups of a training config, one per concern (a TOML table each): optimiser, loss weights,
discriminator, stage 2, rate, validation. :class:`wetok_train.config.TrainConfig` holds one of each; each
validates its own fields, naming them as ``group.field``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wetok.errors import ConfigError

PERCEPTUAL_NETS = ("effnet-lite0", "lpips-vgg", "none")
AUGMENTATIONS = ("color", "translation", "cutout")  # DiffAugment's (wetok_train.losses.diff_augment)
MAX_GROUPS = 1024  # the most groups a model config (and a .wtk header) allows
MAX_INT = 2**63 - 1  # torch seeds and step counters are int64


@dataclass
class OptimConfig:
    """Adam for the generator (the discriminator's lr is ``disc.lr``) and the EMA of its weights."""

    lr: float = 1e-4
    lr_drops: tuple[int, ...] = ()  # steps at which the lr is multiplied by 0.1
    warmup_steps: int = 0  # linear lr warm-up: a fresh optimizer on trained weights needs a few hundred
    betas: tuple[float, float] = (0.5, 0.9)
    ema_decay: float = 0.999
    ema_warmup: int = 10  # EMA decay is min(ema_decay, (1 + step) / (ema_warmup + step)); 0: no warm-up

    def __post_init__(self) -> None:
        self.lr_drops = tuple(self.lr_drops) if isinstance(self.lr_drops, list) else self.lr_drops
        self.betas = tuple(self.betas) if isinstance(self.betas, list) else self.betas  # type: ignore

    def validate(self) -> None:
        check_number("optim.lr", self.lr, low=0, strict=True)
        check_number("optim.ema_decay", self.ema_decay, low=0)
        check(self.ema_decay < 1, f"optim.ema_decay must be below 1, not {self.ema_decay!r}")
        check_integer("optim.warmup_steps", self.warmup_steps, 0)
        check_integer("optim.ema_warmup", self.ema_warmup, 0)
        betas = self.betas
        check(
            isinstance(betas, tuple) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas),
            f"optim.betas must be two numbers in [0, 1), not {betas!r}",
        )
        check(
            isinstance(self.lr_drops, tuple) and all(type(s) is int and s >= 0 for s in self.lr_drops),
            f"optim.lr_drops must be a list of steps, not {self.lr_drops!r}",
        )


# The generator's loss terms (the keys the losses return) and the [loss] weight of each.
TERM_WEIGHTS = {
    "rec/l1": "l1",
    "rec/perceptual": "perceptual",
    "gq/entropy": "entropy",
    "gq/commitment": "commitment",
    "adv/gen": "adversarial",
    "adv/feature_matching": "feature_matching",
    "div/loss": "diversity",
}


@dataclass
class LossWeights:
    """The generator's total loss is ``Σ weight·term`` over these (the WeTok paper's, Zhuang et al. 2026)."""

    l1: float = 1.0
    perceptual: float = 1.0
    entropy: float = 0.1  # GQ entropy (stage 1: the quantizer trains)
    commitment: float = 0.25
    adversarial: float = 0.1  # 0 in every phase: no discriminator at all
    # L1 between the discriminator's intermediate features of the decode and of the original (DAC, EnCodec)
    feature_matching: float = 0.0
    diversity: float = 0.0  # mode seeking (stage2.diversity_target)
    perceptual_net: str = "effnet-lite0"  # "effnet-lite0", "lpips-vgg" or "none"

    def weights(self) -> dict[str, float]:
        """Weight per loss term key (``rec/l1`` …)."""
        return {term: getattr(self, name) for term, name in TERM_WEIGHTS.items()}

    def validate(self) -> None:
        for name in TERM_WEIGHTS.values():
            check_number(f"loss.{name}", getattr(self, name), low=0)
        check_choice("loss.perceptual_net", self.perceptual_net, PERCEPTUAL_NETS)


@dataclass
class DiscConfig:
    """The PatchGAN discriminator and its loss: hinge + ``lecam_weight``·LeCam + ``r1_weight``·R1."""

    channels: int = 64
    lr: float = 0.0  # its learning rate (same schedule as optim.lr); 0: optim.lr
    start: int = 0  # first step at which the adversarial terms apply
    warmup: int = 0  # first steps in which only the discriminator trains (generator frozen)
    augment: tuple[str, ...] = ()  # DiffAugment policy: color, translation, cutout
    lecam_weight: float = 0.05
    lecam_decay: float = 0.999  # EMA of the discriminator's mean logits that LeCam pulls towards
    r1_weight: float = 0.0  # R1 gradient penalty on real images, applied every r1_every steps (lazy R1)
    r1_every: int = 16
    # It also sees the codes the decoder painted from, upsampled to pixels and concatenated to its input
    # (HiFiC conditions its discriminator on the latent): realism judged for these tokens.
    conditioned: bool = False

    def __post_init__(self) -> None:
        self.augment = tuple(self.augment) if isinstance(self.augment, list) else self.augment

    def weights(self) -> dict[str, float]:
        """Weight per term of the discriminator's loss; lazy R1 scaled by its interval."""
        return {"adv/disc": 1.0, "adv/lecam": self.lecam_weight, "adv/r1": self.r1_weight * self.r1_every}

    def validate(self) -> None:
        check_integer("disc.channels", self.channels, 1)
        check_integer("disc.r1_every", self.r1_every, 1)
        check_integer("disc.start", self.start, 0)
        check_integer("disc.warmup", self.warmup, 0)
        for name in ("lr", "lecam_weight", "lecam_decay", "r1_weight"):
            check_number(f"disc.{name}", getattr(self, name), low=0)
        check(self.lecam_decay < 1, f"disc.lecam_decay must be below 1, not {self.lecam_decay!r}")
        check(
            isinstance(self.augment, tuple) and all(a in AUGMENTATIONS for a in self.augment),
            f"disc.augment must be a list of {', '.join(AUGMENTATIONS)}, not {self.augment!r}",
        )
        check_bool("disc.conditioned", self.conditioned)


@dataclass
class Stage2Config:
    """The generative decoder: noise inputs after every decoder block (``level_noise``), where it goes
    (``attach_decoder``: beside the unchanged init_from model, as decoder_generative.safetensors, so its
    tokens, files and model id stay what they were), and the mode-seeking term's target."""

    level_noise: bool = False
    head_channels: int = 0  # a full-resolution head of this width on the generative decoder (0: none)
    attach_decoder: bool = False
    diversity_target: float = 0.02  # mean |decode(z1) - decode(z2)| on the [-1, 1] scale (2.55 on 0..255)
    diversity_fraction: float = 0.5  # share of the batch decoded a second time for the diversity term
    # init_from has a generative decoder beside it: continue from it (and from its shipped discriminator,
    # discriminator.safetensors, when there is one); false: start over from the stage-1 decoder and a
    # fresh discriminator.
    continue_shipped: bool = True

    def validate(self) -> None:
        for name in ("level_noise", "attach_decoder", "continue_shipped"):
            check_bool(f"stage2.{name}", getattr(self, name))
        h = self.head_channels
        check(
            type(h) is int and 0 <= h <= 256, f"stage2.head_channels must be an integer in 0..256, not {h!r}"
        )
        check_number("stage2.diversity_target", self.diversity_target, low=0)
        f = self.diversity_fraction
        check(is_number(f) and 0 < f <= 1, f"stage2.diversity_fraction must be in (0, 1], not {f!r}")


@dataclass
class RateConfig:
    """``widen_groups`` > 0 widens the init_from model to that many groups before training (stage 1; the
    new channels are zero in the decoder, issue 21); ``group_dropout`` is the share of samples whose decoder
    sees only a random prefix of ``min_groups`` … G - 1 groups (nested dropout: every prefix decodes)."""

    widen_groups: int = 0
    group_dropout: float = 0.0
    min_groups: int = 1

    def validate(self) -> None:
        check_integer("rate.widen_groups", self.widen_groups, 0)
        check(
            self.widen_groups <= MAX_GROUPS,
            f"rate.widen_groups must be at most {MAX_GROUPS}, not {self.widen_groups}",
        )
        check_integer("rate.min_groups", self.min_groups, 1)
        d = self.group_dropout
        check(is_number(d) and 0 <= d <= 1, f"rate.group_dropout must be in [0, 1], not {d!r}")


@dataclass
class ValidationConfig:
    """Photos held out of training for choosing recipes and checkpoints (:mod:`wetok_train.validation`),
    and the detail-kept log of a run measured on them every ``every`` steps (``validation.jsonl``)."""

    holdout: bool = True  # the training data leaves out its validation split
    every: int = 0  # steps between measurements on the validation crops; 0: none
    images: int = 4  # validation photos measured (the first by name), one centre crop each
    crop: int = 256
    data: str = ""  # a folder of validation images; "": the validation split of ``data``

    def validate(self) -> None:
        check_bool("validation.holdout", self.holdout)
        check_integer("validation.every", self.every, 0)
        check_integer("validation.images", self.images, 1)
        check_integer("validation.crop", self.crop, 8)
        check(isinstance(self.data, str), f"validation.data must be a string, not {self.data!r}")


def is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def check_number(name: str, value: Any, low: float, strict: bool = False) -> None:
    ok = is_number(value) and (value > low if strict else value >= low)
    check(ok, f"{name} must be a finite number {'>' if strict else '>='} {low}, not {value!r}")


def check_integer(name: str, value: Any, low: int) -> None:
    check(
        type(value) is int and low <= value <= MAX_INT, f"{name} must be an integer >= {low}, not {value!r}"
    )


def check_bool(name: str, value: Any) -> None:
    check(type(value) is bool, f"{name} must be true or false, not {value!r}")


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    check(value in allowed, f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def check(ok: Any, message: str) -> None:
    if not ok:
        raise ConfigError(message)
