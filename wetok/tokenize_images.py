"""A dataset of images → token shards, for training autoregressive or masked generators on wetok tokens.

The work is cut into shards of ``shard_size`` consecutive inputs; under ``torchrun`` rank ``r`` of ``W``
writes shards ``r, r + W, ...`` and rank 0 writes ``index.json`` once every shard exists. Images are read
and preprocessed in DataLoader workers and encoded in batches. A run can be stopped at any time: shards
are written atomically, so the next run with the same settings keeps the finished ones and redoes the
rest; a run with other settings into the same folder is refused (``run.json`` holds them).

Preprocessing (``size`` = ``S``): ``crop="center"`` scales the shorter side to ``S`` (bicubic,
antialiased) and cuts the centre ``S×S``; ``crop="none"`` scales the whole image to ``S×S``. With
``size=None`` every image keeps its own size and is padded to a multiple of ``f`` as
:meth:`wetok.codec.Codec.encode_tokens` pads it, so its tokens are exactly that method's.
Shard layout: :mod:`wetok.shards`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from wetok import shards
from wetok.codec import Codec
from wetok.errors import ShardError, WetokError
from wetok.image import array_to_tensor, open_image, pad_to_multiple
from wetok.shards import INDEX_NAME, RUN_NAME

CROPS = ("center", "none")
Progress = Callable[[int, int], None]  # (images just done, images this rank has to do)


class ImageReadError(WetokError, ValueError):
    """An input image could not be read (``--strict`` makes this fatal; otherwise it is listed)."""


@dataclass(frozen=True)
class Preprocess:
    """How each image becomes the model's input: ``size`` ``S`` (``None`` keeps its own) and ``crop``."""

    size: int | None = 256
    crop: str = "center"

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, not {self.crop!r}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be positive, not {self.size}")

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 ``[H, W, 3]`` → uint8 ``[S, S, 3]`` (or the image itself when ``size`` is ``None``)."""
        if self.size is None:
            return rgb
        s, (h, w) = self.size, rgb.shape[:2]
        if self.crop == "none":
            return _resize(rgb, s, s)
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        out = _resize(rgb, nh, nw)
        top, left = (nh - s) // 2, (nw - s) // 2
        return np.ascontiguousarray(out[top : top + s, left : left + s])

    def load(self, path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
        """Open ``path``, preprocess it; returns the array and the original ``(H, W)``."""
        rgb = open_image(path)
        return self(rgb), rgb.shape[:2]


def _resize(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))


@dataclass(frozen=True)
class TokenizeOptions:
    """Everything about a run except the model and the inputs."""

    preprocess: Preprocess = Preprocess()
    shard_size: int = 1024
    batch_size: int = 16
    workers: int = 0
    strict: bool = False


def run_settings(codec: Codec, sources: Sequence[str], options: TokenizeOptions) -> dict[str, Any]:
    """What must be the same for a run to continue another one in the same folder."""
    listing = hashlib.sha256("\0".join(sources).encode()).hexdigest()
    return {
        "format": shards.FORMAT,
        "version": shards.VERSION,
        "model": codec.name,
        "model_id": codec.model_id_hex,
        "preprocess": asdict(options.preprocess),
        "pad_mode": codec.pad_mode,
        "shard_size": options.shard_size,
        "inputs": len(sources),
        "inputs_sha256": listing,
    }


def run_id(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def check_run(out: Path, settings: dict[str, Any]) -> None:
    """Refuse ``out`` if it holds a run with other settings (naming what differs)."""
    path = out / RUN_NAME
    if not path.exists():
        if out.is_dir() and any(out.iterdir()):
            raise ShardError(f"{out} is not empty and holds no `wetok tokenize` run; choose an empty folder")
        return
    old = shards.read_json(path, "run file")
    differ = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
    if differ:
        raise ShardError(
            f"{out} holds a tokenize run with other settings ({', '.join(differ)} differ); "
            "use another output folder, or delete this one"
        )


# -- reading images in DataLoader workers ---------------------------------------------------------------
class _Images(Dataset):
    """Item ``i`` of ``indices`` → ``(index, uint8 array or None, original (H, W), error message)``."""

    def __init__(self, sources: Sequence[str], preprocess: Preprocess) -> None:
        self.sources, self.preprocess = sources, preprocess

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, tuple[int, int], str]:
        try:
            rgb, size = self.preprocess.load(self.sources[index])
            return index, rgb, size, ""
        except Exception as e:  # listed in the index, or fatal with --strict, by the main process
            return index, None, (0, 0), _one_line(e)


def _one_line(e: BaseException) -> str:
    if type(e).__name__ == "UnidentifiedImageError":
        return "not an image, or a format Pillow cannot read"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _batches(spans: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Index batches of at most ``batch_size`` that never cross a shard boundary."""
    return [
        list(range(i, min(i + batch_size, end)))
        for start, end in spans
        for i in range(start, end, batch_size)
    ]


