"""``wetok fit-prior``: fit a model directory's entropy tables (prior.json) on your images."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wetok.fileio import IMAGE_SUFFIXES, find_images
from wetok_cli.common import device_option, resolve_device


@click.command("fit-prior")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Images per batch.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON on stdout.")
def fit_prior_cmd(
    model_dir: Path, images: tuple[Path, ...], batch_size: int, device: str, as_json: bool
) -> None:
    """Fit MODEL_DIR's per-group token frequency tables on IMAGES (files or folders of images).

    Each image is padded to a multiple of the model's downsampling factor and encoded; the counts replace
    the model directory's prior.json.
    """
    from wetok.convert import fit_model_prior
    from wetok.modeldir import stored_model_id

    paths = find_images(images)
    if not paths:
        raise click.UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) among the given paths")
    n_tokens = fit_model_prior(model_dir, paths, batch_size=batch_size, device=resolve_device(device))
    model_id = stored_model_id(model_dir)
    summary = {
        "model_dir": str(model_dir),
        "images": len(paths),
        "tokens": n_tokens,
        "model_id": model_id.hex(),
    }
    click.echo(
        f"fitted {model_dir / 'prior.json'} on {len(paths)} images ({n_tokens} tokens); "
        f"new model id {model_id.hex()}",
        err=True,
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
