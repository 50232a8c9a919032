"""``glacierflow search``: scenes from a STAC API, as a scene list for a project file."""

from __future__ import annotations

from pathlib import Path

import click

from glacierflow.cli.paths import out_option


@click.command("search")
@click.option(
    "--bbox",
    nargs=4,
    type=float,
    required=True,
    metavar="W S E N",
    help="Longitude/latitude box, degrees.",
)
@click.option("--start", required=True, help="First day (ISO date).")
@click.option("--end", required=True, help="Last day (ISO date, inclusive).")
@click.option(
    "--collection",
    default="landsat-c2-l1",
    show_default=True,
    help="STAC collection (landsat-c2-l1: Landsat Collection 2 Level-1; on the USGS server "
    "it is landsat-c2l1).",
)
@click.option(
    "--max-cloud", default=None, type=click.FloatRange(0, 100), help="Largest cloud cover, %."
)
@click.option("--platform", default=None, help="Keep one platform, e.g. LANDSAT_7.")
@click.option(
    "--url",
    default=None,
    help="Root of the STAC API [default: the USGS LandsatLook STAC server].",
)
@out_option(
    "out_path",
    "The scene list to write (CSV; name it in a project file as [scenes] list).",
    default=Path("scenes.csv"),
    show_default=True,
)
def command(
    bbox: tuple[float, float, float, float],
    start: str,
    end: str,
    collection: str,
    max_cloud: float | None,
    platform: str | None,
    url: str | None,
    out_path: Path,
) -> None:
    """Find scenes in a STAC API and write a scene list for a project file.

    Needs the search extra: pip install 'glacierflow[search]'.

    \b
    Examples:
      glacierflow search --bbox -141.5 60.2 -141.0 60.4 --start 2016-06-01 --end 2016-09-30
      glacierflow search --bbox 75.5 35.0 77.5 36.5 --start 1999-07-01 --end 2003-03-31 \\
          --platform LANDSAT_7 --max-cloud 30 -o karakoram_scenes.csv
    """
    from glacierflow.search import DEFAULT_STAC_URL, search_scenes, write_scene_list

    found = search_scenes(
        bbox,
        start,
        end,
        collection=collection,
        max_cloud=max_cloud,
        url=url or DEFAULT_STAC_URL,
        platform=platform,
    )
    write_scene_list(found, out_path)
    for scene in found:
        cloud = "?" if scene.cloud_cover is None else f"{scene.cloud_cover:g}"
        click.echo(
            f"{scene.datetime[:10]}  {scene.scene_id}  path/row {scene.wrs_path}/{scene.wrs_row}"
            f"  cloud {cloud} %"
        )
    click.echo(f"{len(found)} scene(s) written to {out_path}")
