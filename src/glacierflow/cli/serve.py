"""``glacierflow serve``: the catalog as a read-only web portal."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("serve")
@click.option(
    "--catalog",
    "catalog_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The STAC catalog folder written by glacierflow publish.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port."
)
def command(catalog_dir: Path, host: str, port: int) -> None:
    """Serve the catalog as a read-only web portal and JSON API.

    \b
    Example:
      glacierflow serve --catalog catalog/ --port 8000
    """
    from glacierflow.portal.app import serve as serve_portal

    click.echo(f"glacierflow portal for {catalog_dir} on http://{host}:{port}/ (Ctrl-C stops)")
    serve_portal(catalog_dir, host=host, port=port)
