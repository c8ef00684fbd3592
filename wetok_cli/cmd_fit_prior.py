"""``wetok fit-prior``: fit a model directory's entropy tables (prior.json) on your images."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wetok.fileio import IMAGE_SUFFIXES, find_images
from wetok_cli.common import UsageProblem, device_option, resolve_device


@click.command("fit-prior")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="The new model directory (MODEL_DIR's weights and config with the fitted prior).",
)
@click.option(
    "--force", is_flag=True, help="Replace an existing --out, or (without --out) MODEL_DIR's own prior."
)
@click.option(
    "--min-tokens",
    type=click.IntRange(0),
    help="Refuse to fit on fewer tokens.  [default: one per symbol of a group, at least 1024]",
)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Images per batch.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON on stdout.")
def fit_prior_cmd(
    model_dir: Path,
    images: tuple[Path, ...],
    out: Path | None,
    force: bool,
    min_tokens: int | None,
    batch_size: int,
    device: str,
    as_json: bool,
) -> None:
    """Fit per-group token frequency tables on IMAGES (files or folders of images) for MODEL_DIR.

    A new prior makes a new model (a new model id), written to --out; .wtk files made with MODEL_DIR keep
    needing MODEL_DIR as it is, so changing it in place needs --force. Each image is padded to a multiple of
    the model's downsampling factor and encoded.
    """
    from wetok.convert import fit_model_prior
    from wetok.modeldir import is_model_dir, stored_model_id

    paths = find_images(images)
    if not paths:
        raise click.UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) among the given paths")
    if out is None and not force and is_model_dir(model_dir):
        raise UsageProblem(
            f"fitting a prior makes a new model: write it with -o NEW_DIR (files made with {model_dir} "
            "need its prior unchanged), or pass --force to change it in place"
        )
    options = {"out_dir": out, "force": force, "min_tokens": min_tokens}
    n_tokens = fit_model_prior(model_dir, paths, batch_size, resolve_device(device), **options)
    target = out or model_dir
    model_id = stored_model_id(target)
    summary = {
        "model_dir": str(target),
        "images": len(paths),
        "tokens": n_tokens,
        "model_id": model_id.hex(),
    }
    click.echo(
        f"fitted {target / 'prior.json'} on {len(paths)} images ({n_tokens} tokens); "
        f"new model id {model_id.hex()}",
        err=True,
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
