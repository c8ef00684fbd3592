"""Plumbing shared by the ``wetok`` commands: errors, progress, summaries and shared options.

What a command may read is in :mod:`wetok_cli.inputs`, what it may write in :mod:`wetok_cli.outputs`.

The conventions are gzip's and cwebp's. Data goes to stdout only when asked for with ``-``; summaries,
warnings, progress and errors go to stderr; ``--json`` prints one JSON object per input on stdout instead of
the summaries. One failing input does not stop the others. Exit codes: 0 success, 1 some input failed,
2 usage error. Library errors become one line; ``wetok --debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import click

from wetok.errors import OutputError, WetokError  # these import no torch: cheap for --help
from wetok.fileio import write_stdout_text

WTK_SUFFIX = ".wtk"


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


def echo_or_fail(text: str) -> None:
    """``text`` on stdout for an eager option (``--help``, ``--version``), which runs while the command line
    is parsed, before any command's error handling: a closed or failing stdout is one line, exit 1, not a
    traceback (``> /dev/full``) or a silent exit 0 (``>&-``)."""
    try:
        write_stdout_text(text)
    except OutputError as e:
        raise click.ClickException(str(e)) from None


def _show_help(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        echo_or_fail(ctx.get_help())
        ctx.exit()


class CheckedHelp(click.Command):
    """``--help`` printed with :func:`echo_or_fail` (Click's prints nothing to a closed stdout, exit 0)."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.callback = _show_help
        return option


class WetokCommand(CheckedHelp):
    """A ``wetok`` subcommand: ``@click.command(name, cls=WetokCommand)``."""


class WetokGroup(CheckedHelp, click.Group):
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


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


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
            write_stdout_text(json.dumps(record, default=str))
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
            with suppress(OutputError):  # stdout itself may be what failed; the line above said so
                write_stdout_text(json.dumps({"input": name, "error": message or internal_message(exc)}))

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
        if self.quiet or total < 2 or not isatty(sys.stderr):
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
def reporting_options(
    f: Callable[..., Any], quiet: tuple[str, ...] = ("-q", "--quiet")
) -> Callable[..., Any]:
    """``-q/--quiet``, ``-v/--verbose`` and ``--json`` for commands that handle many inputs."""
    f = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="One JSON object per input on stdout (instead of summaries on stderr).",
    )(f)
    f = click.option("-v", "--verbose", is_flag=True, help="Also say what is loaded, and timings.")(f)
    return click.option(*quiet, "quiet", is_flag=True, help="No summaries, no progress bar; errors only.")(f)


def long_reporting_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`reporting_options` with ``--quiet`` only: for ``compress``, where ``-q`` is the quality (as in
    ``cwebp -q``)."""
    return reporting_options(f, quiet=("--quiet",))


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


def launcher_world() -> int:
    """``WORLD_SIZE`` as ``torchrun`` sets it (1 when unset). A value that is not a positive number, or a
    world of several processes without the rest of what ``torchrun`` sets (``RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``), is a usage error: torch would fail deep inside, or wait for peers forever."""
    text = os.environ.get("WORLD_SIZE", "").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise UsageProblem(f"WORLD_SIZE={text!r} is not a number of processes (set by torchrun; or unset it)")
    world = int(text)
    if world > 1:
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()]
        rank = os.environ.get("RANK", "").strip()
        if missing:
            raise UsageProblem(
                f"WORLD_SIZE={world} without {', '.join(missing)}: start the processes with torchrun, "
                "or unset WORLD_SIZE"
            )
        if not rank.isdigit() or int(rank) >= world:
            raise UsageProblem(f"RANK={rank!r} is not a process number below WORLD_SIZE={world}")
    return world


# torch.Generator.manual_seed's range: a larger --seed is a usage error, not an internal one.
SEED_TYPE = click.IntRange(-(2**63), 2**64 - 1)


class RealismRange(click.FloatRange):
    """``--realism``: a number from 0 to 1. ``FloatRange`` alone lets ``nan`` through (every comparison
    with NaN is false), which then fails deep inside as an internal error."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number from 0 to 1", param, ctx)
        return number


REALISM_TYPE = RealismRange(0, 1)


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
        write_stdout_text("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
