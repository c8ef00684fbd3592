"""Plumbing shared by the ``wetok`` commands: inputs, outputs, errors, progress and summaries.

The conventions are gzip's and cwebp's. Data goes to stdout only when asked for with ``-``; summaries,
warnings, progress and errors go to stderr; ``--json`` prints one JSON object per input on stdout instead of
the summaries. One failing input does not stop the others. Exit codes: 0 success, 1 some input failed,
2 usage error. Library errors become one line; ``wetok --debug`` shows the traceback instead.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import signal
import struct
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import click

from wetok.errors import WetokError  # these two import no torch: cheap for --help

STDIO = Path("-")
WTK_SUFFIX = ".wtk"
_GLOB_CHARS = frozenset("*?[")


# -- global settings ---------------------------------------------------------------------------------
@dataclass
class Settings:
    """Options of the ``wetok`` group that every command sees (``ctx.obj``)."""

    debug: bool = False


def settings() -> Settings:
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Settings) if ctx else None
    return found or Settings(debug=os.environ.get("WETOK_DEBUG", "") not in ("", "0"))


# -- errors ------------------------------------------------------------------------------------------
class InputError(click.ClickException):
    """One input cannot be processed (the message names the problem; the reporter adds the input)."""


class UsageProblem(click.ClickException):
    """A command line that cannot work as given: one line, exit status 2 (Click's ``UsageError`` would
    also print the usage text, which is noise when the syntax itself was fine)."""

    exit_code = 2


def user_message(exc: BaseException, name: str = "") -> str | None:
    """A one-line message for an error the user can fix, or ``None`` for what looks like a bug.

    ``name`` is the input being reported, left out of the message where it would repeat it."""
    if isinstance(exc, click.ClickException):
        return exc.format_message()
    if type(exc).__name__ == "UnidentifiedImageError":  # PIL's; an OSError without errno
        return "not an image, or a format Pillow cannot read"
    if type(exc).__name__ == "DecompressionBombError":
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = str(exc.filename) if exc.filename is not None else name
        return exc.strerror if where == name else f"{exc.strerror}: {where}"
    if isinstance(exc, WetokError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def internal_message(exc: BaseException) -> str:
    return f"internal error: {type(exc).__name__}: {exc} (run `wetok --debug ...` for the traceback)"


def escape(text: str) -> str:
    """``text`` safe to print as one terminal line: control characters (newline, ESC, ...) and undecodable
    bytes of file names are shown as Python escapes (``\\n``, ``\\x1b``), so a file name cannot break a
    line or send commands to the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """A warning outside a per-input report: one line on stderr, no source line."""
    click.echo(f"Warning: {escape(str(message))}", err=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same cleanup runs (temporary ``.part`` files removed)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while a command runs (main thread only; training installs its
    own stop-after-this-step handler inside, and restores this one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class WetokGroup(click.Group):
    """A Click group that turns stray library exceptions into one line (traceback with ``--debug``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings(), _sigterm_as_interrupt():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except KeyboardInterrupt as e:
            terminated = isinstance(e, Terminated)
            click.echo(f"wetok: {'terminated' if terminated else 'interrupted'}", err=True)
            ctx.exit(143 if terminated else 130)
        except Exception as e:
            if settings().debug:
                raise
            raise click.ClickException(user_message(e) or internal_message(e)) from None


# -- inputs ------------------------------------------------------------------------------------------
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
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True))
            root = _glob_root(path)
            inputs += [Input(m, m.relative_to(root)) for m in matches if m.is_file()]
            if not matches:
                problems.append((arg, "no files match this pattern"))
        else:
            inputs.append(Input(path, Path(path.name)))
    return inputs, problems


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


# -- outputs -----------------------------------------------------------------------------------------
def output_paths(inputs: Sequence[Input], out: str | None, suffix: str) -> list[Path]:
    """Where each input's result goes.

    No ``-o``: beside the input with ``suffix`` (stdin → stdout). ``-o -``: stdout (one input only).
    ``-o DIR`` (an existing folder, a path ending in ``/``, or any path when there are several inputs):
    ``DIR/<name relative to its argument><suffix>``. Otherwise ``-o`` is the one output file.
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
    return [path / i.rel.with_suffix(suffix) for i in inputs]


def check_stdio(inputs: Sequence[Input], outputs: Sequence[Path], force: bool) -> None:
    """Refuse binary data to or from a terminal, as gzip does (``--force`` writes it anyway)."""
    if any(i.is_stdin for i in inputs) and _isatty(sys.stdin):
        raise UsageProblem("refusing to read binary data from a terminal; pipe a file into '-'")
    if STDIO in outputs and _isatty(sys.stdout) and not force:
        raise UsageProblem("refusing to write binary data to a terminal; redirect stdout (or --force)")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def check_writable(path: Path, force: bool, source: Path | None = None) -> None:
    """Refuse an output that must not be written (:func:`wetok.fileio.check_output`); stdout is fine."""
    if path != STDIO:
        from wetok.fileio import check_output

        check_output(path, force, source)


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` to stdout (``-``) or to ``path`` (:func:`wetok.fileio.write_output`: atomically, or
    into a device, FIFO or ``/dev/fd/N``)."""
    from wetok.fileio import write_output as write

    if path == STDIO:
        path = Path("/dev/stdout")
    try:
        write(path, data)
    except OSError as e:  # name the file the user asked for, not the temporary one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


# -- reporting ---------------------------------------------------------------------------------------
@dataclass
class Reporter:
    """Prints per-input summaries (stderr) or JSON lines (stdout), errors and an optional progress bar."""

    quiet: bool = False
    verbose: bool = False
    as_json: bool = False
    failures: int = 0
    _console: Any = None

    def done(self, line: str, record: dict[str, Any]) -> None:
        if self.as_json:
            click.echo(json.dumps(record, default=str))
        elif not self.quiet:
            self.err(line)

    def fail(self, name: str, exc: BaseException) -> None:
        """Report one failed input; re-raise when ``--debug`` asks for the traceback."""
        message = user_message(exc, name)
        if settings().debug:
            raise exc
        self.failures += 1
        self.err(f"Error: {name}: {message or internal_message(exc)}")
        if self.as_json:
            click.echo(json.dumps({"input": name, "error": message or internal_message(exc)}))

    def warn(self, name: str, message: str) -> None:
        if not self.quiet:
            self.err(f"Warning: {name}: {message}")

    def info(self, message: str) -> None:
        if self.verbose:
            self.err(message)

    def err(self, line: str) -> None:
        line = escape(line)
        if self._console is not None:
            self._console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            click.echo(line, err=True)

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Callable[[], None]]:
        """A rich progress bar on stderr, only when stderr is a terminal and there are several inputs."""
        if self.quiet or total < 2 or not _isatty(sys.stderr):
            yield lambda: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(label, total=total)
            self._console = console
            try:
                yield lambda: bar.advance(task)
            finally:
                self._console = None

    def finish(self) -> None:
        """Exit with status 1 if any input failed."""
        if self.failures:
            raise click.exceptions.Exit(1)


def run_each(
    items: Sequence[Any], names: Sequence[str], work: Callable[[Any], None], reporter: Reporter, label: str
) -> None:
    """Call ``work(item)`` on each item, reporting failures and going on; warnings become report lines."""
    with reporter.progress(len(items), label) as advance:
        for item, name in zip(items, names, strict=True):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    work(item)
                for w in caught:  # wetok's own (e.g. alpha dropped); others only with -v
                    if w.category.__module__.startswith("wetok") or reporter.verbose:
                        reporter.warn(name, str(w.message))
            except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as Click does
                raise
            except Exception as e:
                reporter.fail(name, e)
            advance()


def report_problems(problems: Iterable[tuple[str, str]], reporter: Reporter) -> None:
    for name, message in problems:
        reporter.fail(name, InputError(message))


# -- shared options ----------------------------------------------------------------------------------
def reporting_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``-q/--quiet``, ``-v/--verbose`` and ``--json`` for commands that handle many inputs."""
    f = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="One JSON object per input on stdout (instead of summaries on stderr).",
    )(f)
    f = click.option("-v", "--verbose", is_flag=True, help="Also say what is loaded, and timings.")(f)
    return click.option("-q", "--quiet", is_flag=True, help="No summaries, no progress bar; errors only.")(f)


def device_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where the model runs; auto = cuda when available.",
    )(f)


def resolve_device(device: str) -> Any:
    """``--device`` as a ``torch.device`` (:func:`wetok.device.resolve_device`); a usage error when absent."""
    from wetok.device import resolve_device as resolve

    try:
        return resolve(device)
    except WetokError as e:
        raise UsageProblem(f"--device {device}: {e}") from None


# torch.Generator.manual_seed's range: a larger --seed is a usage error, not an internal one.
SEED_TYPE = click.IntRange(-(2**63), 2**64 - 1)


def finite_number(_ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A Click callback refusing ``inf`` and ``nan`` (which ``FloatRange`` lets through)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", param=param)
    return value


def human_bytes(n: int) -> str:
    return f"{n} B" if n < 10_000 else f"{n / 1024:.1f} KiB" if n < 10_000_000 else f"{n / 2**20:.1f} MiB"


def print_table(header: tuple[str, ...], rows: list[list[str]]) -> None:
    """A plain left-aligned table on stdout (greppable; no colours, no box drawing)."""
    rows = [[escape(cell) for cell in row] for row in rows]  # file names may hold newlines or escapes
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for row in (list(header), *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
