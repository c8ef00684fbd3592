"""``wetok info``: what ``.wtk`` files hold (header fields, model, sizes, distance from the ideal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from wetok_cli.common import WTK_SUFFIX, Reporter, WetokCommand, print_table
from wetok_cli.inputs import Input, read_wtk_input
from wetok_cli.outputs import print_line
from wetok_cli.per_file import for_each_file

_INFO_COLUMNS = (
    "file",
    "model",
    "size",
    "coded (scale)",
    "f/g/d'",
    "mode",
    "realism/seed",
    "bytes",
    "bpp",
    "bits/token",
    "vs ideal",
)


@click.command("info", cls=WetokCommand)
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file instead of the table.")
@click.option("-q", "--quiet", is_flag=True, help="Errors only (check files through the exit code).")
def info_cmd(files: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Show what .wtk files hold: model, size, bpp, bits per token.

    Prints the header fields of each of FILES (or - for stdin) as a table, or as JSON lines. Every file is
    checked completely (checksum, header, payload length); "vs ideal" compares its size with the Shannon
    code length of its tokens under the model's prior, when that model is installed.
    """
    reporter = Reporter(quiet=quiet, as_json=as_json)
    rows: list[dict[str, Any]] = []
    models = _Models()

    def work(item: Input, _dst: Path | None) -> None:
        record = _file_record(item, models)
        if as_json:
            print_line(json.dumps(record))
        rows.append(record)

    for_each_file(files, (WTK_SUFFIX,), work, reporter, "reading")
    if rows and not as_json and not quiet:
        print_table(_INFO_COLUMNS, [_info_cells(r) for r in rows])
    reporter.finish()


def _file_record(item: Input, models: _Models) -> dict[str, Any]:
    from wetok.info import WtkFile, read_info

    file = WtkFile.parse(read_wtk_input(item))  # validates everything before a model is looked for
    name, codec = models.find(file.header.model_id)
    info = read_info(file, codec)
    return {
        "file": item.display,
        "version": info.version,
        "model": name,
        "model_id": info.model_id_hex,
        "mode": info.mode,
        "realism": info.realism,
        "seed": info.seed,
        "width": info.width,
        "height": info.height,
        "coded_width": info.coded_size[1],
        "coded_height": info.coded_size[0],
        "scale": info.scale,
        "f": info.downsample,
        "g": info.groups,
        "d_prime": info.group_bits,
        "tokens": info.num_tokens,
        "bytes": info.bytes,
        "payload_bytes": info.payload_bytes,
        "raw_payload_bytes": info.raw_payload_bytes,
        "bpp": info.bpp,
        "bits_per_token": info.bits_per_token,
        "ideal_bytes": info.ideal_bytes,
    }


class _Models:
    """Installed codecs by model id, looked up once per id (``None`` when not installed)."""

    def __init__(self) -> None:
        self.found: dict[bytes, tuple[str | None, Any]] = {}

    def find(self, model_id: bytes) -> tuple[str | None, Any]:
        if model_id not in self.found:
            from wetok.zoo import ModelNotFoundError, find_codec_by_model_id

            try:
                codec = find_codec_by_model_id(model_id)
                self.found[model_id] = (codec.name, codec)
            except ModelNotFoundError:
                self.found[model_id] = (None, None)
        return self.found[model_id]


def _info_cells(r: dict[str, Any]) -> list[str]:
    ideal = f"{r['bytes'] / r['ideal_bytes'] - 1:+.2%}" if r["ideal_bytes"] else "-"
    return [
        r["file"],
        r["model"] or f"{r['model_id']} (not installed)",
        f"{r['width']}x{r['height']}",
        f"{r['coded_width']}x{r['coded_height']} ({r['scale']:.2f})" if r["scale"] != 1 else "-",
        f"{r['f']}/{r['g']}/{r['d_prime']}",
        r["mode"],
        f"{r['realism']:.2f}/{r['seed']}" if r["realism"] is not None else "-",
        str(r["bytes"]),
        f"{r['bpp']:.4f}",
        f"{r['bits_per_token']:.2f}",
        ideal,
    ]
