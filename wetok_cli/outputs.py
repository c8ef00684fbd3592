"""What the ``wetok`` commands may write, in one place: where each output goes, what may be replaced, and
how it is written (docs/security.md, section 2).

* **Where.** Beside the input with the command's suffix; ``-o FILE`` for one input; ``-o DIR/`` (or any
  ``-o`` with several inputs) keeps the layout of input folders below ``DIR`` and never leaves it (an
  input name holding ``..`` is refused, and so is a symbolic link planted as a folder below ``DIR``).
  ``-`` is stdout, never a terminal without ``--force``.
* **Never replaced without ``--force``.** An existing output is refused; a new one is *created*
  exclusively (:func:`wetok.fileio.atomic_path`), so of two runs writing the same new name at once exactly
  one wins. With ``--force`` only a regular file is replaced (through a symbolic link, its target);
  devices and FIFOs are written into (:func:`wetok.fileio.check_output`).
* **Never an input.** No output is a file the run reads (an input, ``--reference``, ``--compare``), by
  path, symbolic or hard link, even with ``--force``.
* **Once per run.** No path is written twice in one run: not by two inputs, not by two outputs of one
  input (the image and its ``--compare`` page).
* **Atomic.** Files are written to a temporary file and renamed (or linked), so an interrupted run leaves
  the old file or the new one.
* **stdout.** Data and JSON lines on stdout are flushed as they are written; a closed or failing stdout is
  an error (exit 1), not a silent success (:func:`wetok.fileio.write_stdout_text`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from wetok_cli.common import InputError, UsageProblem, isatty
from wetok_cli.inputs import STDIO, Input


def output_paths(inputs: Sequence[Input], out: str | None, suffix: str) -> list[Path]:
    """Where each input's result goes.

    No ``-o``: beside the input with ``suffix`` (stdin → stdout). ``-o -``: stdout (one input only).
    ``-o DIR`` (an existing folder, a path ending in ``/``, or any path when there are several inputs):
    ``DIR/<name relative to its argument><suffix>``, never outside ``DIR``. Otherwise ``-o`` is the one
    output file.
    """
    if out is None:
        return [STDIO if i.is_stdin else i.path.with_suffix(suffix) for i in inputs]
    from wetok.fileio import STDOUT_ALIASES

    if out == "-" or os.path.normpath(out) in STDOUT_ALIASES:
        if len(inputs) > 1:
            raise UsageProblem("-o - (stdout) takes a single input")
        return [STDIO]
    path = Path(out)
    if not (path.is_dir() or out.endswith(("/", os.sep)) or len(inputs) > 1):
        return [path]
    if path.exists() and not path.is_dir():
        raise UsageProblem(f"-o {out}: with several inputs -o must be a folder, and this is a file")
    for i in inputs:
        if i.rel.is_absolute() or ".." in i.rel.parts:
            raise UsageProblem(f"{i.display}: its name {i.rel} would put the output outside -o {out}")
        _refuse_linked_folders(path, i.rel.parent, out)
    return [path / i.rel.with_suffix(suffix) for i in inputs]


def _refuse_linked_folders(root: Path, rel: Path, out: str) -> None:
    """Outputs go into real folders below ``-o DIR``: a symbolic link planted there as a folder (``DIR/sub``
    → ``/etc``) would carry them anywhere. ``DIR`` itself may be a link: the user named it."""
    folder = root
    for part in rel.parts:
        folder = folder / part
        if folder.is_symlink():
            raise UsageProblem(
                f"-o {out}: {folder} is a symbolic link; outputs are written only into real folders "
                "below -o (remove the link, or give its target as -o)"
            )


def check_stdio(inputs: Sequence[Input], outputs: Sequence[Path], force: bool) -> None:
    """Refuse binary data to or from a terminal, as gzip does (``--force`` writes it anyway)."""
    if any(i.is_stdin for i in inputs) and isatty(sys.stdin):
        raise UsageProblem("refusing to read binary data from a terminal; pipe a file into '-'")
    if STDIO in outputs and isatty(sys.stdout) and not force:
        raise UsageProblem("refusing to write binary data to a terminal; redirect stdout (or --force)")


def check_writable(
    path: Path, force: bool, source: Path | None = None, reads: Iterable[str | Path] = ()
) -> None:
    """Refuse an output that must not be written (:func:`wetok.fileio.check_output`): existing without
    ``force``, or one of the files the run reads (``source``, ``reads``). stdout is fine."""
    if path != STDIO:
        from wetok.fileio import check_output, file_id

        ids = {i for i in map(file_id, reads) if i is not None}
        check_output(path, force, source, read_ids=ids)


class Claims:
    """The outputs of one run: each checked before it is written, and never claimed twice.

    ``inputs``: every file the run reads, none of which may become an output."""

    def __init__(self, inputs: Iterable[Input] = (), reads: Iterable[str | Path] = ()) -> None:
        from wetok.fileio import file_id

        paths = [i.path for i in inputs if not i.is_stdin] + [Path(p) for p in reads]
        self.read_ids = {i for i in map(file_id, paths) if i is not None}
        self.written: set[Path] = set()

    def claim(self, paths: Sequence[Path], force: bool, reads: Iterable[str | Path] = ()) -> None:
        """Check that ``paths`` (the outputs of one input) may be written, then reserve them: distinct,
        not written earlier in this run, not a file the run reads, not existing unless ``force``."""
        from wetok.fileio import check_output, file_id

        ids = self.read_ids | {i for i in map(file_id, reads) if i is not None}
        seen: set[Path] = set()
        for path in paths:
            if path == STDIO:
                continue
            key = path.resolve()
            if key in seen:
                raise InputError(f"{path} would be written twice for this input (the image and its page?)")
            if key in self.written:
                raise InputError(f"{path} was already written by another input of this run")
            check_output(path, force, read_ids=ids)
            seen.add(key)
        self.written |= seen


def write_output(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to stdout (``-``) or to ``path`` (:func:`wetok.fileio.write_output`: atomically, or
    into a device, FIFO or ``/dev/fd/N``). Without ``force`` a file is created, never replaced: if another
    run created it since it was checked, this one fails."""
    from wetok.fileio import write_output as write

    if path == STDIO:
        path = Path("/dev/stdout")
    try:
        write(path, data, exclusive=not force)
    except OSError as e:  # name the file the user asked for, not the temporary one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def print_line(text: str) -> None:
    """One line of results on stdout (JSON, a table row); an error when stdout is closed or fails."""
    from wetok.fileio import write_stdout_text

    write_stdout_text(text)


def show(path: Path) -> str:
    return "<stdout>" if path == STDIO else str(path)


__all__ = [
    "Claims",
    "check_stdio",
    "check_writable",
    "output_paths",
    "print_line",
    "show",
    "write_output",
]
