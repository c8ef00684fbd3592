"""Payload coding of ``.wtk`` files: raw bit packing, static range coding and context range coding.

``raw``: symbols ``d'`` bits each, most significant bit first, packed MSB-first into bytes (zero padding).

``static``: one ``constriction`` range-coder stream (``queue.RangeEncoder``, 32-bit words, 24-bit probability
precision) holding all symbols of group 0 in raster order, then group 1, ... each group with its own
categorical model. Models are built from the integer tables of :class:`wetok.prior.Prior` only: passing
``frequencies - 1`` (as float64, so every value and every cumulative sum is an exact integer) to
``Categorical(..., perfect=False)`` makes its fast quantizer (``free = 2^24 - n``, ``scale = free / Σ = 1``,
``cdf_i = floor(Σ_{k<i}(f_k - 1) · 1) + i``) reproduce the table exactly, with no rounding anywhere, on
every machine. The coded words are written big-endian; up to three trailing bytes of the last word are
dropped when the stream still decodes to the same symbols with them read as zeros (the decoder zero-pads to
whole words), which saves a few bytes on small files.

``context``: the 4-byte id of the model's :class:`wetok.context.ContextModel`, then one range-coder stream of
every bit of every token, wavefront by wavefront (``t = 2·r + c`` ascending), within a wavefront bit by bit
(bit 0 of the token's bit row first), within a bit the wavefront's tokens by row ascending. Each bit is a
two-symbol categorical with the integer frequencies ``(2^24 - p, p)``, ``p`` from the context model's table,
handed to ``constriction`` as the exact floats ``(2^24 - p - 1, p - 1)`` (the same exact-integer route as
``static``). Trailing zero bytes of the last word (at most three) are dropped.
"""

from __future__ import annotations

import math

import numpy as np

from wetok.context import ID_BYTES, PROB_TOTAL, ContextModel, bits_to_tokens, token_bits, wavefronts
from wetok.errors import ContextMismatchError, WtkFormatError
from wetok.prior import Prior

try:  # pinned to 0.5.x in pyproject: the coded bytes depend on constriction's range coder
    import constriction
except ImportError:  # pragma: no cover - constriction is a hard dependency
    constriction = None

MODES = ("raw", "static", "context")
MAX_STATIC_GROUP_BITS = 23  # constriction needs n < 2^24 - 1 symbols and a non-zero free weight
_DECODE_SLACK_BITS = 96
# A context payload holds at least one bit per MAX_CONTEXT_RATIO bits of raw tokens. The table's most
# confident probability alone would let 37 bytes claim a 4096^2 image (about 0.003 bits a token for the
# bundled model): a range decoder fed too few words still decodes, it does not know it ran dry. Real files
# cost far more: the bundled models' cheapest measured grids (a flat image, the context model's own likeliest
# grid) cost 1.6-1.7 bits a token of 48 (1/30 of raw), 8.6 times above this floor; the encoder pads with
# zero bytes (which decode as the missing words do) so that its own files always meet it.
MAX_CONTEXT_RATIO = 256


