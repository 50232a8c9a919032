"""The ``glacierflow`` command group; each command lives in a module of its own."""

from __future__ import annotations

import logging
from typing import Any

import click

from glacierflow import __version__
from glacierflow.cli.options import fail
from glacierflow.errors import GlacierflowError, OutputError


class GlacierflowGroup(click.Group):
    """The command group: the one place a library error becomes a one-line message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GlacierflowError as exc:
            fail(exc)
        except (OSError, MemoryError) as exc:
            # The edge: an I/O error no reader or writer named (a lost mount, a full disk met
            # by a library) is still one line, with the file when the OS gives one.
            name = getattr(exc, "filename", None)
            fail(
                OutputError(_os_problem(exc), name) if name else GlacierflowError(_os_problem(exc))
            )
        except Exception as exc:
            if type(exc).__module__.startswith("rasterio"):  # GDAL's CPLE_* errors
                fail(GlacierflowError(f"GDAL: {' '.join(str(exc).split())[:300]}"))
            raise


def _os_problem(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory; use tiled matching (--tile-nodes), a larger step or fewer workers"
    return getattr(exc, "strerror", None) or " ".join(str(exc).split())[:300] or type(exc).__name__


@click.group(cls=GlacierflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glacierflow")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens, step by step.")
def cli(verbose: bool) -> None:
    """Glacier surface velocity from pairs of optical satellite images."""
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
