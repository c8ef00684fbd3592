"""``wetok models``: the models wetok can use, where they are, and their rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from wetok_cli.common import WetokCommand, print_table
from wetok_cli.outputs import print_line

_MODEL_COLUMNS = (
    "name",
    "source",
    "f",
    "g x d'",
    "bits/token",
    "static b/t",
    "mode",
    "bpp",
    "generative",
    "id",
    "path",
)


@click.command("models", cls=WetokCommand)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model instead of the table.")
@click.option("--paths", is_flag=True, help="Only print the folders searched for models, in order.")
def models_cmd(as_json: bool, paths: bool) -> None:
    """List the models wetok can use, with their rate.

    Searched in order: each folder of $WETOK_MODELS (separated by ':'), the user folder
    (~/.local/share/wetok/models), then the models bundled with wetok; the first model of a name wins.
    "bits/token" is g x d' (raw); "static b/t" is what the model's per-group prior expects after range
    coding; "mode" is how `wetok compress` codes tokens by default (context: the causal context model,
    about half the static size or less; measure a file with `wetok info`); "generative": whether the
    decoder takes noise ("realism 0-1": a generative decoder beside the faithful one, `--realism`).
    """
    from wetok.zoo import all_models, model_dirs

    if paths:
        for folder in model_dirs():
            print_line(str(folder))
        return
    records = [_model_record(m) if m.problem is None else _broken_record(m) for m in all_models()]
    if as_json:
        for r in records:
            print_line(json.dumps(r))
    elif records:
        print_table(_MODEL_COLUMNS, [_model_cells(r) for r in records])
    else:
        dirs = ", ".join(str(d) for d in model_dirs())
        click.echo(f"no models installed (searched {dirs}); see `wetok import` and `wetok train`", err=True)


def _broken_record(m: Any) -> dict[str, Any]:
    """A model folder that cannot be used: listed, with why, so that it can be fixed or removed."""
    keys = ("f", "g", "d_prime", "bits_per_token", "coded_bits_per_token", "default_mode", "bpp")
    keys += ("generative", "model_id")
    record = {"name": m.name, "source": _source(m), "path": str(m.path), **dict.fromkeys(keys)}
    return record | {"broken": m.problem}


def _source(m: Any) -> str:
    source = "bundled" if m.bundled else "user" if _in_user_dir(m.path) else "WETOK_MODELS"
    return source + (" (hidden)" if m.hidden_by is not None else "")


def _model_record(m: Any) -> dict[str, Any]:
    from wetok.context import CONTEXT_NAME
    from wetok.modeldir import GENERATIVE_DECODER_NAME
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
    return {
        "name": m.name,
        "source": _source(m),
        "path": str(m.path),
        "f": c.downsample,
        "g": c.groups,
        "d_prime": c.group_bits,
        "bits_per_token": c.bits_per_token,
        "coded_bits_per_token": coded,
        "default_mode": "context" if (m.path / CONTEXT_NAME).is_file() else "static" if has_prior else "raw",
        "bpp": c.bpp,
        "generative": c.generative,
        "generative_decoder": (m.path / GENERATIVE_DECODER_NAME).is_file(),  # realism > 0 available
        "model_id": model_id,
        "broken": None,
    }


def _in_user_dir(path: Path) -> bool:
    from wetok.zoo import user_dir

    return path.parent.resolve() == user_dir().resolve()


def _model_cells(r: dict[str, Any]) -> list[str]:
    if r["broken"]:
        return [r["name"], r["source"], *["-"] * 7, "broken", f"{r['path']}: {r['broken']}"]
    coded = "?" if r["coded_bits_per_token"] is None else f"{r['coded_bits_per_token']:.2f}"
    return [
        r["name"],
        r["source"],
        str(r["f"]),
        f"{r['g']} x {r['d_prime']}",
        str(r["bits_per_token"]),
        coded,
        r["default_mode"],
        f"{r['bpp']:.4f}",
        "yes" if r["generative"] else "realism 0-1" if r["generative_decoder"] else "no",
        r["model_id"] or "(unreadable)",
        r["path"],
    ]
