"""WeTok encoder and (generative) decoder, with the parameter names of the official release.

Shapes: images ``[B, 3, H, W]`` in ``[-1, 1]``; latents ``[B, d, H/f, W/f]`` with
``f = patch_size · 2^(L-1)``, ``L = len(ch_mult)``.

Each network's walk is written once (``walk(ex, ...)``) and run by an executor (:mod:`wetok.layers`):
``forward`` runs it densely; :mod:`wetok.tiling` runs the same walk in blocks with whole-image statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wetok.config import TokenizerConfig
from wetok.layers import DENSE, AdaptiveGroupNorm, NoiseInjection, ResBlock, Upsampler, norm, style_stats


def _blocks(cin: int, cout: int, n: int, norm_groups: int) -> nn.ModuleList:
    return nn.ModuleList(ResBlock(cin if k == 0 else cout, cout, norm_groups) for k in range(n))


class _Level(nn.Module):
    """One resolution level: ``block`` ResBlocks, then an optional resampler (named as in the release)."""

    def __init__(
        self,
        block: nn.ModuleList,
        resample: nn.Module | None,
        resample_name: str,
        noise: nn.ModuleList | None = None,
    ) -> None:
        super().__init__()
        self.block = block
        if resample is not None:
            self.add_module(resample_name, resample)
        if noise is not None:  # one NoiseInjection after each block (generative decoders with level_noise)
            self.noise = noise


class Encoder(nn.Module):
    """Image ``[B, 3, H, W]`` → latent ``[B, d, H/f, W/f]`` (continuous, before quantization)."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.patch_size = cfg.patch_size
        self.conv_in = nn.Conv2d(cfg.in_channels * cfg.patch_size**2, cfg.ch, 3, padding=1, bias=False)
        self.down = nn.ModuleList()
        cin = cfg.ch
        for i, cout in enumerate(widths):
            down = nn.Conv2d(cout, cout, 3, stride=2, padding=1) if i < len(widths) - 1 else None
            self.down.append(
                _Level(_blocks(cin, cout, cfg.num_res_blocks, cfg.norm_groups), down, "downsample")
            )
            cin = cout
        self.mid_block = _blocks(cin, cin, cfg.num_res_blocks, cfg.norm_groups)
        self.norm_out = norm(cin, cfg.norm_groups)
        self.conv_out = nn.Conv2d(cin, cfg.latent_dim, 1)

    def walk(self, ex, x):
        """Image → latent on executor ``ex`` (the blocked executor streams the latent to its sink)."""
        x = ex.conv(ex.input(x, self.patch_size), self.conv_in)
        for level in self.down:
            for block in level.block:
                x = block.walk(ex, x)
            if hasattr(level, "downsample"):
                x = ex.conv(x, level.downsample)
        for block in self.mid_block:
            x = block.walk(ex, x)
        return ex.result(x, self.conv_out, norm=self.norm_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.walk(DENSE, x)


class FullResolutionHead(nn.Module):
    """A generative decoder's last layers, at full resolution: ``picture + conv_out(silu(conv_mid(silu(
    conv_in(picture) + noise))))``, one per-pixel noise map ``[B, 1, H, W]`` scaled per channel.

    StyleGAN injects noise before the convolutions of every resolution; a patch stem's decoder has none at
    full resolution, so its grain comes in ``patch``-sized blocks. ``conv_out`` and the noise scales start
    at zero: the head adds nothing until trained, so the faithful decoder (without it) and the realism blend
    (its weights interpolated towards zero) keep working.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.noise = NoiseInjection(channels)
        self.conv_mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def walk(self, ex, picture, noise: Tensor):
        h = ex.conv(picture, self.conv_in, inject=self.noise, noise=noise, keep=True)
        h = ex.conv(h, self.conv_mid, act=True)
        return ex.result(h, self.conv_out, act=True, residual=picture)


class Decoder(nn.Module):
    """Codes ``[B, d, h, w]`` (plus noise when generative) → image ``[B, 3, h·f, w·f]``.

    A generative decoder takes the noise maps of :meth:`noise_shapes`: ``[B, d, h, w]`` concatenated with
    the codes at the input (the release's), then with ``level_noise`` one ``[B, 1, H_l, W_l]`` map per
    ResBlock of every level, in the order the blocks run. The output is unbounded; clamp to ``[-1, 1]`` for
    display. Adaptive GroupNorm reads the codes alone.
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.generative = cfg.generative
        self.num_res_blocks = cfg.num_res_blocks
        d = cfg.latent_dim
        cin = widths[-1]
        self.conv_in = nn.Conv2d(2 * d if cfg.generative else d, cin, 3, padding=1)
        self.mid_block = _blocks(cin, cin, cfg.num_res_blocks, cfg.norm_groups)
        up: list[nn.Module] = [nn.Module()] * len(widths)
        adaptive: list[nn.Module] = [nn.Module()] * len(widths)
        for i in reversed(range(len(widths))):
            adaptive[i] = AdaptiveGroupNorm(cin, d, cfg.norm_groups)
            cout = widths[i]
            ups = Upsampler(cout) if i > 0 else None
            noise = None
            if cfg.level_noise:
                noise = nn.ModuleList(NoiseInjection(cout) for _ in range(cfg.num_res_blocks))
            up[i] = _Level(_blocks(cin, cout, cfg.num_res_blocks, cfg.norm_groups), ups, "upsample", noise)
            cin = cout
        self.up = nn.ModuleList(up)  # indexed by level, not by execution order
        self.adaptive = nn.ModuleList(adaptive)
        self.norm_out = norm(cin, cfg.norm_groups)
        self.patch_size = cfg.patch_size
        self.conv_out = nn.Conv2d(cin, 3 * cfg.patch_size**2, 3, padding=1)
        if cfg.head_channels:
            self.head = FullResolutionHead(cfg.head_channels)

    def noise_shapes(self, codes_shape: Sequence[int]) -> list[tuple[int, ...]]:
        """Shapes of the noise maps a generative decoder takes for codes of ``codes_shape`` (none if not
        generative): the input's ``[B, d, h, w]``, then one ``[B, 1, H_l, W_l]`` per level block."""
        if not self.generative:
            return []
        b, d, h, w = codes_shape
        shapes: list[tuple[int, ...]] = [(b, d, h, w)]
        for i in reversed(range(len(self.up))):
            if hasattr(self.up[i], "noise"):
                scale = 2 ** (len(self.up) - 1 - i)  # level i runs at 2^(L-1-i) times the token grid
                shapes += [(b, 1, h * scale, w * scale)] * self.num_res_blocks
        if hasattr(self, "head"):  # last, so the maps before it are drawn as without a head
            f = self.patch_size * 2 ** (len(self.up) - 1)
            shapes.append((b, 1, h * f, w * f))
        return shapes

    def check_noise(
        self, codes_shape: Sequence[int], noise: Tensor | Sequence[Tensor] | None
    ) -> list[Tensor]:
        """``noise`` as the list of maps this decoder takes for codes of ``codes_shape`` (a lone tensor is the
        input's); a ``ValueError`` when the shapes are not those of :meth:`noise_shapes`."""
        maps = [noise] if isinstance(noise, Tensor) else list(noise or [])
        if not self.generative:
            return []
        expected = self.noise_shapes(codes_shape)
        if [tuple(m.shape) for m in maps] != expected:
            raise ValueError(f"a generative decoder needs noise maps of shapes {expected}")
        return maps

    def walk(self, ex, codes: Tensor, noise: Tensor | Sequence[Tensor] | None, style: tuple[Tensor, Tensor]):
        """Codes (plus noise) → image on executor ``ex``; ``style``: the codes' statistics
        (:func:`~wetok.layers.style_stats`, of the whole image)."""
        maps = self.check_noise(codes.shape, noise)
        x = torch.cat([codes, maps[0].to(codes.device, codes.dtype)], dim=1) if self.generative else codes
        x = ex.conv(ex.input(x), self.conv_in)
        level_maps = iter(maps[1:])
        for block in self.mid_block:
            x = block.walk(ex, x)
        for i in reversed(range(len(self.up))):
            x = self.adaptive[i].walk(ex, x, style)
            level = self.up[i]
            for k, block in enumerate(level.block):
                if hasattr(level, "noise"):
                    x = block.walk(ex, x, level.noise[k], next(level_maps))
                else:
                    x = block.walk(ex, x)
            if hasattr(level, "upsample"):
                x = level.upsample.walk(ex, x)
        shuffle = (lambda y: F.pixel_shuffle(y, self.patch_size)) if self.patch_size > 1 else None
        if not hasattr(self, "head"):
            return ex.result(x, self.conv_out, norm=self.norm_out, shuffle=shuffle, scale=self.patch_size)
        x = ex.conv(x, self.conv_out, norm=self.norm_out, shuffle=shuffle, scale=self.patch_size)
        return self.head.walk(ex, x, next(level_maps))

    def forward(
        self,
        codes: Tensor,
        noise: Tensor | Sequence[Tensor] | None = None,
        style: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """``noise``: the maps of :meth:`noise_shapes` (a lone tensor is the input's). ``style`` overrides
        the codes' statistics."""
        return self.walk(DENSE, codes, noise, style_stats(codes) if style is None else style)
