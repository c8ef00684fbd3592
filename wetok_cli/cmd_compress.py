"""``wetok compress`` (images → ``.wtk``) and ``wetok decompress`` (``.wtk`` → images)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import click

from wetok.fileio import IMAGE_SUFFIXES
from wetok_cli.common import (
    STDIO,
    WTK_SUFFIX,
    Input,
    InputError,
    Reporter,
    UsageProblem,
    check_stdio,
    check_writable,
    device_option,
    expand_inputs,
    output_paths,
    read_input,
    report_problems,
    reporting_options,
    resolve_device,
    run_each,
    user_message,
    write_output,
)

FORMATS = {
    "png": ("PNG", {}),
    "jpg": ("JPEG", {"quality": 95, "subsampling": 0}),
    "webp": ("WEBP", {"quality": 95}),
}
_SUFFIX_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}

_out_option = click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(),  # a str: "DIR/" must keep its "/"
    help="Output file, folder (for several inputs), or - for stdout.",
)
_force_option = click.option(
    "-f", "--force", is_flag=True, help="Overwrite existing outputs; write binary data to a terminal."
)
_model_help = "Model name (see `wetok models`) or model directory."


@click.command("compress")
@click.argument("images", nargs=-1, required=True)
@_out_option
@click.option("-m", "--model", help=_model_help + "  [default: the bundled default model]")
@click.option(
    "--mode",
    type=click.Choice(["static", "raw"]),
    default="static",
    show_default=True,
    help="static: range-coded with the model's prior; raw: fixed d' bits per group symbol.",
)
@device_option
@_force_option
@reporting_options
def compress_cmd(
    images: tuple[str, ...],
    out: str | None,
    model: str | None,
    mode: str,
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
    """
    inputs, problems = expand_inputs(images, IMAGE_SUFFIXES)
    outputs = output_paths(inputs, out, WTK_SUFFIX)
    _check_json(as_json, outputs)
    check_stdio(inputs, outputs, force)
    reporter = Reporter(quiet=quiet, verbose=verbose, as_json=as_json)
    report_problems(problems, reporter)
    if inputs:
        codec = _load_codec(model, resolve_device(device), reporter)
        written: set[Path] = set()

        def work(job: tuple[Input, Path]) -> None:
            _compress_one(codec, *job, mode=mode, force=force, written=written, reporter=reporter)

        run_each(
            list(zip(inputs, outputs, strict=True)),
            [i.display for i in inputs],
            work,
            reporter,
            "compressing",
        )
    reporter.finish()


def _compress_one(
    codec: Any, item: Input, dst: Path, *, mode: str, force: bool, written: set[Path], reporter: Reporter
) -> None:
    from wetok.codec import read_info
    from wetok.image import open_image

    _claim(dst, force, written)
    raw = read_input(item)
    try:
        rgb = open_image(io.BytesIO(raw))
    except ValueError as e:  # Pillow's "cannot identify" is an OSError; this is a mode it cannot convert
        raise InputError(str(e)) from None
    start = time.perf_counter()
    data = codec.compress(rgb, mode=mode)
    write_output(dst, data)
    info = read_info(data)
    reporter.info(f"{item.display}: encoded in {time.perf_counter() - start:.2f} s")
    reporter.done(
        f"{item.display} -> {_show(dst)}: {info.width}x{info.height}, {info.bytes} bytes, "
        f"{info.bpp:.4f} bpp, {info.bits_per_token:.2f} bits/token ({info.mode})",
        {
            "input": item.display,
            "output": _show(dst),
            "width": info.width,
            "height": info.height,
            "bytes": info.bytes,
            "input_bytes": len(raw),
            "bpp": info.bpp,
            "bits_per_token": info.bits_per_token,
            "mode": info.mode,
            "model": codec.name,
            "model_id": codec.model_id_hex,
        },
    )


