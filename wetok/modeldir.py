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
sizes and modification times; wetok never writes into a model directory just to look at it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from wetok.config import TokenizerConfig
from wetok.fileio import cache_dir, write_atomic
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


def is_model_dir(path: str | Path) -> bool:
    """Whether ``path`` holds the two files a model needs (``config.json``, ``model.safetensors``)."""
    path = Path(path)
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def weights_sha256(config: TokenizerConfig, state: dict[str, Tensor]) -> str:
    """Hex SHA-256 of the config and every tensor (name, dtype, shape, bytes), in sorted name order."""
    import torch

    # The config is hashed as first released, with its (since removed, always empty) "extra" table: the
    # ids of existing models and .wtk files must not change.
    h = hashlib.sha256(json.dumps({**config.to_dict(), "extra": {}}, sort_keys=True).encode())
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
    """Compute the model id from the files (reads every weight; no module is built)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = TokenizerConfig.load(directory / CONFIG_NAME)
    digest = weights_sha256(config, load_file(str(directory / WEIGHTS_NAME)))
    return model_id_of(digest, load_prior(directory, config.groups, config.group_bits))


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
        record = json.loads((directory / MODEL_ID_NAME).read_text())
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
        cache = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}
