"""Pictures and the HTML report: labelled axes and units, common scales, one self-contained page."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine
from matplotlib.colors import LogNorm
from pyproj import CRS

from glacierflow.plot import (
    annual_map_figure,
    change_map_figure,
    glacier_series_figure,
    profile_figure,
    save_figure,
    speed_floor,
    speed_scale,
)
from glacierflow.report import render_report
from glacierflow.stack import Grid, Period, composite

UTM = CRS.from_epsg(32643).to_wkt()
GRID = Grid(UTM, Affine(60, 0, 540000, 0, -60, 3960000), (50, 80))


def _pair(vx: float, start: str, end: str) -> xr.Dataset:
    rows, cols = np.mgrid[0:50, 0:80]
    speed = vx * np.exp(-(((rows - 25) / 10.0) ** 2))
    ds = xr.Dataset(
        {
            "vx": (("y", "x"), speed.astype(np.float32)),
            "vy": (("y", "x"), (0.2 * speed).astype(np.float32)),
            "v_error": (("y", "x"), np.full((50, 80), 3.0, np.float32)),
            "v": (("y", "x"), np.hypot(speed, 0.2 * speed).astype(np.float32)),
        },
        coords=GRID.coords(),
    )
    ds.attrs.update(
        GRID.attrs(),
        ref_time=f"{start}T00:00:00+00:00",
        sec_time=f"{end}T00:00:00+00:00",
        dt_days=336.0,
        stable_nodes=1200,
        stable_vx_nmad_m_per_yr=6.5,
        stable_vy_nmad_m_per_yr=7.1,
        stable_vx_rmse_m_per_yr=8.0,
        stable_vy_rmse_m_per_yr=8.8,
        stable_v_error_median_m_per_yr=6.9,
        coreg_dx_px=0.12,
        coreg_dy_px=-0.3,
    )
    return ds


def _composites() -> list[xr.Dataset]:
    out = []
    for k, year in enumerate((1999, 2000)):
        period = Period(
            year, datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
        )
        pair = _pair(100.0 * (1 + k), f"{year}-01-10", f"{year}-12-20")
        comp = composite([pair], [1.0], GRID, period)
        comp.attrs["composite_assign"] = "overlap"
        out.append(comp)
    return out


def test_annual_maps_share_one_scale_and_are_labelled():
    comps = _composites()
    vmax = speed_scale(comps)
    assert vmax == 200.0  # a round number near the 99th percentile of both years
    vmin = speed_floor(comps)
    assert vmin == 2.0  # the composites' v_error (3 m/yr) rounded down to 1, 2, 5 x 10^k
    arrows = []
    for comp in comps:
        fig = annual_map_figure(comp, vmax=vmax, vmin=vmin)
        ax, cax = fig.axes
        assert ax.get_xlabel() == "easting (km), WGS 84 / UTM zone 43N"
        assert ax.get_ylabel() == "northing (km)"
        assert cax.get_ylabel().startswith("speed (m/yr, log scale")
        norm = cax._colorbar.norm
        assert isinstance(norm, LogNorm) and (norm.vmin, norm.vmax) == (2.0, 200.0)
        title = ax.get_title(loc="left")
        assert str(comp.attrs["year"]) in title and "1 pair" in title
        assert "Δt 344 days" in title or "Δt 345 days" in title  # 01-10 to 12-20
        assert "scale-bar" in [a.get_gid() for a in ax.artists]
        assert "north-arrow" in [t.get_gid() for t in ax.texts]
        (q,) = [c for c in ax.collections if c.get_gid() == "flow-arrows"]
        arrows.append(q)
    # One arrow scale for every year: the same speed, the same length.
    assert arrows[0].scale == arrows[1].scale


def test_change_map_is_symmetric_and_labelled():
    before, after = _composites()
    fig = change_map_figure(before, after)
    ax, bar = fig.axes
    low, high = bar.get_ylim()
    assert low == -high and high > 0
    assert "m/yr" in bar.get_ylabel() and "2000 − 1999" in bar.get_ylabel()
    assert "1999 to 2000" in ax.get_title(loc="left")


def test_profile_and_series_figures(tmp_path):
    profile = pd.DataFrame(
        {
            "line_id": "L1",
            "name": "Baltoro main trunk",
            "year": np.repeat([1999, 2000], 50),
            "distance_m": np.tile(np.arange(50) * 1000.0, 2),
            "v": np.r_[np.linspace(20, 180, 50), np.linspace(25, 200, 50)],
            "v_error": 7.0,
        }
    )
    fig = profile_figure(profile)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "speed (m/yr)" and "(km)" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1999", "2000"]
    assert "Baltoro main trunk" in ax.get_title(loc="left")
    stats = pd.DataFrame(
        {
            "glacier_id": ["A", "A", "B", "B"],
            "name": ["Alpha", "Alpha", "", ""],
            "year": [1999, 2000, 1999, 2000],
            "area_km2": [10.0, 10.0, 5.0, 5.0],
            "v_mean": [50.0, 60.0, 20.0, 21.0],
            "v_mean_error": [2.0, 2.0, 1.0, 1.0],
        }
    )
    fig = glacier_series_figure(stats)
    (ax,) = fig.axes
    assert "m/yr" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["Alpha (A)", "B"]
    path = save_figure(fig, tmp_path / "series.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_is_one_self_contained_page():
    comps = _composites()
    pairs = {"19990110_19991220": _pair(100.0, "1999-01-10", "1999-12-20")}
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    stats = pd.DataFrame(
        {
            "glacier_id": ["RGI60-14.00001"],
            "name": ["<script>alert(1)</script>"],
            "year": [1999],
            "area_km2": [12.5],
            "valid_fraction": [0.9],
            "v_mean": [55.0],
            "v_mean_error": [1.5],
            "v_median": [50.0],
            "v_median_error": [1.9],
            "v_max": [120.0],
            "v_max_error": [6.0],
        }
    )
    surges = pd.DataFrame(
        {
            "glacier_id": ["RGI60-14.00001"],
            "name": ["South Skamri"],
            "year_from": [1999],
            "year_to": [2000],
            "reach_area_km2": [3.2],
            "reach_length_km": [4.1],
            "ratio_median": [2.4],
            "v_from_median": [60.0],
            "v_to_median": [145.0],
            "lat": [36.0],
            "lon": [76.0],
        }
    )
    html = render_report(
        project_name="Karakoram & co",
        settings_text='name = "x"\n[grid]\ncrs = "EPSG:32643" # <b>',
        pairs=pairs,
        composites=comps,
        images={"map_1999": png, "map_2000": png, "change_1999_2000": png, "extra": png},
        stats=stats,
        surges=surges,
        grid_text="EPSG:32643, 60 m",
    )
    assert html.startswith("<!DOCTYPE html>")
    # Self-contained: no external script, style sheet, image or font.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)
    assert "<script" not in html.replace("&lt;script&gt;", "")
    assert html.count("data:image/png;base64,") == 4
    assert base64.b64encode(png).decode() in html
    assert "Karakoram &amp; co" in html
    assert "# &lt;b&gt;" in html  # the settings, escaped
    assert "6.5" in html and "7.1" in html  # stable-ground NMAD of the pair
    assert "South Skamri" in html and "2.40" in html
    assert "1999-01-10/1999-12-20 (100 %)" in html


def test_change_map_needs_matching_grids():
    before, after = _composites()
    smaller = after.isel(x=slice(0, 40))
    from glacierflow.errors import InputError

    with pytest.raises(InputError, match="different grids"):
        change_map_figure(before, smaller)
