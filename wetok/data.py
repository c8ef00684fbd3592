"""Token datasets for the generator side: what ``wetok tokenize`` wrote, as a ``torch`` ``Dataset``.

    from wetok.data import TokenDataset
    ds = TokenDataset("tokens/")          # index.json + shard-*.safetensors
    ds[0]                                 # int64 [h, w, g], values in [0, 2^d')
    ds.items[0]                           # {"source": ..., "width": ..., "height": ...}

Shards are read whole, checked against their checksum, and kept in a small per-process cache (each
DataLoader worker has its own), so sequential and shard-local access read each file once.

Nothing in ``index.json`` is trusted (a dataset may come from someone else): its fields are checked for
type and range when it is opened; a shard's name must be a plain file name inside the dataset folder (no
``/``, no ``..``, no link out), its size is checked against what the index implies before it is read, and
its tensors' dtype, shape and symbol range are checked against the index after. Every problem is one
:class:`~wetok.errors.ShardError` naming the file.
"""

from __future__ import annotations

import bisect
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from wetok import shards
from wetok.errors import ShardError
from wetok.shards import INDEX_NAME


class TokenDataset(Dataset):
    """Item ``i``: tokens ``[h, w, g]`` (int64) of the ``i``-th image tokenized (skipped images excluded).

    ``cache_shards``: how many decoded shards each process keeps in memory.
    """

    def __init__(self, root: str | Path, cache_shards: int = 4) -> None:
        self.root = Path(root)
        if not (self.root / INDEX_NAME).exists():  # anything else there is named by read_json
            raise ShardError(f"{self.root} has no {INDEX_NAME} (not a finished `wetok tokenize` output)")
        self.index: dict[str, Any] = shards.read_json(self.root / INDEX_NAME, "index")
        check_index(self.index, self.root / INDEX_NAME)
        self.items: list[dict[str, Any]] = self.index["items"]
        counts = [s["items"] for s in self.index["shards"]]
        self._starts = list(np.cumsum([0, *counts]))
        if self._starts[-1] != len(self.items):
            raise ShardError(
                f"{self.root / INDEX_NAME}: shards hold {self._starts[-1]} items, the index lists "
                f"{len(self.items)}"
            )
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = OrderedDict()
        self.cache_shards = max(1, cache_shards)

    @property
    def token_grid(self) -> tuple[int, int, int] | None:
        """``(h, w, g)`` shared by every item, or ``None`` when each image kept its own size."""
        grid = self.index.get("token_grid")
        return tuple(grid) if grid else None

    def image_size(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of the image the tokens of item ``i`` decode to (after preprocessing)."""
        size = self.index["preprocess"]["size"]
        item = self.items[i]
        return (size, size) if size is not None else (item["height"], item["width"])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} items")
        i %= len(self)
        k = bisect.bisect_right(self._starts, i) - 1
        tokens, grids, offsets = self._shard(k)
        row = i - self._starts[k]
        if grids is None:
            return torch.from_numpy(tokens[row].astype(np.int64))
        h, w = grids[row]
        return torch.from_numpy(tokens[offsets[row] : offsets[row + 1]].astype(np.int64).reshape(h, w, -1))

    def _shard(self, k: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Shard ``k``'s tokens, and for variable grids each item's ``(h, w)`` and token offset."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        entry = self.index["shards"][k]
        path = self.shard_path(k)
        items = self.items[self._starts[k] : self._starts[k + 1]]
        expected = self._expected_tensors(items)
        payload = sum(math.prod(shape) * np.dtype(dtype).itemsize for dtype, shape in expected.values())
        tensors, meta = shards.read_shard(path, max_bytes=8 + shards.MAX_HEADER_BYTES + payload)
        if meta.get("payload_sha256") != entry["payload_sha256"] or meta.get("run") != self.index["run"]:
            raise ShardError(f"token shard {path} is not the one {self.root / INDEX_NAME} lists (replaced?)")
        self._check_tensors(path, tensors, expected, items)
        tokens, grids, offsets = tensors["tokens"], None, None
        if "grids" in tensors:
            grids = tensors["grids"].astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(grids[:, 0] * grids[:, 1])])
        self._cache[k] = (tokens, grids, offsets)
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return self._cache[k]

    def shard_path(self, k: int) -> Path:
        """Shard ``k``'s file, which must lie in the dataset folder (:func:`check_index` saw a plain name;
        a symbolic link out of the folder is refused here)."""
        path = self.root / self.index["shards"][k]["file"]
        real, root = os.path.realpath(path), os.path.realpath(self.root)
        if os.path.dirname(real) != root:
            raise ShardError(f"token shard {path} lies outside the dataset folder {self.root}")
        return path

    def files(self) -> list[Path]:
        """The files of the dataset: ``index.json`` and every shard."""
        return [self.root / INDEX_NAME] + [self.root / s["file"] for s in self.index["shards"]]

    def _expected_tensors(self, items: list[dict[str, Any]]) -> dict[str, tuple[str, tuple[int, ...]]]:
        """What a shard of ``items`` must hold, from the index: name → (dtype, shape)."""
        dtype, g = self.index["dtype"], self.index["groups"]
        if self.token_grid is not None:
            return {"tokens": (dtype, (len(items), *self.token_grid))}
        f = self.index["downsample"]
        total = sum(-(-it["height"] // f) * -(-it["width"] // f) for it in items)
        return {"tokens": (dtype, (total, g)), "grids": ("int32", (len(items), 2))}

    def _check_tensors(
        self,
        path: Path,
        tensors: dict[str, np.ndarray],
        expected: dict[str, Any],
        items: list[dict[str, Any]],
    ) -> None:
        if set(tensors) != set(expected):
            raise ShardError(f"token shard {path} holds {sorted(tensors)}, not {sorted(expected)}")
        for name, (dtype, shape) in expected.items():
            t = tensors[name]
            if t.dtype != np.dtype(dtype) or tuple(t.shape) != shape:
                raise ShardError(
                    f"token shard {path}: {name} is {t.dtype} {list(t.shape)}, the index says {dtype} "
                    f"{list(shape)}"
                )
        tokens, bits = tensors["tokens"], self.index["group_bits"]
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= 1 << bits):
            raise ShardError(
                f"token shard {path}: symbols from {int(tokens.min())} to {int(tokens.max())}, outside "
                f"[0, 2^{bits}) of the index's model"
            )
        if "grids" in tensors:
            f = self.index["downsample"]
            want = np.array([[-(-it["height"] // f), -(-it["width"] // f)] for it in items], np.int64)
            if not np.array_equal(tensors["grids"].astype(np.int64), want.reshape(-1, 2)):
                raise ShardError(
                    f"token shard {path}: its token grids do not match the item sizes in the index"
                )


def _is_int(value: Any, low: int = 0, high: int | None = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def _is_hex(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)


def check_index(index: dict[str, Any], path: Path) -> None:
    """Raise :class:`ShardError` naming ``path`` unless every field :class:`TokenDataset` uses has the type
    and range ``wetok tokenize`` writes."""

    def bad(what: str) -> ShardError:
        return ShardError(f"{path}: {what} (not an index `wetok tokenize` wrote)")

    model, pre = index.get("model"), index.get("preprocess")
    if not isinstance(index.get("run"), str):
        raise bad("no run id")
    if not isinstance(model, dict) or not _is_hex(model.get("model_id"), 12):
        raise bad("model.model_id is not 12 hex digits")
    if not isinstance(model.get("name"), str):
        raise bad("model.name is not a string")
    if not isinstance(pre, dict) or not (pre.get("size") is None or _is_int(pre.get("size"), 1, 1 << 20)):
        raise bad("preprocess.size is not a positive number of pixels or null")
    for key, high in (("groups", 4096), ("group_bits", 31), ("downsample", 1 << 12)):
        if not _is_int(index.get(key), 1, high):
            raise bad(f"{key} is not an integer from 1 to {high}")
    if index.get("dtype") != str(shards.token_dtype(index["group_bits"])):
        raise bad(f"dtype {index.get('dtype')!r} is not the one for {index['group_bits']}-bit symbols")
    grid, size, f = index.get("token_grid"), pre["size"], index["downsample"]
    want = None if size is None else [-(-size // f), -(-size // f), index["groups"]]
    if grid != want:
        raise bad(f"token_grid {grid!r} does not follow from preprocess.size and the model ({want})")
    entries, items = index.get("shards"), index.get("items")
    if not isinstance(entries, list) or not entries:
        raise bad("shards is not a list of shards")
    for e in entries:
        if not isinstance(e, dict) or not _is_int(e.get("items")) or not _is_hex(e.get("payload_sha256"), 64):
            raise bad("a shard entry lacks items or payload_sha256")
        name = e.get("file")
        if (
            not isinstance(name, str)
            or name in ("", ".", "..")
            or "/" in name
            or os.sep in name
            or "\0" in name
        ):
            raise bad(f"shard file {name!r} is not a plain file name in the dataset folder")
    if not isinstance(items, list) or not all(
        isinstance(it, dict) and _is_int(it.get("width"), 1) and _is_int(it.get("height"), 1) for it in items
    ):
        raise bad("items is not a list of {source, width, height}")


__all__ = ["TokenDataset", "check_index"]
