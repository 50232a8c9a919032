"""The ``glacierflow`` command line: parse, call the library, print.

Any :class:`~glacierflow.errors.GlacierflowError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from glacierflow import __version__
from glacierflow.errors import GlacierflowError


def _fail(exc: Exception) -> None:
    click.echo(f"glacierflow: error: {exc}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glacierflow")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens, step by step.")
def cli(verbose: bool) -> None:
    """Glacier surface velocity from pairs of optical satellite images."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="glacierflow: %(message)s",
    )


_positive = click.IntRange(min=1)


@cli.command()
@click.argument("ref", type=click.Path())
@click.argument("sec", type=click.Path())
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder for the products.",
)
@click.option(
    "--chip-px", default=32, show_default=True, type=int, help="Reference chip side, pixels."
)
@click.option(
    "--search-px",
    default=16,
    show_default=True,
    type=int,
    help="Largest offset searched each way, pixels.",
)
@click.option(
    "--step-px",
    default=8,
    show_default=True,
    type=int,
    help="Node spacing of the output grid, pixels.",
)
@click.option("--ref-date", default=None, help="Acquisition time of REF (ISO 8601).")
@click.option("--sec-date", default=None, help="Acquisition time of SEC (ISO 8601).")
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
    "--subpixel",
    default="lanczos",
    show_default=True,
    type=click.Choice(["lanczos", "cubic", "parabola", "gaussian", "dft"]),
    help="Sub-pixel peak estimator (dft: phase correlation only).",
)
@click.option(
    "--method",
    default="ncc",
    show_default=True,
    type=click.Choice(["ncc", "phase", "orientation"]),
    help="Correlator: normalized, phase or orientation correlation.",
)
@click.option(
    "--prefilter",
    default="none",
    show_default=True,
    type=click.Choice(["none", "highpass", "wallis", "orientation"]),
    help="Image enhancement before matching (nodata-aware).",
)
@click.option(
    "--highpass-sigma-px",
    default=3.0,
    show_default=True,
    type=float,
    help="Gaussian sigma of the high-pass pre-filter, pixels.",
)
@click.option(
    "--wallis-window-px",
    default=21.0,
    show_default=True,
    type=float,
    help="Window of the Wallis pre-filter, pixels.",
)
@click.option(
    "--pyramid-levels",
    default=1,
    show_default=True,
    type=_positive,
    help="2: a coarse pass at half resolution centres every search window.",
)
@click.option(
    "--retry-chip-px",
    multiple=True,
    type=_positive,
    help="Larger chip to retry weak nodes with (repeatable).",
)
@click.option(
    "--retry-min-snr",
    default=0.0,
    show_default=True,
    type=float,
    help="Nodes below this SNR are retried with --retry-chip-px.",
)
@click.option(
    "--prior-vx",
    default=None,
    type=click.Path(path_type=Path),
    help="Prior velocity east component (m/yr raster) to centre the search.",
)
@click.option(
    "--prior-vy",
    default=None,
    type=click.Path(path_type=Path),
    help="Prior velocity north component (m/yr raster).",
)
@click.option(
    "--workers",
    default=os.cpu_count() or 1,
    show_default="all cores",
    type=_positive,
    help="Processes used for matching.",
)
@click.option(
    "--tile-nodes",
    default=None,
    type=_positive,
    help="Match tile by tile from the files with bounded memory, about this many nodes per "
    "tile; a killed run resumes from its finished tiles.",
)
@click.option(
    "--scheduler",
    default=None,
    envvar="DASK_SCHEDULER_ADDRESS",
    help="Address of a dask.distributed scheduler to run the tiles on (implies tiling).",
)
@click.option(
    "--work-dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Where finished tiles are kept [default: OUT/.glacierflow-work, removed at the end].",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal).",
)
@click.option(
    "--glacier-outlines",
    default=None,
    type=click.Path(path_type=Path),
    help="Glacier outlines (e.g. RGI, any CRS): stable ground is everything off the ice.",
)
@click.option(
    "--stable-mask",
    default=None,
    type=click.Path(path_type=Path),
    help="Stable ground marked directly: polygons, or a raster whose non-zero cells are stable.",
)
@click.option(
    "--ice-buffer-m",
    default=None,
    type=click.FloatRange(min=0),
    help="Growth of the glacier outlines, metres [default: half a chip plus one node step].",
)
@click.option(
    "--coreg",
    default="constant",
    show_default=True,
    type=click.Choice(["constant", "affine", "poly2", "none"]),
    help="Misregistration fitted on stable ground and removed (without outlines or mask: on "
    "the slowest quarter of the nodes).",
)
@click.option(
    "--min-corr",
    default=None,
    type=click.FloatRange(min=0, max=1),
    help="Lowest peak correlation kept [default: per method, 0.3 for ncc].",
)
@click.option(
    "--min-snr",
    default=None,
    type=click.FloatRange(min=0),
    help="Lowest correlation peak signal-to-noise ratio kept [default: per method, 1.2 for ncc].",
)
@click.option(
    "--fill-holes/--no-fill-holes",
    default=False,
    show_default=True,
    help="Fill small holes by interpolation (flagged in the quality band).",
)
def track(
    ref: str,
    sec: str,
    out_dir: Path,
    chip_px: int,
    search_px: int,
    step_px: int,
    ref_date: str | None,
    sec_date: str | None,
    band: int | None,
    bbox: tuple[float, float, float, float] | None,
    subpixel: str,
    workers: int,
    progress: bool | None,
    glacier_outlines: Path | None,
    stable_mask: Path | None,
    ice_buffer_m: float | None,
    coreg: str,
    min_corr: float | None,
    min_snr: float | None,
    fill_holes: bool,
    method: str,
    prefilter: str,
    highpass_sigma_px: float,
    wallis_window_px: float,
    pyramid_levels: int,
    retry_chip_px: tuple[int, ...],
    retry_min_snr: float,
    prior_vx: Path | None,
    prior_vy: Path | None,
    tile_nodes: int | None,
    scheduler: str | None,
    work_dir: Path | None,
) -> None:
    """Track features from REF to SEC and write velocity products to OUT.

    Outliers are removed and flagged in the quality band; a misregistration fitted on stable
    ground is removed from every node; v_error is calibrated on the same stable ground.
    REF and SEC may be files, https:// or s3:// URLs of COGs, or STAC item JSON (ITEM.json or
    ITEM.json#ASSET).
    """
    from glacierflow.track import track_to_products

    try:
        if bbox:  # only the area of interest is read, from files or URLs
            from glacierflow.remote import read_area

            ref = read_area(ref, bbox, band=band, acquired=ref_date)
            sec = read_area(sec, bbox, band=band, acquired=sec_date)
        ds, paths = track_to_products(
            ref,
            sec,
            out_dir,
            chip_px=chip_px,
            search_px=search_px,
            step_px=step_px,
            ref_date=ref_date,
            sec_date=sec_date,
            band=band,
            subpixel=subpixel,
            workers=workers,
            progress=progress,
            glacier_outlines=glacier_outlines,
            stable_mask=stable_mask,
            ice_buffer_m=ice_buffer_m,
            coreg=coreg,
            min_corr=min_corr,
            min_snr=min_snr,
            fill_holes=fill_holes,
            tile_nodes=tile_nodes,
            scheduler=scheduler,
            work_dir=work_dir,
            method=method,
            prefilter=prefilter,
            prefilter_sigma_px=highpass_sigma_px,
            wallis_window_px=wallis_window_px,
            pyramid_levels=pyramid_levels,
            retry_chip_px=retry_chip_px,
            retry_min_snr=retry_min_snr,
            prior_vx=prior_vx,
            prior_vy=prior_vy,
        )
    except GlacierflowError as exc:
        _fail(exc)
        return
    _print_summary(ds, paths)