def _identity(batch: list) -> list:
    return batch


# -- encoding -------------------------------------------------------------------------------------------
def encode_batch(codec: Codec, images: list[np.ndarray], exact: bool = False) -> list[np.ndarray]:
    """uint8 images → tokens ``[h, w, g]`` each (int64): one batched (dense) forward pass when they share a
    size and fit one tile, else :meth:`Codec.encode_tokens` image by image. ``exact``: always the codec's
    (blocked) encode, so the tokens are those of the image's ``.wtk`` bit for bit (the dense pass rounds
    differently and may flip the sign of a latent near zero)."""
    if not images:
        return []
    f = codec.model.config.downsample
    shapes = {im.shape for im in images}
    h, w = -(-images[0].shape[0] // f), -(-images[0].shape[1] // f)
    small = min(h, w) < 2 or (codec.tile_tokens > 0 and max(h, w) > codec.tile_tokens)
    if exact or len(shapes) > 1 or small:
        return [codec.encode_tokens(im)[0][0].numpy() for im in images]
    x = torch.cat([array_to_tensor(im) for im in images])
    tokens = codec.model.encode(pad_to_multiple(x, f, codec.pad_mode)).cpu()
    return list(tokens.numpy())


# -- the run --------------------------------------------------------------------------------------------
def tokenize_images(
    codec: Codec,
    sources: Sequence[str],
    out: Path,
    options: TokenizeOptions,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Tokenize ``sources`` into shards under ``out``; returns the index on rank 0 (``None`` elsewhere).

    Joined to a process group (``torchrun``), each rank writes its share of the shards.
    """
    if not sources:
        raise ValueError("no images to tokenize")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    settings = run_settings(codec, sources, options)
    _start_run(out, settings, rank)
    rid = run_id(settings)
    n_shards = math.ceil(len(sources) / options.shard_size)
    pending = [k for k in range(rank, n_shards, world) if not _shard_done(out, k, rid, warn)]
    spans = [(k * options.shard_size, min(len(sources), (k + 1) * options.shard_size)) for k in pending]
    for k in pending:
        for stale in out.glob(f".{shards.shard_name(k)}.*.part"):  # left by a run that was killed
            stale.unlink(missing_ok=True)
    if spans:
        _encode_shards(codec, sources, out, options, spans, pending, rid, progress)
    _barrier()
    return write_index(out, codec, settings, n_shards) if rank == 0 else None


def _start_run(out: Path, settings: dict[str, Any], rank: int) -> None:
    """Rank 0 checks ``out`` and writes ``run.json``; every rank raises rank 0's refusal, if any. (Other
    ranks must not look at ``out`` while rank 0 may be writing into it.)"""
    problem = None
    if rank == 0:
        try:
            check_run(out, settings)
            out.mkdir(parents=True, exist_ok=True)
            if not (out / RUN_NAME).exists():
                shards.write_json(out / RUN_NAME, settings)
        except ShardError as e:
            problem = str(e)
    if dist.is_initialized():
        message = [problem]
        dist.broadcast_object_list(message, src=0)
        problem = message[0]
    if problem:
        raise ShardError(problem)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _shard_done(out: Path, number: int, rid: str, warn: Callable[[str], None] | None) -> bool:
    """Whether shard ``number`` exists, is intact and belongs to this run (a damaged one is redone)."""
    path = out / shards.shard_name(number)
    if not path.exists():
        return False
    try:
        _, meta = shards.read_shard(path)
    except ShardError as e:
        if warn:
            warn(f"{e}; redoing it")
        return False
    return meta.get("run") == rid and meta.get("shard") == number


def _encode_shards(
    codec: Codec,
    sources: Sequence[str],
    out: Path,
    options: TokenizeOptions,
    spans: list[tuple[int, int]],
    numbers: list[int],
    rid: str,
    progress: Progress | None,
) -> None:
    loader = DataLoader(
        _Images(sources, options.preprocess),
        batch_sampler=_batches(spans, options.batch_size),
        num_workers=options.workers,
        collate_fn=_identity,
        persistent_workers=False,
        prefetch_factor=4 if options.workers else None,
    )
    batches: Iterator[list] = iter(loader)
    spans_total = sum(end - start for start, end in spans)
    for (start, end), number in zip(spans, numbers, strict=True):
        items: list[tuple[str, tuple[int, int], np.ndarray]] = []
        skipped: list[list[str]] = []
        done = start
        while done < end:
            batch = next(batches)
            good = []
            for index, rgb, size, error in batch:
                if rgb is None:
                    if options.strict:
                        raise ImageReadError(f"{sources[index]}: {error}")
                    skipped.append([sources[index], error])
                else:
                    good.append((sources[index], size, rgb))
            tokens = encode_batch(codec, [rgb for *_, rgb in good], exact=options.preprocess.size is None)
            items += [(src, size, t) for (src, size, _), t in zip(good, tokens, strict=True)]
            done += len(batch)
            if progress:
                progress(len(batch), spans_total)
        _write_shard(out, number, rid, codec, items, skipped, token_grid(codec, options.preprocess))


def token_grid(codec: Codec, preprocess: Preprocess) -> list[int] | None:
    """``[h, w, g]`` of every item when the images are preprocessed to one size, else ``None``."""
    cfg = codec.model.config
    return None if preprocess.size is None else [-(-preprocess.size // cfg.downsample)] * 2 + [cfg.groups]


def _write_shard(
    out: Path,
    number: int,
    rid: str,
    codec: Codec,
    items: list[tuple[str, tuple[int, int], np.ndarray]],
    skipped: list[list[str]],
    grid: list[int] | None,
) -> None:
    """One array ``[N, h, w, g]`` for a fixed grid; else ``[T, g]`` plus each item's ``(h, w)``."""
    cfg = codec.model.config
    dtype = shards.token_dtype(cfg.group_bits)
    arrays = [t.astype(dtype) for *_, t in items]
    meta = {
        "run": rid,
        "shard": number,
        "items": [[src, int(w), int(h)] for src, (h, w), _ in items],
        "skipped": skipped,
    }
    if grid is not None:
        tensors = {"tokens": np.stack(arrays) if arrays else np.zeros((0, *grid), dtype)}
    else:
        flat = [a.reshape(-1, cfg.groups) for a in arrays]
        tensors = {
            "tokens": np.concatenate(flat) if flat else np.zeros((0, cfg.groups), dtype),
            "grids": np.array([a.shape[:2] for a in arrays], np.int32).reshape(-1, 2),
        }
    shards.write_shard(out / shards.shard_name(number), tensors, meta)


def write_index(out: Path, codec: Codec, settings: dict[str, Any], n_shards: int) -> dict[str, Any]:
    """Assemble ``index.json`` from the shards' headers (every shard must exist)."""
    rid = run_id(settings)
    entries, items, skipped = [], [], []
    for k in range(n_shards):
        path = out / shards.shard_name(k)
        if not path.exists():
            raise ShardError(f"{path} is missing; run the same command again to finish the job")
        meta = shards.read_shard_meta(path)
        if meta.get("run") != rid:
            raise ShardError(f"{path} belongs to another run")
        entries.append(
            {
                "file": path.name,
                "items": len(meta["items"]),
                "bytes": path.stat().st_size,
                "payload_sha256": meta["payload_sha256"],
            }
        )
        items += [{"source": s, "width": w, "height": h} for s, w, h in meta["items"]]
        skipped += [{"source": s, "error": e} for s, e in meta["skipped"]]
    cfg = codec.model.config
    grid = token_grid(codec, Preprocess(**settings["preprocess"]))
    index = {
        "format": shards.FORMAT,
        "version": shards.VERSION,
        "run": rid,
        "created": time.time(),
        "model": {"name": codec.name, "model_id": codec.model_id_hex, "config": cfg.to_dict()},
        "preprocess": settings["preprocess"],
        "pad_mode": settings["pad_mode"],
        "dtype": str(shards.token_dtype(cfg.group_bits)),
        "token_grid": grid,
        "groups": cfg.groups,
        "group_bits": cfg.group_bits,
        "downsample": cfg.downsample,
        "num_items": len(items),
        "num_skipped": len(skipped),
        "shard_size": settings["shard_size"],
        "shards": entries,
        "items": items,
        "skipped": skipped,
    }
    shards.write_json(out / INDEX_NAME, index)
    return index
