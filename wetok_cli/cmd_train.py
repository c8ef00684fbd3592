"""``wetok train``: both training stages from one config file plus overrides."""

from __future__ import annotations

from pathlib import Path

import click

from wetok_cli.common import WetokCommand


@click.command("train", cls=WetokCommand)
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--set",
    "-s",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. -s steps=2000 -s optim.lr=1e-4 -s model.groups=5 (repeatable).",
)
@click.option("--data", type=click.Path(exists=True, path_type=Path), help="Folder of training images.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (checkpoints, logs, model).")
@click.option("--stage", type=click.IntRange(1, 2), help="1: reconstruction, 2: generative decoder.")
@click.option(
    "--init-from",
    metavar="MODEL",
    help="Start from this model (directory, checkpoint or installed name): stage 2 needs one; in stage 1 it "
    "continues training a model, e.g. --init-from default.",
)
@click.option("--resume", is_flag=True, help="Continue exactly from the run directory's checkpoint.")
@click.option("--force", is_flag=True, help="Start over in a run directory that already holds a run.")
@click.option(
    "--export-from",
    metavar="CHECKPOINT",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Train nothing: export the model folder a run would have exported had it stopped at CHECKPOINT "
    "(e.g. a run's peak, chosen on the validation split) to --out.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def train_cmd(
    config: Path | None,
    overrides: tuple[str, ...],
    data: Path | None,
    out: Path | None,
    stage: int | None,
    init_from: str | None,
    resume: bool,
    force: bool,
    export_from: Path | None,
    quiet: bool,
) -> None:
    """Train a WeTok tokenizer (stage 1 or 2) and export it as a model directory.

    CONFIG is a TOML file (see examples/train_default.toml); flags and --set override it. Multi-GPU:
    torchrun --nproc_per_node N -m wetok_cli.main train CONFIG.
    """
    from wetok.errors import ConfigError
    from wetok_cli.common import UsageProblem, launcher_world
    from wetok_train.checkpoint import CheckpointError
    from wetok_train.config import load_config
    from wetok_train.loop import RunExistsError, TrainingStopped, train

    launcher_world()  # a bad WORLD_SIZE is a usage error before anything is read or built
    if export_from is not None:
        _export_checkpoint(export_from, out, force)
        return
    flags = {"data": data, "out": out, "init_from": init_from, "stage": stage}
    values = {k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None}
    try:
        cfg = load_config(config, overrides, values)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise UsageProblem(f"bad training config: {_one_line(e)}") from None
    if not cfg.data:
        raise click.UsageError("no training data: pass --data DIR or set data in the config")
    if resume and force:
        raise click.UsageError("give --resume or --force, not both")
    try:
        model_dir = train(cfg, resume=resume, quiet=quiet, force=force)
    # A run folder or file given that cannot be used, or options that do not fit the init_from model.
    except (RunExistsError, CheckpointError, ConfigError) as e:
        raise UsageProblem(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(_one_line(e)) from None
    except TrainingStopped as e:
        click.echo(f"wetok: {e}", err=True)
        raise SystemExit(130) from None
    click.echo(f"exported {model_dir}", err=True)


def _export_checkpoint(checkpoint: Path, out: Path | None, force: bool) -> None:
    from wetok.errors import ConfigError
    from wetok_cli.common import UsageProblem
    from wetok_train.checkpoint import CheckpointError
    from wetok_train.loop import export_checkpoint

    if out is None:
        raise click.UsageError("--export-from needs --out DIR: where the model folder goes")
    if out.exists() and not force:
        raise UsageProblem(f"{out} already exists (--force replaces it)")
    try:
        export_checkpoint(checkpoint, out)
    except (CheckpointError, ConfigError) as e:
        raise UsageProblem(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(_one_line(e)) from None
    click.echo(f"exported {out}", err=True)


def _one_line(e: BaseException) -> str:
    text = str(e.args[0] if isinstance(e, KeyError) and e.args else e).strip()  # KeyError's str() quotes
    return text.splitlines()[0] if text else type(e).__name__