@click.command("decompress")
@click.argument("files", nargs=-1, required=True)
@_out_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    help="Image format: png (lossless), jpg or webp (quality 95).  [default: from -o, else png]",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Noise seed of a generative decoder (same seed, same pixels).",
)
@click.option(
    "--noise-scale",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Noise strength of a generative decoder; 0 gives its mean-like output.",
)
@click.option(
    "-m",
    "--model",
    help=_model_help + " Found from each file's model id when not given; a folder "
    "of model directories is searched too.",
)
@click.option(
    "-r",
    "--reference",
    type=click.Path(exists=True, path_type=Path),
    help="Original image (or folder of originals, matched by name) to report PSNR against.",
)
@device_option
@_force_option
@reporting_options
def decompress_cmd(
    files: tuple[str, ...],
    out: str | None,
    fmt: str | None,
    seed: int,
    noise_scale: float,
    model: str | None,
    reference: Path | None,
    device: str,
    force: bool,
    quiet: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    """Decompress .wtk files to images.

    FILES are .wtk files, folders (searched recursively), quoted globs, or - for stdin. Each output goes
    beside its input as a PNG (photo.wtk -> photo.png); stdin goes to stdout. The model is the installed
    one whose id the file carries, unless --model says otherwise.
    """
    inputs, problems = expand_inputs(files, (WTK_SUFFIX,))
    fmt = fmt or _format_from(out)
    outputs = output_paths(inputs, out, "." + fmt)
    _check_json(as_json, outputs)
    check_stdio(inputs, outputs, force)
    reporter = Reporter(quiet=quiet, verbose=verbose, as_json=as_json)
    report_problems(problems, reporter)
    if inputs:
        models = _ModelCache(model, resolve_device(device), reporter)
        written: set[Path] = set()

        def work(job: tuple[Input, Path]) -> None:
            _decompress_one(
                models,
                *job,
                fmt=fmt,
                seed=seed,
                noise_scale=noise_scale,
                reference=reference,
                force=force,
                written=written,
                reporter=reporter,
            )

        run_each(
            list(zip(inputs, outputs, strict=True)),
            [i.display for i in inputs],
            work,
            reporter,
            "decompressing",
        )
    reporter.finish()


def _decompress_one(
    models: _ModelCache,
    item: Input,
    dst: Path,
    *,
    fmt: str,
    seed: int,
    noise_scale: float,
    reference: Path | None,
    force: bool,
    written: set[Path],
    reporter: Reporter,
) -> None:
    from wetok.codec import read_info
    from wetok.errors import ModelMismatchError
    from wetok.zoo import name_mismatch

    _claim(dst, force, written)
    data = read_input(item)
    info = read_info(data)
    codec = models.get(info.model_id)
    start = time.perf_counter()
    try:
        image = codec.decompress(data, seed=seed, noise_scale=noise_scale)
    except ModelMismatchError as e:  # --model named another model than the file's: say which it needs
        raise name_mismatch(e) from None
    reporter.info(f"{item.display}: decoded in {time.perf_counter() - start:.2f} s")
    quality = _psnr(image, _reference_for(reference, item)) if reference else None
    buffer = io.BytesIO()
    pil_format, options = FORMATS[fmt]
    image.save(buffer, format=pil_format, **options)
    write_output(dst, buffer.getvalue())
    line = (
        f"{item.display} -> {_show(dst)}: {info.width}x{info.height}, {info.bytes} bytes, {info.bpp:.4f} bpp"
    )
    record = {
        "input": item.display,
        "output": _show(dst),
        "width": info.width,
        "height": info.height,
        "bytes": info.bytes,
        "bpp": info.bpp,
        "bits_per_token": info.bits_per_token,
        "model": codec.name,
        "model_id": codec.model_id_hex,
        "seed": seed,
        "noise_scale": noise_scale,
    }
    if quality is not None:
        line += f", PSNR {quality:.2f} dB"
        record["psnr"] = quality
    reporter.done(line, record)


class _ModelCache:
    """Codecs by file model id, loaded once each: ``--model`` if given, else found in the registry."""

    def __init__(self, model: str | None, device: str, reporter: Reporter) -> None:
        self.model, self.device, self.reporter = model, device, reporter
        self.fixed: Any = None
        self.extra: list[Path] = []
        self.codecs: dict[bytes, Any] = {}
        if model is not None:
            from wetok.modeldir import is_model_dir

            path = Path(model).expanduser()
            if path.is_dir() and not is_model_dir(path):
                self.extra = [path]  # a folder of model directories: searched by model_id
            else:
                self.fixed = _load_codec(model, device, reporter)

    def get(self, model_id: bytes) -> Any:
        if self.fixed is not None:
            return self.fixed  # its decompress() refuses files of another model, naming both
        if model_id not in self.codecs:
            from wetok.zoo import ModelNotFoundError, find_codec_by_model_id

            start = time.perf_counter()
            try:
                codec = find_codec_by_model_id(model_id, extra=self.extra, device=self.device)
            except ModelNotFoundError as e:
                raise InputError(f"{e}; pass --model NAME|DIR") from None
            self.reporter.info(
                f"loaded model {codec.name} ({codec.model_id_hex}) on {self.device} "
                f"in {time.perf_counter() - start:.1f} s"
            )
            self.codecs[model_id] = codec
        return self.codecs[model_id]


def _load_codec(model: str | None, device: str, reporter: Reporter) -> Any:
    """The codec named by ``--model`` (or the default); a missing model is a usage error."""
    from wetok.zoo import DEFAULT_MODEL, ModelNotFoundError, list_models, load_codec

    start = time.perf_counter()
    if model is None and not any(m.name == DEFAULT_MODEL for m in list_models()):
        raise UsageProblem("no default model installed; pass --model NAME|DIR (see `wetok models`)")
    try:
        codec = load_codec(model, device=device)
    except ModelNotFoundError as e:
        raise UsageProblem(f"--model: {e}") from None
    except (OSError, ValueError) as e:  # a broken model folder: unreadable or malformed files
        raise UsageProblem(f"--model: cannot load {model or DEFAULT_MODEL}: {user_message(e) or e}") from None
    reporter.info(
        f"loaded model {codec.name} ({codec.model_id_hex}) on {device} in {time.perf_counter() - start:.1f} s"
    )
    return codec


def _claim(dst: Path, force: bool, written: set[Path]) -> None:
    """Check ``dst`` may be written, and that no earlier input of this run wrote it."""
    if dst != STDIO and dst.resolve() in written:
        raise InputError(f"{dst} was already written by another input of this run")
    check_writable(dst, force)
    if dst != STDIO:
        written.add(dst.resolve())


def _reference_for(reference: Path, item: Input) -> Path:
    if not reference.is_dir():
        return reference
    stem = item.rel.with_suffix("")
    for suffix in IMAGE_SUFFIXES:
        for candidate in (reference / stem.with_suffix(suffix), reference / (stem.name + suffix)):
            if candidate.is_file():
                return candidate
    raise InputError(f"no reference image named {stem.name}.* in {reference}")


def _psnr(image: Any, reference: Path) -> float:
    import numpy as np

    from wetok.image import open_image
    from wetok.metrics import psnr

    ref, out = open_image(reference), np.asarray(image.convert("RGB"))
    if ref.shape != out.shape:
        raise InputError(
            f"reference {reference} is {ref.shape[1]}x{ref.shape[0]}, the image {out.shape[1]}x{out.shape[0]}"
        )
    return psnr(out, ref)


def _format_from(out: str | None) -> str:
    """The image format an output file's suffix asks for; png for folders, stdout and unknown suffixes."""
    if out is None or out.endswith(("/", os.sep)) or Path(out).is_dir():
        return "png"
    return _SUFFIX_FORMATS.get(Path(out).suffix.lower(), "png")


def _check_json(as_json: bool, outputs: list[Path]) -> None:
    if as_json and STDIO in outputs:
        raise UsageProblem("--json needs stdout, which carries the output data here; write to a file")


def _show(path: Path) -> str:
    return "<stdout>" if path == STDIO else str(path)
