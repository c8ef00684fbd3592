"""The decoder setting: which decoder paints a file's tokens, and with what noise.

A model may carry a generative decoder beside its own (or have a generative decoder of its own); a file may
then say how it wants to be painted: ``realism`` in ``[0, 1]`` (0 the model's own decoder, 1 the generative
one, a weight blend between) and the ``seed`` of the noise; a decode may also scale the noise
(``noise_scale``). This module is the setting's one owner:

- :class:`DecoderSetting`, the setting itself;
- how it is resolved: for a file being written (:func:`for_file`: the model's default, then what the caller
  asks; nothing at all where no decoder takes noise, so such files stay format version 1), and for a decode
  (:func:`for_decode`: the file's, then the caller's overrides, then realism 0 and seed 0);
- which decoder paints it (:func:`decoder_for`: the model's own, the generative one, or a blend);
- the noise maps it draws (:func:`draw_noise`, on the CPU from the seed, so every device sees the same);
- the seed search (:func:`search_seed`: the encoder has the original, so it can keep the seed whose decode
  looks closest).

:mod:`wetok.format` only reads and writes the setting's bytes (``Header.realism``, ``Header.seed``).
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import Tensor

from wetok.errors import DecoderSettingError, RealismError
from wetok.format import MAX_SEED, Header
from wetok.metrics import ms_ssim, psnr, ssim

if TYPE_CHECKING:
    from wetok.config import TokenizerConfig
    from wetok.model import Decoder

SEED_RANGE = (-(1 << 63), (1 << 64) - 1)  # what torch.Generator.manual_seed takes (a decode's --seed)


class Tokenizer(Protocol):
    """What the setting needs of a :class:`wetok.tokenizer.Tokenizer` (which imports this module)."""

    config: TokenizerConfig
    decoder: Decoder
    default_realism: float | None

    @property
    def has_generative_decoder(self) -> bool: ...

    @property
    def generative_decoder(self) -> Decoder | None: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...


@dataclass(frozen=True)
class DecoderSetting:
    """How tokens are painted: ``realism`` in ``[0, 1]``, the noise ``seed`` of a generative decoder, and
    ``noise_scale`` (the noise's standard deviation, ``>= 0``; decode-time only, never written to a file).
    A file holds realism in hundredths and a seed in ``0 … MAX_SEED`` (:func:`for_file` checks both)."""

    realism: float = 0.0
    seed: int = 0
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.realism, (int, float)) and 0 <= self.realism <= 1):
            raise RealismError(f"realism must lie in [0, 1], not {self.realism!r}")
        if type(self.seed) is not int or not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise DecoderSettingError(
                f"noise seed {self.seed!r} is not an integer in {SEED_RANGE[0]}..{SEED_RANGE[1]}"
            )
        if not (isinstance(self.noise_scale, (int, float)) and math.isfinite(self.noise_scale)):
            raise DecoderSettingError(f"noise scale must be a finite number, not {self.noise_scale!r}")
        if self.noise_scale < 0:
            raise DecoderSettingError(f"noise scale must not be negative, not {self.noise_scale!r}")
        object.__setattr__(self, "realism", float(self.realism))


# -- resolution ----------------------------------------------------------------------------------------------
def takes_noise(model: Tokenizer) -> bool:
    """Whether any decoder of ``model`` takes noise (its own is generative, or it carries a generative one):
    only then does a seed mean anything."""
    return model.config.generative or model.has_generative_decoder


def default_setting(model: Tokenizer) -> DecoderSetting | None:
    """The setting files get unless told otherwise: the model's measured default realism with seed 0 when
    it has a generative decoder, else none: a version-1 file, which decodes with the model's own decoder
    (so a default realism of 0 writes exactly the files of a model without one)."""
    realism = model.default_realism
    return DecoderSetting(realism, 0) if realism else None


def for_file(
    model: Tokenizer, realism: float | None = None, seed: int | None = None, seed_search: int = 1
) -> DecoderSetting | None:
    """The setting a file of ``model`` gets: :func:`default_setting` with ``realism`` and ``seed`` given
    over it, realism rounded to hundredths (``None``: a version-1 file). A seed search asks for a seed too.

    Where no decoder of the model takes noise, the seed means nothing, so the file carries no setting
    (``realism`` 0 or a ``seed`` alone still write version 1, which any wetok reads). Raises
    :class:`RealismError` for a realism the model cannot paint and :class:`DecoderSettingError` for a seed
    a file cannot hold or a seed search where the decoder takes no noise."""
    if realism is not None:
        decoder_for(model, realism)  # refuse a realism this model cannot paint, now
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise DecoderSettingError(f"a seed written into a .wtk file must lie in 0..{MAX_SEED}, not {seed!r}")
    if seed_search < 1:
        raise DecoderSettingError(f"a seed search needs at least 1 try, not {seed_search}")
    asked = realism is not None or seed is not None or seed_search > 1
    setting = default_setting(model)
    if takes_noise(model) and asked:
        base = setting or DecoderSetting()
        realism = base.realism if realism is None else round(float(realism), 2)
        setting = DecoderSetting(realism, base.seed if seed is None else seed)
    if seed_search > 1 and setting is None:
        raise DecoderSettingError(
            f"model {model.config.name or 'unnamed'} has no generative decoder: no seed to search for"
        )
    if seed_search > 1 and not decoder_for(model, setting.realism).generative:
        raise DecoderSettingError(
            "realism 0 paints with the model's own decoder, which takes no noise: a seed search needs a "
            "realism above 0"
        )
    return setting


def of_file(header: Header) -> DecoderSetting | None:
    """The setting a file's header carries (``None`` for version 1)."""
    return None if header.realism is None else DecoderSetting(header.realism, header.seed or 0)


def for_decode(
    written: DecoderSetting | None,
    realism: float | None = None,
    seed: int | None = None,
    noise_scale: float = 1.0,
) -> DecoderSetting:
    """The setting a decode uses: the file's (``written``), with ``realism`` and ``seed`` given over it;
    a file without one decodes with the model's own decoder and seed 0."""
    base = written or DecoderSetting()
    return DecoderSetting(
        base.realism if realism is None else realism, base.seed if seed is None else seed, noise_scale
    )


# -- which decoder paints it ---------------------------------------------------------------------------------
# One blend per generative decoder (the last realism asked): weak keys, so a dropped model frees it.
_blends: weakref.WeakKeyDictionary[Decoder, tuple[float, Decoder]] = weakref.WeakKeyDictionary()


def decoder_for(model: Tokenizer, realism: float | None) -> Decoder:
    """The decoder of ``realism`` in ``[0, 1]``: ``None`` or 0 the model's own; 1 the generative decoder;
    between them the weights interpolated linearly (network interpolation, Wang et al. 2018, ESRGAN: both
    decoders come from the same stage-1 weights, so the blend is a decoder in between)."""
    if realism is None or realism == 0:
        return model.decoder
    if not 0 <= realism <= 1:
        raise RealismError(f"realism must lie in [0, 1], not {realism}")
    generative = model.generative_decoder
    if generative is None:
        raise RealismError(
            f"model {model.config.name or 'unnamed'} has no generative decoder: realism must be 0"
        )
    if realism == 1:
        return generative
    cached = _blends.get(generative)
    if cached is None or cached[0] != realism:
        cached = (realism, blend_decoders(model.decoder, generative, realism))
        _blends[generative] = cached
    return cached[1]


def blend_decoders(base: Decoder, generative: Decoder, realism: float) -> Decoder:
    """A decoder with weights ``(1 - realism)·base + realism·generative`` (``base`` widened for noise)."""
    blended = copy.deepcopy(generative)
    target = generative.state_dict()
    widened = widen_for_noise(base.state_dict(), target)
    blended.load_state_dict(
        {k: torch.lerp(widened[k].float(), v.float(), realism) for k, v in target.items()}
    )
    return blended.eval()


def widen_for_noise(
    state: dict[str, Tensor], target: dict[str, Tensor], keep_new: dict[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """``state`` of a decoder (or tokenizer) made to fit ``target``, its generative version: ``conv_in`` gains
    zero weights for the noise channels, noise injections start at zero (stage 2 starts from this; a blend
    mixes it with the generative decoder). Weights ``state`` lacks are zero, or taken from ``keep_new`` (a
    fresh initialisation) where it has them: the full-resolution head's inner convolutions need non-zero
    weights to learn, its zero output convolution keeps the picture."""
    out = {}
    for key, ref in target.items():
        value = state.get(key)
        if value is None and keep_new is not None and "head." in key and key in keep_new:
            out[key] = keep_new[key].clone().to(ref.dtype)
        elif value is None:
            out[key] = torch.zeros_like(ref)
        elif value.shape != ref.shape:
            if not key.endswith("conv_in.weight") or 2 * value.shape[1] != ref.shape[1]:
                raise ValueError(f"{key}: {tuple(value.shape)} does not widen to {tuple(ref.shape)}")
            out[key] = torch.cat([value, torch.zeros_like(value)], dim=1).to(ref.dtype)
        else:
            out[key] = value.clone().to(ref.dtype)
    return out


# -- the noise it draws --------------------------------------------------------------------------------------
def draw_noise(model: Tokenizer, setting: DecoderSetting, codes_shape: Sequence[int]) -> list[Tensor] | None:
    """Every noise map the decoder of ``setting`` takes for codes of ``codes_shape`` ``[B, d, h, w]`` (whole
    image), ``None`` if it takes none. Drawn on the CPU from one generator seeded with ``setting.seed`` in
    the order of :meth:`Decoder.noise_shapes` (the input's first: a released generative model's noise is
    what it always drew), times ``noise_scale``. Same seed, same maps on every device; a tiled decode takes
    slices of these maps, so it sees the noise an untiled one sees."""
    decoder = decoder_for(model, setting.realism)
    if not decoder.generative:
        return None
    gen = torch.Generator().manual_seed(setting.seed)
    maps = []
    for shape in decoder.noise_shapes(codes_shape):
        noise = torch.randn(shape, generator=gen, dtype=torch.float32) * setting.noise_scale
        maps.append(noise.to(model.device, model.dtype))
    return maps


def decoder_and_noise(
    model: Tokenizer, setting: DecoderSetting, grid: tuple[int, int]
) -> tuple[Decoder, list[Tensor] | None]:
    """What the executor (:func:`wetok.tiling.decode_tiled`) is given to paint a ``grid = (h, w)`` token
    grid as ``setting`` says: the decoder, and its noise maps for the whole grid (``None`` if it takes
    none)."""
    codes_shape = (1, model.config.latent_dim, *grid)
    return decoder_for(model, setting.realism), draw_noise(model, setting, codes_shape)


# -- seed search ---------------------------------------------------------------------------------------------
# The distance is MS-SSIM, which no training loss of wetok optimises (L1, effnet-lite0 and the discriminator
# do), so a better seed by this measure is a better seed, not one the decoder was trained to please.
def seed_candidates(setting: DecoderSetting, tries: int) -> range:
    """The seeds a search of ``tries`` from ``setting.seed`` tries: fewer than ``tries`` near
    :data:`~wetok.format.MAX_SEED`, the largest seed a file holds."""
    return range(setting.seed, min(setting.seed + tries, MAX_SEED + 1))


def search_seed(
    decode: Callable[[int], np.ndarray], original: np.ndarray, setting: DecoderSetting, tries: int
) -> DecoderSetting:
    """The setting with the seed among :func:`seed_candidates` whose ``decode(seed)`` (``[H, W, 3]``
    uint8) has the highest :func:`seed_score` against ``original``; ties keep the lower seed."""
    if tries < 1:
        raise DecoderSettingError(f"a seed search needs at least 1 try, not {tries}")
    best, best_score = setting.seed, -np.inf
    for seed in seed_candidates(setting, tries):
        score = seed_score(decode(seed), original)
        if score > best_score:
            best, best_score = seed, score
    return DecoderSetting(setting.realism, best, setting.noise_scale)


def seed_score(decoded: np.ndarray, original: np.ndarray) -> float:
    """MS-SSIM where the image is large enough for its five scales (sides over 160 px), SSIM below that,
    PSNR for images too small even for SSIM's window (a seed hardly matters there)."""
    side = min(original.shape[:2])
    if side > 160:
        return float(ms_ssim(decoded, original))
    return float(ssim(decoded, original)) if side >= 11 else psnr(decoded, original)
