"""The ``glacierflow`` command line: parse, call the library, print.

Any :class:`~glacierflow.errors.GlacierflowError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import logging
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
@click.argument("ref", type=click.Path(path_type=Path))
@click.argument("sec", type=click.Path(path_type=Path))
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
    "--subpixel",
    default="lanczos",
    show_default=True,
    type=click.Choice(["lanczos", "cubic", "parabola", "gaussian"]),
    help="Sub-pixel peak estimator.",
)
@click.option(
    "--workers", default=1, show_default=True, type=_positive, help="Threads used for matching."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal).",
)
def track(
    ref: Path,
    sec: Path,
    out_dir: Path,
    chip_px: int,
    search_px: int,
    step_px: int,
    ref_date: str | None,
    sec_date: str | None,
    band: int | None,
    subpixel: str,
    workers: int,
    progress: bool | None,
) -> None:
    """Track features from REF to SEC and write velocity products to OUT."""
    from glacierflow.track import track_to_products

    try:
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


def main() -> None:
    """Entry point of the ``glacierflow`` script."""
    cli()


if __name__ == "__main__":
    main()
