"""``wetok detokenize``: decode items of a token dataset into one grid image, to look at what was stored."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import click

from wetok_cli.common import SEED_TYPE, UsageProblem, WetokCommand, device_option, resolve_device

MAX_ITEMS = 256


def _items(_ctx: click.Context, _param: click.Parameter, value: str) -> slice:
    """``A:B`` (Python slice, ends optional), or a single index ``A``."""
    try:
        if ":" not in value:
            i = int(value)
            return slice(i, i + 1 if i != -1 else None)
        parts = [int(p) if p.strip() else None for p in value.split(":")]
    except ValueError:
        parts = []
    if not 2 <= len(parts) <= 3:
        raise click.BadParameter(f"{value!r}: give START:STOP (e.g. 0:16) or one index")
    if len(parts) == 3 and parts[2] == 0:
        raise click.BadParameter(f"{value!r}: the step cannot be 0")
    return slice(*parts)


@click.command("detokenize", cls=WetokCommand)
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--items",
    default="0:16",
    show_default=True,
    callback=_items,
    help="Items to decode, START:STOP[:STEP] (Python slice) or one index.",
)
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The grid image (PNG unless the suffix says otherwise).",
)
@click.option("--columns", type=click.IntRange(1), default=None, help="Grid columns.  [default: ~square]")
@click.option("-m", "--model", help="Model name or directory.  [default: the one index.json names]")
@click.option(
    "--seed", type=SEED_TYPE, default=0, show_default=True, help="Noise seed of a generative decoder."
)
@click.option("-f", "--force", is_flag=True, help="Overwrite the output image.")
@device_option
def detokenize_cmd(
    dataset: Path,
    items: slice,
    out: Path,
    columns: int | None,
    model: str | None,
    seed: int,
    force: bool,
    device: str,
) -> None:
    """Decode items of a `wetok tokenize` DATASET folder and save them as one grid image."""
    from wetok.data import TokenDataset
    from wetok.limits import check_pixels
    from wetok.setting import DecoderSetting
    from wetok_cli.outputs import check_writable, write_output

    ds = TokenDataset(dataset)
    check_writable(out, force, reads=ds.files())  # the grid never replaces the dataset's own files
    picks = range(len(ds))[items]
    if not picks:
        raise click.ClickException(f"--items selects nothing from {len(ds)} items")
    if len(picks) > MAX_ITEMS:
        raise click.ClickException(f"--items selects {len(picks)} items; at most {MAX_ITEMS} in one grid")
    columns = min(columns or math.ceil(math.sqrt(len(picks))), len(picks))  # no empty columns
    sizes = [ds.image_size(i) for i in picks]
    width, height = grid_size([(w, h) for h, w in sizes], columns)
    try:
        check_pixels(width, height, "grid image")  # before any item is decoded or the sheet allocated
    except ValueError as e:
        raise UsageProblem(f"--columns/--items: {e}") from None
    codec = _codec(ds, model, resolve_device(device))
    painted = DecoderSetting(seed=seed)
    images = [codec.decode_tokens(ds[i][None], size, painted) for i, size in zip(picks, sizes, strict=True)]
    grid = image_grid(images, columns)
    buffer = io.BytesIO()
    grid.save(buffer, format=_format(out))
    write_output(out, buffer.getvalue(), force=force)
    click.echo(
        f"{len(images)} items ({picks.start}..{picks[-1]}) -> {out} ({grid.width}x{grid.height})", err=True
    )


def _codec(ds: Any, model: str | None, device: Any) -> Any:
    from wetok.zoo import ModelNotFoundError, find_codec_by_model_id, load_codec

    wanted = ds.index["model"]["model_id"]
    try:
        codec = (
            load_codec(model, device=device)
            if model
            else find_codec_by_model_id(bytes.fromhex(wanted), device=device)
        )
    except ModelNotFoundError as e:
        raise click.ClickException(f"{e}; pass --model NAME|DIR") from None
    except (OSError, ValueError) as e:  # a broken model folder: exit 2, as every command
        raise UsageProblem(f"--model: {e}") from None
    if codec.model_id_hex != wanted:
        raise click.ClickException(
            f"--model {model} is {codec.model_id_hex}; these tokens were made by "
            f"{ds.index['model']['name']} ({wanted})"
        )
    _check_shape(ds, codec.model.config)
    return codec


def _check_shape(ds: Any, config: Any) -> None:
    """The index's token shape is the model's: an index edited (or written by another wetok) to say other
    groups, bits or downsampling would otherwise reach the decoder as tensors of the wrong shape."""
    index, path = ds.index, ds.root / "index.json"
    fields = {"groups": config.groups, "group_bits": config.group_bits, "downsample": config.downsample}
    wrong = [f"{k} {index[k]} (the model: {v})" for k, v in fields.items() if index[k] != v]
    if wrong:
        raise click.ClickException(f"{path} does not fit the model it names: {', '.join(wrong)}")


GAP = 2


def grid_size(sizes: list[tuple[int, int]], columns: int, gap: int = GAP) -> tuple[int, int]:
    """``(width, height)`` of the sheet :func:`image_grid` makes from images of ``sizes`` ``(w, h)``."""
    cw, ch = max(w for w, _ in sizes), max(h for _, h in sizes)
    rows = math.ceil(len(sizes) / columns)
    return columns * (cw + gap) - gap, rows * (ch + gap) - gap


def image_grid(images: list, columns: int, gap: int = GAP) -> object:
    """PIL images pasted row by row on a white sheet, each in a cell as large as the largest."""
    from PIL import Image

    cw, ch = max(im.width for im in images), max(im.height for im in images)
    sheet = Image.new("RGB", grid_size([(im.width, im.height) for im in images], columns, gap), "white")
    for k, im in enumerate(images):
        sheet.paste(im, ((k % columns) * (cw + gap), (k // columns) * (ch + gap)))
    return sheet


def _format(out: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(out.suffix.lower(), "PNG")
