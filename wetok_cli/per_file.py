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

from wetok_cli.common import Reporter, UsageProblem, report_problems, run_each, user_message
from wetok_cli.inputs import STDIO, Input, expand_inputs
from wetok_cli.outputs import Claims, check_stdio, output_paths

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
    reads: Callable[[Input], Iterable[Path]] | None = None,
    also_writes: Callable[[Path], Iterable[Path]] | None = None,
) -> None:
    """Run ``work(input, output)`` for each input named by ``args``.

    With ``out_suffix`` every input gets an output path (:func:`~wetok_cli.outputs.output_paths`), checked
    before ``work`` runs (:class:`~wetok_cli.outputs.Claims`): not written twice in one run, not overwritten
    without ``force``, never one of the inputs, nor a file ``reads(input)`` names (a reference image); the
    paths ``also_writes(output)`` (a page beside it) are checked with it. Without ``out_suffix`` the
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
        claims = Claims(inputs)

        def one(job: tuple[Input, Path | None]) -> None:
            item, dst = job
            if dst is not None:
                extra = list(also_writes(dst)) if also_writes and dst != STDIO else []
                claims.claim([dst, *extra], force, reads(item) if reads else ())
            work(item, dst)

        run_each(list(zip(inputs, outputs, strict=True)), [i.display for i in inputs], one, reporter, label)


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
