"""Token datasets for the generator side: what ``wetok tokenize`` wrote, as a ``torch`` ``Dataset``.

    from wetok.data import TokenDataset
    ds = TokenDataset("tokens/")          # index.json + shard-*.safetensors
    ds[0]                                 # int64 [h, w, g], values in [0, 2^d')
    ds.items[0]                           # {"source": ..., "width": ..., "height": ...}

Shards are read whole, checked against their checksum, and kept in a small per-process cache (each
DataLoader worker has its own), so sequential and shard-local access read each file once.
"""

from __future__ import annotations

import bisect
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
        if not (self.root / INDEX_NAME).is_file():
            raise ShardError(f"{self.root} has no {INDEX_NAME} (not a finished `wetok tokenize` output)")
        self.index: dict[str, Any] = shards.read_json(self.root / INDEX_NAME, "index")
        self.items: list[dict[str, Any]] = self.index["items"]
        counts = [int(s["items"]) for s in self.index["shards"]]
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
        path = self.root / entry["file"]
        tensors, meta = shards.read_shard(path)
        if meta.get("payload_sha256") != entry["payload_sha256"] or meta.get("run") != self.index["run"]:
            raise ShardError(f"token shard {path} is not the one {self.root / INDEX_NAME} lists (replaced?)")
        tokens, grids, offsets = tensors["tokens"], None, None
        if "grids" in tensors:
            grids = tensors["grids"].astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(grids[:, 0] * grids[:, 1])])
        self._cache[k] = (tokens, grids, offsets)
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return self._cache[k]


__all__ = ["TokenDataset"]
