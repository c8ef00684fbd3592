"""The blocked executor: exact coding of any image size, whole-image GroupNorm statistics, memory bounded
by a block.

It runs the network's one walk (``Encoder.walk`` / ``Decoder.walk`` in :mod:`wetok.model`, the layers'
in :mod:`wetok.layers`): the walk says what to compute, this module how, and holds no copy of the network.

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
(:func:`wetok.setting.draw_noise`) and each block adds the rows it covers.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wetok.errors import ScratchSpaceError
from wetok.image import unit_to_uint8
from wetok.layers import ADAPTIVE_EPS, style_stats
from wetok.setting import DecoderSetting, decoder_and_noise

BLOCK_TOKENS = 512  # tokens per block (each level computes a block of the same token rows)


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
    with _naming_scratch(len(view)):
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)


@contextmanager
def _naming_scratch(nbytes: int) -> Iterator[None]:
    """A full disk under the scratch file, said in one line naming the folder and how to choose another
    (the bare OSError says only "No space left on device")."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        folder = tempfile.gettempdir()
        raise ScratchSpaceError(
            f"no room for the scratch file of this image's buffers in {folder} (TMPDIR) "
            f"({nbytes / 2**20:.0f} MiB more needed: {e.strerror}); set TMPDIR to a folder with more space"
        ) from None


