"""What the ``wetok`` commands read, in one place: which files an argument names, and how each is read.

* **Arguments.** A file as given; a folder searched recursively for the command's suffixes; a quoted glob
  (``'photos/**/*.jpg'``) expanded; ``-`` for stdin, at most once. Neither a folder nor ``**`` descends into
  a symbolic link to a folder, so a link loop (``d/a -> ..``) cannot make an endless or exploding search.
* **Names.** Each input keeps its name relative to the argument it came from (:attr:`Input.rel`), which
  ``-o DIR/`` uses for the layout of the outputs. It never holds ``..``: a glob such as ``in/*/../x/*.png``
  is matched, then normalised, so the outputs it plans stay inside ``DIR``
  (:func:`wetok_cli.outputs.output_paths` checks it again).
* **Bounded reads.** A ``.wtk`` file is read header first and never past what its header allows; an image
  file is opened lazily by Pillow; an image on stdin is read up to 8 bytes per allowed pixel.

Missing files are kept as inputs so that they fail, one line each, where they are opened.
"""

from __future__ import annotations

import glob
import io
import os
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from wetok.errors import WetokError
from wetok_cli.common import InputError, UsageProblem

STDIO = Path("-")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Input:
    """An input file (``path == STDIO`` for stdin) and its name relative to the argument it came from."""

    path: Path
    rel: Path

    @property
    def is_stdin(self) -> bool:
        return self.path == STDIO

    @property
    def display(self) -> str:
        return "<stdin>" if self.is_stdin else str(self.path)


def expand_inputs(args: Sequence[str], suffixes: Iterable[str]) -> tuple[list[Input], list[tuple[str, str]]]:
    """Files as given, folders searched recursively for ``suffixes``, quoted globs expanded, ``-`` stdin.

    Returns ``(inputs, problems)``; a problem is ``(argument, message)`` for an argument that names
    nothing. Missing files are kept as inputs so they fail, one line each, where they are opened.
    """
    wanted = tuple(s.lower() for s in suffixes)
    inputs: list[Input] = []
    problems: list[tuple[str, str]] = []
    for arg in args:
        path = Path(arg)
        if arg == "-":
            if any(i.is_stdin for i in inputs):
                raise UsageProblem("stdin ('-') can be given only once")
            inputs.append(Input(STDIO, Path("stdin")))
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in wanted and p.is_file())
            inputs += [Input(p, p.relative_to(path)) for p in found]
            if not found:
                problems.append((arg, f"no {'/'.join(wanted)} files in this folder"))
        elif not path.exists() and _GLOB_CHARS & set(arg):
            matches = [m for m in glob_files(arg) if m.is_file()]
            root = _glob_root(path)
            inputs += [Input(m, relative_name(m, root)) for m in matches]
            if not matches:
                problems.append((arg, "no files match this pattern"))
        else:
            inputs.append(Input(path, Path(path.name)))
    return inputs, problems


def glob_files(pattern: str) -> list[Path]:
    """The paths a quoted glob matches, sorted. ``**`` (any depth of folders) never follows a symbolic link
    to a folder, as folder arguments do not (Python's ``glob`` would, forever in a link loop); patterns
    without ``**`` have a bounded depth and are Python's ``glob`` (hidden names need a leading ``.``)."""
    if "**" not in pattern:
        return sorted(Path(m) for m in glob.glob(pattern))
    path = Path(pattern)
    root = _glob_root(path)
    rest = path.relative_to(root) if root.parts else path
    try:
        return sorted(root.glob(str(rest)))  # pathlib's ``**`` does not descend into linked folders
    except ValueError as e:  # e.g. "a**b": '**' can only be a whole component
        raise UsageProblem(f"{pattern}: {e}") from None


def relative_name(match: Path, root: Path) -> Path:
    """``match``'s name below the glob's ``root``, without ``..``: the normalised path relative to the
    normalised root when it lies inside, else the file name alone."""
    norm, base = Path(os.path.normpath(match)), Path(os.path.normpath(root))
    try:
        rel = norm.relative_to(base) if base != Path(".") else norm
    except ValueError:
        return Path(match.name)
    return rel if ".." not in rel.parts and not rel.is_absolute() else Path(match.name)


def _glob_root(pattern: Path) -> Path:
    """The folder a glob searches from: its leading components free of wildcards (``a/**/*.png`` → ``a``)."""
    parts = pattern.parts
    first = next((i for i, part in enumerate(parts) if _GLOB_CHARS & set(part)), len(parts) - 1)
    return Path(*parts[:first])


def _stdin() -> BinaryIO:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None or stream.closed:
        raise InputError("stdin is closed; pipe a file into '-'")
    return stream


def read_wtk_input(item: Input) -> bytes:
    """A ``.wtk`` file's bytes (or stdin's), reading no more than its header allows."""
    from wetok.format import read_stream

    if item.is_stdin:
        return read_stream(_stdin())
    with open(item.path, "rb") as f:
        return read_stream(f)


def read_image_input(item: Input) -> tuple[Any, int]:
    """An image input as uint8 RGB ``[H, W, 3]`` and its size in bytes. A file is read only as far as
    Pillow needs; stdin is read up to what the largest allowed image could take (8 bytes a pixel)."""
    from wetok.image import open_image
    from wetok.limits import max_pixels

    if item.is_stdin:
        limit = 8 * max_pixels() + (1 << 20)
        raw = _stdin().read(limit + 1)
        if len(raw) > limit:
            raise InputError(f"stdin holds over {limit:,} bytes, more than any image within --max-pixels")
        return _decoded(open_image, io.BytesIO(raw)), len(raw)
    return _decoded(open_image, item.path), item.path.stat().st_size


def _decoded(open_image: Callable[[Any], Any], source: Any) -> Any:
    try:
        return open_image(source)
    except ValueError as e:  # a mode Pillow cannot convert; Pillow's "cannot identify" is an OSError
        if isinstance(e, WetokError):
            raise
        raise InputError(str(e).splitlines()[0]) from None
    except (SyntaxError, struct.error, EOFError) as e:  # what Pillow's plugins raise on truncated files
        raise InputError(f"truncated or corrupt image ({e})") from None
    except OSError as e:
        if e.errno is not None or type(e).__name__ == "UnidentifiedImageError":
            raise  # a system error (named by user_message), or "not an image"
        raise InputError(f"truncated or corrupt image ({e})") from None