def _print_summary(ds, paths) -> None:
    import numpy as np

    v = ds["v"].values
    ok = np.isfinite(v)
    click.echo(
        f"{ds.attrs['ref_time'][:10]} -> {ds.attrs['sec_time'][:10]} "
        f"({ds.attrs['dt_days']:.2f} days, {ds.attrs['sensor']}): "
        f"{ok.sum()} of {v.size} nodes valid ({ok.mean():.0%})"
    )
    if ok.any():
        p50, p95 = np.percentile(v[ok], [50, 95])
        click.echo(f"speed median {p50:.1f} m/yr, 95th percentile {p95:.1f} m/yr")
    attrs = ds.attrs
    if "quality" in ds.data_vars:
        flagged = int((ds["quality"].values != 0).sum())
        click.echo(f"outliers: {flagged} nodes removed or filled (see the quality band)")
    if attrs.get("coreg_method", "none") != "none":
        click.echo(
            f"co-registration ({attrs['coreg_method']}, on {attrs.get('stable_source', '?')}): "
            f"dx {attrs['coreg_dx_px']:+.3f} +/- {attrs['coreg_dx_err_px']:.3f} px, "
            f"dy {attrs['coreg_dy_px']:+.3f} +/- {attrs['coreg_dy_err_px']:.3f} px"
        )
    if attrs.get("stable_nodes"):
        click.echo(
            f"stable ground: {attrs['stable_nodes']} nodes, std vx "
            f"{attrs['stable_vx_std_m_per_yr']:.1f} m/yr, vy "
            f"{attrs['stable_vy_std_m_per_yr']:.1f} m/yr"
        )
    for name, path in paths.items():
        click.echo(f"  {name:10s} {path}")


