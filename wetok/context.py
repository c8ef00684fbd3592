"""Causal context model for ``context`` payloads: every bit of a token predicted from its coded neighbours.

A token of ``g`` groups of ``d'`` bits is a row of ``D = g·d'`` bits (group 0 first, each group most
significant bit first, as in ``raw`` payloads). Bit ``b`` of the token at grid position ``(r, c)`` gets the
probability ``P(bit = 1) = table[clip(logit >> shift, -Z, Z) + Z] / 2^24`` where the logit is an **integer**
sum of integer weights (units of ``2^-weight_bits`` nats)::

    logit_b = bias_b + Σ_k [neighbour k inside] · (present_kb + Σ_i bit_i(neighbour k) · neighbour_kib)
                     + Σ_{i<b} bit_i(this token) · own_ib

Neighbour ``k`` sits at ``(r + dr_k, c + dc_k)``; every offset satisfies ``2·dr + dc < 0``, so all tokens with
equal ``2·r + c`` (a wavefront) are independent given the earlier wavefronts, and decoding runs wavefront by
wavefront, vectorised over the tokens of one wavefront. Between a decoded bit and the probability handed to
the coder there are only integer additions, an arithmetic shift, a clip and a table look-up (the table is
stored in the model file, computed once when fitting), so every machine computes identical probabilities.

The model lives beside ``prior.json`` in the model directory as ``context.json``; :meth:`ContextModel.load`
validates it completely (shapes, causality, integer ranges, table monotone and inside ``[1, 2^24 - 1]``,
accumulator range) so a bad file is refused when the model loads, never in the middle of a decode. This
module needs numpy only (no torch): decoding never depends on torch. Fitting lives in
:mod:`wetok.context_fit`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wetok.errors import ContextModelError, SmallFileError
from wetok.fileio import read_json_file, write_atomic
from wetok.format import CONTEXT_ID_BYTES

CONTEXT_NAME = "context.json"
PROB_BITS = 24  # the coder's probability precision (constriction's range coder)
PROB_TOTAL = 1 << PROB_BITS
ID_BYTES = CONTEXT_ID_BYTES  # bytes of the context model id at the start of every context payload
CHUNK_BITS = 8  # neighbour bits are looked up 8 at a time (one table row per byte value)
MAX_TOKEN_BITS = 256  # g·d' limit of a context model (tables grow with (g·d')^2)
MAX_OFFSET = 8
MAX_TABLE = 1 << 16
MAX_LOOKUP_BYTES = 64 << 20  # the decoder's per-byte look-up tables (K·C·256·D int32) must fit this
MAX_LOGIT_STEPS = 1 << 20  # |logit| >> table_shift bound; keeps the decoder's look-up table small
MAX_FILE_BYTES = 256 << 20  # context.json: far above what the look-up limit lets a valid model have
MAX_ABS_LOGIT = 1 << 30  # so the decoder's int32 accumulators (logit + table offset) never overflow
_FORMAT = "wetok-context"
_VERSION = 1


def _int_array(value: object, shape: tuple[int, ...], name: str) -> np.ndarray:
    a = np.asarray(value)
    if a.shape != shape or a.dtype != np.int32:
        raise ContextModelError(
            f"context model field {name} must be int32 of shape {shape}, got {a.dtype} {a.shape}"
        )
    return a


@dataclass(frozen=True, eq=False)
class ContextModel:
    """Integer context model. ``D = groups·group_bits``, ``K = len(offsets)``; arrays are int32:
    ``bias [D]``, ``present [K, D]``, ``neighbour [K, D, D]`` (input bit, output bit), ``own [D, D]``
    (strictly upper triangular: earlier bit, later bit), ``table [2Z + 1]`` (``P(1)·2^24``)."""

    groups: int
    group_bits: int
    offsets: tuple[tuple[int, int], ...]
    weight_bits: int
    table_shift: int
    bias: np.ndarray
    present: np.ndarray
    neighbour: np.ndarray
    own: np.ndarray
    table: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        g, b = self.groups, self.group_bits
        if not (
            isinstance(g, int) and isinstance(b, int) and g >= 1 and 1 <= b <= 24 and g * b <= MAX_TOKEN_BITS
        ):
            raise ContextModelError(f"context model needs g >= 1, 1 <= d' <= 24, g*d' <= {MAX_TOKEN_BITS}")
        offsets = self.offsets
        if (
            not offsets
            or len(offsets) > 2 * MAX_OFFSET * (MAX_OFFSET + 1)
            or len(set(offsets)) != len(offsets)
        ):
            raise ContextModelError("context model needs a non-empty list of distinct neighbour offsets")
        for off in offsets:
            if not (
                len(off) == 2
                and all(type(v) is int and abs(v) <= MAX_OFFSET for v in off)
                and off[0] <= 0
                and 2 * off[0] + off[1] < 0
            ):
                raise ContextModelError(
                    f"neighbour offset {off} is not causal (needs dr <= 0 and 2*dr + dc < 0,"
                    f" |dr|, |dc| <= {MAX_OFFSET})"
                )
        if not (
            isinstance(self.weight_bits, int)
            and isinstance(self.table_shift, int)
            and 0 <= self.weight_bits <= 24
            and 0 <= self.table_shift <= 30
        ):
            raise ContextModelError("context model needs 0 <= weight_bits <= 24 and 0 <= table_shift <= 30")
        d, k = self.token_bits, len(offsets)
        lookup = 4 * k * self.chunks * 256 * d
        if lookup > MAX_LOOKUP_BYTES:
            raise ContextModelError(
                f"context model with {k} neighbours of {d} bits needs {lookup >> 20} MiB "
                f"of look-up tables (limit {MAX_LOOKUP_BYTES >> 20} MiB)"
            )
        _int_array(self.bias, (d,), "bias")
        _int_array(self.present, (k, d), "present")
        _int_array(self.neighbour, (k, d, d), "neighbour")
        _int_array(self.own, (d, d), "own")
        t = np.asarray(self.table)
        if t.dtype != np.int32 or t.ndim != 1 or not 3 <= len(t) <= MAX_TABLE or len(t) % 2 == 0:
            raise ContextModelError(f"context table must be int32 with an odd length 3..{MAX_TABLE}")
        if np.tril(self.own).any():
            raise ContextModelError("own-bit weights must be strictly upper triangular (earlier bits only)")
        if int(t.min()) < 1 or int(t.max()) > PROB_TOTAL - 1 or (np.diff(t) < 0).any():
            raise ContextModelError(f"context table must be non-decreasing within [1, {PROB_TOTAL - 1}]")
        worst = (
            np.abs(self.bias.astype(np.int64))
            + np.abs(self.present.astype(np.int64)).sum(0)
            + np.abs(self.neighbour.astype(np.int64)).sum((0, 1))
            + np.abs(self.own.astype(np.int64)).sum(0)
        )
        if int(worst.max()) >= MAX_ABS_LOGIT or int(worst.max()) >> self.table_shift >= MAX_LOGIT_STEPS:
            raise ContextModelError(
                f"context model weights are too large (|logit| must stay below 2^30 and "
                f"|logit| >> table_shift below {MAX_LOGIT_STEPS})"
            )
        self._cache["worst"] = int(worst.max())
        steps = max(len(t) // 2, int(worst.max()) >> self.table_shift) + 1
        if (steps << self.table_shift) + int(worst.max()) >= 1 << 31:
            raise ContextModelError("context model's logit range and table do not fit 32-bit accumulators")

    # -- shape ---------------------------------------------------------------------------------------------
    @property
    def token_bits(self) -> int:
        return self.groups * self.group_bits

    @property
    def chunks(self) -> int:
        return -(-self.token_bits // CHUNK_BITS)

    @property
    def table_half(self) -> int:
        """``Z``: the table covers ``logit >> shift`` in ``[-Z, Z]``."""
        return len(self.table) // 2

    @property
    def margin(self) -> int:
        """Zero padding around the grid that every neighbour offset stays inside."""
        return max(max(abs(dr), abs(dc)) for dr, dc in self.offsets)

    # -- identity and files --------------------------------------------------------------------------------
    @property
    def model_id(self) -> bytes:
        """SHA-256 prefix over the canonical content (not the file's text): written into every payload."""
        if "id" not in self._cache:
            h = hashlib.sha256(f"{_FORMAT}\0{_VERSION}\0".encode())
            h.update(json.dumps(self._scalars(), sort_keys=True).encode())
            for a in (self.bias, self.present, self.neighbour, self.own, self.table):
                h.update(np.ascontiguousarray(a, dtype="<i4").tobytes())
            self._cache["id"] = h.digest()[:ID_BYTES]
        return self._cache["id"]

    def _scalars(self) -> dict:
        return {
            "groups": self.groups,
            "group_bits": self.group_bits,
            "offsets": [list(o) for o in self.offsets],
            "weight_bits": self.weight_bits,
            "table_shift": self.table_shift,
        }

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            **self._scalars(),
            "bias": self.bias.tolist(),
            "present": self.present.tolist(),
            "neighbour": self.neighbour.tolist(),
            "own": self.own.tolist(),
            "table": self.table.tolist(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/context.json`` atomically (temporary file, then rename)."""
        path = Path(directory) / CONTEXT_NAME
        write_atomic(path, json.dumps(self.to_dict(), separators=(",", ":")) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: object) -> ContextModel:
        if not isinstance(d, dict) or d.get("format") != _FORMAT or d.get("version") != _VERSION:
            raise ContextModelError(f"not a {_FORMAT} version {_VERSION} file")
        missing = [
            k
            for k in (
                "groups",
                "group_bits",
                "offsets",
                "weight_bits",
                "table_shift",
                "bias",
                "present",
                "neighbour",
                "own",
                "table",
            )
            if k not in d
        ]
        if missing:
            raise ContextModelError(f"missing fields: {', '.join(missing)}")
        offsets = d["offsets"]
        if not isinstance(offsets, list) or not all(isinstance(o, list) for o in offsets):
            raise ContextModelError("offsets must be a list of [dr, dc] pairs")
        arrays = {k: _to_int32(d[k], k) for k in ("bias", "present", "neighbour", "own", "table")}
        return cls(
            groups=d["groups"],
            group_bits=d["group_bits"],
            offsets=tuple(tuple(o) for o in offsets),
            weight_bits=d["weight_bits"],
            table_shift=d["table_shift"],
            **arrays,
        )

    @classmethod
    def load(cls, directory: str | Path) -> ContextModel:
        """Read ``directory/context.json`` (or the file itself); :class:`ContextModelError` names the file."""
        path = Path(directory)
        path = path / CONTEXT_NAME if path.is_dir() else path
        try:
            d = read_json_file(path, MAX_FILE_BYTES)
        except SmallFileError as e:  # names the file already
            raise ContextModelError(f"context model {e}") from None
        except (OSError, ValueError) as e:
            raise ContextModelError(f"cannot read context model {path}: {e}") from None
        try:
            return cls.from_dict(d)
        except ContextModelError as e:
            raise ContextModelError(f"malformed context model {path}: {e}") from None

    def check_fits(self, groups: int, group_bits: int) -> None:
        if (self.groups, self.group_bits) != (groups, group_bits):
            raise ContextModelError(
                f"context model is for g={self.groups}, d'={self.group_bits}; "
                f"the model has g={groups}, d'={group_bits}"
            )

    # -- integer probabilities -----------------------------------------------------------------------------
    def lookup_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``(neighbour [K, C, 256, D], own [C, 256, D])`` int32: the summed weights of every byte value of
        every 8-bit chunk of a token's bit row (exact integer sums; built once per model)."""
        if "tables" not in self._cache:
            d, c = self.token_bits, self.chunks
            value_bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.int64)
            padded = np.zeros((len(self.offsets), c * CHUNK_BITS, d), dtype=np.int64)
            padded[:, :d] = self.neighbour
            own = np.zeros((c * CHUNK_BITS, d), dtype=np.int64)
            own[:d] = self.own
            nb = np.einsum("vj,kcjd->kcvd", value_bits, padded.reshape(len(self.offsets), c, CHUNK_BITS, d))
            ow = np.einsum("vj,cjd->cvd", value_bits, own.reshape(c, CHUNK_BITS, d))
            # int32: every partial sum is bounded by the validated worst-case |logit| < 2^30
            self._cache["tables"] = (nb.astype(np.int32), ow.astype(np.int32))
        return self._cache["tables"]

    def table_index(self, logits: np.ndarray) -> np.ndarray:
        """Integer logits → indices into :attr:`table` (``clip(logit >> shift, -Z, Z) + Z``)."""
        z = logits >> self.table_shift
        np.clip(z, -self.table_half, self.table_half, out=z)
        z += self.table_half
        return z

    def shifted_table(self) -> tuple[int, np.ndarray]:
        """``(offset, table)`` such that ``table[(logit + offset) >> shift]`` equals
        ``self.table[clip(logit >> shift, -Z, Z) + Z]`` for every reachable logit: the decoder adds
        ``offset`` to the bias once and then needs one shift and one look-up per bit, no clip."""
        if "shifted" not in self._cache:
            steps = max(self.table_half, self._cache["worst"] >> self.table_shift) + 1
            z = np.clip(np.arange(-steps, steps + 1), -self.table_half, self.table_half) + self.table_half
            self._cache["shifted"] = (steps << self.table_shift, self.table[z])
        return self._cache["shifted"]

    def logits(self, tokens: np.ndarray, rows: int = 256) -> np.ndarray:
        """Tokens ``[h, w, g]`` → int32 logits ``[h, w, D]`` of every bit given its whole context (exact:
        the validated bound keeps them below 2^30), computed ``rows`` grid rows at a time so the int64
        temporaries stay small."""
        h, w, _ = tokens.shape
        chunks = np.packbits(token_bits(tokens, self.group_bits), axis=-1)  # [h, w, C]
        m = self.margin
        grid = np.zeros((h + m, w + 2 * m, self.chunks), dtype=np.uint8)
        grid[m:, m : m + w] = chunks
        inside = np.zeros((h + m, w + 2 * m), dtype=np.int64)
        inside[m:, m : m + w] = 1
        out = np.empty((h, w, self.token_bits), dtype=np.int32)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            out[r0:r1] = self._band_logits(grid, inside, chunks, r0, r1)
        return out

    def _band_logits(self, grid: np.ndarray, inside: np.ndarray, chunks: np.ndarray, r0: int, r1: int):
        """Logits of grid rows ``r0:r1`` from the zero-padded chunk ``grid`` (``margin`` rows above,
        ``margin`` columns each side) and its ``inside`` mask."""
        m, w = self.margin, chunks.shape[1]
        nb, own = self.lookup_tables()
        acc = np.broadcast_to(self.bias.astype(np.int64), (r1 - r0, w, self.token_bits)).copy()
        for k, (dr, dc) in enumerate(self.offsets):
            part = grid[m + dr + r0 : m + dr + r1, m + dc : m + dc + w]
            acc += inside[m + dr + r0 : m + dr + r1, m + dc : m + dc + w, None] * self.present[k].astype(
                np.int64
            )
            for c in range(self.chunks):
                acc += nb[k, c][part[..., c]]
        for c in range(self.chunks):
            acc += own[c][chunks[r0:r1, :, c]]
        return acc

    def ideal_bits(self, tokens: np.ndarray) -> float:
        """Shannon code length in bits of tokens ``[h, w, g]`` (for reports; float, never for coding)."""
        bits = token_bits(tokens, self.group_bits)
        p1 = self.table[self.table_index(self.logits(tokens))].astype(np.float64) / PROB_TOTAL
        return float(-np.log2(np.where(bits == 1, p1, 1.0 - p1)).sum())

    def min_bits_per_token(self) -> float:
        """Code length of the likeliest possible token: a lower bound on every token's cost."""
        t = self.table.astype(np.float64)
        best = max(float(t.max()), PROB_TOTAL - float(t.min()))
        return self.token_bits * (PROB_BITS - float(np.log2(best)))


def _to_int32(value: object, name: str) -> np.ndarray:
    try:
        a = np.array(value)
    except (ValueError, TypeError):
        raise ContextModelError(f"context model field {name} is not a rectangular array") from None
    if a.dtype.kind != "i" or a.size and (int(a.min()) < -(1 << 31) or int(a.max()) >= 1 << 31):
        raise ContextModelError(f"context model field {name} must hold 32-bit integers")
    return a.astype(np.int32)


def token_bits(tokens: np.ndarray, group_bits: int) -> np.ndarray:
    """Tokens ``[..., g]`` → uint8 bits ``[..., g·d']``: group 0 first, each group's most significant bit
    first."""
    t = np.asarray(tokens, dtype=np.int64)
    shifts = np.arange(group_bits - 1, -1, -1, dtype=np.int64)
    return ((t[..., None] >> shifts) & 1).astype(np.uint8).reshape(*t.shape[:-1], -1)


def bits_to_tokens(bits: np.ndarray, group_bits: int) -> np.ndarray:
    """Inverse of :func:`token_bits`: uint8 bits ``[..., g·d']`` → int64 tokens ``[..., g]``."""
    weights = 1 << np.arange(group_bits - 1, -1, -1, dtype=np.int64)
    return bits.reshape(*bits.shape[:-1], -1, group_bits).astype(np.int64) @ weights


def wavefronts(h: int, w: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The grid's wavefronts in decoding order: ``(rows, cols)`` of the tokens with ``2·r + c = t``, rows
    ascending, for ``t = 0 … 2(h-1) + w-1`` (empty ones, which a one-column grid has, left out)."""
    out = []
    for t in range(2 * (h - 1) + w):
        r = np.arange(max(0, -(-(t - w + 1) // 2)), min(h - 1, t // 2) + 1)
        if len(r):
            out.append((r, t - 2 * r))
    return out


__all__ = ["CONTEXT_NAME", "ContextModel", "ContextModelError", "bits_to_tokens", "token_bits", "wavefronts"]
