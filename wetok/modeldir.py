"""The model directory, and the 6-byte model id that finds it without reading its weights.

A model directory holds

* ``config.json``: the :class:`~wetok.config.TokenizerConfig`;
* ``model.safetensors``: the weights;
* ``prior.json``: the entropy tables (:class:`~wetok.prior.Prior`; uniform when absent);
* ``context.json``: the causal context model (:class:`~wetok.context.ContextModel`; optional, makes
  ``context`` the default coding mode). Not part of the model id: context payloads carry its own id;
* ``model_id.json``: the model id and the sizes of the three files it was computed from.

The **model id** is what every ``.wtk`` file carries to name its model: the first 6 bytes of a SHA-256 over
the weights hash (:func:`weights_sha256`, config included) and the prior tables.
Computing it means reading every weight, so wetok stores it in ``model_id.json`` whenever it writes a model
directory (:func:`write_model_id`: training export, ``wetok import``, ``wetok fit-prior``,
:meth:`wetok.codec.Codec.save_pretrained`), and finding a model by id reads only that file. The sizes are a
cheap check that the files are still the ones it describes; the weights themselves are verified when the
model is loaded (:func:`wetok.zoo.find_codec_by_model_id`).

A directory without ``model_id.json`` (made by an older wetok, or the bundled model) has its id computed
once and remembered in the user cache (``$XDG_CACHE_HOME/wetok/model-ids.json``), keyed by the files' paths,
sizes and modification times; wetok never writes into a model directory just to look at it. That hash
streams the weights file in chunks (:func:`hash_model_id`): a 1 GB file costs 1 MiB of memory, not 2 GB.

A model folder may come from anyone, so its files are checked before a layer sees them
(:func:`read_model_files`, :func:`check_state`): a JSON config nested too deeply, a safetensors header
that is empty, truncated, oversized or inconsistent, tensors of a dtype the model cannot use (only
``F32``, ``F16``, ``BF16``), non-finite values, and names or shapes that do not fit ``config.json`` are
each one :class:`ModelFilesError` line naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wetok.config import TokenizerConfig
from wetok.errors import ConfigError, WetokError
from wetok.fileio import cache_dir, read_json_file, write_atomic
from wetok.format import MODEL_ID_BYTES
from wetok.prior import PRIOR_NAME, Prior

if TYPE_CHECKING:
    from torch import Tensor

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_ID_NAME = "model_id.json"
# Optional: a stage-2 decoder beside the model's own, for realism > 0 (not part of the model id: it changes
# how a file looks, never which tokens it holds).
GENERATIVE_DECODER_NAME = "decoder_generative.safetensors"
_ID_FORMAT = "wetok-model-id"
MAX_MODEL_ID_BYTES = 64 << 10  # model_id.json is about 160 bytes
MAX_WEIGHTS_HEADER = 100 << 20  # safetensors' own limit on its JSON header
_CHUNK = 1 << 20  # bytes hashed at a time
# The dtypes a model's weights may have (loaded as float32), with torch's name (hashed) and item size.
WEIGHT_DTYPES = {"F32": ("torch.float32", 4), "F16": ("torch.float16", 2), "BF16": ("torch.bfloat16", 2)}


class ModelFilesError(WetokError, ValueError):
    """A model directory's files cannot make the model its ``config.json`` describes."""


def is_model_dir(path: str | Path) -> bool:
    """Whether ``path`` holds the two files a model needs (``config.json``, ``model.safetensors``)."""
    path = Path(path)
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def _config_hash(config: TokenizerConfig) -> Any:
    # The config is hashed as first released, with its (since removed, always empty) "extra" table: the
    # ids of existing models and .wtk files must not change.
    return hashlib.sha256(json.dumps({**config.to_dict(), "extra": {}}, sort_keys=True).encode())


def weights_sha256(config: TokenizerConfig, state: dict[str, Tensor]) -> str:
    """Hex SHA-256 of the config and every tensor (name, dtype, shape, bytes), in sorted name order."""
    import torch

    h = _config_hash(config)
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_id_of(weights_sha256: str, prior: Prior) -> bytes:
    """The model id of weights (their hex SHA-256, config included) coded with ``prior``."""
    h = hashlib.sha256(b"wetok-codec\0" + weights_sha256.encode() + b"\0")
    h.update(f"{prior.groups}x{prior.group_bits}\0".encode())
    h.update(prior.table_bytes())
    return h.digest()[:MODEL_ID_BYTES]


