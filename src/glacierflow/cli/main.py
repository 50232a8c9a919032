"""The ``glacierflow`` command group; each command lives in a module of its own.

Commands are imported when they run (or when their own help is asked for): ``glacierflow
--help`` lists them from :data:`COMMANDS` without importing numpy, pydantic or the settings
tree, so that it answers within a fraction of a second.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

#: Command name -> (module under ``glacierflow.cli``, first paragraph of its help: what
#: ``glacierflow --help`` shows, shortened as click shortens it; tests check it against the
#: command's own help).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "demo",
        "Track the bundled Landsat 8 pair of Yahtse Glacier, Alaska (2016-07-18 / 2016-08-03).",
    ),
    "publish": ("publish", "Publish the products in PRODUCTS_DIR as a dataset of a STAC catalog."),
    "run": (
        "run",
        "Process every pair of a project, then write the annual products and the report.",
    ),
    "search": ("search", "Find scenes in a STAC API and write a scene list for a project file."),
    "serve": ("serve", "Serve the catalog as a read-only web portal and JSON API."),
    "timeseries": (
        "timeseries",
        "Invert image pairs into a velocity time series on regular steps.",
    ),
    "track": ("track", "Track features from REF to SEC and write velocity products to OUT."),
}


class GlacierflowGroup(click.Group):
    """The command group: commands imported on demand, and the one place a library error
    becomes a one-line message."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module = importlib.import_module(f"glacierflow.cli.{COMMANDS[cmd_name][0]}")
            self.add_command(module.command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The one-line help of commands not imported yet comes from COMMANDS.
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(name) for name in names), default=0)
        rows = []
        for name in names:
            if name in self.commands:
                cmd = self.commands[name]
                if not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit)))
            else:
                stub = click.Command(name, help=COMMANDS[name][1])
                rows.append((name, stub.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from glacierflow.errors import GlacierflowError, OutputError

        def fail(exc: GlacierflowError) -> None:
            from glacierflow.cli.options import fail as say_and_exit

            say_and_exit(exc)

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


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from glacierflow import __version__

    click.echo(f"glacierflow, version {__version__}")
    ctx.exit()


@click.group(cls=GlacierflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
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
    level = logging.INFO if verbose else logging.WARNING
    # The handler has the level too: lines a library filter turns into INFO (GDAL's HTTP
    # retries, see glacierflow.remote) are shown with -v only.
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("glacierflow: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


_TRACK_MODULES = (
    "glacierflow.matching.match",
    "glacierflow.matching.fused",
    "glacierflow.tiling",
    "glacierflow.matching.affine",
    "glacierflow.products",
)
#: Commands that match on local workers, and the modules those workers import (the matching
#: modules and the product writers: ``glacierflow.track.MATCHING_MODULES`` and
#: ``glacierflow.products.WORKER_MODULES``, which a test holds this to).
WORKER_MODULES: dict[str, tuple[str, ...]] = {"track": _TRACK_MODULES, "demo": _TRACK_MODULES}


def start_workers_early(args: list[str]) -> bool:
    """Start the worker server of a command that matches, before its options are parsed.

    Building a command's options imports the settings tree (most of a second); the server
    imports its workers' modules meanwhile, on another core, so that the workers fork ready
    when the scenes are read. Not for help, nor with ``--workers 1`` (no workers). Returns
    whether it started one.
    """
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in WORKER_MODULES or {"-h", "--help"} & set(args):
        return False
    if "--workers=1" in args or any(
        a == "--workers" and b == "1" for a, b in zip(args, args[1:], strict=False)
    ):
        return False
    from glacierflow.execute import start_worker_server

    return start_worker_server(WORKER_MODULES[command])


def main() -> None:
    """Entry point of the ``glacierflow`` script."""
    # The resource tracker (a process of its own, started with the workers) reads this at its
    # start: a run stopped by bad input while its workers were starting must end with one
    # line, not with the tracker's warnings about semaphores it did not see released.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")
    if not start_workers_early(sys.argv[1:]) or not _is_the_program():
        cli()
        return
    try:
        cli()
    except SystemExit as done:
        _exit_at_once(done.code)
    _exit_at_once(0)


def _is_the_program() -> bool:
    """Whether this process is the ``glacierflow`` program (the console script, or ``python
    -m glacierflow.cli``), not a program that calls :func:`main` and goes on."""
    entry = sys.modules.get("__main__")
    spec = getattr(entry, "__spec__", None)
    if spec is not None and spec.name in ("glacierflow.cli.__main__", "glacierflow.cli"):
        return True
    return os.path.basename(getattr(entry, "__file__", None) or "") == "glacierflow"


def _exit_at_once(code: int | str | None) -> None:
    """End the program after a command that matched on workers, without tearing the
    interpreter down.

    Its workers are stopped and its files closed by now; what is left is freeing every
    module it imported (xarray, pandas, scipy, rasterio...): 0.3-0.4 s of CPU at the end of
    every run. Output is flushed and logging shut down first, as at a normal exit.
    """
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)
