"""Files: the image suffixes wetok reads, finding image files, the one way wetok replaces a file, and what
an output may be.

Atomic writes: the data goes to a temporary file in the target's folder, is flushed to disk, gets the
usual permissions (``0666 & ~umask``: tools like safetensors create their files ``0600``), and is renamed
over the target. A reader, or a crash at any moment, sees the old file or the new one, never half a file.

Outputs named by a user (:func:`check_output`, :func:`write_output`): character devices, FIFOs and
``/dev/stdout``-style paths are written into, never replaced; ``force`` only ever replaces a regular file
(through a symbolic link, its target: the link stays); a symbolic link to nothing counts as existing and is
never followed; the input itself (the same path, a symbolic or hard link) is never an output.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from wetok.errors import OutputError

STDOUT_ALIASES = ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")

# Image files wetok looks for in folders (anything Pillow opens can still be given by name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pnm")


def find_images(paths: Iterable[str | Path], suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Files as given; folders searched recursively for files with ``suffixes`` (case-insensitive), sorted
    per folder. Paths that do not exist are kept, so that they fail, by name, where they are opened."""
    wanted = tuple(s.lower() for s in suffixes)
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in wanted and p.is_file())
        else:
            found.append(path)
    return found


def cache_dir() -> Path:
    """wetok's folder in the user cache: ``$XDG_CACHE_HOME/wetok`` (default ``~/.cache/wetok``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wetok"


def umask() -> int:
    """The process umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block succeeds, deleted
    when it raises. For writers that want a file name (``safetensors.save_file``, ``torch.save``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (``str`` is written as UTF-8) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


# -- outputs a user names ---------------------------------------------------------------------------------
def descriptor_of(path: str | Path) -> int | None:
    """The file descriptor a ``/dev/stdout``-style path names (``/dev/std*``, ``/dev/fd/N``,
    ``/proc/self/fd/N``), else ``None``: such a path is written into, never replaced."""
    text = os.path.normpath(str(path))
    named = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
    if text in named:
        return named[text]
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if text.startswith(prefix) and text[len(prefix) :].isdigit():
            return int(text[len(prefix) :])
    return None


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """``a`` and ``b`` are one file (the same path, a symbolic or a hard link)."""
    sa, sb = _stat(Path(a)), _stat(Path(b))
    return sa is not None and sb is not None and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _written_into(st: os.stat_result | None) -> bool:
    return st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode))


def check_output(path: str | Path, force: bool, source: str | Path | None = None) -> None:
    """Raise :class:`OutputError` unless ``path`` may be written: an existing file needs ``force``; with
    it, only a regular file is replaced; the input ``source`` itself (or a link to it) never is."""
    path = Path(path)
    if descriptor_of(path) is not None:
        return
    st = _stat(path)
    if st is None:
        if path.is_symlink():
            if not force:
                raise OutputError(f"{path} already exists (a symbolic link); use --force or another -o")
            raise OutputError(
                f"{path} is a symbolic link to nothing; refusing to create its target "
                f"{os.readlink(path)} (remove the link first)"
            )
        return
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path} is a folder")
    if _written_into(st):
        return
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path} is not a regular file, a FIFO or a character device; refusing to write it")
    if source is not None and same_file(source, path):
        raise OutputError(f"{path} is the input file itself; refusing to overwrite it, even with --force")
    if not force:
        raise OutputError(f"{path} already exists; use --force to overwrite it, or -o to write elsewhere")


def write_output(path: str | Path, data: bytes) -> None:
    """Write ``data`` to an output checked by :func:`check_output`: into ``/dev/stdout``-style paths,
    devices and FIFOs; atomically to anything else (through a symbolic link: to its target)."""
    path = Path(path)
    fd = descriptor_of(path)
    if fd in (1, 2):
        stream = getattr(sys.stdout if fd == 1 else sys.stderr, "buffer", None)
        if stream is None or stream.closed:
            raise OutputError(f"{'stdout' if fd == 1 else 'stderr'} is closed; write to a file with -o")
        stream.write(data)
        stream.flush()
    elif fd is not None:
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(data)
    elif _written_into(_stat(path)):
        with open(path, "wb") as f:  # O_TRUNC means nothing to a device or a FIFO
            f.write(data)
    else:
        write_atomic(Path(os.path.realpath(path)) if path.is_symlink() else path, data)
