"""The model registry: find codecs by name, by path, or by the model id stored in a ``.wtk`` file.

A model is a directory holding ``config.json``, ``model.safetensors`` and (optionally) ``prior.json``.
Search order: each entry of ``$WETOK_MODELS`` (``os.pathsep``-separated), then the user directory
``$XDG_DATA_HOME/wetok/models`` (default ``~/.local/share/wetok/models``), then the models bundled in the
package (``wetok/models/<name>/``). The first directory holding a name wins.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from wetok.codec import Codec, codec_fingerprint
from wetok.config import TokenizerConfig
from wetok.errors import ModelMismatchError, ModelNotFoundError, WetokError
from wetok.prior import PRIOR_NAME, Prior
from wetok.tokenizer import CONFIG_NAME, WEIGHTS_NAME, state_fingerprint

DEFAULT_MODEL = "default"
BUNDLED_DIR = Path(__file__).parent / "models"


def user_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wetok" / "models"


def model_dirs() -> list[Path]:
    """Directories searched for models, in order: ``$WETOK_MODELS``, the user directory, bundled."""
    env = [Path(p).expanduser() for p in os.environ.get("WETOK_MODELS", "").split(os.pathsep) if p]
    return [*env, user_dir(), BUNDLED_DIR]


def is_model_dir(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


@dataclass(frozen=True)
class ModelInfo:
    """A registered model, described without loading its weights into a module."""

    name: str
    path: Path
    bundled: bool

    @property
    def config(self) -> TokenizerConfig:
        return TokenizerConfig.load(self.path / CONFIG_NAME)

    @property
    def fingerprint_hex(self) -> str:
        """The codec fingerprint that files made with this model carry (cached per file version)."""
        return model_fingerprint(self.path).hex()


def list_models() -> list[ModelInfo]:
    """Every model in :func:`model_dirs` (an entry may also be a model directory itself); the first
    occurrence of each name only."""
    seen: dict[str, ModelInfo] = {}
    for root in model_dirs():
        for path in _models_in(root):
            seen.setdefault(path.name, ModelInfo(path.name, path, bundled=root == BUNDLED_DIR))
    return list(seen.values())


def _models_in(root: Path) -> list[Path]:
    if is_model_dir(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and is_model_dir(p))


def _available() -> str:
    names = [m.name for m in list_models()]
    return ", ".join(names) if names else "none (set WETOK_MODELS or install one)"


def load_codec(name_or_path: str | Path | None = None, device: str | torch.device = "cpu") -> Codec:
    """A codec by registry name (``None`` → :data:`DEFAULT_MODEL`) or by model directory path.

    A ``Path``, or a string with a path separator or starting with ``.``/``~``, is a path; any other string
    is looked up in the registry first, then tried as a directory relative to the working directory.
    """
    target = DEFAULT_MODEL if name_or_path is None else name_or_path
    path = Path(target).expanduser()
    if isinstance(target, Path) or os.sep in target or target.startswith((".", "~")):
        return _load_dir(path, device)
    for info in list_models():
        if info.name == target:
            return Codec.from_pretrained(info.path, device=device)
    if is_model_dir(path):
        return Codec.from_pretrained(path, device=device)
    raise ModelNotFoundError(f"no model named {target!r}; available: {_available()}")


def _load_dir(path: Path, device: str | torch.device) -> Codec:
    if not is_model_dir(path):
        raise ModelNotFoundError(f"{path} is not a model directory (needs {CONFIG_NAME}, {WEIGHTS_NAME})")
    return Codec.from_pretrained(path, device=device)


def find_codec_by_fingerprint(
    fp: bytes, extra: list[str | Path] | tuple = (), device: str | torch.device = "cpu"
) -> Codec:
    """The codec whose files carry model id ``fp``: searched in ``extra`` (model directories or folders
    of them), then in the registry."""
    for path in _candidates(extra):
        if _safe_fingerprint(path) == fp:
            return Codec.from_pretrained(path, device=device)
    raise ModelNotFoundError(f"no installed model has fingerprint {fp.hex()}; available: {_available()}")


def name_for_fingerprint(fp: bytes) -> str | None:
    """The registry name of the model with codec fingerprint ``fp``, if one is installed."""
    return next((m.name for m in list_models() if _safe_fingerprint(m.path) == fp), None)


def name_mismatch(error: ModelMismatchError) -> ModelMismatchError:
    """``error`` with the registry name of the model its file needs filled in, when that one is installed
    (the codec that raised it does not know the registry)."""
    if error.expected_name is None:
        try:
            error.expected_name = name_for_fingerprint(error.expected)
        except (OSError, WetokError):  # a registry problem must not hide the mismatch itself
            pass
    return error


def _safe_fingerprint(path: Path) -> bytes | None:
    """A broken model directory in the registry is skipped, not fatal, when searching."""
    try:
        return model_fingerprint(path)
    except (OSError, ValueError):
        return None


def _candidates(extra: list[str | Path] | tuple) -> list[Path]:
    found = [p for entry in extra for p in _models_in(Path(entry).expanduser())]
    return found + [m.path for m in list_models()]


def model_fingerprint(path: Path) -> bytes:
    """Codec fingerprint of a model directory, hashed from its files (weights read, no module built)."""
    files = [path / CONFIG_NAME, path / WEIGHTS_NAME, path / PRIOR_NAME]
    stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None for f in files)
    return _fingerprint_cached(str(path.resolve()), stamp)


@functools.lru_cache(maxsize=64)
def _fingerprint_cached(path: str, stamp: tuple) -> bytes:
    directory = Path(path)
    config = TokenizerConfig.load(directory / CONFIG_NAME)
    state = load_file(str(directory / WEIGHTS_NAME))
    if (directory / PRIOR_NAME).is_file():
        prior = Prior.load(directory)
    else:
        prior = Prior.uniform(config.groups, config.group_bits)
    return codec_fingerprint(state_fingerprint(config, state), prior)
