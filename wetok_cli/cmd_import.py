"""``wetok import``: an official WeTok / Open-MAGVIT2 checkpoint → a wetok model directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from wetok.config import PRESETS
from wetok_cli.common import WetokCommand

DTYPES = {"fp32": "float32", "fp16": "float16"}


@click.command("import", cls=WetokCommand)
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    metavar="NAME",
    help="Its released configuration: wetok-imagenet-f{8,16}, wetok-gd-ratio{24,48,192,768}, "
    "magvit2-f{8,16}-2p18 (docs/import.md).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Hyperparameters in the release's names (JSON, or the release's YAML with PyYAML).",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory to create.",
)
@click.option(
    "--dtype",
    type=click.Choice(list(DTYPES)),
    default="fp32",
    show_default=True,
    help="Precision of the saved weights.",
)
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the model summary as JSON on stdout.")
def import_cmd(
    checkpoint: Path,
    preset: str | None,
    config_file: Path | None,
    out: Path,
    dtype: str,
    force: bool,
    as_json: bool,
) -> None:
    """Turn an official WeTok / Open-MAGVIT2 checkpoint into a wetok model directory.

    CHECKPOINT is the release's Lightning .ckpt (loaded without executing code), a plain state dict or a
    .safetensors file. The deployed EMA weights are taken, the discriminator and LPIPS weights dropped, and
    every shape checked before anything is written. The directory gets uniform entropy tables; fit real
    ones with `wetok fit-prior`.
    """
    import torch

    from wetok.convert import import_checkpoint, resolve_config

    if (preset is None) == (config_file is None):
        raise click.UsageError("give exactly one of --preset NAME or --config FILE")
    config = resolve_config(preset, config_file)  # a WetokError becomes one line (wetok_cli.common)
    report = import_checkpoint(checkpoint, config, out, dtype=getattr(torch, DTYPES[dtype]), force=force)
    summary = report.summary()
    _print_summary(f"imported {checkpoint.name} → {out}", summary)
    if as_json:
        click.echo(json.dumps({**summary, "out": str(out)}, indent=2))


def _print_summary(title: str, s: dict[str, Any]) -> None:
    families = ", ".join(s["raw_families"])
    raw = f", raw {s['raw_tensors']} ({families}: no EMA copy)" if s["raw_tensors"] else ""
    rows = [
        ("preset", s["preset"]) if s["preset"] else ("config", s["name"]),
        ("params", f"{s['params'] / 1e6:.1f}M ({s['params']:,})"),
        (
            "f / g / d'",
            f"{s['f']} / {s['g']} / {s['d_prime']}  ({s['bits_per_token']} bits/token, {s['bpp']:g} bpp raw)",
        ),
        ("generative", "yes" if s["generative"] else "no"),
        ("weights", f"EMA {s['ema_tensors']}{raw}; ignored {s['ignored_tensors']} loss/bookkeeping tensors"),
        ("model id", s["model_id"]),
        ("sha256", s["weights_sha256"]),
    ]
    click.echo(title, err=True)
    for key, value in rows:
        click.echo(f"  {key:<12}{value}", err=True)
