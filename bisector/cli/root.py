"""The typer application every command registers on, and its own options (--version)."""

from __future__ import annotations

from typing import Annotated

import typer

from bisector import __version__

app = typer.Typer(
    name="bisector",
    help="Find and repair memory leaks where PyTorch meets ONNX: eager forward, torch.onnx.export, ONNX Runtime.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bisector {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Find and repair memory leaks where PyTorch meets ONNX."""
