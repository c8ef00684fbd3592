"""Training checkpoints without pickle: tensors in one safetensors file, everything else as JSON in its
metadata.

Loading a checkpoint can never run code: safetensors holds raw tensor bytes, and the rest (config, step,
optimizer hyperparameters, numpy's and Python's RNG states) is plain JSON decoded by a small whitelist of
tags. Legacy pickle checkpoints (``checkpoint.pt``) are refused; :func:`convert_legacy_checkpoint`
converts one you wrote yourself.

The file is written with :func:`wetok.fileio.atomic_path` (temporary name, fsync, rename): a ``kill -9`` at
any moment leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from wetok.errors import CheckpointError
from wetok.fileio import atomic_path

CHECKPOINT_NAME = "checkpoint.safetensors"
LEGACY_CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "wetok-train-checkpoint"
_VERSION = 1
_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80")  # torch.save's zip container; a bare pickle (protocol >= 2)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the tree codec: nested dicts/lists/tuples of tensors, arrays and plain values <-> JSON + tensors --------
def _encode(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """JSON for ``obj``; its tensors go into ``tensors`` under their path ``key``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()  # a copy: no shared storage
        return {"$tensor": key}
    if isinstance(obj, np.ndarray):
        return {"$ndarray": obj.dtype.str, "shape": list(obj.shape), "data": obj.ravel().tolist()}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, tensors, f"{key}.{k}") for k, v in obj.items()}
        return {
            "$items": [[_encode(k, tensors, key), _encode(v, tensors, f"{key}.{k}")] for k, v in obj.items()]
        }
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {key})")


_ARRAY_DTYPES = {"<u4", "<i4", "<i8", "<u8", "<f4", "<f8", "|u1", "|b1"}


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "$tensor" in obj:
        if obj["$tensor"] not in tensors:
            raise CheckpointError(f"refers to a tensor {obj['$tensor']!r} it does not hold")
        return tensors[obj["$tensor"]]
    if "$ndarray" in obj:
        if obj["$ndarray"] not in _ARRAY_DTYPES or not isinstance(obj.get("data"), list):
            raise CheckpointError(f"holds an array of unsupported type {obj['$ndarray']!r}")
        return np.array(obj["data"], dtype=np.dtype(obj["$ndarray"])).reshape(obj["shape"])
    if "$tuple" in obj:
        return tuple(_decode(v, tensors) for v in obj["$tuple"])
    if "$items" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["$items"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


# -- files --------------------------------------------------------------------------------------------------
def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write ``payload`` (its ``step`` included) atomically to ``path``.

    Refuses (:class:`CheckpointError`) to replace a checkpoint of a later step: two runs sharing a folder,
    or a run restarted without ``--resume``, must not throw away the further one's work."""
    path = Path(path)
    on_disk = checkpoint_step(path) if path.is_file() else None
    if on_disk is not None and on_disk > payload.get("step", 0):
        raise CheckpointError(
            f"not saving step {payload.get('step', 0)} over {path}, which holds the later step {on_disk}"
        )
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(payload, tensors, "")
    metadata = {"format": _FORMAT, "version": str(_VERSION), "state": json.dumps(tree)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _check_not_pickle(path: Path) -> None:
    """Refuse a torch/pickle file by its name or its first bytes (a safetensors file starts with an 8-byte
    little-endian header length, then ``{``; its first byte may well be ``0x80``, like a pickle's)."""
    with open(path, "rb") as f:
        head = f.read(9)
    safetensors = len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32
    if path.suffix in (".pt", ".pth", ".ckpt") or (not safetensors and head.startswith(_PICKLE_MAGICS)):
        raise CheckpointError(
            f"{path} is a legacy pickle checkpoint, which wetok no longer loads (pickle can run code); "
            "if you wrote it yourself, convert it with wetok_train.checkpoint.convert_legacy_checkpoint "
            "(docs/security.md)"
        )


def _open_metadata(path: Path) -> dict[str, str]:
    _check_not_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{path} is not a wetok training checkpoint ({str(e).splitlines()[0]})"
        ) from None
    if meta.get("format") != _FORMAT or meta.get("version") != str(_VERSION):
        raise CheckpointError(f"{path} is not a wetok training checkpoint (format version {_VERSION})")
    return meta


def checkpoint_step(path: str | Path) -> int | None:
    """The step a checkpoint holds, read from its header only; ``None`` if it is not readable as one."""
    try:
        state = json.loads(_open_metadata(Path(path))["state"])
        return int(state["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors on the CPU). No code runs: a legacy
    pickle is refused with :class:`CheckpointError`, as is any malformed file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    meta = _open_metadata(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        tree = _decode(json.loads(meta["state"]), tensors)
    except (SafetensorError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise CheckpointError(f"{path} {e}") from None
        raise CheckpointError(f"{path} is a malformed checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("step"), int):
        raise CheckpointError(f"{path} is a malformed checkpoint (no step)")
    return tree


def convert_legacy_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Convert a legacy ``checkpoint.pt`` (torch pickle) into the safetensors checkpoint format.

    ONLY FOR FILES YOU WROTE YOURSELF. It unpickles with ``weights_only=True`` and allows the numpy types
    of the RNG state, which refuses the known code-execution tricks; but a pickle is a program, so do not
    feed it files from elsewhere. Nothing in wetok calls this: run it by hand, e.g.::

        python -c "from wetok_train.checkpoint import convert_legacy_checkpoint as c; \\
                   c('runs/x/checkpoint.pt', 'runs/x/checkpoint.safetensors')"
    """
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed it
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), core.multiarray._reconstruct]
    with torch.serialization.safe_globals(allowed):
        payload = torch.load(src, map_location="cpu", weights_only=True)
    dst = Path(dst)
    if dst.exists():
        raise CheckpointError(f"{dst} already exists; move it away first")
    save_checkpoint(payload, dst)
    return dst
