"""Building blocks of the WeTok encoder and decoder (Open-MAGVIT2 family; no attention anywhere), and the
**dense executor** that runs them on whole tensors.

The network's walk is written once, as ``walk(ex, ...)`` methods here and in :mod:`wetok.model`, against a
small executor interface (``input``, ``conv``, ``adaptive_norm``, ``result``). Two executors run it:

- :data:`DENSE` (this module): whole tensors, batches and autograd, for training and batch tokenizing;
  every ``forward`` is ``walk(DENSE, ...)``;
- :class:`wetok.tiling.Blocked`: whole-image GroupNorm statistics, blocks of token rows, buffers in a
  scratch file beyond one tile, for the codec.

Executors see only convolutions, GroupNorms, per-channel vectors and the functions a layer hands them
(depth-to-space, noise injection): how a layer is built stays in the layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ADAPTIVE_EPS = 1e-6  # adaptive GroupNorm's normalisation (no affine of its own)


def norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


def depth_to_space_dcr(y: Tensor) -> Tensor:
    """``[B, 4C, h, w]`` → ``[B, C, 2h, 2w]`` in DCR order: ``out[c, 2h+i, 2w+j] = in[(2i+j)·C + c, h, w]``.

    DCR is the release's order; ``nn.PixelShuffle`` (channel ``4c+2i+j``) would need permuted weights.
    """
    b, c4, h, w = y.shape
    c = c4 // 4
    if y.is_contiguous(memory_format=torch.channels_last) and c > 1:  # one copy, channels-last out
        t = y.permute(0, 2, 3, 1).reshape(b, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5)  # [B, h, i, w, j, C]
        return t.reshape(b, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    y = y.view(b, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2)  # [B, C, h, i, w, j]
    return y.reshape(b, c, 2 * h, 2 * w)


class Dense:
    """Runs a walk on whole tensors ``[B, C, H, W]``: the plain forward, with autograd."""

    def input(self, x: Tensor, patch: int = 1) -> Tensor:
        """The walk's input, seen through space-to-depth ``patch`` (1: as is)."""
        return F.pixel_unshuffle(x, patch) if patch > 1 else x

    def conv(
        self,
        x: Tensor,
        conv: nn.Conv2d,
        *,
        norm: nn.GroupNorm | None = None,
        act: bool = False,
        residual: Tensor | None = None,
        shortcut: nn.Conv2d | None = None,
        inject: Callable[[Tensor, Tensor], Tensor] | None = None,
        noise: Tensor | None = None,
        shuffle: Callable[[Tensor], Tensor] | None = None,
        scale: int = 1,
        keep: bool = False,
    ) -> Tensor:
        """``conv(silu(norm(x)))`` (without ``norm``: ``conv(silu(x))`` with ``act``, else ``conv(x)``),
        plus ``shortcut(residual)`` (or the residual itself), then ``inject(·, noise)``, then ``shuffle`` (a
        depth-to-space that multiplies the rows by ``scale``). ``keep``: whether the caller reads ``x`` again
        (the blocked executor frees it otherwise)."""
        if norm is not None:
            y = conv(F.silu(norm(x)))
        else:
            y = conv(F.silu(x)) if act else conv(x)
        if residual is not None:
            y = y + (shortcut(residual) if shortcut is not None else residual)
        if inject is not None:
            y = inject(y, noise)
        return shuffle(y) if shuffle is not None else y

    def adaptive_norm(self, x: Tensor, groups: int, gamma: Tensor, beta: Tensor) -> Tensor:
        """GroupNorm without affine, then ``· gamma + beta`` per sample and channel (``[B, C]`` each)."""
        x = F.group_norm(x, groups, eps=ADAPTIVE_EPS)
        return x * gamma.to(x.dtype)[..., None, None] + beta.to(x.dtype)[..., None, None]

    def result(self, x: Tensor, conv: nn.Conv2d, **kwargs) -> Tensor:
        """The walk's last stage, a :meth:`conv`: returned here, streamed by the blocked executor."""
        return self.conv(x, conv, **kwargs)


DENSE = Dense()


class ResBlock(nn.Module):
    """GN → swish → conv3×3 → GN → swish → conv3×3 (no biases), 1×1 shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, norm_groups: int = 32) -> None:
        super().__init__()
        self.norm1 = norm(cin, norm_groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = norm(cout, norm_groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def walk(self, ex, x, inject: NoiseInjection | None = None, noise: Tensor | None = None):
        """The block on executor ``ex``; with ``inject``, ``inject(block(x), noise)``."""
        h = ex.conv(x, self.conv1, norm=self.norm1, keep=True)  # x is read again: the residual
        return ex.conv(
            h, self.conv2, norm=self.norm2, residual=x, shortcut=self.nin_shortcut, inject=inject, noise=noise
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.walk(DENSE, x)


def style_stats(q: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel spatial mean and ``sqrt(unbiased var + 1e-6)`` of codes ``[B, d, h, w]`` → two ``[B, d]``.

    A 1×1 latent has no unbiased variance; it counts as 0 instead of NaN.
    """
    flat = q.flatten(2).float()
    var = flat.var(dim=2) if flat.shape[2] > 1 else torch.zeros_like(flat[..., 0])
    return flat.mean(dim=2), torch.sqrt(var + 1e-6)


class AdaptiveGroupNorm(nn.Module):
    """``GN_noaffine(x)·gamma(s) + beta(m)`` where ``m, s`` are the style statistics of the codes."""

    def __init__(self, channels: int, latent_dim: int, norm_groups: int = 32) -> None:
        super().__init__()
        self.norm_groups = norm_groups
        self.gamma = nn.Linear(latent_dim, channels)
        self.beta = nn.Linear(latent_dim, channels)

    def walk(self, ex, x, style: tuple[Tensor, Tensor]):
        mean, std = style
        return ex.adaptive_norm(x, self.norm_groups, self.gamma(std), self.beta(mean))

    def forward(self, x: Tensor, style: tuple[Tensor, Tensor]) -> Tensor:
        return self.walk(DENSE, x, style)


class Upsampler(nn.Module):
    """conv3×3 ``C→4C`` then depth-to-space ×2 in DCR order (:func:`depth_to_space_dcr`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4 * channels, 3, padding=1)

    def walk(self, ex, x):
        return ex.conv(x, self.conv1, shuffle=depth_to_space_dcr, scale=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.walk(DENSE, x)


class NoiseInjection(nn.Module):
    """``x + weight · n``: one noise map ``[B, 1, H, W]`` broadcast over the channels with a learned weight
    per channel, zero at initialisation so that adding it changes nothing until training moves it
    (StyleGAN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.weight.to(x.dtype)[None, :, None, None] * noise.to(x.dtype)
