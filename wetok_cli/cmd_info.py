"""``wetok info`` (what a ``.wtk`` file holds) and ``wetok models`` (what models wetok can use)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from wetok_cli.common import (
    WTK_SUFFIX,
    Input,
    Reporter,
    check_stdio,
    expand_inputs,
    read_input,
    report_problems,
    run_each,
)

_INFO_COLUMNS = ("file", "model", "size", "f/g/d'", "mode", "bytes", "bpp", "bits/token", "vs ideal")
_MODEL_COLUMNS = (
    "name",
    "source",
    "f",
    "g x d'",
    "bits/token",
    "coded b/t",
    "bpp",
    "generative",
    "id",
    "path",
)


@click.command("info")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file instead of the table.")
@click.option("-q", "--quiet", is_flag=True, help="Errors only (check files through the exit code).")
def info_cmd(files: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Show what .wtk files hold: model, size, bpp, bits per token.

    Prints the header fields of each of FILES (or - for stdin) as a table, or as JSON lines. Every file is
    checked completely (checksum, header, payload length); "vs ideal" compares its size with the Shannon
    code length of its tokens under the model's prior, when that model is installed.
    """
    inputs, problems = expand_inputs(files, (WTK_SUFFIX,))
    check_stdio(inputs, [], force=False)
    reporter = Reporter(quiet=quiet, as_json=as_json)
    report_problems(problems, reporter)
    rows: list[dict[str, Any]] = []
    models = _Models()

    def work(item: Input) -> None:
        record = _file_record(item, models)
        if as_json:
            click.echo(json.dumps(record))
        rows.append(record)

    run_each(inputs, [i.display for i in inputs], work, reporter, "reading")
    if rows and not as_json and not quiet:
        _print_table(_INFO_COLUMNS, [_info_cells(r) for r in rows])
    reporter.finish()


def _file_record(item: Input, models: _Models) -> dict[str, Any]:
    from wetok.codec import read_info

    data = read_input(item)
    header = read_info(data)  # validates everything before a model is looked for
    name, codec = models.find(header.model_id)
    info = read_info(data, codec) if codec is not None else header
    return {
        "file": item.display,
        "version": info.version,
        "model": name,
        "model_id": info.model_id_hex,
        "mode": info.mode,
        "width": info.width,
        "height": info.height,
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
        f"{r['f']}/{r['g']}/{r['d_prime']}",
        r["mode"],
        str(r["bytes"]),
        f"{r['bpp']:.4f}",
        f"{r['bits_per_token']:.2f}",
        ideal,
    ]


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model instead of the table.")
@click.option("--paths", is_flag=True, help="Only print the folders searched for models, in order.")
def models_cmd(as_json: bool, paths: bool) -> None:
    """List the models wetok can use, with their rate.

    Searched in order: each folder of $WETOK_MODELS (separated by ':'), the user folder
    (~/.local/share/wetok/models), then the models bundled with wetok; the first model of a name wins.
    "bits/token" is g x d' (raw); "coded b/t" is what the model's prior expects after range coding.
    """
    from wetok.zoo import list_models, model_dirs

    if paths:
        for folder in model_dirs():
            click.echo(folder)
        return
    records = [_model_record(m) for m in list_models()]
    if as_json:
        for r in records:
            click.echo(json.dumps(r))
    elif records:
        _print_table(_MODEL_COLUMNS, [_model_cells(r) for r in records])
    else:
        dirs = ", ".join(str(d) for d in model_dirs())
        click.echo(f"no models installed (searched {dirs}); see `wetok import` and `wetok train`", err=True)


def _model_record(m: Any) -> dict[str, Any]:
    from wetok.prior import PRIOR_NAME, Prior, PriorError

    c = m.config
    try:
        has_prior = (m.path / PRIOR_NAME).is_file()
        coded = Prior.load(m.path).bits_per_token() if has_prior else float(c.bits_per_token)
    except PriorError:
        coded = None
    try:
        model_id = m.model_id_hex
    except (OSError, ValueError):
        model_id = None
    source = "bundled" if m.bundled else "user" if _in_user_dir(m.path) else "WETOK_MODELS"
    return {
        "name": m.name,
        "source": source,
        "path": str(m.path),
        "f": c.downsample,
        "g": c.groups,
        "d_prime": c.group_bits,
        "bits_per_token": c.bits_per_token,
        "coded_bits_per_token": coded,
        "bpp": c.bpp,
        "generative": c.generative,
        "model_id": model_id,
    }


def _in_user_dir(path: Path) -> bool:
    from wetok.zoo import user_dir

    return path.parent.resolve() == user_dir().resolve()


def _model_cells(r: dict[str, Any]) -> list[str]:
    coded = "?" if r["coded_bits_per_token"] is None else f"{r['coded_bits_per_token']:.2f}"
    return [
        r["name"],
        r["source"],
        str(r["f"]),
        f"{r['g']} x {r['d_prime']}",
        str(r["bits_per_token"]),
        coded,
        f"{r['bpp']:.4f}",
        "yes" if r["generative"] else "no",
        r["model_id"] or "(unreadable)",
        r["path"],
    ]


def _print_table(header: tuple[str, ...], rows: list[list[str]]) -> None:
    """A plain left-aligned table on stdout (greppable; no colours, no box drawing)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for row in (list(header), *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