class _Store:
    """Allocates planes in memory, or in one anonymous temporary file (reusing freed regions)."""

    def __init__(self, on_disk: bool, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self.itemsize = torch.empty((), dtype=dtype).element_size()
        with _naming_scratch(0):
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
            with _naming_scratch(need):
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
class _InputSource:
    """A walk's input ``[1, C, H, W]`` (an image, or the decoder's codes) seen through
    ``pixel_unshuffle(patch)``, read by rows of the result in the executor's dtype."""

    def __init__(self, x: Tensor, patch: int, dtype: torch.dtype, device: torch.device) -> None:
        self.x, self.patch = x, patch
        self.h, self.w = x.shape[2] // patch, x.shape[3] // patch
        self.dtype, self.device = dtype, device

    def read(self, r0: int, r1: int) -> Tensor:
        t = self.x[:, :, r0 * self.patch : r1 * self.patch].to(self.device, self.dtype)
        return F.pixel_unshuffle(t, self.patch) if self.patch > 1 else t


class _ValueSource:
    """A :class:`_Value` read by rows as the network sees it (its per-channel affine applied)."""

    def __init__(self, value: _Value) -> None:
        self.value, self.h, self.w = value, value.plane.h, value.plane.w

    def read(self, r0: int, r1: int) -> Tensor:
        return self.value.read(r0, r1)


class _PlaneSource:
    """A plane read by rows as stored (a normalisation's affine map is applied by the pass itself)."""

    def __init__(self, plane: _Plane) -> None:
        self.plane, self.h, self.w = plane, plane.h, plane.w

    def read(self, r0: int, r1: int) -> Tensor:
        return self.plane.read(r0, r1)


def _blocks(n: int, rows: int) -> Iterator[tuple[int, int]]:
    for r0 in range(0, n, rows):
        yield r0, min(n, r0 + rows)


def _out_size(conv: nn.Conv2d, n: int, axis: int) -> int:
    k, s, p = conv.kernel_size[axis], conv.stride[axis], conv.padding[axis]
    return (n + 2 * p - k) // s + 1


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
    n_out = _out_size(conv, src.h, 0)
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


# -- the blocked executor ----------------------------------------------------------------------------------
class Blocked:
    """Runs a network's walk (:mod:`wetok.model`) stage by stage over whole-image buffers, in blocks of
    ``token_rows`` token rows (the same token rows at every level). Its values are :class:`_Value`
    objects (a plane, its whole-image moments and a pending per-channel affine map). The walk's last stage
    streams its blocks to ``sink(r0, r1, y)`` (rows of the output) instead of storing them."""

    def __init__(
        self, store: _Store, token_rows: int, token_h: int, sink: Callable[[int, int, Tensor], None]
    ):
        self.store, self.token_rows, self.token_h, self.sink = store, token_rows, token_h, sink

    def rows(self, h: int) -> int:
        """Rows per block at a level of height ``h`` (the same token rows at every level)."""
        return max(1, self.token_rows * h // self.token_h)

    def input(self, x: Tensor, patch: int = 1) -> _InputSource:
        return _InputSource(x, patch, self.store.dtype, self.store.device)

    def conv(self, x, conv: nn.Conv2d, **kwargs) -> _Value:
        """One pass, as :meth:`wetok.layers.Dense.conv`, into a new plane (or over ``residual``'s plane
        when the widths agree). ``x``'s plane is released unless ``keep``; ``residual``'s always."""
        return self._pass(x, conv, **kwargs)

    def result(self, x, conv: nn.Conv2d, **kwargs) -> None:
        """The walk's last stage, a :meth:`conv` whose blocks go to the sink instead of a plane."""
        self._pass(x, conv, final=True, **kwargs)

    def _pass(
        self,
        x,
        conv: nn.Conv2d,
        *,
        norm: nn.GroupNorm | None = None,
        act: bool = False,
        residual: _Value | None = None,
        shortcut: nn.Conv2d | None = None,
        inject: Callable[[Tensor, Tensor], Tensor] | None = None,
        noise: Tensor | None = None,
        shuffle: Callable[[Tensor], Tensor] | None = None,
        scale: int = 1,
        keep: bool = False,
        final: bool = False,
    ) -> _Value | None:
        src, pre = self._source(x, norm, act)
        n_out, w_out = _out_size(conv, src.h, 0), _out_size(conv, src.w, 1)
        c = conv.out_channels // (scale * scale)
        reuse = not final and residual is not None and shortcut is None and residual.plane.c == c
        plane = None
        if not final:
            plane = residual.plane if reuse else self.store.alloc(n_out * scale, w_out * scale, c)
        stats = _Stats(c)

        def post(y: Tensor, o0: int, o1: int) -> Tensor:
            if residual is not None:
                r = residual.read(o0, o1)
                y = y.add_(_pointwise(r, shortcut.weight) if shortcut is not None else r)
            if inject is not None:
                y = inject(y, noise[:, :, o0:o1].to(y.device))
            if shuffle is None or final:
                return shuffle(y) if shuffle is not None else y
            # Channels-last like every other block: the statistics' matmul then sums in the same order.
            return shuffle(y).contiguous(memory_format=torch.channels_last)

        def sink(o0: int, o1: int, y: Tensor) -> None:
            if final:
                self.sink(o0 * scale, o1 * scale, y)
            else:
                stats.add(y)
                plane.write(o0 * scale, y)

        _conv_pass(src, conv, self.rows(n_out), pre, post, sink)
        if not keep and isinstance(x, _Value):
            self.store.release(x.plane)
        if residual is not None and not reuse:
            self.store.release(residual.plane)
        return None if final else _Value.of(plane, stats)

    def adaptive_norm(self, x: _Value, groups: int, gamma: Tensor, beta: Tensor) -> _Value:
        """Adaptive GroupNorm as a pending affine map, no pass over the image (``gamma``, ``beta``:
        ``[1, C]``)."""
        scale, shift = _group_norm(x, groups, ADAPTIVE_EPS)
        gamma, beta = gamma.double().cpu()[0], beta.double().cpu()[0]
        return x.affine(scale * gamma, shift * gamma + beta)

    def _source(self, x, norm: nn.GroupNorm | None, act: bool):
        """What a pass reads, and the per-channel map ``pre`` it applies before SiLU: ``x`` as stored with
        ``norm`` (and ``x``'s pending affine) folded into ``pre``; with ``act`` alone, ``pre`` is ``x``'s
        pending affine; else ``x`` as the network sees it, no SiLU."""
        if not isinstance(x, _Value):
            return x, None
        if norm is not None:
            return _PlaneSource(x.plane), _norm_affine(norm, x)
        if act:
            ones = torch.ones_like(x.mean)
            identity = (ones, torch.zeros_like(ones))
            return _PlaneSource(x.plane), identity if x.scale is None else (x.scale, x.shift)
        return _ValueSource(x), None


def block_token_rows(w: int, h: int) -> int:
    """Token rows of one block: the unit every convolution runs on, whatever the tiling (at least
    :data:`BLOCK_TOKENS` tokens, so that the convolutions stay efficient). It depends on the grid alone, so
    a tiled run makes exactly the calls of an untiled one and gives the same result bit for bit."""
    return max(1, min(h, -(-BLOCK_TOKENS // w)))


def on_disk(h: int, w: int, tile: int) -> bool:
    """Whether a ``h × w`` token grid keeps its whole-image buffers in a temporary file: when it is larger
    than a ``tile``² tile (``tile <= 0``: never)."""
    return tile > 0 and (h > tile or w > tile)


def _run(model, h: int, w: int, tile: int, block: int | None, walk: Callable[[Blocked], None], sink) -> None:
    rows = block_token_rows(w, h) if block is None else max(1, min(h, block))
    store = _Store(on_disk(h, w, tile), model.dtype, model.device)
    try:
        walk(Blocked(store, rows, h, sink))
    finally:
        store.close()


# -- the codec's entry points -------------------------------------------------------------------------------
@torch.inference_mode()
def encode_blocked(model, x: Tensor, tile: int, block: int | None = None) -> Tensor:
    """Images ``[1, 3, h·f, w·f]`` in ``[-1, 1]`` → tokens ``[1, h, w, g]`` (int64, CPU): the encoder's walk
    on the blocked executor, in blocks of :func:`block_token_rows`; equal for every ``tile``."""
    cfg = model.config
    f = cfg.downsample
    h, w = x.shape[-2] // f, x.shape[-1] // f
    tokens = torch.empty((1, h, w, cfg.groups), dtype=torch.int64)

    def sink(o0: int, o1: int, latent: Tensor) -> None:
        tokens[:, o0:o1] = model.quantizer(latent.contiguous(), with_losses=False).indices.cpu()

    _run(model, h, w, tile, block, lambda ex: model.encoder.walk(ex, x), sink)
    return tokens


@torch.inference_mode()
def decode_blocked(
    model, decoder, tokens: Tensor, noise: list[Tensor] | None, tile: int, block: int | None = None
) -> np.ndarray:
    """Tokens ``[1, h, w, g]`` → uint8 ``[h·f, w·f, 3]``: ``decoder``'s walk on the blocked executor; equal
    for every ``tile``. ``noise``: a generative decoder's whole-image maps (each block adds its rows)."""
    f = model.config.downsample
    h, w = tokens.shape[1:3]
    codes = model.tokens_to_codes(tokens)
    out = np.empty((h * f, w * f, 3), dtype=np.uint8)

    def sink(r0: int, r1: int, y: Tensor) -> None:
        out[r0:r1] = unit_to_uint8(y.clamp_(-1, 1))[0].permute(1, 2, 0).cpu().numpy()

    _run(model, h, w, tile, block, lambda ex: decoder.walk(ex, codes, noise, style_stats(codes)), sink)
    return out


def encode_tiled(model, x: Tensor, tile: int, *, block: int | None = None) -> Tensor:
    """Images ``[1, 3, h·f, w·f]`` → tokens ``[1, h, w, g]`` by :func:`encode_blocked`; a grid larger than a
    ``tile``² tile keeps its buffers on disk. ``block`` overrides :func:`block_token_rows` (tests).

    A single-token image is encoded twice as wide and the extra token dropped (as always)."""
    f = model.config.downsample
    if x.shape[-2] == x.shape[-1] == f:
        return encode_blocked(model, x.repeat(1, 1, 1, 2), tile, block)[:, :, :1]
    return encode_blocked(model, x, tile, block)


def decode_tiled(
    model,
    tokens: Tensor,
    tile: int,
    seed: int | None = 0,
    noise_scale: float = 1.0,
    realism: float | None = None,
    *,
    decoder=None,
    noise: list[Tensor] | None = None,
    block: int | None = None,
) -> np.ndarray:
    """Tokens ``[1, h, w, g]`` → uint8 ``[h·f, w·f, 3]`` by :func:`decode_blocked`; a grid larger than a
    ``tile``² tile keeps its buffers on disk. ``block`` overrides :func:`block_token_rows` (tests).

    ``decoder`` paints and a generative one takes ``noise``, the whole-grid maps; without them both come
    from the setting ``(realism, seed, noise_scale)`` (:func:`wetok.setting.decoder_and_noise`). A single
    token is decoded as a pair (as always), its noise repeated."""
    if decoder is None:
        setting = DecoderSetting(realism or 0.0, seed or 0, noise_scale)
        decoder, noise = decoder_and_noise(model, setting, tuple(tokens.shape[1:3]))
    if tokens.shape[1] == tokens.shape[2] == 1:
        pair = [n.repeat(1, 1, 1, 2) for n in noise] if noise is not None else None
        f = model.config.downsample
        return np.ascontiguousarray(
            decode_blocked(model, decoder, tokens.repeat(1, 1, 2, 1), pair, tile, block)[:, :f]
        )
    return decode_blocked(model, decoder, tokens, noise, tile, block)
