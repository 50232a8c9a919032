"""What ``glacierflow track`` and ``glacierflow demo`` print about a product."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import xarray as xr


def print_summary(ds: xr.Dataset, paths: dict[str, Path]) -> None:
    """Dates, valid nodes, speeds, outliers, co-registration, stable ground and the files."""
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