def load_prior(directory: Path, groups: int, group_bits: int) -> Prior:
    """``directory``'s prior, or the uniform one when it has no ``prior.json``."""
    if (directory / PRIOR_NAME).is_file():
        return Prior.load(directory)
    return Prior.uniform(groups, group_bits)


def hash_model_id(directory: str | Path) -> bytes:
    """Compute the model id from the files (reads every weight, a chunk at a time; no module is built)."""
    directory = Path(directory)
    config = read_config(directory / CONFIG_NAME)
    digest = stream_weights_sha256(config, directory / WEIGHTS_NAME)
    return model_id_of(digest, load_prior(directory, config.groups, config.group_bits))


def stream_weights_sha256(config: TokenizerConfig, path: Path) -> str:
    """:func:`weights_sha256` of the weights in the safetensors file ``path``, read in chunks of
    :data:`_CHUNK` bytes (the stored bytes are the little-endian tensor bytes it hashes)."""
    if struct.pack("=H", 1) != struct.pack("<H", 1):  # pragma: no cover (no big-endian machine here)
        from safetensors.torch import load_file

        return weights_sha256(config, load_file(str(path)))
    tensors, start = read_weights_header(path)
    h = _config_hash(config)
    with open(path, "rb") as f:
        for name in sorted(tensors):
            dtype, shape, begin, end = tensors[name]
            h.update(f"{name}|{WEIGHT_DTYPES[dtype][0]}|{tuple(shape)}".encode())
            f.seek(start + begin)
            left = end - begin
            while left:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    raise ModelFilesError(f"{path} is truncated (tensor {name} ends past the file)")
                h.update(chunk)
                left -= len(chunk)
    return h.hexdigest()


def read_config(path: Path) -> TokenizerConfig:
    """``config.json`` as a checked :class:`TokenizerConfig`; JSON nested too deeply for the parser is a
    :class:`ConfigError` naming the file, not a ``RecursionError``."""
    try:
        return TokenizerConfig.load(path)
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply to be a model config") from None


def read_weights_header(path: Path) -> tuple[dict[str, tuple[str, list[int], int, int]], int]:
    """The tensors a safetensors file declares, ``name → (dtype, shape, begin, end)`` (offsets from the
    data start, which is returned too), after checking the header against the file's size and each tensor
    against :data:`WEIGHT_DTYPES`. Reads only the header."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if n is None or not 2 <= n <= min(MAX_WEIGHTS_HEADER, size - 8):
                raise ModelFilesError(
                    f"{path} is not a safetensors file (empty, truncated, or a header length of "
                    f"{n if n is not None else '?'} bytes in a {size:,}-byte file)"
                )
            raw = f.read(n)
    except OSError as e:
        raise ModelFilesError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise ModelFilesError(f"{path} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFilesError(f"{path} is not a safetensors file (its header is not a table)")
    data_bytes, tensors = size - 8 - n, {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise ModelFilesError(f"{path}: tensor {name} is malformed")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in WEIGHT_DTYPES:
            raise ModelFilesError(
                f"{path}: tensor {name} is {dtype}; model weights must be {', '.join(WEIGHT_DTYPES)}"
            )
        ok = (
            isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        )
        if not ok or not 0 <= offsets[0] <= offsets[1] <= data_bytes:
            raise ModelFilesError(f"{path}: tensor {name} has a malformed shape or lies outside the file")
        if offsets[1] - offsets[0] != math.prod(shape) * WEIGHT_DTYPES[dtype][1]:
            raise ModelFilesError(f"{path}: tensor {name}'s bytes do not match its shape {shape}")
        tensors[name] = (dtype, shape, offsets[0], offsets[1])
    return tensors, 8 + n


def read_model_files(directory: str | Path) -> tuple[TokenizerConfig, dict[str, Tensor]]:
    """A model directory's config and weights, checked (:func:`read_weights`). Names and shapes are
    :func:`check_state`'s."""
    directory = Path(directory)
    config = read_config(directory / CONFIG_NAME)
    return config, read_weights(directory / WEIGHTS_NAME)


