"""The loop every per-file command shares (compress, decompress, info), written once, and its options.

:func:`for_each_file` expands the arguments (files, folders, globs, ``-``), plans the outputs, refuses
binary data to or from a terminal, reports arguments that name nothing, then calls ``work`` once per input:
a failing input is reported in one line and the others still run. The caller ends with
``reporter.finish()`` (exit status 1 if any input failed), after printing any table of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from wetok_cli.common import (
    STDIO,
    Input,
    InputError,
    Reporter,
    UsageProblem,
    check_stdio,
    check_writable,
    expand_inputs,
    output_paths,
    report_problems,
    run_each,
    user_message,
)

out_option = click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(),  # a str: "DIR/" must keep its "/"
    help="Output file, folder (for several inputs), or - for stdout.",
)
force_option = click.option(
    "-f", "--force", is_flag=True, help="Overwrite existing outputs; write binary data to a terminal."
)
MODEL_HELP = "Model name (see `wetok models`) or model directory."


def for_each_file(
    args: Sequence[str],
    suffixes: Iterable[str],
    work: Callable[[Input, Path | None], None],
    reporter: Reporter,
    label: str,
    *,
    out: str | None = None,
    out_suffix: str | None = None,
    force: bool = False,
    prepare: Callable[[], None] | None = None,
) -> None:
    """Run ``work(input, output)`` for each input named by ``args``.

    With ``out_suffix`` every input gets an output path (:func:`~wetok_cli.common.output_paths`), checked
    before ``work`` runs: not written twice in one run, not overwritten without ``force``. Without it the
    output is ``None``. ``prepare`` (loading a model) runs once, and only when there is an input.
    """
    inputs, problems = expand_inputs(args, suffixes)
    outputs: list[Path | None] = (
        list(output_paths(inputs, out, out_suffix)) if out_suffix else [None] * len(inputs)
    )
    if reporter.as_json and STDIO in outputs:
        raise UsageProblem("--json needs stdout, which carries the output data here; write to a file")
    check_stdio(inputs, [o for o in outputs if o is not None], force)
    report_problems(problems, reporter)
    if inputs:
        if prepare is not None:
            prepare()
        written: set[Path] = set()

        def one(job: tuple[Input, Path | None]) -> None:
            item, dst = job
            if dst is not None:
                _claim(dst, force, written, item)
            work(item, dst)

        run_each(list(zip(inputs, outputs, strict=True)), [i.display for i in inputs], one, reporter, label)


def _claim(dst: Path, force: bool, written: set[Path], source: Input) -> None:
    """Check ``dst`` may be written (not the input itself), and that no earlier input of this run wrote it."""
    if dst != STDIO and dst.resolve() in written:
        raise InputError(f"{dst} was already written by another input of this run")
    check_writable(dst, force, None if source.is_stdin else source.path)
    if dst != STDIO:
        written.add(dst.resolve())


def show(path: Path) -> str:
    return "<stdout>" if path == STDIO else str(path)


def load_codec(model: str | None, device: Any, reporter: Reporter) -> Any:
    """The codec named by ``--model`` (or the default); a missing or broken model is a usage error."""
    from wetok.zoo import DEFAULT_MODEL, ModelNotFoundError, list_models
    from wetok.zoo import load_codec as load

    start = time.perf_counter()
    if model is None and not any(m.name == DEFAULT_MODEL for m in list_models()):
        raise UsageProblem("no default model installed; pass --model NAME|DIR (see `wetok models`)")
    try:
        codec = load(model, device=device)
    except ModelNotFoundError as e:
        raise UsageProblem(f"--model: {e}") from None
    except (OSError, ValueError) as e:  # a broken model folder: unreadable or malformed files
        raise UsageProblem(f"--model: cannot load {model or DEFAULT_MODEL}: {user_message(e) or e}") from None
    reporter.info(
        f"loaded model {codec.name} ({codec.model_id_hex}) on {device} in {time.perf_counter() - start:.1f} s"
    )
    return codec
