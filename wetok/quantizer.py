"""Grouped lookup-free quantization (GQ), from WeTok (Zhuang et al., ICLR 2026).

The latent's ``d`` channels split into ``g`` groups of ``d'`` channels; each channel is quantized to its sign
(±1), so each group is one symbol of the implicit codebook ``{-1, 1}^{d'}``. ``g = 1`` is LFQ (MAGVIT-v2),
``d' = 1`` is BSQ. Symbols are least-significant-bit first: channel ``j·d'`` is bit 0 of group ``j``.
The entropy loss is computed per group, so its memory grows with ``N·g·2^{d'}``, never ``N·2^d``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class QuantizerOutput(NamedTuple):
    codes: Tensor  # [B, d, h, w], ±1 in value, straight-through gradient to the latent
    indices: Tensor  # [B, h, w, g] int64 symbols in [0, 2^d')
    losses: dict[str, Tensor]  # "gq/token_entropy", "gq/codebook_entropy", "gq/entropy", "gq/commitment"


def bit_weights(group_bits: int, device: torch.device | None = None) -> Tensor:
    """``[d']`` int64 weights ``2^i``: bit ``i`` of a symbol is channel ``i`` of its group (LSB first)."""
    return 2 ** torch.arange(group_bits, device=device, dtype=torch.int64)


def codes_to_indices(codes: Tensor, group_bits: int) -> Tensor:
    """Latent or codes ``[B, d, h, w]`` → symbols ``[B, h, w, g]`` (int64). A channel is 1 where ``> 0``."""
    b, d, h, w = codes.shape
    bits = (codes > 0).to(torch.int64).reshape(b, d // group_bits, group_bits, h, w)
    symbols = (bits * bit_weights(group_bits, codes.device).view(1, 1, -1, 1, 1)).sum(dim=2)
    return symbols.permute(0, 2, 3, 1).contiguous()


def indices_to_codes(indices: Tensor, group_bits: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Symbols ``[B, h, w, g]`` → codes ``[B, g·d', h, w]`` in ``{-1, 1}``; the exact inverse of
    :func:`codes_to_indices`."""
    b, h, w, g = indices.shape
    bits = (indices.to(torch.int64).unsqueeze(-1) >> torch.arange(group_bits, device=indices.device)) & 1
    codes = bits.to(dtype) * 2 - 1  # [B, h, w, g, d']
    return codes.view(b, h, w, g * group_bits).permute(0, 3, 1, 2).contiguous()


def codebook(group_bits: int, device: torch.device | None = None) -> Tensor:
    """All ``2^{d'}`` codes of one group, ``[2^{d'}, d']`` in ``{-1, 1}``; row ``k`` is symbol ``k``."""
    k = torch.arange(2**group_bits, device=device)
    return (((k.unsqueeze(1) >> torch.arange(group_bits, device=device)) & 1) * 2 - 1).float()


def entropy_terms(
    latent: Tensor, group_bits: int, temperature: float = 0.01, variant: str = "pooled"
) -> tuple[Tensor, Tensor]:
    """Token entropy and codebook entropy of the soft assignments of a latent ``[B, d, h, w]``.

    Per group, ``p = softmax(2·⟨u, c⟩ / τ)`` over its ``2^{d'}`` codes. Token entropy is the mean of ``H(p)``
    over tokens and groups. Codebook entropy is ``H(mean p)``; ``variant="pooled"`` averages ``p`` over
    batch, positions **and groups** into one distribution (the official code), ``"per_group"`` averages the
    ``g`` per-group marginal entropies (the paper's product approximation). Memory: ``N·g·2^{d'}`` floats.
    """
    b, d, h, w = latent.shape
    u = latent.permute(0, 2, 3, 1).reshape(-1, d // group_bits, group_bits).float()  # [N, g, d']
    logits = 2.0 * (u @ codebook(group_bits, latent.device).t()) / temperature  # [N, g, 2^d']
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    token_entropy = -(p * log_p).sum(-1).mean()
    if variant == "pooled":
        avg_p = p.mean(dim=(0, 1))
        codebook_entropy = -(avg_p * torch.log(avg_p + 1e-5)).sum()
    elif variant == "per_group":
        avg_p = p.mean(dim=0)  # [g, 2^d']
        codebook_entropy = -(avg_p * torch.log(avg_p + 1e-5)).sum(-1).mean()
    else:
        raise ValueError(f"unknown codebook entropy variant {variant!r}")
    return token_entropy, codebook_entropy


class GroupedLFQ(nn.Module):
    """Sign quantizer over ``groups`` groups of ``group_bits`` channels, with straight-through gradient."""

    def __init__(
        self, *, groups: int, group_bits: int, temperature: float = 0.01, codebook_entropy: str = "pooled"
    ) -> None:
        super().__init__()
        self.groups, self.group_bits = groups, group_bits
        self.temperature, self.codebook_entropy = temperature, codebook_entropy

    @property
    def dim(self) -> int:
        return self.groups * self.group_bits

    def forward(self, latent: Tensor, *, with_losses: bool = True) -> QuantizerOutput:
        """Quantize ``latent [B, d, h, w]``; losses are computed only when ``with_losses``."""
        if latent.shape[1] != self.dim:
            raise ValueError(f"latent has {latent.shape[1]} channels, quantizer expects {self.dim}")
        q = torch.where(latent > 0, 1.0, -1.0).to(latent.dtype)
        codes = latent + (q - latent).detach()
        indices = codes_to_indices(latent, self.group_bits)
        losses: dict[str, Tensor] = {}
        if with_losses:
            tok, cb = entropy_terms(latent, self.group_bits, self.temperature, self.codebook_entropy)
            losses = {
                "gq/token_entropy": tok,
                "gq/codebook_entropy": cb,
                "gq/entropy": tok - cb,
                "gq/commitment": ((latent.float() - q.detach().float()) ** 2).mean(),
            }
        return QuantizerOutput(codes, indices, losses)

    def indices_to_codes(self, indices: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        if indices.shape[-1] != self.groups:
            raise ValueError(f"tokens have {indices.shape[-1]} groups, quantizer expects {self.groups}")
        return indices_to_codes(indices, self.group_bits, dtype)
