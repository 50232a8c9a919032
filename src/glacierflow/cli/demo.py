"""``glacierflow demo``: the bundled Yahtse pair, end to end."""

from __future__ import annotations

from pathlib import Path

import click

from glacierflow.cli.options import OVERWRITE, WORKERS
from glacierflow.cli.paths import out_option


@click.command("demo")
@out_option("out_dir", "Output folder.", default=Path("demo_output"), show_default=True)
@click.option("--workers", **WORKERS)
@click.option("--overwrite", **OVERWRITE)
def command(out_dir: Path, workers: int, overwrite: bool) -> None:
    """Track the bundled Landsat 8 pair of Yahtse Glacier, Alaska (2016-07-18 / 2016-08-03).

    \b
    Examples:
      glacierflow demo
      glacierflow demo -o demo_output --overwrite --workers 2
    """
    from glacierflow.cli.summary import print_summary
    from glacierflow.demo import run_demo

    click.echo("Yahtse Glacier, Alaska: Landsat 8 OLI band 8, 2016-07-18 and 2016-08-03")
    click.echo("(Landsat-8 images courtesy of the U.S. Geological Survey)")
    ds, paths, stats = run_demo(out_dir, workers=workers, overwrite=overwrite)
    print_summary(ds, paths)
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
