"""``glacierflow serve``: the catalog as a read-only web portal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# Standard library only: the options are listed (and --help works) without the portal extra.
from glacierflow.cli.paths import catalog_option
from glacierflow.portal.defaults import DEFAULTS, DEPRECATED, HELP, TYPES

#: Options of the server that take a choice rather than any value.
_CHOICES = {"log_level": click.Choice(["critical", "error", "warning", "info", "debug", "trace"])}

#: Whole-number options for which 0 makes sense (no keep-alive, no grace period).
_MAY_BE_ZERO = {"keep_alive_s", "graceful_shutdown_s"}


def _server_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One option per key of :data:`glacierflow.portal.defaults.DEFAULTS`, in its order."""
    for key in reversed(list(DEFAULTS)):
        default = DEFAULTS[key]
        kind = _CHOICES.get(key) or (type(default) if default is not None else TYPES[key])
        if kind is Path:
            kind = click.Path(path_type=Path)
        elif kind is int:
            kind = click.IntRange(min=0 if key in _MAY_BE_ZERO else 1)
        elif kind is float:
            kind = click.FloatRange(min=0, min_open=True)
        func = click.option(
            "--" + key.replace("_", "-"),
            key,
            type=kind,
            default=default,
            show_default=default is not None,
            help=HELP[key],
        )(func)
    return func


@click.command("serve")
@catalog_option("The STAC catalog folder written by glacierflow publish.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port."
)
@_server_options
@click.option(
    "--workers",
    "old_workers",
    type=click.IntRange(min=1),
    default=None,
    hidden=True,
    help="Deprecated name of --server-processes.",
)
def command(
    catalog_dir: Path, host: str, port: int, old_workers: int | None, **options: Any
) -> None:
    """Serve the catalog as a read-only web portal and JSON API.

    Needs the portal extra: pip install 'glacierflow[portal]'.

    \b
    Examples:
      glacierflow serve --catalog catalog/ --port 8000
      glacierflow serve --catalog catalog/ --host 0.0.0.0 --public-url https://data.example.org
      glacierflow serve --catalog catalog/ --max-active 8 --tile-timeout-s 10 --server-processes 2
    """
    from glacierflow._extras import needs

    with needs("portal", "glacierflow serve"):
        from glacierflow.portal.server import serve as serve_portal

    if old_workers is not None:
        click.echo(
            "glacierflow: note: serve --workers is now --server-processes (processes of the "
            "web server; track, demo and run use --workers for matching processes)",
            err=True,
        )
        options[DEPRECATED["workers"]] = old_workers
    click.echo(f"glacierflow portal for {catalog_dir} on http://{host}:{port}/ (Ctrl-C stops)")
    serve_portal(catalog_dir, host=host, port=port, **options)
