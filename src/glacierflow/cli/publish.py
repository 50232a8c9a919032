"""``glacierflow publish``: products into a STAC catalog."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("publish")
@click.argument("products_dir", type=click.Path(path_type=Path))
@click.option(
    "--meta",
    "meta_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The dataset record to publish with (dataset.toml).",
)
@click.option(
    "--catalog",
    "catalog_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The STAC catalog folder (created if missing).",
)
@click.option("--strict", is_flag=True, help="Refuse fields still marked TO BE FILLED.")
def command(products_dir: Path, meta_path: Path, catalog_dir: Path, strict: bool) -> None:
    """Publish the products in PRODUCTS_DIR as a dataset of a STAC catalog.

    \b
    Example:
      glacierflow publish out/ --meta dataset.toml --catalog catalog/
    """
    from glacierflow.portal.catalog import publish as publish_dataset

    result = publish_dataset(products_dir, meta_path, catalog_dir, strict=strict)
    click.echo(f"published {len(result.item_ids)} item(s) to {result.collection_path}")
    for item_id in result.item_ids:
        click.echo(f"  {item_id}")
    for path, reason in result.skipped:
        click.echo(f"skipped {path}: {reason}")
    if result.placeholders:
        click.echo(
            f"warning: {meta_path}: still TO BE FILLED: {', '.join(result.placeholders)}",
            err=True,
        )
