"""Exact tiled coding: any image size, whole-image GroupNorm statistics, memory bounded by a block.

Every GroupNorm of the encoder and decoder (the ResBlocks', adaptive GroupNorm's, ``norm_out``) normalises
with statistics of the whole image, so cutting the image into independent windows changes the result. This
engine runs the network **stage by stage** instead, a stage being everything between two normalisations:

- each stage walks the image in **blocks** of a few token rows (full width), reading its input with the
  one- or two-row halo its 3×3 convolution needs, and writes its output into a whole-image buffer;
- while it writes, it accumulates the per-channel sum and sum of squares (float64) of its output, so the
  next stage normalises with the whole image's statistics, as the plain forward does;
- a ResBlock is two stages (``norm1 → conv1`` and ``norm2 → conv2 + shortcut``, the output written over
  its input when the widths agree); adaptive GroupNorm is an affine map per channel folded into the next
  ResBlock's ``norm1`` (its output statistics follow from its input's), so it costs no pass of its own.

The block height depends on the token grid alone (:func:`block_token_rows`), never on the tile, so a tiled
run makes exactly the convolution calls of an untiled one and gives its tokens and pixels **bit for bit**.
The tile only decides where the whole-image buffers live: in memory for a grid within one tile, else in an
anonymous temporary file (``os.pread``/``os.pwrite`` in ``[H, W, C]`` order, so a block is one contiguous
read): the process then holds one block's activations, the buffers live in the page cache and on disk.
Against the plain :class:`~wetok.tokenizer.Tokenizer` forward (one convolution over the whole image) the
engine is exact up to float rounding (a convolution library may sum in another order for another shape):
on the bundled model and the example photo the tokens are identical and pixels differ by at most one
level (``tests/test_tiling.py``).

A generative decoder's noise maps are drawn for the whole image from the seed
(:meth:`wetok.tokenizer.Tokenizer.draw_noise`) and each block adds the rows it covers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wetok.image import unit_to_uint8
from wetok.layers import ResBlock, style_stats

BLOCK_TOKENS = 512  # tokens per block (each level computes a block of the same token rows)
ADAPTIVE_EPS = 1e-6  # AdaptiveGroupNorm's F.group_norm eps (wetok.layers)


# -- whole-image buffers ------------------------------------------------------------------------------------
class _Plane:
    """A whole-image activation ``[H, W, C]`` (channels last), in memory or in the scratch file."""

    def __init__(self, store: _Store, h: int, w: int, c: int, offset: int) -> None:
        self.store, self.h, self.w, self.c, self.offset = store, h, w, c, offset
        self.nbytes = h * w * c * store.itemsize
        self.data = (
            None if store.fd is not None else torch.empty((h, w, c), dtype=store.dtype, device=store.device)
        )

    def read(self, r0: int, r1: int) -> Tensor:
        """Rows ``[r0, r1)`` as ``[1, C, rows, W]`` (channels-last memory)."""
        if self.data is not None:
            t = self.data[r0:r1]
        else:
            t = torch.empty((r1 - r0, self.w, self.c), dtype=self.store.dtype)
            _pread(self.store.fd, t, self.offset + r0 * self.w * self.c * self.store.itemsize)
            t = t.to(self.store.device)
        return t.permute(2, 0, 1).unsqueeze(0)

    def write(self, r0: int, t: Tensor) -> None:
        """Store ``t`` ``[1, C, rows, W]`` at rows ``r0 …``."""
        rows = t.permute(0, 2, 3, 1)[0]
        if self.data is not None:
            self.data[r0 : r0 + rows.shape[0]] = rows
        else:
            _pwrite(
                self.store.fd,
                rows.cpu().contiguous(),
                self.offset + r0 * self.w * self.c * self.store.itemsize,
            )


def _pread(fd: int, t: Tensor, offset: int) -> None:
    view = memoryview(t.numpy()).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:  # never written (cannot happen: every stage writes before the next reads)
            view[done:] = bytes(len(view) - done)
            return
        done += n


def _pwrite(fd: int, t: Tensor, offset: int) -> None:
    view = memoryview(t.numpy()).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


class _Store:
    """Allocates planes in memory, or in one anonymous temporary file (reusing freed regions)."""

    def __init__(self, on_disk: bool, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self.itemsize = torch.empty((), dtype=dtype).element_size()
        self._file = tempfile.TemporaryFile() if on_disk else None
        self.fd = self._file.fileno() if self._file is not None else None
        self._free: list[tuple[int, int]] = []  # (offset, nbytes) of released regions
        self._end = 0

    def alloc(self, h: int, w: int, c: int) -> _Plane:
        need = h * w * c * self.itemsize
        for i, (offset, size) in enumerate(self._free):
            if size >= need:
                self._free[i : i + 1] = [(offset + need, size - need)] if size > need else []
                return _Plane(self, h, w, c, offset)
        if self.fd is not None and hasattr(os, "posix_fallocate"):
            # Reserve the blocks at once: writing into a file that grows write by write costs the
            # filesystem's block allocation on every write (measured: 1.3 GB in 2.96 s, 0.16 s reserved).
            # A full disk then fails here, before any work, with the OSError naming ENOSPC.
            os.posix_fallocate(self.fd, self._end, need)
        self._end += need
        return _Plane(self, h, w, c, self._end - need)

    def release(self, plane: _Plane) -> None:
        plane.data = None
        if self.fd is not None:
            self._free.append((plane.offset, plane.nbytes))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# -- statistics ---------------------------------------------------------------------------------------------
class _Stats:
    """Per-channel count, mean and sum of squared deviations of an activation (float64), combined block by
    block (Chan et al.'s parallel update) from each block's float32 mean and centred squares (two
    matrix-vector products over its channels-last memory)."""

    def __init__(self, channels: int) -> None:
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)
        self.count = 0

    def add(self, t: Tensor) -> None:
        rows = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
        n = rows.shape[0]
        ones = torch.ones((1, n), dtype=rows.dtype, device=rows.device)
        block_mean = (ones @ rows) / n
        centred = rows - block_mean
        mean, m2 = block_mean[0].double().cpu(), (ones @ centred.mul_(centred))[0].double().cpu()
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += m2 + delta * delta * (self.count * n / total)
        self.count = total

    def moments(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean and mean square (float64)."""
        return self.mean, self.m2 / self.count + self.mean * self.mean


class _Value:
    """An activation as the network sees it: ``scale · plane + shift`` per channel (no affine: the plane),
    with its per-channel mean and mean square."""

    def __init__(self, plane: _Plane, mean: Tensor, square: Tensor, scale=None, shift=None) -> None:
        self.plane, self.mean, self.square, self.scale, self.shift = plane, mean, square, scale, shift

    @classmethod
    def of(cls, plane: _Plane, stats: _Stats) -> _Value:
        return cls(plane, *stats.moments())

    def affine(self, scale: Tensor, shift: Tensor) -> _Value:
        """``scale · self + shift`` (float64 per-channel vectors), without a pass over the image."""
        mean = scale * self.mean + shift
        square = scale * scale * self.square + 2 * scale * shift * self.mean + shift * shift
        s0 = torch.ones_like(scale) if self.scale is None else self.scale
        t0 = torch.zeros_like(shift) if self.shift is None else self.shift
        return _Value(self.plane, mean, square, s0 * scale, t0 * scale + shift)

    def read(self, r0: int, r1: int) -> Tensor:
        t = self.plane.read(r0, r1)
        if self.scale is None:
            return t
        dt, dev = t.dtype, t.device
        return torch.addcmul(_vec(self.shift, dt, dev), t, _vec(self.scale, dt, dev))


def _vec(v: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    return v.to(device, dtype).view(1, -1, 1, 1)


def _group_norm(value: _Value, groups: int, eps: float) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` (float64) of GroupNorm without affine over ``value``, from whole-image
    statistics (biased variance, as ``torch.nn.GroupNorm``)."""
    c = value.mean.shape[0]
    mean = value.mean.view(groups, -1).mean(1)
    var = (value.square.view(groups, -1).mean(1) - mean * mean).clamp_min(0)
    rstd = torch.rsqrt(var + eps)
    scale = rstd.repeat_interleave(c // groups)
    return scale, -mean.repeat_interleave(c // groups) * scale


def _norm_affine(norm: nn.GroupNorm, value: _Value) -> tuple[Tensor, Tensor]:
    """``norm(value)`` as a per-channel affine map of ``value.plane`` (float64)."""
    scale, shift = _group_norm(value, norm.num_groups, norm.eps)
    if norm.affine:
        gamma, beta = norm.weight.detach().double().cpu(), norm.bias.detach().double().cpu()
        scale, shift = scale * gamma, shift * gamma + beta
    folded = value.affine(scale, shift)
    return folded.scale, folded.shift


# -- sources and the block loop ----------------------------------------------------------------------------
class _TensorSource:
    """A whole tensor ``[1, C, H, W]`` already in memory (the codes), read by rows."""

    def __init__(self, t: Tensor) -> None:
        self.t, self.h = t, t.shape[2]

    def read(self, r0: int, r1: int) -> Tensor:
        return self.t[:, :, r0:r1]


class _ImageSource:
    """An image ``[1, 3, H, W]`` seen through ``pixel_unshuffle(patch)``, read by rows of the result."""

    def __init__(self, x: Tensor, patch: int, dtype: torch.dtype, device: torch.device) -> None:
        self.x, self.patch, self.h = x, patch, x.shape[2] // patch
        self.dtype, self.device = dtype, device

    def read(self, r0: int, r1: int) -> Tensor:
        t = self.x[:, :, r0 * self.patch : r1 * self.patch].to(self.device, self.dtype)
        return F.pixel_unshuffle(t, self.patch) if self.patch > 1 else t


def _blocks(n: int, rows: int) -> Iterator[tuple[int, int]]:
    for r0 in range(0, n, rows):
        yield r0, min(n, r0 + rows)


def _conv_pass(
    src,
    conv: nn.Conv2d,
    rows: int,
    pre: tuple[Tensor, Tensor] | None = None,
    post: Callable[[Tensor, int, int], Tensor] | None = None,
    sink: Callable[[int, int, Tensor], None] | None = None,
) -> None:
    """``sink(o0, o1, post(conv(silu(pre(src))), o0, o1))`` for every block of ``rows`` output rows.

    ``pre`` is a per-channel affine map (scale, shift) followed by SiLU, or none (the convolution reads the
    source as is). The convolution's zero padding pads its input, after ``pre``, as in the network.
    """
    (kh, _), (sh, _), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    n_out = (src.h + 2 * ph - kh) // sh + 1
    weight, bias = conv.weight, conv.bias
    scale = shift = None
    for o0, o1 in _blocks(n_out, rows):
        a, b = o0 * sh - ph, (o1 - 1) * sh - ph + kh  # input rows this block reads
        t = src.read(max(0, a), min(src.h, b))
        if pre is not None:
            if scale is None:
                scale, shift = _vec(pre[0], t.dtype, t.device), _vec(pre[1], t.dtype, t.device)
            t = F.silu(torch.addcmul(shift, t, scale), inplace=True)
        if a < 0 or b > src.h:  # zero rows beyond the image, in channels-last memory
            top, n = max(0, -a), t.shape[2]
            padded = torch.zeros((1, t.shape[1], b - a, t.shape[3]), dtype=t.dtype, device=t.device)
            padded = padded.contiguous(memory_format=torch.channels_last)
            padded[:, :, top : top + n] = t
            t = padded
        if kh == 1 and conv.kernel_size[1] == 1 and conv.stride == (1, 1):
            y = _pointwise(t, weight, bias)
        else:
            y = F.conv2d(t.contiguous(memory_format=torch.channels_last), weight, bias, conv.stride, (0, pw))
        sink(o0, o1, post(y, o0, o1) if post is not None else y)


def _pointwise(t: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A 1×1 convolution of ``t`` ``[1, C, h, w]`` as one matmul over its channels-last memory."""
    rows = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    w = weight[:, :, 0, 0]
    y = torch.addmm(bias, rows, w.t()) if bias is not None else rows @ w.t()
    return y.view(1, t.shape[2], t.shape[3], -1).permute(0, 3, 1, 2)


def _to_plane(store: _Store, plane: _Plane, stats: _Stats, row_scale: int = 1):
    """A sink that writes blocks into ``plane`` (at ``row_scale`` times the block's rows) and counts them."""

    def sink(o0: int, o1: int, y: Tensor) -> None:
        stats.add(y)
        plane.write(o0 * row_scale, y)

    return sink


# -- network stages ---------------------------------------------------------------------------------------
class _Engine:
    def __init__(self, store: _Store, token_rows: int, token_h: int) -> None:
        self.store, self.token_rows, self.token_h = store, token_rows, token_h

    def rows(self, h: int) -> int:
        """Rows per block at a level of height ``h`` (the same token rows at every level)."""
        return max(1, self.token_rows * h // self.token_h)

    def conv(self, src, conv: nn.Conv2d, w: int, post=None, row_scale: int = 1, pre=None) -> _Value:
        """A convolution pass into a new plane (``row_scale``: plane rows per conv row; the upsampler: 2)."""
        (kh, _), (sh, _), (ph, _) = conv.kernel_size, conv.stride, conv.padding
        n_out = (src.h + 2 * ph - kh) // sh + 1
        c = conv.out_channels // (row_scale * row_scale)
        plane = self.store.alloc(n_out * row_scale, w, c)
        stats = _Stats(c)
        _conv_pass(src, conv, self.rows(n_out), pre, post, _to_plane(self.store, plane, stats, row_scale))
        return _Value.of(plane, stats)

    def resblock(self, block: ResBlock, x: _Value, noise: tuple[Tensor, Tensor] | None = None) -> _Value:
        """``block(x)`` (plus ``weight · noise`` when given), as two passes; ``x``'s plane is released (or
        overwritten in place when the widths agree)."""
        h_, w_ = x.plane.h, x.plane.w
        src = _PlaneSource(x.plane)
        h = self.conv(src, block.conv1, w_, pre=_norm_affine(block.norm1, x))
        cout = block.conv2.out_channels
        out = x.plane if block.nin_shortcut is None else self.store.alloc(h_, w_, cout)
        stats = _Stats(cout)

        def post(y: Tensor, o0: int, o1: int) -> Tensor:
            r = x.read(o0, o1)
            if block.nin_shortcut is not None:
                r = _pointwise(r, block.nin_shortcut.weight)
            y = y.add_(r)
            if noise is not None:
                weight, maps = noise
                y.add_(weight.to(y.dtype)[None, :, None, None] * maps[:, :, o0:o1].to(y.device, y.dtype))
            return y

        pre2 = _norm_affine(block.norm2, h)
        _conv_pass(
            _PlaneSource(h.plane), block.conv2, self.rows(h_), pre2, post, _to_plane(self.store, out, stats)
        )
        self.store.release(h.plane)
        if out is not x.plane:
            self.store.release(x.plane)
        return _Value.of(out, stats)


class _PlaneSource:
    def __init__(self, plane: _Plane) -> None:
        self.plane, self.h = plane, plane.h

    def read(self, r0: int, r1: int) -> Tensor:
        return self.plane.read(r0, r1)


def _dcr(y: Tensor) -> Tensor:
    """The :class:`wetok.layers.Upsampler`'s depth-to-space (DCR) of a conv output ``[1, 4C, h, w]``."""
    _, c4, h, w = y.shape
    c = c4 // 4
    t = y.permute(0, 2, 3, 1).reshape(h, w, 2, 2, c).permute(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, c)
    return t.permute(2, 0, 1).unsqueeze(0)


def block_token_rows(w: int, h: int) -> int:
    """Token rows of one block: the unit every convolution runs on, whatever the tiling (at least
    :data:`BLOCK_TOKENS` tokens, so that the convolutions stay efficient). It depends on the grid alone, so
    a tiled run makes exactly the calls of an untiled one and gives the same result bit for bit."""
    return max(1, min(h, -(-BLOCK_TOKENS // w)))


def on_disk(h: int, w: int, tile: int) -> bool:
    """Whether a ``h × w`` token grid keeps its whole-image buffers in a temporary file: when it is larger
    than a ``tile``² tile (``tile <= 0``: never)."""
    return tile > 0 and (h > tile or w > tile)


def _run(model, h: int, w: int, tile: int, block: int | None, body: Callable[[_Engine], object]):
    rows = block_token_rows(w, h) if block is None else max(1, min(h, block))
    store = _Store(on_disk(h, w, tile), model.dtype, model.device)
    try:
        return body(_Engine(store, rows, h))
    finally:
        store.close()


# -- encoder ------------------------------------------------------------------------------------------------
@torch.inference_mode()
def encode_exact(model, x: Tensor, tile: int, block: int | None = None) -> Tensor:
    """Images ``[1, 3, h·f, w·f]`` in ``[-1, 1]`` → tokens ``[1, h, w, g]`` (int64, CPU), stage by stage
    in blocks of :func:`block_token_rows`; equal for every ``tile``."""
    enc, cfg = model.encoder, model.config
    f, p = cfg.downsample, cfg.patch_size
    h, w = x.shape[-2] // f, x.shape[-1] // f
    tokens = torch.empty((1, h, w, cfg.groups), dtype=torch.int64)

    def body(engine: _Engine) -> None:
        v = engine.conv(_ImageSource(x, p, model.dtype, model.device), enc.conv_in, w * f // p)
        for level in enc.down:
            for block in level.block:
                v = engine.resblock(block, v)
            if hasattr(level, "downsample"):
                nxt = engine.conv(_PlaneSource(v.plane), level.downsample, -(-v.plane.w // 2))
                engine.store.release(v.plane)
                v = nxt
        for block in enc.mid_block:
            v = engine.resblock(block, v)

        def sink(o0: int, o1: int, latent: Tensor) -> None:
            tokens[:, o0:o1] = model.quantizer(latent.contiguous(), with_losses=False).indices.cpu()

        _output_pass(engine, v, enc.norm_out, enc.conv_out, sink)

    _run(model, h, w, tile, block, body)
    return tokens


# -- decoder ------------------------------------------------------------------------------------------------
@torch.inference_mode()
def decode_exact(
    model,
    tokens: Tensor,
    tile: int,
    seed: int | None = 0,
    noise_scale: float = 1.0,
    realism: float | None = None,
    noise: list[Tensor] | None = None,
    block: int | None = None,
) -> np.ndarray:
    """Tokens ``[1, h, w, g]`` → uint8 ``[h·f, w·f, 3]``, stage by stage in blocks; equal for every
    ``tile``. A generative decoder's noise maps are drawn for the whole grid from ``seed`` (or given)."""
    cfg = model.config
    f, p = cfg.downsample, cfg.patch_size
    h, w = tokens.shape[1:3]
    codes = model.tokens_to_codes(tokens)
    dec = model.decoder_for(realism)
    if dec.generative and noise is None:
        noise = model.draw_noise(tuple(codes.shape), seed, noise_scale, realism)
    mean, std = style_stats(codes)
    src = codes
    if dec.generative:
        if [tuple(m.shape) for m in noise] != dec.noise_shapes(codes.shape):
            raise ValueError(
                f"a generative decoder needs noise maps of shapes {dec.noise_shapes(codes.shape)}"
            )
        src = torch.cat([codes, noise[0].to(codes.device, codes.dtype)], dim=1)
    src = src.contiguous(memory_format=torch.channels_last)
    level_maps = iter(noise[1:] if dec.generative else [])
    out = np.empty((h * f, w * f, 3), dtype=np.uint8)

    def body(engine: _Engine) -> None:
        v = engine.conv(_TensorSource(src), dec.conv_in, w)
        for block in dec.mid_block:
            v = engine.resblock(block, v)
        for i in reversed(range(len(dec.up))):
            ada, level = dec.adaptive[i], dec.up[i]
            scale, shift = _group_norm(v, ada.norm_groups, ADAPTIVE_EPS)
            gamma, beta = ada.gamma(std).double().cpu()[0], ada.beta(mean).double().cpu()[0]
            v = v.affine(scale * gamma, shift * gamma + beta)
            for k, block in enumerate(level.block):
                inj = (level.noise[k].weight, next(level_maps)) if hasattr(level, "noise") else None
                v = engine.resblock(block, v, inj)
            if hasattr(level, "upsample"):
                nxt = engine.conv(
                    _PlaneSource(v.plane),
                    level.upsample.conv1,
                    2 * v.plane.w,
                    post=lambda y, a, b: _dcr(y),
                    row_scale=2,
                )
                engine.store.release(v.plane)
                v = nxt

        def sink(o0: int, o1: int, y: Tensor) -> None:
            img = F.pixel_shuffle(y, p) if p > 1 else y
            out[o0 * p : o1 * p] = unit_to_uint8(img.clamp_(-1, 1))[0].permute(1, 2, 0).cpu().numpy()

        _output_pass(engine, v, dec.norm_out, dec.conv_out, sink)

    _run(model, h, w, tile, block, body)
    return out


def _output_pass(engine, v, norm: nn.Module, conv: nn.Module, sink) -> None:
    """The last stage of the encoder or decoder: ``conv(silu(norm(v)))`` block by block into ``sink``."""
    _conv_pass(_PlaneSource(v.plane), conv, engine.rows(v.plane.h), _norm_affine(norm, v), None, sink)


# -- the codec's entry points -------------------------------------------------------------------------------
def encode_tiled(model, x: Tensor, tile: int, *, block: int | None = None) -> Tensor:
    """Images ``[1, 3, h·f, w·f]`` → tokens ``[1, h, w, g]`` by :func:`encode_exact`; a grid larger than a
    ``tile``² tile keeps its buffers on disk. ``block`` overrides :func:`block_token_rows` (tests).

    A single-token image is encoded twice as wide and the extra token dropped (as always)."""
    f = model.config.downsample
    if x.shape[-2] == x.shape[-1] == f:
        return encode_exact(model, x.repeat(1, 1, 1, 2), tile, block)[:, :, :1]
    return encode_exact(model, x, tile, block)


def decode_tiled(
    model,
    tokens: Tensor,
    tile: int,
    seed: int | None = 0,
    noise_scale: float = 1.0,
    realism: float | None = None,
    *,
    block: int | None = None,
) -> np.ndarray:
    """Tokens ``[1, h, w, g]`` → uint8 ``[h·f, w·f, 3]`` by :func:`decode_exact`; a grid larger than a
    ``tile``² tile keeps its buffers on disk. ``block`` overrides :func:`block_token_rows` (tests).

    The noise maps are drawn from ``seed`` for the whole grid and every block adds its slice. A single
    token is decoded as a pair (as always)."""
    if tokens.shape[1] == tokens.shape[2] == 1:
        decoder = model.decoder_for(realism)
        noise = None
        if decoder.generative:
            shape = (1, model.config.latent_dim, 1, 1)
            noise = [n.repeat(1, 1, 1, 2) for n in model.draw_noise(shape, seed, noise_scale, realism)]
        f = model.config.downsample
        pair = decode_exact(model, tokens.repeat(1, 1, 2, 1), tile, realism=realism, noise=noise, block=block)
        return np.ascontiguousarray(pair[:, :f])
    return decode_exact(model, tokens, tile, seed, noise_scale, realism, block=block)


def slice_noise(
    maps: list[Tensor], grid: tuple[int, int], y0: int, y1: int, x0: int, x1: int
) -> list[Tensor]:
    """The part of whole-image noise maps under tokens ``[y0:y1, x0:x1]`` of a ``grid = (h, w)`` token
    grid; each map is at its own multiple of the grid's resolution."""
    out = []
    for m in maps:
        s = m.shape[-2] // grid[0]
        out.append(m[..., y0 * s : y1 * s, x0 * s : x1 * s])
    return out
