"""The WeTok tokenizer: encoder → grouped lookup-free quantizer → (generative) decoder.

WeTok: Zhuang et al., "Powerful Discrete Tokenization for High-Fidelity Visual Reconstruction", ICLR 2026.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from wetok import setting
from wetok.config import TokenizerConfig
from wetok.fileio import atomic_path
from wetok.model import Decoder, Encoder
from wetok.modeldir import (
    CONFIG_NAME,
    GENERATIVE_DECODER_NAME,
    MODEL_ID_NAME,
    WEIGHTS_NAME,
    weights_sha256,
)
from wetok.quantizer import GroupedLFQ
from wetok.setting import widen_for_noise


class TokenizerOutput(NamedTuple):
    recon: Tensor  # [B, 3, H, W], unbounded
    codes: Tensor  # [B, d, h, w], ±1 with straight-through gradient
    indices: Tensor  # [B, h, w, g]
    losses: dict[str, Tensor]


class Tokenizer(nn.Module):
    """Images ``[B, 3, H, W]`` in ``[-1, 1]`` (``H, W`` multiples of ``f``) ↔ tokens ``[B, H/f, W/f, g]``."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = GroupedLFQ(
            groups=config.groups,
            group_bits=config.group_bits,
            temperature=config.entropy_temperature,
            codebook_entropy=config.codebook_entropy,
        )
        self.decoder = Decoder(config)
        self._weights_sha256: str | None = None
        # The stage-2 decoder for realism > 0, when the model has one. Kept out of the module tree on
        # purpose: state_dict() (and so the model id) is the model's own weights only.
        self._generative: list[Decoder] = []
        self.default_realism: float | None = None  # what files get when the encoder is not told

    # -- training ----------------------------------------------------------------------------------------
    def forward(
        self, images: Tensor, noise: Tensor | None = None, keep_groups: Tensor | None = None
    ) -> TokenizerOutput:
        """Training pass: reconstruction, codes, indices and the quantizer's losses. ``keep_groups``
        ``[B]``: the decoder sees only the first ``keep_groups[i]`` groups of sample ``i`` (the codes of the
        rest are zeroed: nested group dropout, so that every prefix of the groups decodes)."""
        frozen = not any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):  # stage 2: encoder fixed
            q = self.quantizer(self.encoder(images))
        codes = q.codes if keep_groups is None else self.keep_prefix(q.codes, keep_groups)
        if self.config.generative and noise is None:
            noise = self.random_noise(codes.shape)
        return TokenizerOutput(self.decoder(codes, noise), q.codes, q.indices, q.losses)

    def keep_prefix(self, codes: Tensor, keep_groups: Tensor) -> Tensor:
        """Codes ``[B, d, h, w]`` with every group from ``keep_groups[i]`` on zeroed in sample ``i``."""
        group_of_channel = torch.arange(codes.shape[1], device=codes.device) // self.config.group_bits
        mask = group_of_channel[None, :] < keep_groups.to(codes.device)[:, None]
        return codes * mask.to(codes.dtype)[:, :, None, None]

    def random_noise(self, codes_shape: Sequence[int], decoder: Decoder | None = None) -> list[Tensor]:
        """Fresh noise maps for ``decoder`` (default: the model's own) from the global RNG, on its device."""
        decoder = decoder or self.decoder
        return [
            torch.randn(s, device=self.device, dtype=self.dtype) for s in decoder.noise_shapes(codes_shape)
        ]

    # -- inference ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, images: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` in ``[-1, 1]`` → tokens ``[B, H/f, W/f, g]`` (int64, values < 2^{d'})."""
        f = self.config.downsample
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] % f or images.shape[3] % f:
            raise ValueError(
                f"expected images [B, 3, H, W] with H, W multiples of {f}, got {tuple(images.shape)}"
            )
        return self.quantizer(self.encoder(images.to(self.device, self.dtype)), with_losses=False).indices

    def tokens_to_codes(self, tokens: Tensor) -> Tensor:
        """Tokens ``[B, h, w, g]`` → codes ``[B, d, h, w]`` in ``{-1, 1}``."""
        if tokens.ndim != 4:
            raise ValueError(f"expected tokens [B, h, w, g], got {tuple(tokens.shape)}")
        if int(tokens.min()) < 0 or int(tokens.max()) >= 2**self.config.group_bits:
            raise ValueError(f"symbols (token values) must lie in [0, {2**self.config.group_bits})")
        return self.quantizer.indices_to_codes(tokens.to(self.device), self.dtype)

    # -- realism: which decoder paints the tokens (wetok.setting owns the decoder setting) ---------------
    @property
    def has_generative_decoder(self) -> bool:
        """Whether the model carries a stage-2 decoder beside its own (``realism`` above 0 uses it)."""
        return bool(self._generative)

    @property
    def generative_decoder(self) -> Decoder | None:
        """The stage-2 decoder beside the model's own (on the model's device), if it carries one."""
        return self._generative[0].to(self.device, self.dtype) if self._generative else None

    def attach_generative_decoder(self, decoder: Decoder, default_realism: float = 1.0) -> None:
        """Give this (non-generative) model a stage-2 decoder for ``realism > 0``; it must be this model's
        decoder architecture with noise inputs. ``default_realism``: the setting files get by default."""
        if self.config.generative:
            raise ValueError(
                "the model's own decoder is generative already; realism applies to models without"
            )
        self._generative = [decoder.to(self.device, self.dtype).eval().requires_grad_(False)]
        self.default_realism = default_realism

    def decoder_for(self, realism: float | None) -> Decoder:
        """:func:`wetok.setting.decoder_for` (kept for :func:`wetok.tiling.decode_tiled`'s ``realism=``
        fallback; the codec gives it the decoder and noise)."""
        return setting.decoder_for(self, realism)

    def draw_noise(
        self,
        codes_shape: Sequence[int],
        seed: int | None = 0,
        noise_scale: float = 1.0,
        realism: float | None = None,
    ) -> list[Tensor]:
        """:func:`wetok.setting.draw_noise` (kept for :func:`wetok.tiling.decode_tiled`'s ``seed=``
        fallback; the codec gives it the decoder and noise)."""
        chosen = setting.DecoderSetting(realism or 0.0, seed or 0, noise_scale)
        return setting.draw_noise(self, chosen, codes_shape) or []

    @torch.inference_mode()
    def decode(
        self,
        tokens: Tensor,
        seed: int | None = None,
        noise_scale: float = 1.0,
        noise: Tensor | Sequence[Tensor] | None = None,
        style: tuple[Tensor, Tensor] | None = None,
        realism: float | None = None,
    ) -> Tensor:
        """Tokens ``[B, h, w, g]`` → images ``[B, 3, h·f, w·f]`` clamped to ``[-1, 1]``.

        A generative decoder samples its noise maps from ``seed`` (:meth:`draw_noise`) or takes ``noise``
        as given; ``noise_scale=0`` gives its mean-like output. ``style`` overrides the AdaGN statistics.
        ``realism`` picks the decoder (:meth:`decoder_for`).
        """
        codes = self.tokens_to_codes(tokens)
        decoder = setting.decoder_for(self, realism)
        if decoder.generative and noise is None and seed is None:  # training's samples: the global RNG
            noise = [n * noise_scale for n in self.random_noise(codes.shape, decoder)]
        elif decoder.generative and noise is None:
            chosen = setting.DecoderSetting(realism or 0.0, seed, noise_scale)
            noise = setting.draw_noise(self, chosen, codes.shape)
        elif isinstance(noise, Tensor):
            noise = noise.to(self.device, self.dtype)
        elif noise is not None:
            noise = [n.to(self.device, self.dtype) for n in noise]
        return decoder(codes, noise if decoder.generative else None, style).clamp_(-1, 1)

    # -- stage 2 -----------------------------------------------------------------------------------------
    def to_generative(self, level_noise: bool = False, head_channels: int = 0) -> Tokenizer:
        """A generative copy whose decoder ``conv_in`` gains zero-initialised noise channels (and, with
        ``level_noise``, zero-weighted noise inputs after every decoder block; with ``head_channels``, a
        zero-initialised full-resolution head).

        The copy reproduces this model's output exactly for any noise until it is fine-tuned.
        """
        if self.config.generative:
            raise ValueError("the model is already generative")
        config = self.config.replace(generative=True, level_noise=level_noise, head_channels=head_channels)
        new = Tokenizer(config).to(self.device)
        fresh = new.state_dict()
        new.load_state_dict(widen_for_noise(self.state_dict(), fresh, keep_new=fresh))
        return new

    def with_groups(self, groups: int) -> Tokenizer:
        """A copy with ``groups`` groups (at least this model's), for training a larger rate from trained
        weights. The decoder's weights for the new channels start at zero, so the copy paints the old
        groups' tokens exactly as this model does; the encoder's new output channels start from a fresh
        initialisation (zero there would leave them, and the decoder columns reading them, without a
        gradient). Stage-1 models only: widen, then rerun stage 2."""
        cfg = self.config
        if self.config.generative:
            raise ValueError("widen the stage-1 model, then train its generative decoder again")
        if groups < cfg.groups:
            raise ValueError(f"a model of {cfg.groups} groups cannot be cut to {groups}")
        new = Tokenizer(cfg.replace(groups=groups)).to(self.device)
        state, target = self.state_dict(), new.state_dict()
        out = {}
        for key, fresh in target.items():
            old = state[key]
            if old.shape == fresh.shape:
                out[key] = old.clone()
                continue
            value = fresh.clone() if key.startswith("encoder.") else torch.zeros_like(fresh)
            value[tuple(slice(0, n) for n in old.shape)] = old
            out[key] = value
        new.load_state_dict(out)
        return new

    # -- persistence -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.decoder.conv_out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_out.weight.dtype

    @property
    def weights_sha256(self) -> str:
        """Hex SHA-256 of config and weights (of the saved file when loaded from one). Not the 6-byte model
        id of ``.wtk`` files, which also covers the prior: :attr:`wetok.codec.Codec.model_id`."""
        return self._weights_sha256 or weights_sha256(self.config, self.state_dict())

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (cast to ``dtype`` if given) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in self.state_dict().items()}
        metadata = {"format": "pt", "wetok_config": json.dumps(self.config.to_dict())}
        (directory / MODEL_ID_NAME).unlink(missing_ok=True)  # new weights: a stored id no longer holds
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata=metadata)
        self.config.save(directory / CONFIG_NAME)
        self._weights_sha256 = weights_sha256(self.config, state)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> Tokenizer:
        """Rebuild a tokenizer from ``config.json`` + ``model.safetensors`` alone (weights as float32)."""
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a wetok model directory (no {name})")
        from wetok.modeldir import check_state, read_model_files

        config, state = read_model_files(directory)  # dtypes, finite values, config depth: checked
        model = cls(config)
        check_state(directory / WEIGHTS_NAME, state, model.state_dict())  # names and shapes fit config
        model.load_state_dict({k: v.float() for k, v in state.items()})
        model._weights_sha256 = weights_sha256(config, state)
        if (directory / GENERATIVE_DECODER_NAME).is_file():
            model.attach_generative_decoder(
                *load_generative_decoder(directory / GENERATIVE_DECODER_NAME, config)
            )
        return model.to(device).eval()

    def save_generative_decoder(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write the stage-2 decoder as ``decoder_generative.safetensors`` into ``directory``."""
        if not self._generative:
            raise ValueError("the model has no generative decoder")
        path = Path(directory) / GENERATIVE_DECODER_NAME
        realism = 1.0 if self.default_realism is None else self.default_realism  # 0 is a default too
        return save_generative_decoder(self._generative[0], path, dtype, realism)


def save_generative_decoder(
    decoder: Decoder, path: Path, dtype: torch.dtype | None = None, default_realism: float = 1.0
) -> Path:
    """Write a stage-2 decoder's weights; the metadata holds the realism files get by default."""
    state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in decoder.state_dict().items()}
    metadata = {"format": "pt", "wetok_decoder": "generative", "default_realism": f"{default_realism:.2f}"}
    if hasattr(
        decoder, "head"
    ):  # read back by load_generative_decoder: a config is never guessed from shapes
        metadata["head_channels"] = str(decoder.head.conv_in.out_channels)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def load_generative_decoder(path: Path, config: TokenizerConfig) -> tuple[Decoder, float]:
    """The stage-2 decoder of a model of ``config`` (the same architecture with noise inputs at every
    level) and its default realism; checked like the model's own weights, one line naming the file."""
    from wetok.modeldir import ModelFilesError, check_state, read_weights, weights_metadata

    if config.generative:  # the add-on's place is beside a model whose own decoder is the faithful one
        raise ModelFilesError(f"{path}: the model's own decoder is generative already; remove this add-on")
    metadata = weights_metadata(path)
    head = metadata.get("head_channels", "0")
    if not head.isdigit() or int(head) > 256:
        raise ModelFilesError(f"{path}: head_channels is not a whole number in 0..256")
    decoder = Decoder(config.replace(generative=True, level_noise=True, head_channels=int(head)))
    state = read_weights(path)
    check_state(path, state, decoder.state_dict())
    try:
        realism = float(metadata.get("default_realism", "1"))
    except ValueError:
        realism = -1.0
    if not 0 <= realism <= 1:
        raise ModelFilesError(f"{path}: default_realism is not a number in [0, 1]")
    decoder.load_state_dict({k: v.float() for k, v in state.items()})
    return decoder.eval(), realism
