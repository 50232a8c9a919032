"""``glacierflow track``: one pair of images to velocity products."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from glacierflow.cli.options import OVERWRITE, WORKERS, setting_options, shortcuts
from glacierflow.cli.paths import out_option

#: Command-line defaults that differ from the library's.
OVERRIDES: dict[str, dict[str, Any]] = {
    "matching.workers": WORKERS,
    "tiling.scheduler": {"envvar": "DASK_SCHEDULER_ADDRESS", "metavar": "ADDRESS"},
}


@click.command("track")
@click.argument("ref", type=click.Path())
@click.argument("sec", type=click.Path())
@out_option("out_dir", "Output folder for the products.", required=True)
@click.option("--ref-date", default=None, help="Acquisition time of REF (ISO 8601).")
@click.option("--sec-date", default=None, help="Acquisition time of SEC (ISO 8601).")
@click.option(
    "--trust-given-dates",
    is_flag=True,
    help="Use --ref-date/--sec-date even where they contradict the MTL file or the scene ID "
    "(same UTC day needed otherwise), with a warning.",
)
@click.option("--band", default=None, type=int, help="Band of multi-band inputs (1-based).")
@click.option(
    "--bbox",
    nargs=4,
    type=float,
    default=None,
    metavar="W S E N",
    help="Area of interest in degrees (lon/lat): only this part of each scene is read.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal).",
)
@click.option("--overwrite", **OVERWRITE)
@setting_options(overrides=OVERRIDES)
def command(
    ref: Any,
    sec: Any,
    out_dir: Path,
    ref_date: str | None,
    sec_date: str | None,
    trust_given_dates: bool,
    band: int | None,
    bbox: tuple[float, float, float, float] | None,
    progress: bool | None,
    overwrite: bool,
    **settings: Any,
) -> None:
    """Track features from REF to SEC and write velocity products to OUT.

    Outliers are removed and flagged in the quality band; a misregistration fitted on stable
    ground is removed from every node; v_error is calibrated on the same stable ground. Every
    option from --chip-px on is a setting of glacierflow.settings.TrackSettings (the same
    names, with _ for -, in a project file and in Python). REF and SEC may be files, https://
    or s3:// URLs of COGs, or STAC items (ITEM.json, or ITEM.json#ASSET for another band).

    \b
    Examples:
      glacierflow track LC08_A_B8.TIF LC08_B_B8.TIF -o out
      glacierflow track A.TIF B.TIF -o out --stable-mask rock.gpkg --coreg affine
      glacierflow track A.TIF B.TIF -o out --method phase --subpixel dft --prefilter wallis
      glacierflow track A.TIF B.TIF -o out --tile-nodes 20000 --work-dir tiles/
      glacierflow track A.TIF B.TIF -o out --overwrite --workers 4
      glacierflow track https://host/A_B8.TIF https://host/B_B8.TIF -o out \\
        --bbox -141.5 60.1 -141.4 60.2
    """
    from glacierflow.acquisition import trusting_given_dates
    from glacierflow.cli.summary import print_summary
    from glacierflow.errors import time_given_by
    from glacierflow.products import refuse_earlier_products
    from glacierflow.scenes import read_area
    from glacierflow.track import track_to_products

    refuse_earlier_products(out_dir, overwrite)
    with trusting_given_dates(trust_given_dates):
        if bbox:  # only the area of interest is read, from files or URLs
            with time_given_by("ref_date"):
                ref = read_area(ref, bbox, band=band, acquired=ref_date)
            with time_given_by("sec_date"):
                sec = read_area(sec, bbox, band=band, acquired=sec_date)
        ds, paths = track_to_products(
            ref,
            sec,
            out_dir,
            ref_date=ref_date,
            sec_date=sec_date,
            band=band,
            progress=progress,
            overwrite=overwrite,
            **shortcuts(settings),
        )
    print_summary(ds, paths)
