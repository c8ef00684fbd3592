"""The one configuration dataclass of a WeTok tokenizer, and named presets.

A model directory holds ``config.json`` (this dataclass) beside ``model.safetensors``; the config is never
inferred from tensor shapes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wetok.errors import ConfigError
from wetok.fileio import read_json_file, write_atomic

CODEBOOK_ENTROPY_VARIANTS = ("pooled", "per_group")
# Ranges checked before any tensor is built (a config file is input: ``num_res_blocks: 100000`` must not
# allocate until the machine swaps). Wide enough for every release (ch 256, 4 blocks, ch_mult up to 8).
_INT_RANGES = {
    "ch": (1, 4096),
    "num_res_blocks": (1, 64),
    "groups": (1, 1024),
    "group_bits": (1, 24),
    "in_channels": (1, 64),
    "patch_size": (1, 64),
    "norm_groups": (1, 4096),
    "head_channels": (0, 256),
}
MAX_CH_MULT_LEVELS = 8
MAX_PARAMS = 2_000_000_000  # 8 GB of float32 weights


def _check_types(c: TokenizerConfig) -> None:
    """Raise :class:`ConfigError` for a field of a wrong type or range (``"ch": "32"``, 1.5 blocks)."""
    for name, (lo, hi) in _INT_RANGES.items():
        value = getattr(c, name)
        if type(value) is not int or not lo <= value <= hi:
            raise ConfigError(f"model config: {name} must be an integer in {lo}..{hi}, not {value!r}")
    mult = c.ch_mult
    if (
        not isinstance(mult, (list, tuple))
        or not 1 <= len(mult) <= MAX_CH_MULT_LEVELS
        or any(type(m) is not int or not 1 <= m <= 64 for m in mult)
    ):
        raise ConfigError(
            f"model config: ch_mult must be 1..{MAX_CH_MULT_LEVELS} integers in 1..64, not {mult!r}"
        )
    for name in ("generative", "level_noise"):
        if type(getattr(c, name)) is not bool:
            raise ConfigError(f"model config: {name} must be true or false, not {getattr(c, name)!r}")
    t = c.entropy_temperature
    if type(t) not in (int, float) or not math.isfinite(t) or t <= 0:
        raise ConfigError(f"model config: entropy_temperature must be a positive number, not {t!r}")
    for name, kind in (("codebook_entropy", str), ("name", str)):
        if not isinstance(getattr(c, name), kind):
            raise ConfigError(f"model config: {name} must be a {kind.__name__}, not {getattr(c, name)!r}")


def estimated_params(c: TokenizerConfig) -> int:
    """About how many weights encoder + decoder have (their 3x3 convolutions), from the config alone."""
    widths = [c.ch * m for m in c.ch_mult]
    return sum(2 * (c.num_res_blocks + 1) * 2 * 9 * w * w for w in widths)


@dataclass(frozen=True)
class TokenizerConfig:
    """Every architecture hyperparameter of a WeTok tokenizer.

    ``ch``, ``ch_mult`` and ``num_res_blocks`` follow the official release; the latent has
    ``d = groups * group_bits`` channels and the image is downsampled by
    ``f = patch_size * 2 ** (len(ch_mult) - 1)``.

    ``patch_size > 1`` puts a space-to-depth stem in front of the encoder and depth-to-space after the decoder
    (as DC-AE and Cosmos-Tokenizer do), so no convolution runs at full resolution: on a CPU that buys about
    1.6x the training images per second for the same quality per image seen. The releases use 1.

    ``level_noise`` (generative decoders only) adds one map of Gaussian noise after every ResBlock of every
    decoder level, scaled per channel by learned weights that start at zero (StyleGAN's noise inputs): the
    release's noise, concatenated at the 1/f input only, is barely used and cannot paint fine texture.

    ``head_channels`` (generative decoders only; 0: none) adds a full-resolution head after the decoder's
    depth-to-space: per-pixel noise and cheap convolutions of that width at full resolution, as a
    zero-initialised residual on the picture (:class:`wetok.model.FullResolutionHead`). A patch stem's decoder
    otherwise has no layer at full resolution: its last convolution paints each patch × patch block at once.
    """

    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 1
    groups: int = 4
    group_bits: int = 8
    generative: bool = False
    level_noise: bool = False
    head_channels: int = 0
    in_channels: int = 3
    patch_size: int = 1
    norm_groups: int = 32
    entropy_temperature: float = 0.01
    codebook_entropy: str = "pooled"
    name: str = ""

    def __post_init__(self) -> None:
        _check_types(self)
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        widths = [self.ch * m for m in self.ch_mult]
        if any(w % self.norm_groups for w in widths):
            raise ConfigError(f"every width {widths} must be a multiple of norm_groups={self.norm_groups}")
        if self.patch_size & (self.patch_size - 1):
            raise ConfigError(f"patch_size must be a power of two >= 1, not {self.patch_size}")
        if self.level_noise and not self.generative:
            raise ConfigError("model config: level_noise needs a generative decoder (generative: true)")
        if self.head_channels and not self.generative:
            raise ConfigError("model config: head_channels needs a generative decoder (generative: true)")
        if self.codebook_entropy not in CODEBOOK_ENTROPY_VARIANTS:
            raise ConfigError(f"codebook_entropy must be one of {CODEBOOK_ENTROPY_VARIANTS}")
        params = estimated_params(self)
        if params > MAX_PARAMS:
            raise ConfigError(f"a model of about {params:,} parameters is over the limit of {MAX_PARAMS:,}")

    @property
    def latent_dim(self) -> int:
        """``d``: channels of the latent, ``groups * group_bits``."""
        return self.groups * self.group_bits

    @property
    def downsample(self) -> int:
        """``f``: pixels per token along each side."""
        return self.patch_size * 2 ** (len(self.ch_mult) - 1)

    @property
    def bits_per_token(self) -> int:
        return self.groups * self.group_bits

    @property
    def bpp(self) -> float:
        """Raw (uncoded) bits per pixel."""
        return self.bits_per_token / self.downsample**2

    def replace(self, **changes: Any) -> TokenizerConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        # Fields added after the first release are left out at their neutral value, so the dict, and with it
        # the id of every existing model (hashed from it), stays what it was.
        if d["patch_size"] == 1:
            del d["patch_size"]
        if not d["level_noise"]:
            del d["level_noise"]
        if not d["head_channels"]:
            del d["head_channels"]
        return d

    @classmethod
    def known_keys(cls, d: dict[str, Any]) -> dict[str, Any]:
        """``d`` without the legacy ``extra`` table (always empty, never read; files written before it
        was removed carry it); :class:`~wetok.errors.ConfigError` for any other unknown key."""
        if not isinstance(d, dict):
            raise ConfigError(f"a model config must be a JSON object, not {type(d).__name__}")
        d = dict(d)
        if d.pop("extra", {}) != {}:
            raise ConfigError("config key 'extra' is no longer supported")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        return cls(**cls.known_keys(d))

    def save(self, path: str | Path) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TokenizerConfig:
        return cls.from_dict(read_json_file(path, 1 << 20))

    @classmethod
    def preset(cls, name: str) -> TokenizerConfig:
        """One of :data:`PRESETS` by name."""
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        return PRESETS[name]


def _release(name: str, ch_mult: tuple[int, ...], groups: int, generative: bool = False) -> TokenizerConfig:
    return TokenizerConfig(
        ch=256,
        ch_mult=ch_mult,
        num_res_blocks=4,
        groups=groups,
        group_bits=8,
        generative=generative,
        name=name,
    )


PRESETS: dict[str, TokenizerConfig] = {
    # The six released WeTok configurations (the official release's YAML files; docs/import.md).
    "wetok-imagenet-f16": _release("wetok-imagenet-f16", (1, 1, 2, 2, 4), 4),
    "wetok-imagenet-f8": _release("wetok-imagenet-f8", (1, 2, 2, 4), 4),
    "wetok-gd-ratio24": _release("wetok-gd-ratio24", (1, 2, 2, 4), 8),
    "wetok-gd-ratio48": _release("wetok-gd-ratio48", (1, 2, 2, 4), 4),
    "wetok-gd-ratio192": _release("wetok-gd-ratio192", (1, 1, 2, 2, 4), 4),
    "wetok-gd-ratio768": _release("wetok-gd-ratio768", (1, 1, 2, 2, 4, 8), 4, generative=True),
    # Open-MAGVIT2: one 18-bit group (LFQ).
    "magvit2-f16-2p18": TokenizerConfig(
        ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=4, groups=1, group_bits=18, name="magvit2-f16-2p18"
    ),
    "magvit2-f8-2p18": TokenizerConfig(
        ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=4, groups=1, group_bits=18, name="magvit2-f8-2p18"
    ),
    # Small CPU-sized models.
    "tiny": TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, groups=2, group_bits=4, name="tiny"),
    "cpu-f16": TokenizerConfig(
        ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1, groups=4, group_bits=8, name="cpu-f16"
    ),
    "cpu-f16-gd": TokenizerConfig(
        ch=32,
        ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=1,
        groups=4,
        group_bits=8,
        generative=True,
        name="cpu-f16-gd",
    ),
}
