"""``wetok tokenize``: a dataset of images → token shards + ``index.json``, for training generators."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from wetok.fileio import IMAGE_SUFFIXES
from wetok_cli.common import UsageProblem, WetokCommand, device_option, launcher_world, resolve_device
from wetok_cli.inputs import expand_inputs

LIST_SUFFIX = ".txt"


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise click.BadParameter(f"{value!r}: give a side in pixels (e.g. 256), or 'none'")
    return size


@click.command("tokenize", cls=WetokCommand)
@click.argument("images", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: shard-*.safetensors, index.json, run.json.",
)
@click.option("-m", "--model", help="Model name or directory.  [default: the bundled default model]")
@click.option(
    "--size",
    default="256",
    show_default=True,
    callback=_size,
    help="Side S of the square model input, or 'none' to keep each image's own size.",
)
@click.option(
    "--crop",
    type=click.Choice(["center", "none"]),
    default="center",
    show_default=True,
    help="center: shorter side to S, centre S×S cut; none: whole image scaled to S×S.",
)
@click.option(
    "--shard-size",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Images per shard (also the unit of work redone after an interruption).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="Images per forward pass.  [default: 16 on a GPU, 1 on the CPU, where one image at a time was "
    "faster: benchmarks/README.md]",
)
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=min(4, os.cpu_count() or 1),
    show_default=True,
    help="DataLoader processes reading and resizing images (0: in the main process).",
)
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of listing it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary.")
@device_option
def tokenize_cmd(
    images: tuple[str, ...],
    out: Path,
    model: str | None,
    size: int | None,
    crop: str,
    shard_size: int,
    batch_size: int | None,
    workers: int,
    strict: bool,
    quiet: bool,
    device: str,
) -> None:
    """Turn IMAGES into token shards for training image generators.

    IMAGES are files, folders (searched recursively), quoted globs, or text files (*.txt) listing one image
    path per line (relative paths are relative to the list's folder). Each shard holds tokens [N, h, w, g]
    in the narrowest integer type; index.json lists the model, the preprocessing, every item's source and
    size, and the images that could not be read. Stopped runs continue where they stopped when run again
    with the same command; under torchrun every rank writes its share of the shards.

    \b
      wetok tokenize photos/ -o tokens/ --size 256
      torchrun --nproc-per-node 8 -m wetok_cli.main tokenize list.txt -o tokens/
    """
    from wetok.tokenize_images import Preprocess, TokenizeOptions, tokenize_images
    from wetok_cli.common import Reporter
    from wetok_cli.per_file import load_codec

    sources = _sources(images)
    rank, world, device = _distributed(device)
    reporter = Reporter(quiet=quiet or rank != 0)
    codec = load_codec(model, device, reporter)
    batch_size = batch_size or (16 if device.type == "cuda" else 1)
    options = TokenizeOptions(Preprocess(size, crop), shard_size, batch_size, workers, strict)
    start = time.perf_counter()
    with _progress(quiet or rank != 0) as progress:
        index = tokenize_images(
            codec, sources, out, options, progress, warn=lambda m: reporter.warn(str(out), m)
        )
    if index is not None and not quiet:
        _summary(index, out, time.perf_counter() - start, reporter)


def _sources(args: tuple[str, ...]) -> list[str]:
    """Image paths from the arguments, in order; text files are lists of paths."""
    sources: list[str] = []
    rest = []
    for arg in args:
        if arg.lower().endswith(LIST_SUFFIX) and Path(arg).is_file():
            sources += _read_list(Path(arg))
        else:
            rest.append(arg)
    inputs, problems = expand_inputs(rest, IMAGE_SUFFIXES)
    if problems:
        raise UsageProblem("; ".join(f"{arg}: {message}" for arg, message in problems))
    if any(i.is_stdin for i in inputs):
        raise UsageProblem("wetok tokenize reads image files, not stdin")
    sources += [str(i.path) for i in inputs]
    if not sources:
        raise UsageProblem("no images to tokenize")
    return sources


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageProblem(f"cannot read the image list {path}: {e}") from None
    paths = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [p if os.path.isabs(p) else str(path.parent / p) for p in paths]


def _distributed(device: str) -> tuple[int, int, Any]:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; returns ``(rank, world, torch.device)``
    (``cuda`` is this rank's GPU, ``LOCAL_RANK``)."""
    world = launcher_world()
    resolved = resolve_device(device)
    if world <= 1:
        return 0, 1, resolved
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():  # ranks may finish hours apart on uneven data: a long barrier timeout
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(hours=24))
    return dist.get_rank(), dist.get_world_size(), resolved


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar with images/s on stderr when it is a terminal; ``update(advance, total)``."""
    if quiet or not sys.stderr.isatty():
        yield lambda advance, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    rate = TextColumn("{task.fields[rate]}")
    columns = (
        TextColumn("tokenizing"),
        BarColumn(),
        MofNCompleteColumn(),
        rate,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("tokenizing", total=None, rate="")
        start = time.perf_counter()

        def update(advance: int, total: int) -> None:
            bar.update(task, total=total, advance=advance)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(1e-9, time.perf_counter() - start):.1f} img/s")

        yield update


def _summary(index: dict[str, Any], out: Path, seconds: float, reporter: Any) -> None:
    n, skipped = index["num_items"], index["num_skipped"]
    grid = "x".join(map(str, index["token_grid"])) if index["token_grid"] else "own size"
    reporter.err(
        f"{n} images -> {out}: {len(index['shards'])} shards of {index['dtype']} tokens "
        f"[N, {grid}], {seconds:.1f} s ({n / max(seconds, 1e-9):.1f} images/s this run)"
    )
    if skipped:
        first = index["skipped"][0]
        reporter.err(
            f"Warning: {skipped} images could not be read and were skipped (listed in "
            f"{out / 'index.json'}), e.g. {first['source']}: {first['error']}"
        )
