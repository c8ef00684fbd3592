"""Files: the image suffixes wetok reads, finding image files, and the one way wetok replaces a file.

Atomic writes: the data goes to a temporary file in the target's folder, is flushed to disk, gets the
usual permissions (``0666 & ~umask``: tools like safetensors create their files ``0600``), and is renamed
over the target. A reader, or a crash at any moment, sees the old file or the new one, never half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

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