def read_weights(path: Path) -> dict[str, Tensor]:
    """A safetensors file's tensors, checked: the header (:func:`read_weights_header`) before anything is
    loaded, then every value finite; :class:`ModelFilesError` naming the file otherwise."""
    import torch
    from safetensors.torch import load_file

    read_weights_header(path)
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 (safetensors raises its own SafetensorError)
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFilesError(f"{path} cannot be read as safetensors: {text}") from None
    for name, t in state.items():
        if not bool(torch.isfinite(t).all()):
            raise ModelFilesError(f"{path}: tensor {name} holds NaN or infinite values")
    return state


def weights_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file whose header :func:`read_weights_header` has accepted."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def check_state(path: Path, state: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """Raise :class:`ModelFilesError` naming ``path`` unless ``state`` has exactly the names and shapes of
    the model's ``expected`` state dict (what ``config.json`` builds)."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [
        n for n in sorted(set(state) & set(expected)) if tuple(state[n].shape) != tuple(expected[n].shape)
    ]

    def some(names: list[str]) -> str:
        return names[0] + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")

    if missing:
        problem = f"lacks {some(missing)}"
    elif extra:
        problem = f"has tensors the model does not, {some(extra)}"
    elif wrong:
        n = wrong[0]
        problem = f"has {n} of shape {list(state[n].shape)}, the model {list(expected[n].shape)}"
        problem += f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
    else:
        return
    raise ModelFilesError(f"{path} does not fit its config.json: it {problem}")


def _sizes(directory: Path) -> dict[str, int | None]:
    files = (CONFIG_NAME, WEIGHTS_NAME, PRIOR_NAME)
    return {n: (directory / n).stat().st_size if (directory / n).is_file() else None for n in files}


def write_model_id(directory: str | Path, model_id: bytes | None = None) -> bytes:
    """Store ``directory``'s model id (computed from its files when not given) in ``model_id.json``.

    Call it after writing the weights or the prior of a model directory."""
    directory = Path(directory)
    model_id = hash_model_id(directory) if model_id is None else model_id
    record = {"format": _ID_FORMAT, "model_id": model_id.hex(), "sizes": _sizes(directory)}
    write_atomic(directory / MODEL_ID_NAME, json.dumps(record, indent=2) + "\n")
    return model_id


def stored_model_id(directory: str | Path) -> bytes | None:
    """The id in ``model_id.json``, or ``None`` when there is none, it is malformed, or the files' sizes
    differ from those it was written for."""
    directory = Path(directory)
    try:
        record = read_json_file(directory / MODEL_ID_NAME, MAX_MODEL_ID_BYTES)
        model_id = bytes.fromhex(record["model_id"])
        sizes = record["sizes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(model_id) != MODEL_ID_BYTES or sizes != _sizes(directory):
        return None
    return model_id


def read_model_id(directory: str | Path) -> bytes:
    """``directory``'s model id: stored, else remembered in the user cache, else computed (and
    remembered). Raises ``OSError`` / ``ValueError`` (incl. :class:`~wetok.errors.WetokError`) for a
    broken directory."""
    directory = Path(directory)
    stored = stored_model_id(directory)
    if stored is not None:
        return stored
    stamp = _stamp(directory)
    return _cached_model_id(str(directory.resolve()), stamp)


def _stamp(directory: Path) -> str:
    """Sizes and modification times of the files the id is computed from."""
    parts = []
    for name in (CONFIG_NAME, WEIGHTS_NAME, PRIOR_NAME):
        path = directory / name
        parts.append(f"{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.is_file() else "-")
    return "|".join(parts)


def cache_file() -> Path:
    return cache_dir() / "model-ids.json"


@functools.lru_cache(maxsize=64)
def _cached_model_id(path: str, stamp: str) -> bytes:
    cache = _read_cache()
    entry = cache.get(path)
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        try:
            return bytes.fromhex(entry["model_id"])
        except (KeyError, TypeError, ValueError):
            pass
    model_id = hash_model_id(path)
    cache[path] = {"stamp": stamp, "model_id": model_id.hex()}
    try:
        write_atomic(cache_file(), json.dumps(cache, indent=1) + "\n")
    except OSError:  # a read-only home: computed again next time, nothing worse
        pass
    return model_id


def _read_cache() -> dict:
    try:
        cache = read_json_file(cache_file(), 64 << 20)
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}
