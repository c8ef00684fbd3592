"""Token shards: the files ``wetok tokenize`` writes and :class:`wetok.data.TokenDataset` reads.

A shard is a ``safetensors`` file with one metadata key, ``wetok`` (a JSON object: the run id, the shard
number, its items, the images skipped, and the SHA-256 of the tensor bytes), and either

- ``tokens`` ``[N, h, w, g]`` when every image was preprocessed to one size, or
- ``tokens`` ``[T, g]`` (every item's ``h·w`` tokens, row-major, one item after another) and ``grids``
  ``[N, 2]`` int32 ``(h, w)`` when each image keeps its own size.

Tokens are stored in the narrowest unsigned type the symbol width allows (``uint8`` for ``d' <= 8``,
``uint16`` to 16 bits, else ``int32``). The tensor bytes are checked against the recorded SHA-256 on every
read, so a damaged shard is an error naming it, never wrong tokens. Writes are atomic (temporary file, then
rename), so a shard that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from wetok import fileio
from wetok.errors import ShardError, SmallFileError

SHARD_PATTERN = "shard-{:05d}.safetensors"
INDEX_NAME = "index.json"
RUN_NAME = "run.json"
FORMAT = "wetok-tokens"
VERSION = 1
MAX_HEADER_BYTES = 100 << 20  # a shard header (JSON) larger than this is refused before it is read
# index.json lists every item (about 100 bytes each): 256 MiB is about 2.5 million images
MAX_INDEX_BYTES = 256 << 20


def token_dtype(group_bits: int) -> np.dtype:
    """The narrowest dtype holding symbols of ``group_bits`` bits."""
    if group_bits <= 8:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if group_bits <= 16 else np.dtype(np.int32)


def shard_name(number: int) -> str:
    return SHARD_PATTERN.format(number)


def write_shard(path: Path, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write a shard atomically; ``meta`` gains ``payload_sha256`` (over the tensor bytes as stored)."""
    blob = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    header_len = struct.unpack("<Q", blob[:8])[0]
    meta = {**meta, "payload_sha256": hashlib.sha256(blob[8 + header_len :]).hexdigest()}
    fileio.write_atomic(path, st_save(tensors, metadata={"wetok": json.dumps(meta, sort_keys=True)}))


def read_shard(path: Path, max_bytes: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A shard's tensors and metadata, after checking the tensor bytes against the recorded SHA-256.

    Only a regular file is read (not ``/dev/zero``, not a FIFO), and none over ``max_bytes``: both are
    checked before a byte is read."""
    try:
        with fileio.open_regular(path) as f:
            st = os.fstat(f.fileno())
            if max_bytes is not None and st.st_size > max_bytes:
                raise ShardError(
                    f"token shard {path} is {st.st_size:,} bytes, over the {max_bytes:,} its index allows"
                )
            data = f.read(st.st_size + 1)
    except OSError as e:
        raise ShardError(f"cannot read token shard {path}: {e.strerror or e}") from None
    except SmallFileError as e:  # a FIFO or a device: refused before it is read (a FIFO would block)
        raise ShardError(f"token shard {e}") from None
    if len(data) > st.st_size:
        raise ShardError(f"token shard {path} grew while it was read")
    meta, payload_start = _parse_header(path, data)
    if hashlib.sha256(data[payload_start:]).hexdigest() != meta.get("payload_sha256"):
        raise ShardError(
            f"token shard {path} fails its checksum (damaged or truncated); re-run "
            "`wetok tokenize` to rewrite it after deleting it"
        )
    try:
        return st_load(data), meta
    except Exception as e:  # safetensors raises its own error types
        raise ShardError(f"token shard {path} is malformed: {e}") from None


def read_shard_meta(path: Path) -> dict[str, Any]:
    """A shard's metadata only (its header; tensor bytes are not read or checked). Only a regular file is
    read, as in :func:`read_shard`."""
    try:
        with fileio.open_regular(path) as f:
            head = f.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            if not 0 < size <= min(MAX_HEADER_BYTES, os.fstat(f.fileno()).st_size - 8):
                raise ShardError(f"token shard {path} is malformed (header length {size})")
            data = head + f.read(size)
    except SmallFileError as e:
        raise ShardError(f"token shard {e}") from None
    return _parse_header(path, data)[0]


def _parse_header(path: Path, data: bytes) -> tuple[dict[str, Any], int]:
    if len(data) < 8:
        raise ShardError(f"token shard {path} is truncated")
    size = struct.unpack("<Q", data[:8])[0]
    if not 0 < size <= min(MAX_HEADER_BYTES, len(data) - 8):
        raise ShardError(f"token shard {path} is malformed (header length {size})")
    try:
        header = json.loads(data[8 : 8 + size])
        meta = json.loads(header["__metadata__"]["wetok"])
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: JSON nested too deeply
        raise ShardError(f"token shard {path} has no readable wetok header (not a wetok shard?)") from None
    if not isinstance(meta, dict):
        raise ShardError(f"token shard {path} has a malformed wetok header")
    return meta, 8 + size


def read_json(path: Path, what: str) -> dict[str, Any]:
    """``index.json`` or ``run.json``: a regular file of at most :data:`MAX_INDEX_BYTES`, checked before it
    is read (JSON costs about 2.5 times its size in memory), holding a wetok token file of this version."""
    try:
        value = fileio.read_json_file(path, MAX_INDEX_BYTES)
    except OSError as e:
        raise ShardError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except SmallFileError as e:
        raise ShardError(f"{what} {e}") from None
    except ValueError as e:
        raise ShardError(f"{what} {path} is not valid JSON: {e}") from None
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise ShardError(f"{path} is not a wetok token {what}")
    if value.get("version") != VERSION:
        raise ShardError(
            f"{path}: {what} version {value.get('version')} is not supported (this wetok "
            f"reads version {VERSION})"
        )
    return value


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write ``index.json`` or ``run.json``; one larger than :func:`read_json` reads is refused."""
    text = json.dumps(value, indent=1) + "\n"
    if len(text.encode()) > MAX_INDEX_BYTES:
        raise ShardError(
            f"{path} would be {len(text.encode()):,} bytes, over the {MAX_INDEX_BYTES:,} a dataset index may "
            "have; tokenize the images as several datasets"
        )
    fileio.write_atomic(path, text)


__all__ = [
    "INDEX_NAME",
    "ShardError",
    "read_shard",
    "read_shard_meta",
    "shard_name",
    "token_dtype",
    "write_shard",
]
