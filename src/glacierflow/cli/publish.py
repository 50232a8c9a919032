"""``glacierflow publish``: products into a STAC catalog."""

from __future__ import annotations

from pathlib import Path

import click

from glacierflow.cli.paths import catalog_option


@click.command("publish")
@click.argument("products_dir", type=click.Path(path_type=Path))
@click.option(
    "--meta",
    "meta_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The dataset record to publish with (dataset.toml; every key is in docs/dataset_toml.md).",
)
@catalog_option("The STAC catalog folder (created if missing).")
@click.option("--strict", is_flag=True, help="Refuse fields still marked TO BE FILLED.")
@click.option(
    "--reference-image",
    default=None,
    type=click.Path(path_type=Path),
    help="Image drawn in grey under the speed on the portal's map [default: the first pair's "
    "reference scene, found by its ref_file name beside the products].",
)
@click.option(
    "--dem",
    default=None,
    type=click.Path(path_type=Path),
    help="A DEM whose hillshade the map offers as a second base layer.",
)
def command(
    products_dir: Path,
    meta_path: Path,
    catalog_dir: Path,
    strict: bool,
    reference_image: Path | None,
    dem: Path | None,
) -> None:
    """Publish the products in PRODUCTS_DIR as a dataset of a STAC catalog.

    Needs the portal extra: pip install 'glacierflow[portal]'.

    \b
    Examples:
      glacierflow publish out/ --meta dataset.toml --catalog catalog/
      glacierflow publish project_out/ --meta dataset.toml --catalog catalog/ --strict
      glacierflow publish out/ --meta dataset.toml --catalog catalog/ \\
          --reference-image LC08_B8.TIF --dem copernicus_dem.tif
    """
    from glacierflow._extras import needs

    with needs("portal", "glacierflow publish"):
        from glacierflow.portal.catalog import publish as publish_dataset

    result = publish_dataset(
        products_dir,
        meta_path,
        catalog_dir,
        strict=strict,
        reference_image=reference_image,
        dem=dem,
    )
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
