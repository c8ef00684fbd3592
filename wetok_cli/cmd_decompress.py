"""``wetok decompress``: ``.wtk`` files → images, with the model each file names."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from wetok.fileio import IMAGE_SUFFIXES
from wetok_cli.common import (
    REALISM_TYPE,
    SEED_TYPE,
    WTK_SUFFIX,
    InputError,
    Reporter,
    UsageProblem,
    WetokCommand,
    device_option,
    finite_number,
    reporting_options,
    resolve_device,
)
from wetok_cli.inputs import Input, read_wtk_input
from wetok_cli.outputs import show, write_output
from wetok_cli.per_file import MODEL_HELP, for_each_file, force_option, load_codec, out_option

FORMATS = {
    "png": ("PNG", {}),
    "jpg": ("JPEG", {"quality": 95, "subsampling": 0}),
    "webp": ("WEBP", {"quality": 95}),
}
PAGE_SUFFIX = ".html"
_SUFFIX_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}


@click.command("decompress", cls=WetokCommand)
@click.argument("files", nargs=-1, required=True)
@out_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    help="Image format: png (lossless), jpg or webp (quality 95).  [default: from -o, else png]",
)
@click.option(
    "--seed",
    type=SEED_TYPE,
    help="Noise seed of a generative decoder (same seed, same pixels).  [default: the file's, else 0]",
)
@click.option(
    "--realism",
    type=REALISM_TYPE,
    help="0 the faithful decoder, 1 the generative one, between them a blend.  [default: the file's]",
)
@click.option(
    "--noise-scale",
    type=click.FloatRange(min=0),
    callback=finite_number,
    default=1.0,
    show_default=True,
    help="Noise strength of a generative decoder; 0 gives its mean-like output.",
)
@click.option(
    "-m",
    "--model",
    help=MODEL_HELP + " Found from each file's model id when not given; a folder "
    "of model directories is searched too.",
)
@click.option(
    "-r",
    "--reference",
    type=click.Path(exists=True, path_type=Path),
    help="Original image (or folder of originals, matched by name) to report PSNR against.",
)
@click.option(
    "--compare",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Original image: also write OUTPUT.html, a page comparing it with the decoded image and with "
    "JPEG / WebP / AVIF at the same file size (one .wtk file, decoded to a file).",
)
@device_option
@force_option
@reporting_options
def decompress_cmd(
    files: tuple[str, ...],
    out: str | None,
    fmt: str | None,
    seed: int | None,
    realism: float | None,
    noise_scale: float,
    model: str | None,
    reference: Path | None,
    compare: Path | None,
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
    fmt = _check_format(fmt, out) or _format_from(out)
    if compare and (len(files) != 1 or "-" in (files[0], out)):
        raise UsageProblem("--compare takes one .wtk file decoded to a file (not stdin or stdout)")
    if compare and out and Path(out).suffix.lower() == PAGE_SUFFIX:
        raise UsageProblem(
            f"-o {out}: --compare writes the page beside the image as OUTPUT{PAGE_SUFFIX}; "
            "-o names the image (e.g. -o out.png)"
        )
    reporter = Reporter(quiet=quiet, verbose=verbose, as_json=as_json)
    models: list[_ModelCache] = []

    def prepare() -> None:
        models.append(_ModelCache(model, resolve_device(device), reporter))

    def work(item: Input, dst: Path | None) -> None:
        file, codec, decoded = _decompress_one(
            models[0],
            item,
            dst,
            fmt=fmt,
            seed=seed,
            realism=realism,
            noise_scale=noise_scale,
            reference=reference,
            force=force,
            reporter=reporter,
        )
        if compare:
            others = _other_realisms(codec, file, decoded.setting)
            _write_compare(compare, item, dst, decoded.image, len(file.data), force, reporter, others)

    def reads(item: Input) -> list[Path]:
        """Files read besides the input: none of them may be an output, even with --force."""
        return [p for p in (compare, reference and _reference_for(reference, item)) if p]

    for_each_file(
        files,
        (WTK_SUFFIX,),
        work,
        reporter,
        "decompressing",
        out=out,
        out_suffix="." + fmt,
        force=force,
        prepare=prepare,
        reads=reads,
        also_writes=(lambda dst: [dst.with_suffix(PAGE_SUFFIX)]) if compare else None,
    )
    reporter.finish()


def _decompress_one(
    models: _ModelCache,
    item: Input,
    dst: Path,
    *,
    fmt: str,
    seed: int | None,
    realism: float | None,
    noise_scale: float,
    reference: Path | None,
    force: bool,
    reporter: Reporter,
) -> tuple[Any, Any, Any]:
    """Decode one file (read and parsed once) and write its image; gives the parsed file, the codec and
    what :meth:`wetok.codec.Codec.decompress` gave (the image and the decoder setting that painted it)."""
    from wetok.errors import ModelMismatchError
    from wetok.info import WtkFile, read_info
    from wetok.zoo import name_mismatch

    file = WtkFile.parse(read_wtk_input(item))
    info = read_info(file)
    codec = models.get(info.model_id, realism if realism is not None else info.realism)
    start = time.perf_counter()
    try:
        decoded = codec.decompress(file, seed=seed, noise_scale=noise_scale, realism=realism)
    except ModelMismatchError as e:  # --model named another model than the file's: say which it needs
        raise name_mismatch(e) from None
    reporter.info(f"{item.display}: decoded in {time.perf_counter() - start:.2f} s")
    quality = _psnr(decoded.image, _reference_for(reference, item)) if reference else None
    buffer = io.BytesIO()
    pil_format, options = FORMATS[fmt]
    decoded.image.save(buffer, format=pil_format, **options)
    write_output(dst, buffer.getvalue(), force=force)
    line = (
        f"{item.display} -> {show(dst)}: {info.width}x{info.height}, {info.bytes} bytes, {info.bpp:.4f} bpp"
    )
    record = {
        "input": item.display,
        "output": show(dst),
        "width": info.width,
        "height": info.height,
        "bytes": info.bytes,
        "bpp": info.bpp,
        "bits_per_token": info.bits_per_token,
        "model": codec.name,
        "model_id": codec.model_id_hex,
        "seed": decoded.setting.seed,
        "realism": decoded.setting.realism,
        "noise_scale": decoded.setting.noise_scale,
    }
    if quality is not None:
        line += f", PSNR {quality:.2f} dB"
        record["psnr"] = quality
    reporter.done(line, record)
    return file, codec, decoded


def _other_realisms(codec: Any, file: Any, used: Any) -> list[tuple[str, Any]]:
    """For the --compare page: the file decoded at the two ends of realism its decode did not use (a model
    with a generative decoder only), with the seed and noise scale it used, so the page shows what the
    encoder chose against both."""
    import numpy as np

    if not codec.model.has_generative_decoder:
        return []
    return [
        (
            f"wetok realism {r:.0f}",
            np.asarray(codec.decompress(file, seed=used.seed, noise_scale=used.noise_scale, realism=r).image),
        )
        for r in (0.0, 1.0)
        if r != used.realism
    ]


def _write_compare(
    original: Path,
    item: Input,
    dst: Path,
    image: Any,
    size: int,
    force: bool,
    reporter: Reporter,
    others: Sequence[tuple[str, Any]] = (),
) -> None:
    """The one-image comparison page of ``--compare``, beside the decoded image (its path was checked with
    the image's, before either was written)."""
    import numpy as np

    from wetok.eval.html import compare_page, write_page
    from wetok.image import open_image

    page_path = dst.with_suffix(PAGE_SUFFIX)
    try:
        page = compare_page(item.display, open_image(original), np.asarray(image), size, others=others)
    except ValueError as e:
        raise InputError(f"--compare {original}: {e}") from None
    write_page(page, page_path, embed=True, exclusive=not force)
    reporter.done(f"comparison page -> {page_path}", {"input": item.display, "compare": str(page_path)})


class _ModelCache:
    """Codecs by file model id, loaded once each: ``--model`` if given, else found in the registry."""

    def __init__(self, model: str | None, device: str, reporter: Reporter) -> None:
        self.model, self.device, self.reporter = model, device, reporter
        self.fixed: Any = None
        self.extra: list[Path] = []
        self.codecs: dict[tuple[bytes, bool], Any] = {}
        if model is not None:
            from wetok.modeldir import is_model_dir

            path = Path(model).expanduser()
            if path.is_dir() and not is_model_dir(path):
                self.extra = [path]  # a folder of model directories: searched by model_id
            else:
                self.fixed = load_codec(model, device, reporter)

    def get(self, model_id: bytes, realism: float | None = None) -> Any:
        """The codec of ``model_id``; for ``realism`` above 0 one with the generative add-on, if any has."""
        if self.fixed is not None:
            return self.fixed  # its decompress() refuses files of another model, naming both
        key = (model_id, bool(realism))
        if key not in self.codecs:
            from wetok.zoo import ModelNotFoundError, find_codec_by_model_id

            start = time.perf_counter()
            try:
                codec = find_codec_by_model_id(model_id, self.extra, self.device, realism=realism)
            except ModelNotFoundError as e:
                raise InputError(f"{e}; pass --model NAME|DIR") from None
            self.reporter.info(
                f"loaded model {codec.name} ({codec.model_id_hex}) on {self.device} "
                f"in {time.perf_counter() - start:.1f} s"
            )
            self.codecs[key] = codec
        return self.codecs[key]


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


def _check_format(fmt: str | None, out: str | None) -> str | None:
    """``--format``, refused when ``-o FILE``'s suffix names another image format (JPEG bytes must not go
    into a ``.png``); an unknown suffix takes the format given."""
    asked = _format_from(out) if out and Path(out).suffix.lower() in _SUFFIX_FORMATS else None
    if fmt and asked and asked != fmt and not (out.endswith(("/", os.sep)) or Path(out).is_dir()):
        raise UsageProblem(f"--format {fmt} does not match -o {out} ({asked}); drop one, or make them agree")
    return fmt


def _format_from(out: str | None) -> str:
    """The image format an output file's suffix asks for; png for folders, stdout and unknown suffixes."""
    if out is None or out.endswith(("/", os.sep)) or Path(out).is_dir():
        return "png"
    return _SUFFIX_FORMATS.get(Path(out).suffix.lower(), "png")
