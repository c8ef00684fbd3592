"""Building blocks of the WeTok encoder and decoder (Open-MAGVIT2 family; no attention anywhere)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """GN → swish → conv3×3 → GN → swish → conv3×3 (no biases), 1×1 shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, norm_groups: int = 32) -> None:
        super().__init__()
        self.norm1 = norm(cin, norm_groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = norm(cout, norm_groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(x) if self.nin_shortcut is not None else x)


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

    def forward(self, x: Tensor, style: tuple[Tensor, Tensor]) -> Tensor:
        mean, std = style
        x = F.group_norm(x, self.norm_groups, eps=1e-6)
        return x * self.gamma(std).to(x.dtype)[..., None, None] + self.beta(mean).to(x.dtype)[..., None, None]


class Upsampler(nn.Module):
    """conv3×3 ``C→4C`` then depth-to-space ×2 in DCR order: ``out[c, 2h+i, 2w+j] = in[(2i+j)·C + c, h, w]``.

    DCR is the release's order; ``nn.PixelShuffle`` (channel ``4c+2i+j``) would need permuted weights.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4 * channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        b, c4, h, w = y.shape
        c = c4 // 4
        y = y.view(b, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2)  # [B, C, h, i, w, j]
        return y.reshape(b, c, 2 * h, 2 * w)


class NoiseInjection(nn.Module):
    """``x + weight · n``: one noise map ``[B, 1, H, W]`` broadcast over the channels with a learned weight
    per channel, zero at initialisation so that adding it changes nothing until training moves it
    (StyleGAN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.weight.to(x.dtype)[None, :, None, None] * noise.to(x.dtype)
