"""The ``glacierflow`` command group; each command lives in a module of its own."""

from __future__ import annotations

import logging
from typing import Any

import click

from glacierflow import __version__
from glacierflow.cli.options import fail
from glacierflow.errors import GlacierflowError


class GlacierflowGroup(click.Group):
    """The command group: the one place a library error becomes a one-line message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GlacierflowError as exc:
            fail(exc)


@click.group(cls=GlacierflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glacierflow")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens, step by step.")
def cli(verbose: bool) -> None:
    """Glacier surface velocity from pairs of optical satellite images.

    \b
    Examples:
      glacierflow demo
      glacierflow track REF_B8.TIF SEC_B8.TIF -o out
      glacierflow run project.toml
      glacierflow COMMAND --help
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="glacierflow: %(message)s",
    )


def _register() -> None:
    from glacierflow.cli import demo, publish, run, search, serve, timeseries, track

    for module in (track, demo, run, timeseries, search, publish, serve):
        cli.add_command(module.command)


_register()


def main() -> None:
    """Entry point of the ``glacierflow`` script."""
    cli()
