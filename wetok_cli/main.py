"""The ``wetok`` command line (Click group). Commands live one per module; no model logic here."""

from __future__ import annotations

import click

from wetok_cli.cmd_train import train_cmd


@click.group()
def cli() -> None:
    """wetok: compress images to .wtk token files with WeTok, and back."""


cli.add_command(train_cmd)

if __name__ == "__main__":
    cli()
