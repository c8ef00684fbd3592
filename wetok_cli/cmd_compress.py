"""``wetok compress``: images → ``.wtk`` files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from wetok.fileio import IMAGE_SUFFIXES
from wetok.format import MAX_SEED
from wetok_cli.common import (
    REALISM_TYPE,
    WTK_SUFFIX,
    Reporter,
    UsageProblem,
    WetokCommand,
    device_option,
    long_reporting_options,
    resolve_device,
)
from wetok_cli.inputs import Input, read_image_input
from wetok_cli.outputs import show, write_output
from wetok_cli.per_file import MODEL_HELP, for_each_file, force_option, load_codec, out_option


@click.command("compress", cls=WetokCommand)
@click.argument("images", nargs=-1, required=True)
@out_option
@click.option("-m", "--model", help=MODEL_HELP + "  [default: the bundled default model]")
@click.option(
    "--mode",
    type=click.Choice(["context", "static", "raw"]),
    help="context: bits coded with the model's causal context model; static: range-coded with its "
    "per-group prior; raw: fixed d' bits per group symbol. A mode that would not be smaller "
    "falls back (context, static, raw).  [default: context if the model has one, else static]",
)
@click.option(
    "--realism",
    type=REALISM_TYPE,
    help="Decoder setting written into the file: 0 the faithful decoder (highest PSNR), 1 the generative "
    "one (photo-like texture), in hundredths between.  [default: the model's measured choice]",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    help="Noise seed written into the file for the generative decoder (a model without one writes no "
    "seed).  [default: 0]",
)
@click.option(
    "--seed-search",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    metavar="K",
    help="Try K seeds from --seed on and keep the one whose decode is closest to the image (MS-SSIM); K "
    "decodes more. Needs a realism above 0 (the model's default or --realism).",
)
@click.option(
    "-q",
    "--quality",
    type=click.FloatRange(0, 100),
    metavar="Q",
    help="Rate knob, 0..100: the image is coded at scale 2^((Q-50)/25) of its size (0: 0.25, 25: 0.5, 50: "
    "its own size, 75: 2, 100: 4) and resized back when decoded; each 25 steps about 4x the bytes.",
)
@click.option(
    "--bpp",
    type=click.FloatRange(0, min_open=True),
    metavar="T",
    help="The largest file not above T bits per pixel (of the image), found by search over the scale.",
)
@click.option(
    "--size",
    "size_target",
    type=click.IntRange(1),
    metavar="BYTES",
    help="The largest file not above BYTES bytes, found by search over the scale.",
)
@device_option
@force_option
@long_reporting_options
def compress_cmd(
    images: tuple[str, ...],
    out: str | None,
    model: str | None,
    mode: str | None,
    realism: float | None,
    seed: int | None,
    seed_search: int,
    quality: float | None,
    bpp: float | None,
    size_target: int | None,
    device: str,
    force: bool,
    quiet: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    """Compress images to .wtk token files.

    IMAGES are files, folders (searched recursively), quoted globs, or - for stdin. Each output goes
    beside its input with the suffix .wtk (photo.png -> photo.wtk); stdin goes to stdout. A summary line
    per file goes to stderr.

    Without -q, --bpp or --size every image is coded at its own size (one rate, about 0.05 bpp with the
    default model); with one, it may be coded resized, and decompress always returns its original size.
    """
    knobs = {"quality": quality, "bpp": bpp, "size": size_target}
    _check_one_knob(knobs)
    reporter = Reporter(quiet=quiet, verbose=verbose, as_json=as_json)
    codecs: list[Any] = []
    settings: list[Any] = []

    def prepare() -> None:
        codec = load_codec(model, resolve_device(device), reporter)
        codecs.append(codec)
        settings.append(_decoder_setting(codec, realism, seed, seed_search, reporter))

    def work(item: Input, dst: Path | None) -> None:
        _compress_one(
            codecs[0],
            item,
            dst,
            mode=mode,
            setting=settings[0],
            seed_search=seed_search,
            knobs=knobs,
            force=force,
            reporter=reporter,
        )

    for_each_file(
        images,
        IMAGE_SUFFIXES,
        work,
        reporter,
        "compressing",
        out=out,
        out_suffix=WTK_SUFFIX,
        force=force,
        prepare=prepare,
    )
    reporter.finish()


_KNOB_OPTIONS = {"quality": "-q/--quality", "bpp": "--bpp", "size": "--size"}


def _check_one_knob(knobs: dict[str, Any]) -> None:
    given = [_KNOB_OPTIONS[k] for k, v in knobs.items() if v is not None]
    if len(given) > 1:
        raise UsageProblem(f"{' and '.join(given)}: give one rate knob, not {len(given)}")


def _decoder_setting(
    codec: Any, realism: float | None, seed: int | None, seed_search: int, reporter: Reporter
) -> Any:
    """The decoder setting every file gets (:func:`wetok.setting.for_file`), its problems as usage errors;
    a note when a seed search near the largest seed tries fewer seeds than asked."""
    from wetok.errors import DecoderSettingError, RealismError
    from wetok.setting import for_file, seed_candidates

    try:
        setting = for_file(codec.model, realism, seed, seed_search)
    except RealismError as e:
        raise UsageProblem(f"--realism {realism:g}: {e}") from None
    except DecoderSettingError as e:
        raise UsageProblem(f"--seed-search {seed_search}: {e}") from None
    tried = seed_candidates(setting, seed_search) if seed_search > 1 else range(1)  # a search has a setting
    if len(tried) < seed_search:
        reporter.warn(
            "--seed-search",
            f"tries {len(tried)} seed{'s' * (len(tried) > 1)}, not {seed_search}: {tried.start}..{MAX_SEED} "
            f"({MAX_SEED} is the largest seed a file holds)",
        )
    return setting


def _compress_one(
    codec: Any,
    item: Input,
    dst: Path,
    *,
    mode: str | None,
    setting: Any,
    seed_search: int,
    knobs: dict[str, Any],
    force: bool,
    reporter: Reporter,
) -> None:
    from wetok.info import read_info

    rgb, input_bytes = read_image_input(item)
    start = time.perf_counter()
    choice = codec.encode_choice(rgb, mode, setting, seed_search, **knobs)
    write_output(dst, choice.data, force=force)
    info = read_info(choice.file)  # described from the file as written, not parsed back
    reporter.info(f"{item.display}: encoded in {time.perf_counter() - start:.2f} s ({choice.tries} encodes)")
    for note in choice.notes:
        reporter.warn(item.display, note)
    decoder = f", realism {info.realism:.2f}, seed {info.seed}" if info.realism is not None else ""
    coded = f", coded at {info.coded_size[1]}x{info.coded_size[0]} (scale {info.scale:.2f})"
    reporter.done(
        f"{item.display} -> {show(dst)}: {info.width}x{info.height}, {info.bytes} bytes, "
        f"{info.bpp:.4f} bpp, {info.bits_per_token:.2f} bits/token ({info.mode}{decoder}"
        f"{coded if info.resampled else ''}){'' if choice.reached else ' [above the target]'}",
        {
            "input": item.display,
            "output": show(dst),
            "width": info.width,
            "height": info.height,
            "bytes": info.bytes,
            "input_bytes": input_bytes,
            "bpp": info.bpp,
            "bits_per_token": info.bits_per_token,
            "mode": info.mode,
            "realism": info.realism,
            "seed": info.seed,
            "coded_width": info.coded_size[1],
            "coded_height": info.coded_size[0],
            "scale": info.scale,
            "target_reached": choice.reached,
            "model": codec.name,
            "model_id": codec.model_id_hex,
        },
    )
