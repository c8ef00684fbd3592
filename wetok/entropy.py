"""Payload coding of ``.wtk`` files: raw bit packing and static range coding.

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
"""

from __future__ import annotations

import numpy as np

from wetok.format import WtkFormatError
from wetok.prior import Prior

try:  # pinned to 0.5.x in pyproject: the coded bytes depend on constriction's range coder
    import constriction
except ImportError:  # pragma: no cover - constriction is a hard dependency
    constriction = None

MAX_STATIC_GROUP_BITS = 23  # constriction needs n < 2^24 - 1 symbols and a non-zero free weight
_DECODE_SLACK_BITS = 96


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


def encode_payload(
    tokens: np.ndarray, group_bits: int, mode: str, coder: RangeCoder | None
) -> tuple[str, bytes]:
    """Tokens ``[N, g]`` → ``(mode used, payload)``; ``static`` falls back to ``raw`` unless smaller."""
    raw = pack_bits(tokens, group_bits)
    if mode == "raw" or coder is None:
        return "raw", raw
    if mode != "static":
        raise ValueError(f"unknown coding mode {mode!r}; choose raw or static")
    coded = coder.encode(tokens)
    return ("static", coded) if len(coded) < len(raw) else ("raw", raw)


def decode_payload(
    payload: bytes, mode: str, count: int, groups: int, group_bits: int, coder: RangeCoder | None
) -> np.ndarray:
    """Payload → tokens ``[count, groups]`` (int64)."""
    if mode == "raw":
        return unpack_bits(payload, count * groups, group_bits).reshape(count, groups)
    if coder is None:
        raise WtkFormatError(f"static payload with d'={group_bits} cannot be decoded by this model")
    return coder.decode(payload, count)