@cli.command()
@click.option(
    "-o",
    "--out",
    "out_dir",
    default=Path("demo_output"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Output folder.",
)
@click.option(
    "--workers", default=1, show_default=True, type=_positive, help="Threads used for matching."
)
def demo(out_dir: Path, workers: int) -> None:
    """Track the bundled Landsat 8 pair of Yahtse Glacier, Alaska (2016-07-18 / 2016-08-03)."""
    from glacierflow.demo import run_demo

    click.echo("Yahtse Glacier, Alaska: Landsat 8 OLI band 8, 2016-07-18 and 2016-08-03")
    click.echo("(Landsat-8 images courtesy of the U.S. Geological Survey)")
    try:
        ds, paths, stats = run_demo(out_dir, workers=workers)
    except GlacierflowError as exc:
        _fail(exc)
        return
    _print_summary(ds, paths)
    if stats["tongue_speed_p95_m_per_day"] is not None:
        click.echo(
            f"lower tongue: peak speed {stats['tongue_speed_p95_m_per_day']:.1f} m/day "
            f"(95th percentile), median offset {stats['tongue_offset_median_px']:.1f} px in "
            f"{ds.attrs['dt_days']:.1f} days, towards {stats['tongue_direction_deg']:.0f} deg"
        )
    if stats["stable_offset_median_px"] is not None:
        click.echo(
            f"stable rock: median offset {stats['stable_offset_median_px']:.3f} px "
            f"over {stats['stable_nodes']} nodes"
        )


@cli.command()
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
def publish(products_dir: Path, meta_path: Path, catalog_dir: Path, strict: bool) -> None:
    """Publish the products in PRODUCTS_DIR as a dataset of a STAC catalog."""
    from glacierflow.portal.catalog import publish as publish_dataset

    try:
        result = publish_dataset(products_dir, meta_path, catalog_dir, strict=strict)
    except GlacierflowError as exc:
        _fail(exc)
        return
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


@cli.command()
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
def serve(catalog_dir: Path, host: str, port: int) -> None:
    """Serve the catalog as a read-only web portal and JSON API."""
    from glacierflow.portal.app import serve as serve_portal

    click.echo(f"glacierflow portal for {catalog_dir} on http://{host}:{port}/ (Ctrl-C stops)")
    try:
        serve_portal(catalog_dir, host=host, port=port)
    except GlacierflowError as exc:
        _fail(exc)


@cli.command("run")
@click.argument("project_file", metavar="PROJECT.toml", type=click.Path(path_type=Path))
@click.option(
    "--workers",
    default=None,
    type=_positive,
    help="Processes used for matching [default: the project's, else 1; with "
    "--concurrent-pairs, the number of CPUs, shared out between the pairs running at once].",
)
@click.option(
    "--concurrent-pairs",
    default=None,
    type=_positive,
    metavar="N",
    help="Pairs processed at once on local worker processes [default: the project's "
    "[matching] concurrent_pairs, else 1]. The products are the same as one pair at a time.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    envvar="DASK_SCHEDULER_ADDRESS",
    help="Address of a running dask.distributed scheduler: every pair is one task on its "
    "workers, which must see the scenes and the output folder at the same paths "
    "[default: DASK_SCHEDULER_ADDRESS].",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars over the pairs and each pair's nodes (default: when stderr is a terminal).",
)
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
def run_command(
    project_file: Path,
    workers: int | None,
    concurrent_pairs: int | None,
    scheduler: str | None,
    progress: bool | None,
    no_report: bool,
) -> None:
    """Process every pair of a project, then write the annual products and the report.

    Pairs whose products are already complete are kept, so an interrupted run resumes. Pairs
    run one after another, N at a time with --concurrent-pairs N, or on a Dask cluster with
    --scheduler ADDRESS; the annual products are composed once every pair is done.
    """
    from glacierflow.project import run_project

    try:
        result = run_project(
            project_file,
            workers=workers,
            concurrent_pairs=concurrent_pairs,
            scheduler=scheduler,
            report=not no_report,
            progress=progress,
            echo=click.echo,
        )
    except GlacierflowError as exc:
        _fail(exc)
        return
    click.echo(
        f"done: {len(result.processed)} pair(s) tracked, {len(result.skipped)} kept; "
        f"{len(result.annual_paths)} annual product(s) in {result.project.output}"
    )


@cli.command("search")
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
@click.option(
    "-o",
    "--out",
    "out_path",
    default=Path("scenes.csv"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="The scene list to write (CSV; name it in a project file as [scenes] list).",
)
def search_command(
    bbox: tuple[float, float, float, float],
    start: str,
    end: str,
    collection: str,
    max_cloud: float | None,
    platform: str | None,
    url: str | None,
    out_path: Path,
) -> None:
    """Find scenes in a STAC API and write a scene list for a project file."""
    from glacierflow.search import DEFAULT_STAC_URL, search_scenes, write_scene_list

    try:
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
    except GlacierflowError as exc:
        _fail(exc)
        return
    for scene in found:
        cloud = "?" if scene.cloud_cover is None else f"{scene.cloud_cover:g}"
        click.echo(
            f"{scene.datetime[:10]}  {scene.scene_id}  path/row {scene.wrs_path}/{scene.wrs_row}"
            f"  cloud {cloud} %"
        )
    click.echo(f"{len(found)} scene(s) written to {out_path}")


def main() -> None:
    """Entry point of the ``glacierflow`` script."""
    cli()


if __name__ == "__main__":
    main()
