"""The model registry: find codecs by name, by path, or by the model id stored in a ``.wtk`` file.

A model is a directory (:mod:`wetok.modeldir`) holding ``config.json``, ``model.safetensors``, optionally
``prior.json``, and the stored model id ``model_id.json``: finding a model by id reads only that (or the
user cache), and the weights are checked when the model found is loaded.

Search order: each entry of ``$WETOK_MODELS`` (``os.pathsep``-separated), then the user directory
``$XDG_DATA_HOME/wetok/models`` (default ``~/.local/share/wetok/models``), then the models bundled in the
package (``wetok/models/<name>/``). The first directory holding a name wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from wetok.codec import Codec
from wetok.config import TokenizerConfig
from wetok.errors import ModelMismatchError, ModelNotFoundError, WetokError
from wetok.modeldir import CONFIG_NAME, WEIGHTS_NAME, is_model_dir, read_model_id

DEFAULT_MODEL = "default"
BUNDLED_DIR = Path(__file__).parent / "models"


def user_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wetok" / "models"


def model_dirs() -> list[Path]:
    """Directories searched for models, in order: ``$WETOK_MODELS``, the user directory, bundled."""
    env = [Path(p).expanduser() for p in os.environ.get("WETOK_MODELS", "").split(os.pathsep) if p]
    return [*env, user_dir(), BUNDLED_DIR]


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
    def model_id_hex(self) -> str:
        """The model id that files made with this model carry (stored; weights not read)."""
        return read_model_id(self.path).hex()


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


def find_codec_by_model_id(
    model_id: bytes, extra: list[str | Path] | tuple = (), device: str | torch.device = "cpu"
) -> Codec:
    """The codec whose files carry ``model_id``: searched in ``extra`` (model directories or folders of
    them), then in the registry. Only stored ids are read; the one model found is loaded and its weights
    checked against the id, so a directory whose files changed after its id was stored is refused."""
    for path in _candidates(extra):
        if _safe_model_id(path) == model_id:
            codec = Codec.from_pretrained(path, device=device)
            if codec.model_id != model_id:
                raise ModelNotFoundError(
                    f"{path}: its stored model id {model_id.hex()} does not match its files "
                    f"({codec.model_id_hex}); they changed after the id was written: rewrite it with "
                    "`wetok fit-prior`, or delete model_id.json there"
                )
            return codec
    raise ModelNotFoundError(f"no installed model has id {model_id.hex()}; available: {_available()}")


def name_for_model_id(model_id: bytes) -> str | None:
    """The registry name of the model with id ``model_id``, if one is installed."""
    return next((m.name for m in list_models() if _safe_model_id(m.path) == model_id), None)


def name_mismatch(error: ModelMismatchError) -> ModelMismatchError:
    """``error`` with the registry name of the model its file needs filled in, when that one is installed
    (the codec that raised it does not know the registry)."""
    if error.expected_name is None:
        try:
            error.expected_name = name_for_model_id(error.expected)
        except (OSError, WetokError):  # a registry problem must not hide the mismatch itself
            pass
    return error


def _safe_model_id(path: Path) -> bytes | None:
    """A broken model directory in the registry is skipped, not fatal, when searching."""
    try:
        return read_model_id(path)
    except (OSError, ValueError):
        return None


def _candidates(extra: list[str | Path] | tuple) -> list[Path]:
    found = [p for entry in extra for p in _models_in(Path(entry).expanduser())]
    return found + [m.path for m in list_models()]
