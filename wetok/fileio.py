"""Files: the image suffixes wetok reads, finding image files, the one way wetok replaces a file, and what
an output may be.

Atomic writes: the data goes to a temporary file in the target's folder, is flushed to disk, gets the
usual permissions (``0666 & ~umask``: tools like safetensors create their files ``0600``), and is renamed
over the target. A reader, or a crash at any moment, sees the old file or the new one, never half a file.
An *exclusive* write (what the command line does without ``--force``) instead hard-links the finished
temporary file to the final name, which fails when that name exists: of two runs writing one new name at
once exactly one wins, and the other is told, with no check-then-rename window between them.

Files read whole (:func:`read_small_file`, :func:`read_json_file`: JSON side files, shards) must be regular
files, opened without blocking (a FIFO planted as ``model_id.json`` must not hang every command) and no
larger than the caller's limit, checked before a byte is read; JSON nested too deeply for the parser is a
one-line error, not a ``RecursionError``.

Outputs named by a user (:func:`check_output`, :func:`write_output`): character devices, FIFOs and
``/dev/stdout``-style paths are written into, never replaced; ``force`` only ever replaces a regular file
(through a symbolic link, its target: the link stays); a symbolic link to nothing counts as existing and is
never followed; the input itself (the same path, a symbolic or hard link) is never an output.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import tempfile
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from wetok.errors import OutputError, SmallFileError

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
def atomic_path(path: str | Path, *, exclusive: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block succeeds, deleted
    when it raises. For writers that want a file name (``safetensors.save_file``, ``torch.save``).

    ``exclusive``: never replace ``path``; it is created from the temporary file by a hard link, and an
    :class:`OutputError` is raised when it exists by then (another run created it meanwhile)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        if exclusive:
            _create_from(tmp, path)
            with suppress(OSError):
                tmp.unlink()  # the final name is a second link to the file: drop the temporary one
        else:
            os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


_TEMPORARY_EXTRA = len("..XXXXXXXX.part")  # what mkstemp adds around the prefix's name


def _temporary_prefix(path: Path) -> str:
    """``.NAME.``, with ``NAME`` cut (in bytes, as the file system counts) so that ``.NAME.XXXXXXXX.part``
    fits the folder's longest name: an output name of 241 to 255 bytes is valid, its temporary one not."""
    try:
        longest = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    name = os.fsencode(path.name)[: max(1, longest - _TEMPORARY_EXTRA)]
    return f".{os.fsdecode(name)}."


# Where a file system has no hard links (FAT, some network and FUSE mounts), the final name is reserved
# with O_EXCL and then replaced: still one winner, at the price of an empty file visible for a moment (and
# removed again when the run is interrupted before the rename).
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def _create_from(tmp: Path, path: Path) -> None:
    """Give ``tmp``'s file the new name ``path``; :class:`OutputError` when ``path`` exists."""
    taken = OutputError(
        f"{path} already exists (created meanwhile, by another run?); use --force to overwrite it"
    )
    try:
        os.link(tmp, path, follow_symlinks=False)
        return
    except FileExistsError:
        raise taken from None
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise taken from None
    try:
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C before the rename: give the name back, or the next run finds it taken
        with suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                os.unlink(path)  # still the empty file this run reserved, not one renamed over it
        raise
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes | str, *, exclusive: bool = False) -> None:
    """Replace ``path`` with ``data`` (``str`` is written as UTF-8) atomically; ``exclusive``: create it,
    never replace it (:func:`atomic_path`)."""
    with atomic_path(path, exclusive=exclusive) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


# -- files read whole -------------------------------------------------------------------------------------
def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    kinds += ((stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for reading when it is a regular file (through links), else :class:`SmallFileError`.

    Opened with ``O_NONBLOCK``: opening a FIFO otherwise waits for a writer, forever. The file is checked
    with ``fstat`` on the open descriptor, so it cannot be swapped between the check and the read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SmallFileError(f"{path} is {_kind(mode)}, not a regular file; refusing to read it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_small_file(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular`), refused before reading when it is
    larger than ``limit`` bytes (or grows past it while read). ``OSError`` when it cannot be opened."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise SmallFileError(f"{path} is {size:,} bytes, over the {limit:,} such a file may have")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SmallFileError(f"{path} grew past {limit:,} bytes while it was read")
    return data


MAX_JSON_BYTES = 16 << 20  # a JSON side file (config, model id, run settings) larger than this is refused


def read_json_file(path: str | Path, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in ``path``, a regular UTF-8 file of at most ``limit`` bytes (:func:`read_small_file`).

    Raises ``OSError`` (unreadable), ``ValueError`` (not UTF-8, not JSON) and :class:`SmallFileError` (not a
    regular file, too large, nested too deeply for the parser)."""
    data = read_small_file(path, limit)
    try:
        return json.loads(data.decode())
    except RecursionError:
        raise SmallFileError(f"{path}: JSON nested too deeply to be a wetok file") from None


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


def file_id(path: str | Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the file ``path`` names (through links), or ``None`` when there is none."""
    st = _stat(Path(path))
    return None if st is None else (st.st_dev, st.st_ino)


def check_output(
    path: str | Path,
    force: bool,
    source: str | Path | None = None,
    *,
    read_ids: Collection[tuple[int, int]] = (),
) -> None:
    """Raise :class:`OutputError` unless ``path`` may be written: an existing file needs ``force``; with
    it, only a regular file is replaced; the input ``source`` itself (or a link to it), and any file whose
    :func:`file_id` is in ``read_ids`` (every file the run reads), never is."""
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
    if (source is not None and same_file(source, path)) or (st.st_dev, st.st_ino) in read_ids:
        raise OutputError(
            f"{path} is the input file itself (or another file this run reads); refusing to overwrite it, "
            "even with --force"
        )
    if not force:
        raise OutputError(f"{path} already exists; use --force to overwrite it, or -o to write elsewhere")


def write_output(path: str | Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to an output checked by :func:`check_output`: into ``/dev/stdout``-style paths,
    devices and FIFOs; atomically to anything else (through a symbolic link: to its target).
    ``exclusive`` (no ``--force``): a regular file is created, never replaced (:func:`atomic_path`)."""
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
        write_atomic(Path(os.path.realpath(path)) if path.is_symlink() else path, data, exclusive=exclusive)


def write_stdout_text(text: str) -> None:
    """``text`` and a newline on stdout, flushed at once. A closed stdout (``>&-``) or a write that fails
    (``> /dev/full``) raises :class:`OutputError`: a command whose output went nowhere must not exit 0.
    A reader that went away (``| head``) is a ``BrokenPipeError``, left to the caller."""
    stream = sys.stdout
    if stream is None or getattr(stream, "closed", False):
        raise OutputError("stdout is closed; nothing can be printed (redirect it to a file or /dev/null)")
    try:
        stream.write(text + "\n")
        stream.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot write to stdout: {getattr(e, 'strerror', None) or e}") from None
