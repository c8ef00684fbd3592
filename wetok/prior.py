"""Static token prior: per-group integer symbol frequencies for range coding ``.wtk`` payloads.

Every group ``j`` has a table of ``2^{d'}`` integer frequencies, each ``>= 1``, summing to exactly
:data:`PRIOR_TOTAL` (``2^24``, the probability precision of ``constriction``'s coders). Integers, not floats,
are stored and coded with, so every machine builds bit-identical entropy models. The tables live in the model
directory as ``prior.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the entropy decoder imports this module and must not need torch
    from torch import Tensor

from wetok.errors import PriorError, SmallFileError
from wetok.fileio import read_json_file, write_atomic

PRIOR_NAME = "prior.json"
PRIOR_BITS = 24
PRIOR_TOTAL = 1 << PRIOR_BITS
MAX_FILE_BYTES = 1 << 30  # prior.json: a table of 2^24 counts per group is this large; refused beyond
_FORMAT = "wetok-prior"
_VERSION = 1


@dataclass(frozen=True, eq=False)
class Prior:
    """``frequencies``: uint32 ``[g, 2^{d'}]``, every entry ``>= 1``, each row summing to ``PRIOR_TOTAL``."""

    frequencies: np.ndarray

    def __post_init__(self) -> None:
        f = self.frequencies
        if not isinstance(f, np.ndarray) or f.ndim != 2 or f.dtype != np.uint32:
            raise PriorError("prior frequencies must be a uint32 array [g, 2^d']")
        n = f.shape[1]
        if n < 2 or n & (n - 1) or n > PRIOR_TOTAL or f.shape[0] < 1:
            raise PriorError(f"prior has shape {f.shape}; needs [g >= 1, 2^d'] with 1 <= d' <= {PRIOR_BITS}")
        if int(f.min()) < 1 or not np.all(f.sum(axis=1, dtype=np.int64) == PRIOR_TOTAL):
            raise PriorError(f"every prior frequency must be >= 1 and every row must sum to {PRIOR_TOTAL}")

    @property
    def groups(self) -> int:
        return int(self.frequencies.shape[0])

    @property
    def group_bits(self) -> int:
        return int(self.frequencies.shape[1]).bit_length() - 1

    @classmethod
    def uniform(cls, groups: int, group_bits: int) -> Prior:
        """Every symbol equally likely (a read-only broadcast view: no memory per symbol)."""
        if not 1 <= group_bits <= PRIOR_BITS or groups < 1:
            raise PriorError(f"uniform prior needs groups >= 1 and 1 <= group_bits <= {PRIOR_BITS}")
        value = np.uint32(PRIOR_TOTAL >> group_bits)
        return cls(np.broadcast_to(value, (groups, 1 << group_bits)))

    def bits_per_token(self) -> float:
        """Expected ideal code length of one token under the prior: ``Σ_j H(p_j)`` bits."""
        p = self.frequencies.astype(np.float64) / PRIOR_TOTAL
        return float(-(p * np.log2(p)).sum())

    def ideal_bits(self, tokens: np.ndarray | Tensor) -> float:
        """Ideal (Shannon) code length in bits of tokens ``[..., g]`` under the prior."""
        t = np.asarray(tokens).reshape(-1, self.groups)
        logp = np.log2(self.frequencies.astype(np.float64) / PRIOR_TOTAL)
        return float(-sum(logp[j][t[:, j]].sum() for j in range(self.groups)))

    def min_bits_per_token(self) -> float:
        """Code length of the most likely token: a lower bound on any token's cost."""
        return float(sum(PRIOR_BITS - np.log2(float(row.max())) for row in self.frequencies))

    def table_bytes(self) -> bytes:
        """The tables as little-endian uint32 bytes, row-major (what the model id hashes)."""
        return np.ascontiguousarray(self.frequencies, dtype="<u4").tobytes()

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "groups": self.groups,
            "group_bits": self.group_bits,
            "total": PRIOR_TOTAL,
            "frequencies": self.frequencies.tolist(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/prior.json`` atomically (temporary file, then rename)."""
        path = Path(directory) / PRIOR_NAME
        write_atomic(path, json.dumps(self.to_dict(), separators=(",", ":")) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> Prior:
        if not isinstance(d, dict) or d.get("format") != _FORMAT or d.get("version") != _VERSION:
            raise PriorError(f"not a {_FORMAT} version {_VERSION} table")
        if d.get("total") != PRIOR_TOTAL:
            raise PriorError(f"prior total must be {PRIOR_TOTAL}")
        rows = d.get("frequencies")
        groups, bits = d.get("groups"), d.get("group_bits")
        if not (isinstance(groups, int) and isinstance(bits, int) and 1 <= bits <= PRIOR_BITS):
            raise PriorError("prior needs integer groups and 1 <= group_bits <= 24")
        if (
            not isinstance(rows, list)
            or len(rows) != groups
            or any(not isinstance(r, list) or len(r) != 1 << bits for r in rows)
        ):
            raise PriorError(f"prior frequencies must be {groups} lists of {1 << bits} integers")
        if not all(type(v) is int and 0 <= v < PRIOR_TOTAL + 1 for r in rows for v in r):
            raise PriorError("prior frequencies must be integers in 1..2^24")
        return cls(np.array(rows, dtype=np.uint32))

    @classmethod
    def load(cls, directory: str | Path) -> Prior:
        """Read ``directory/prior.json`` (or the file itself); :class:`PriorError` if malformed."""
        path = Path(directory)
        path = path / PRIOR_NAME if path.is_dir() else path
        try:
            d = read_json_file(path, MAX_FILE_BYTES)
        except SmallFileError as e:  # names the file already
            raise PriorError(f"prior {e}") from None
        except (OSError, ValueError) as e:
            raise PriorError(f"cannot read prior {path}: {e}") from None
        try:
            return cls.from_dict(d)
        except PriorError as e:
            raise PriorError(f"malformed prior {path}: {e}") from None


def count_symbols(token_batches: Iterable[Tensor | np.ndarray], groups: int, group_bits: int) -> np.ndarray:
    """Occurrences ``[g, 2^{d'}]`` (int64) of each symbol per group in batches ``[B, h, w, g]``.

    Counting uses ``np.unique`` per batch, so no temporary is larger than the batch itself.
    """
    n = 1 << group_bits
    counts = np.zeros((groups, n), dtype=np.int64)
    for batch in token_batches:
        t = np.asarray(batch.cpu() if hasattr(batch, "cpu") else batch).reshape(-1, groups)
        if t.size and (int(t.min()) < 0 or int(t.max()) >= n):
            raise ValueError(f"symbols (token values) must lie in [0, {n})")
        for j in range(groups):
            values, k = np.unique(t[:, j], return_counts=True)
            counts[j, values] += k
    return counts


def quantize_frequencies(p: np.ndarray) -> np.ndarray:
    """Probabilities ``[g, n]`` → uint32 frequencies ``>= 1`` summing to ``PRIOR_TOTAL`` per row.

    Each symbol gets 1 plus its share of the remaining ``PRIOR_TOTAL - n``, rounded down; the leftover
    units go to the largest remainders (ties to the lower symbol), so the result is deterministic.
    """
    g, n = p.shape
    free = PRIOR_TOTAL - n
    out = np.empty((g, n), dtype=np.uint32)
    for j in range(g):
        share = p[j] / p[j].sum() * free
        base = np.floor(share).astype(np.int64)
        left = free - int(base.sum())
        order = np.lexsort((np.arange(n), -(share - base)))
        base[order[:left]] += 1
        out[j] = base + 1
    return out


def fit_prior(
    token_batches: Iterable[Tensor | np.ndarray], groups: int, group_bits: int, alpha: float = 0.5
) -> Prior:
    """Fit per-group frequencies to tokens ``[B, h, w, g]`` with add-``alpha`` smoothing.

    ``alpha = 0.5`` is the Krichevsky–Trofimov estimator (``1`` would be Laplace); on top of it every
    symbol keeps at least one unit of ``PRIOR_TOTAL``, so nothing is ever uncodable. Memory is one int64
    count per symbol and group (2 MiB per group at ``d' = 18``).
    """
    if not 1 <= group_bits <= PRIOR_BITS:
        raise PriorError(f"group_bits must be in 1..{PRIOR_BITS}")
    counts = count_symbols(token_batches, groups, group_bits)
    return Prior(quantize_frequencies(counts.astype(np.float64) + alpha))
