"""The ``wetok`` command line (Click group). Commands live one per module; no model logic here.

Shell completion is Click's: ``eval "$(_WETOK_COMPLETE=bash_source wetok)"`` (zsh_source, fish_source).
"""

from __future__ import annotations

import importlib
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click

from wetok_cli.common import Settings, WetokGroup, echo_or_fail

# Commands are imported when used; the command modules import torch (and the heavy parts of wetok) only
# inside their functions, so `wetok --version`, `--help` and completion do not load torch
# (tests/test_packaging.py checks it).
COMMANDS = {
    "compress": "wetok_cli.cmd_compress:compress_cmd",
    "decompress": "wetok_cli.cmd_decompress:decompress_cmd",
    "info": "wetok_cli.cmd_info:info_cmd",
    "models": "wetok_cli.cmd_models:models_cmd",
    "train": "wetok_cli.cmd_train:train_cmd",
    "eval": "wetok_cli.cmd_eval:eval_cmd",
    "import": "wetok_cli.cmd_import:import_cmd",
    "fit-prior": "wetok_cli.cmd_fit_prior:fit_prior_cmd",
    "tokenize": "wetok_cli.cmd_tokenize:tokenize_cmd",
    "detokenize": "wetok_cli.cmd_detokenize:detokenize_cmd",
}


class LazyGroup(WetokGroup):
    """A :class:`WetokGroup` whose subcommands are the entries of :data:`COMMANDS`, imported on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        names = [CompletionItem(n) for n in COMMANDS if n.startswith(incomplete)]
        return names + click.Command.shell_complete(self, ctx, incomplete)


def _version_of(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    echo_or_fail(
        f"wetok {_version_of('wetok')} (torch {_version_of('torch')}, Python {platform.python_version()})"
    )
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the versions of wetok, torch and Python, then exit.",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar="WETOK_DEBUG",
    help="Show Python tracebacks instead of one-line errors (also WETOK_DEBUG=1).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    envvar="WETOK_MAX_PIXELS",
    help="Refuse images (and .wtk files) of more pixels than this, before allocating them.  "
    "[default: 89478485, Pillow's limit; also WETOK_MAX_PIXELS]",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, max_pixels: int | None) -> None:
    """wetok: compress images to .wtk token files with WeTok, and back.

    \b
      wetok compress photo.png                 # -> photo.wtk
      wetok decompress photo.wtk -o out.png    # -> out.png
      cat a.png | wetok compress - | wetok decompress - > b.png
      wetok info photo.wtk; wetok models

    Data goes to stdout only for '-'; summaries, progress and errors go to stderr. Exit status: 0 success,
    1 some inputs failed (the others are still processed), 2 usage error.
    """
    ctx.obj = Settings(debug=debug)
    from wetok.limits import set_max_pixels  # no torch, no Pillow

    set_max_pixels(max_pixels)
    ctx.call_on_close(lambda: set_max_pixels(None))  # a later command in this process starts afresh


if __name__ == "__main__":
    cli(prog_name="wetok")
