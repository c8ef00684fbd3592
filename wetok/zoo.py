"""The model registry: find codecs by name, by path, or by the model id stored in a ``.wtk`` file.

A model is a directory (:mod:`wetok.modeldir`) holding ``config.json``, ``model.safetensors``, optionally
``prior.json``, and the stored model id ``model_id.json``: finding a model by id reads only that (or the
user cache), and the weights are checked when the model found is loaded.

Search order: each entry of ``$WETOK_MODELS`` (``os.pathsep``-separated), then the user directory
``$XDG_DATA_HOME/wetok/models`` (default ``~/.local/share/wetok/models``), then the models bundled in the
package (``wetok/models/<name>/``). The first directory holding a name wins.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from wetok.codec import Codec
from wetok.config import TokenizerConfig
from wetok.errors import ModelMismatchError, ModelNotFoundError, WetokError
from wetok.modeldir import CONFIG_NAME, GENERATIVE_DECODER_NAME, WEIGHTS_NAME, is_model_dir, read_model_id

DEFAULT_MODEL = "default"
BUNDLED_DIR = Path(__file__).parent / "models"


def user_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wetok" / "models"


def model_dirs() -> list[Path]:
    """Directories searched for models, in order: ``$WETOK_MODELS``, the user directory, bundled."""
    env = [Path(p).expanduser() for p in os.environ.get("WETOK_MODELS", "").split(os.pathsep) if p]
    return [*env, user_dir(), BUNDLED_DIR]


class ModelFolderWarning(UserWarning):
    """A model folder is skipped (broken), or hides another of the same name."""


@dataclass(frozen=True)
class ModelInfo:
    """A registered model, described without loading its weights into a module. ``problem`` says why a
    broken one cannot be used; ``hidden_by`` is the folder of an earlier model of the same name."""

    name: str
    path: Path
    bundled: bool
    problem: str | None = None
    hidden_by: Path | None = None

    @property
    def config(self) -> TokenizerConfig:
        return TokenizerConfig.load(self.path / CONFIG_NAME)

    @property
    def model_id_hex(self) -> str:
        """The model id that files made with this model carry (stored; weights not read)."""
        return read_model_id(self.path).hex()


def all_models() -> list[ModelInfo]:
    """Every model folder in :func:`model_dirs` (an entry may also be a model directory itself), in search
    order: broken ones with their ``problem``, later ones of a name with ``hidden_by`` set."""
    found: list[ModelInfo] = []
    first: dict[str, Path] = {}
    for root in model_dirs():
        for path in _models_in(root):
            problem = model_dir_problem(path)
            hidden_by = first.get(path.name) if problem is None else None
            if problem is None:
                first.setdefault(path.name, path)
            found.append(ModelInfo(path.name, path, root == BUNDLED_DIR, problem, hidden_by))
    return found


def list_models() -> list[ModelInfo]:
    """The usable models, the first of each name; broken folders are skipped, and a model hiding a bundled
    one of the same name is allowed, each with one :class:`ModelFolderWarning` per process."""
    usable = []
    for m in all_models():
        if m.problem is not None:
            _warn_once(f"skipping broken model folder {m.path}: {m.problem}")
        elif m.hidden_by is None:
            usable.append(m)
        elif m.bundled:
            _warn_once(
                f"model {m.name!r} in {m.hidden_by} hides the bundled model of that name; files made with "
                "the bundled one are still found by their model id"
            )
    return usable


_warned: set[str] = set()


def installed_model_path(name: str, what: str = "model") -> Path:
    """The directory of the installed model ``name`` (``wetok models``); ``what`` names the option asking."""
    installed = {m.name: m.path for m in list_models()}
    if name not in installed:
        raise FileNotFoundError(
            f"{what} {name!r}: no such model directory, checkpoint or installed model"
            f" (installed: {', '.join(sorted(installed)) or 'none'})"
        )
    return installed[name]


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, ModelFolderWarning, stacklevel=3)


def model_dir_problem(path: Path) -> str | None:
    """Why the model folder ``path`` cannot be used (config, weights header, prior or generative add-on
    unreadable, or an add-on beside a generative model), else ``None``. Reads the config, the safetensors
    headers and the prior, never the weights; cached per file sizes and times."""
    try:
        stamp = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.iterdir()) if f.is_file())
    except OSError as e:
        return f"unreadable ({e.strerror})"
    return _problem_cached(str(path), stamp)


@functools.lru_cache(maxsize=256)
def _problem_cached(path: str, stamp: tuple) -> str | None:
    from safetensors import safe_open

    from wetok.modeldir import load_prior, read_weights_header

    directory = Path(path)
    try:
        config = TokenizerConfig.load(directory / CONFIG_NAME)
        with safe_open(str(directory / WEIGHTS_NAME), framework="pt") as f:
            f.keys()
        load_prior(directory, config.groups, config.group_bits)
        if (directory / GENERATIVE_DECODER_NAME).exists():  # half-copied, or beside a generative model
            read_weights_header(directory / GENERATIVE_DECODER_NAME)
            if config.generative:
                return f"{GENERATIVE_DECODER_NAME} beside a model whose own decoder is generative"
    except Exception as e:  # noqa: BLE001 (any failure, e.g. SafetensorError, means the folder is broken)
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{type(e).__name__}: {text}" if type(e).__name__ == "SafetensorError" else text
    return None


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
    model_id: bytes,
    extra: list[str | Path] | tuple = (),
    device: str | torch.device = "cpu",
    *,
    realism: float | None = None,
) -> Codec:
    """The codec whose files carry ``model_id``: searched in ``extra`` (model directories or folders of
    them), then in the registry. Only stored ids are read; the one model found is loaded and its weights
    checked against the id, so a directory whose files changed after its id was stored is refused.

    ``realism`` above 0 (a file's, or the one asked for) needs the generative add-on: of several folders
    holding the model, the first that has it is chosen (a copy without it, earlier on the search path,
    must not make such files undecodable). A folder that fails to load (weights that are NaN, files
    changed behind the stored id) gives way to the next one holding the model, with a warning; when none
    loads, the first one's error is raised."""
    skipped: list[tuple[Path, Exception]] = []
    for path in _holders(model_id, extra, realism):
        try:
            codec = _load_checked(path, model_id, device)
        except (OSError, ValueError, ModelNotFoundError) as e:  # broken past what the listing checks
            skipped.append((path, e))
            continue
        for where, error in skipped:  # another folder of the model served: say why these did not
            _warn_once(f"skipping model folder {where}: {str(error).strip().splitlines()[0]}")
        return codec
    if skipped:
        raise skipped[0][1]
    raise ModelNotFoundError(f"no installed model has id {model_id.hex()}; available: {_available()}")


def _holders(model_id: bytes, extra: list[str | Path] | tuple, realism: float | None) -> Iterator[Path]:
    """The folders holding ``model_id``, in search order; for ``realism`` above 0 those without the
    generative add-on last (decoding with one of them says, in one line, that it cannot paint the file)."""
    without_addon = []
    for path in _candidates(extra):
        if _safe_model_id(path) != model_id:
            continue
        if realism and not (path / GENERATIVE_DECODER_NAME).is_file():
            without_addon.append(path)
        else:
            yield path
    yield from without_addon


def _load_checked(path: Path, model_id: bytes, device: str | torch.device) -> Codec:
    codec = Codec.from_pretrained(path, device=device)
    if codec.model_id != model_id:
        raise ModelNotFoundError(
            f"{path}: its stored model id {model_id.hex()} does not match its files "
            f"({codec.model_id_hex}); they changed after the id was written: rewrite it with "
            "`wetok fit-prior`, or delete model_id.json there"
        )
    return codec


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
    """Model folders to search by id: those in ``extra``, then every usable installed one, hidden or not
    (a user model named ``default`` must not make files of the bundled one undecodable)."""
    found = [p for entry in extra for p in _models_in(Path(entry).expanduser())]
    list_models()  # warns once about broken and hiding folders
    return found + [m.path for m in all_models() if m.problem is None]
