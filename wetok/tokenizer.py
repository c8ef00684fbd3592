"""The WeTok tokenizer: encoder → grouped lookup-free quantizer → (generative) decoder.

WeTok: Zhuang et al., "Powerful Discrete Tokenization for High-Fidelity Visual Reconstruction", ICLR 2026.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from wetok.config import TokenizerConfig
from wetok.fileio import atomic_path
from wetok.model import Decoder, Encoder
from wetok.modeldir import CONFIG_NAME, MODEL_ID_NAME, WEIGHTS_NAME, weights_sha256
from wetok.quantizer import GroupedLFQ


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

    # -- training ----------------------------------------------------------------------------------------
    def forward(self, images: Tensor, noise: Tensor | None = None) -> TokenizerOutput:
        """Training pass: reconstruction, codes, indices and the quantizer's losses."""
        q = self.quantizer(self.encoder(images))
        if self.config.generative and noise is None:
            noise = torch.randn_like(q.codes)
        return TokenizerOutput(self.decoder(q.codes, noise), q.codes, q.indices, q.losses)

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

    def make_noise(self, shape: tuple[int, ...], seed: int | None = None, noise_scale: float = 1.0) -> Tensor:
        """``N(0, noise_scale²)`` noise drawn on the CPU from ``seed`` (same noise on every device)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        noise = torch.randn(shape, generator=gen, dtype=torch.float32) * noise_scale
        return noise.to(self.device, self.dtype)

    @torch.inference_mode()
    def decode(
        self,
        tokens: Tensor,
        seed: int | None = None,
        noise_scale: float = 1.0,
        noise: Tensor | None = None,
        style: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Tokens ``[B, h, w, g]`` → images ``[B, 3, h·f, w·f]`` clamped to ``[-1, 1]``.

        A generative model samples noise ``[B, d, h, w]`` from ``seed`` (or takes ``noise`` as given);
        ``noise_scale=0`` gives the decoder's mean-like output. ``style`` overrides the AdaGN statistics.
        """
        codes = self.tokens_to_codes(tokens)
        if self.config.generative and noise is None:
            noise = self.make_noise(tuple(codes.shape), seed, noise_scale)
        elif noise is not None:
            noise = noise.to(self.device, self.dtype)
        return self.decoder(codes, noise if self.config.generative else None, style).clamp_(-1, 1)

    # -- stage 2 -----------------------------------------------------------------------------------------
    def to_generative(self) -> Tokenizer:
        """A generative copy whose decoder ``conv_in`` gains zero-initialised noise channels.

        The copy reproduces this model's output exactly for any noise until it is fine-tuned.
        """
        if self.config.generative:
            raise ValueError("the model is already generative")
        new = Tokenizer(self.config.replace(generative=True)).to(self.device)
        state = {k: v.clone() for k, v in self.state_dict().items()}
        w = state["decoder.conv_in.weight"]
        state["decoder.conv_in.weight"] = torch.cat([w, torch.zeros_like(w)], dim=1)
        new.load_state_dict(state)
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
        config = TokenizerConfig.load(directory / CONFIG_NAME)
        state = load_file(str(directory / WEIGHTS_NAME))
        model = cls(config)
        model.load_state_dict({k: v.float() for k, v in state.items()})
        model._weights_sha256 = weights_sha256(config, state)
        return model.to(device).eval()