def pack_bits(symbols: np.ndarray, bits: int) -> bytes:
    """Symbols (any shape, values in ``[0, 2^bits)``) → bytes, ``bits`` per symbol, MSB first."""
    s = np.asarray(symbols).reshape(-1).astype(np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(((s[:, None] >> shifts) & 1).astype(np.uint8), bitorder="big").tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` symbols (int64); the length and padding bits are checked."""
    if len(data) != -(-count * bits // 8):
        need = -(-count * bits // 8)
        raise WtkFormatError(f"raw payload has {len(data)} bytes, {count} symbols need {need}")
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="big")
    if flat[count * bits :].any():
        raise WtkFormatError("malformed raw payload (padding bits are not zero)")
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return flat[: count * bits].reshape(count, bits).astype(np.int64) @ weights


def static_supported(group_bits: int) -> bool:
    return constriction is not None and group_bits <= MAX_STATIC_GROUP_BITS


class RangeCoder:
    """Static range coder of tokens ``[N, g]`` with one categorical model per group, built from a prior."""

    def __init__(self, prior: Prior) -> None:
        if not static_supported(prior.group_bits):
            raise ValueError(f"static coding supports d' <= {MAX_STATIC_GROUP_BITS}, not {prior.group_bits}")
        self.prior = prior
        self._min_bits = prior.min_bits_per_token()
        self._models: list | None = None

    @property
    def models(self) -> list:
        """One ``constriction`` categorical model per group (built on first use)."""
        if self._models is None:
            model = constriction.stream.model.Categorical
            self._models = [
                model(row.astype(np.float64) - 1.0, perfect=False) for row in self.prior.frequencies
            ]
        return self._models

    def encode(self, tokens: np.ndarray) -> bytes:
        """Tokens ``[N, g]`` (values ``< 2^{d'}``) → payload bytes."""
        t = np.asarray(tokens).reshape(-1, self.prior.groups)
        encoder = constriction.stream.queue.RangeEncoder()
        for j, model in enumerate(self.models):
            encoder.encode(np.ascontiguousarray(t[:, j], dtype=np.int32), model)
        data = encoder.get_compressed().astype(">u4").tobytes()
        return self._trim(data, t)

    def _trim(self, data: bytes, tokens: np.ndarray) -> bytes:
        for cut in range(min(3, len(data)), 0, -1):
            if self._decodes_to(data[:-cut], tokens):
                return data[:-cut]
        return data

    def _decodes_to(self, data: bytes, tokens: np.ndarray) -> bool:
        try:
            return bool(np.array_equal(self.decode(data, len(tokens)), tokens))
        except WtkFormatError:
            return False

    def max_tokens(self, payload_bytes: int) -> int:
        """The most tokens a payload of this length can hold: the encoder emits one 32-bit word per 32 bits
        of ideal code length (plus at most two for the final state), so shorter claims are impossible."""
        bits = 32 * -(-payload_bytes // 4) + _DECODE_SLACK_BITS
        return int(bits / self._min_bits) if self._min_bits > 0 else 1 << 62

    def decode(self, data: bytes, count: int) -> np.ndarray:
        """Payload → tokens ``[count, g]`` (int64); :class:`WtkFormatError` if it cannot hold them."""
        if count > self.max_tokens(len(data)):
            raise WtkFormatError(f"static payload of {len(data)} bytes is too short for {count} tokens")
        padded = bytes(data) + b"\0" * (-len(data) % 4)
        words = np.frombuffer(padded, dtype=">u4").astype(np.uint32)
        out = np.empty((count, self.prior.groups), dtype=np.int64)
        try:
            decoder = constriction.stream.queue.RangeDecoder(words)
            for j, model in enumerate(self.models):
                out[:, j] = decoder.decode(model, count)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # AssertionError/ValueError; a Rust panic would be a BaseException
            raise WtkFormatError(f"corrupted static payload ({type(e).__name__})") from None
        return out


class ContextCoder:
    """Bitwise range coding of a token grid ``[h, w, g]`` with a causal :class:`ContextModel`."""

    def __init__(self, context: ContextModel) -> None:
        if constriction is None:  # pragma: no cover - constriction is a hard dependency
            raise ValueError("context coding needs constriction")
        self.context = context
        self._offset, p = context.shifted_table()
        p = p.astype(np.int64)
        # Row i: the exact-integer float weights (2^24 - p - 1, p - 1) of symbols 0 and 1 (see module doc).
        self._weights = np.stack([PROB_TOTAL - p - 1, p - 1], axis=1).astype(np.float64)
        self._family = constriction.stream.model.Categorical(perfect=False)
        self._min_bits = max(context.min_bits_per_token(), context.token_bits / MAX_CONTEXT_RATIO)

    def encode(self, tokens: np.ndarray) -> bytes:
        """Tokens ``[h, w, g]`` → payload (context model id + coded words): the integer table rows of every
        bit in one vectorised pass, then the bits in decoding order, handed to the coder about 2^20 at a
        time (the queue coder's output does not depend on how its input is split; memory stays bounded)."""
        ctx = self.context
        h, w, _ = tokens.shape
        d = ctx.token_bits
        bits = token_bits(tokens, ctx.group_bits).reshape(h * w, d)
        index = ctx.logits(tokens)
        index += np.int32(self._offset)
        index >>= ctx.table_shift
        index = index.reshape(h * w, d)
        encoder = constriction.stream.queue.RangeEncoder()
        symbols: list[np.ndarray] = []
        rows_of_weights: list[np.ndarray] = []
        pending = 0
        for rows, cols in wavefronts(h, w):  # the decoder's order: wavefront, then bit, then row
            flat = rows * w + cols
            symbols.append(bits[flat].T.ravel())
            rows_of_weights.append(index[flat].T.ravel())
            pending += len(flat) * d
            if pending >= 1 << 20:
                self._encode_chunk(encoder, symbols, rows_of_weights)
                pending = 0
        self._encode_chunk(encoder, symbols, rows_of_weights)
        data = encoder.get_compressed().astype(">u4").tobytes()
        cut = 0
        while cut < min(3, len(data)) and data[len(data) - 1 - cut] == 0:
            cut += 1  # the decoder reads missing bytes of the last word as zeros
        data = data[: len(data) - cut]
        return ctx.model_id + data + bytes(max(0, self.min_coded_bytes(h * w) - len(data)))

    def min_coded_bytes(self, count: int) -> int:
        """The fewest coded bytes (after the id) that :meth:`max_tokens` accepts for ``count`` tokens."""
        bits = math.floor(count * self._min_bits) + 1 - _DECODE_SLACK_BITS  # + 1: float rounding
        return 4 * max(0, -(-bits // 32))

    def _encode_chunk(self, encoder, symbols: list[np.ndarray], rows_of_weights: list[np.ndarray]) -> None:
        if symbols:
            bits = np.concatenate(symbols).astype(np.int32)
            encoder.encode(bits, self._family, self._weights[np.concatenate(rows_of_weights)])
            symbols.clear()
            rows_of_weights.clear()

    def max_tokens(self, payload_bytes: int) -> int:
        """The most tokens a payload of this length can hold (as :meth:`RangeCoder.max_tokens`)."""
        bits = 32 * -(-max(0, payload_bytes - ID_BYTES) // 4) + _DECODE_SLACK_BITS
        return int(bits / self._min_bits) if self._min_bits > 0 else 1 << 62

    def check_id(self, payload: bytes) -> None:
        """Raise :class:`ContextMismatchError` unless ``payload`` was coded with this context model."""
        if len(payload) <= ID_BYTES:
            raise WtkFormatError(f"context payload of {len(payload)} bytes is too short")
        if payload[:ID_BYTES] != self.context.model_id:
            raise ContextMismatchError(payload[:ID_BYTES], self.context.model_id)

    def decode(self, payload: bytes, height: int, width: int) -> np.ndarray:
        """Payload → tokens ``[height·width, g]`` (int64), wavefront by wavefront."""
        self.check_id(payload)
        count = height * width
        if count > self.max_tokens(len(payload)):
            raise WtkFormatError(f"context payload of {len(payload)} bytes is too short for {count} tokens")
        data = bytes(payload[ID_BYTES:])
        words = np.frombuffer(data + b"\0" * (-len(data) % 4), dtype=">u4").astype(np.uint32)
        try:
            bits = self._decode_bits(constriction.stream.queue.RangeDecoder(words), height, width)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException as e:  # AssertionError/ValueError; a Rust panic would be a BaseException
            raise WtkFormatError(f"corrupted context payload ({type(e).__name__})") from None
        return bits_to_tokens(bits, self.context.group_bits).reshape(count, self.context.groups)

    def _decode_bits(self, decoder, h: int, w: int) -> np.ndarray:
        ctx = self.context
        d, m, n_chunks, shift = ctx.token_bits, ctx.margin, ctx.chunks, ctx.table_shift
        neighbour, _ = ctx.lookup_tables()
        flat_tables = neighbour.reshape(-1, d)  # row (k·C + c)·256 + byte value
        table_base = (np.arange(len(ctx.offsets) * n_chunks, dtype=np.int64) * 256).reshape(-1, n_chunks)
        # int32 throughout (the model's validation bounds |logit| + offset below 2^31): mixing dtypes in the
        # per-bit update costs more than the arithmetic on these small arrays.
        bias = ctx.bias + np.int32(self._offset)
        present = ctx.present
        own = ctx.own[:, :, None]  # [earlier bit, later bit, 1]
        feeds_later = [bool(own[b].any()) for b in range(d)]
        grid = np.zeros((h + m, w + 2 * m, n_chunks), dtype=np.uint8)  # decoded tokens, bytes of bit rows
        out = np.empty((h, w, d), dtype=np.uint8)
        weights = self._weights
        for rows, cols in wavefronts(h, w):
            n = len(rows)
            acc = np.repeat(bias[None], n, axis=0)
            index = np.empty((n, len(ctx.offsets), n_chunks), dtype=np.int64)
            for k, (dr, dc) in enumerate(ctx.offsets):
                nr, nc = rows + (m + dr), cols + (m + dc)
                inside = (nr >= m) & (nc >= m) & (nc < w + m)
                acc += inside[:, None] * present[k]
                index[:, k] = grid[nr, nc] + table_base[k]
            acc += flat_tables[index.reshape(n, -1)].sum(axis=1, dtype=np.int32)
            acc = np.ascontiguousarray(acc.T)  # [D, n]: one contiguous row per bit
            bits = np.empty((d, n), dtype=np.uint8)
            for b in range(d):
                x = decoder.decode(self._family, weights.take(acc[b] >> shift, axis=0))
                bits[b] = x
                if feeds_later[b]:
                    acc[b + 1 :] += own[b, b + 1 :] * x
            bits = bits.T
            grid[rows + m, cols + m] = np.packbits(bits, axis=1)
            out[rows, cols] = bits
        return out


def encode_payload(
    tokens: np.ndarray,
    group_bits: int,
    mode: str,
    coder: RangeCoder | None,
    context: ContextCoder | None = None,
) -> tuple[str, bytes]:
    """Tokens ``[N, g]`` (``[h, w, g]`` for ``context``) → ``(mode used, payload)``.

    ``static`` falls back to ``raw`` unless smaller; ``context`` falls back to what ``static`` gives unless
    smaller (and to it directly when there is no context model).
    """
    if mode not in MODES:
        raise ValueError(f"unknown coding mode {mode!r}; choose {', '.join(MODES)}")
    t = np.asarray(tokens)
    raw = pack_bits(t, group_bits)
    if mode == "raw" or coder is None:
        fallback = ("raw", raw)
    else:
        coded = coder.encode(t.reshape(-1, coder.prior.groups))
        fallback = ("static", coded) if len(coded) < len(raw) else ("raw", raw)
    if mode != "context" or context is None:
        return fallback
    if t.ndim != 3:
        raise ValueError(f"context coding needs tokens [h, w, g], got shape {t.shape}")
    coded = context.encode(t)
    return ("context", coded) if len(coded) < len(fallback[1]) else fallback


def decode_payload(
    payload: bytes,
    mode: str,
    count: int,
    groups: int,
    group_bits: int,
    coder: RangeCoder | None,
    context: ContextCoder | None = None,
    grid: tuple[int, int] | None = None,
) -> np.ndarray:
    """Payload → tokens ``[count, groups]`` (int64); ``context`` needs the token ``grid = (h, w)``."""
    if mode == "raw":
        return unpack_bits(payload, count * groups, group_bits).reshape(count, groups)
    if mode == "context":
        if context is None:
            raise ContextMismatchError(payload[:ID_BYTES], b"")
        if grid is None or grid[0] * grid[1] != count:
            raise ValueError("context decoding needs the token grid (h, w)")
        return context.decode(payload, *grid)
    if coder is None:
        raise WtkFormatError(f"static payload with d'={group_bits} cannot be decoded by this model")
    return coder.decode(payload, count)
