"""``wetok fit-prior``: fit a model directory's entropy tables (prior.json, context.json) on your images."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wetok.fileio import IMAGE_SUFFIXES, find_images
from wetok_cli.common import UsageProblem, WetokCommand, device_option, resolve_device


@click.command("fit-prior", cls=WetokCommand)
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="The new model directory (MODEL_DIR's weights and config with the fitted tables).",
)
@click.option(
    "--force", is_flag=True, help="Replace an existing --out, or (without --out) MODEL_DIR's own tables."
)
@click.option(
    "--keep-prior",
    is_flag=True,
    help="Fit only the context model; keep prior.json (and so the model id). Adding a context model to a "
    "model without one needs no --force: every file made with it still decodes.",
)
@click.option("--no-context", is_flag=True, help="Fit only prior.json; keep context.json as it is.")
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
    keep_prior: bool,
    no_context: bool,
    min_tokens: int | None,
    batch_size: int,
    device: str,
    as_json: bool,
) -> None:
    """Fit entropy tables on IMAGES (files or folders of images) for MODEL_DIR.

    Two tables: the per-group token frequencies (prior.json) and the causal context model (context.json:
    each token bit predicted from its left and upper neighbours; context becomes the default coding mode).
    Prints the bits/token of the fitting tokens under both, beside their empirical per-group entropy.
    A new prior makes a new model (a new model id), written to --out; .wtk files made with MODEL_DIR keep
    needing MODEL_DIR as it is, so changing it in place needs --force. Each image is padded to a multiple
    of the model's downsampling factor and encoded.
    """
    from wetok.context import CONTEXT_NAME
    from wetok.convert import fit_model_prior
    from wetok.modeldir import is_model_dir, read_model_id

    if keep_prior and no_context:
        raise click.UsageError("--keep-prior and --no-context leave nothing to fit")
    paths = find_images(images)
    if not paths:
        raise click.UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) among the given paths")
    replaces = not keep_prior or (not no_context and (model_dir / CONTEXT_NAME).exists())
    if out is None and not force and is_model_dir(model_dir) and replaces:
        raise UsageProblem(
            f"fitting these tables makes a new model: write it with -o NEW_DIR (files made with {model_dir} "
            "need its tables unchanged), or pass --force to change it in place"
        )
    options = {"out_dir": out, "force": force, "min_tokens": min_tokens}
    report = fit_model_prior(
        model_dir,
        paths,
        batch_size,
        resolve_device(device),
        static=not keep_prior,
        context=not no_context,
        **options,
    )
    target = out or model_dir
    model_id = read_model_id(target)
    summary = {"model_dir": str(target), "images": len(paths), **report, "model_id": model_id.hex()}
    fitted = [n for n, on in (("prior.json", not keep_prior), ("context.json", "context" in report)) if on]
    id_note = "model id unchanged" if keep_prior else "new model id"
    click.echo(
        f"fitted {', '.join(fitted)} in {target} on {len(paths)} images ({report['tokens']} tokens); "
        f"{id_note} {model_id.hex()}",
        err=True,
    )
    rates = [
        f"{name} {report[key]:.2f}"
        for name, key in (
            ("static", "static"),
            ("context", "context"),
            ("empirical entropy", "empirical_entropy"),
        )
        if key in report
    ]
    click.echo(f"  bits/token on these tokens: {', '.join(rates)}", err=True)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
