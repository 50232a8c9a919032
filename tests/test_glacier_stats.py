"""Glacier analysis on composites: statistics with errors, trends, profiles, surge flags.

Composites are built by hand on UTM grids with known speeds, so every number has an exact
expected value; real outlines (RGI 6.0 of Everest, GLIMS Baltoro with its OGGM centrelines)
check the reading of ids, names and lines.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr
from affine import Affine
from pyproj import CRS
from shapely.geometry import box

from glacierflow.errors import InputError
from glacierflow.glaciers import (
    MEDIAN_ERROR_FACTOR,
    glacier_statistics,
    sample_profiles,
    speed_trends,
)
from glacierflow.outlines import glacier_table, read_glacier_table, read_lines, read_outlines
from glacierflow.surges import detect_surges

UTM43 = CRS.from_epsg(32643).to_wkt()
EVEREST_RGI = Path(__file__).parent / "data" / "everest" / "15_rgi60_glacier_outlines.gpkg"


def composite(year: int, v: np.ndarray, err, transform: Affine, chip_m: float = 0.0):
    """A composite with eastward flow of speed ``v`` (m/yr) and error ``err``."""
    v = np.asarray(v, dtype=np.float32)
    ny, nx = v.shape
    x = transform.c + transform.a * (np.arange(nx) + 0.5)
    y = transform.f + transform.e * (np.arange(ny) + 0.5)
    e = np.broadcast_to(np.asarray(err, np.float32), v.shape).copy()
    count = np.isfinite(v).astype(np.int16)
    ds = xr.Dataset(
        {
            "vx": (("y", "x"), v),
            "vy": (("y", "x"), np.zeros_like(v)),
            "v": (("y", "x"), v),
            "v_error": (("y", "x"), np.where(np.isfinite(v), e, np.nan).astype(np.float32)),
            "count": (("y", "x"), count),
        },
        coords={"x": x, "y": y},
    )
    ds.attrs.update(
        year=year,
        crs_wkt=UTM43,
        transform=list(transform.to_gdal()),
        mid_datetime=f"{year}-07-02T12:00:00+00:00",
        chip_m=chip_m,
    )
    return ds


T = Affine(100, 0, 500000, 0, -100, 4000000)  # 100 m cells


def two_glaciers() -> gpd.GeoDataFrame:
    a = box(500000 + 1000, 4000000 - 3000, 500000 + 3000, 4000000 - 1000)  # 20 x 20 cells
    b = box(500000 + 4000, 4000000 - 3000, 500000 + 6000, 4000000 - 1000)
    outlines = gpd.GeoDataFrame(
        {"RGIId": ["RGI60-14.00001", "RGI60-14.00002"], "Name": ["Alpha", None]},
        geometry=[a, b],
        crs=UTM43,
    )
    return glacier_table(outlines)


def test_statistics_of_known_speeds():
    glaciers = two_glaciers()
    assert list(glaciers["name"]) == ["Alpha", ""]
    assert glaciers["area_km2"].tolist() == pytest.approx([4.0, 4.0])
    v = np.full((40, 70), np.nan)
    rows, cols = np.mgrid[0:40, 0:70]
    v[10:30, 10:30] = 50.0 + cols[10:30, 10:30]  # Alpha: 60 .. 79 m/yr along x
    v[10:30, 40:60] = 100.0  # the second glacier, with a gap of 100 cells
    v[10:15, 40:60] = np.nan
    comp = composite(2001, v, 4.0, T, chip_m=500.0)
    stats = glacier_statistics([comp], glaciers).set_index("glacier_id")
    a = stats.loc["RGI60-14.00001"]
    assert a["cells"] == 400 and a["valid_fraction"] == 1.0
    assert a["v_mean"] == pytest.approx(69.5)
    assert a["v_median"] == pytest.approx(69.5)
    assert a["v_max"] == pytest.approx(79.0)
    assert a["v_max_error"] == pytest.approx(4.0)
    # 4 km^2 over chips of 0.25 km^2: 16 independent samples.
    assert a["v_mean_error"] == pytest.approx(4.0 / math.sqrt(16))
    assert a["v_median_error"] == pytest.approx(MEDIAN_ERROR_FACTOR * 1.0)
    b = stats.loc["RGI60-14.00002"]
    assert b["valid_cells"] == 300 and b["valid_fraction"] == pytest.approx(0.75)
    assert b["v_mean"] == pytest.approx(100.0)
    assert b["decimal_year"] == pytest.approx(2001.5, abs=0.01)
    # Without a chip size the errors count as fully correlated.
    comp.attrs["chip_m"] = 0.0
    full = glacier_statistics([comp], glaciers).set_index("glacier_id")
    assert full.loc["RGI60-14.00001", "v_mean_error"] == pytest.approx(4.0)


def test_an_isolated_bad_cell_does_not_set_the_maximum():
    glaciers = two_glaciers()
    v = np.full((40, 70), 30.0)
    err = np.full((40, 70), 2.0)
    v[20, 20], err[20, 20] = 300.0, 40.0  # a bad match with a large error
    stats = glacier_statistics([composite(2000, v, err, T)], glaciers).set_index("glacier_id")
    assert stats.loc["RGI60-14.00001", "v_max"] == pytest.approx(30.0)


def test_trends_are_weighted_least_squares():
    glaciers = two_glaciers()
    comps = []
    for k, year in enumerate((1999, 2000, 2001, 2002)):
        v = np.full((40, 70), np.nan)
        v[10:30, 10:30] = 100.0 + 5.0 * k  # +5 m/yr per year
        v[10:30, 40:60] = 50.0
        comps.append(composite(year, v, 2.0, T))
    trends = speed_trends(glacier_statistics(comps, glaciers)).set_index("glacier_id")
    a = trends.loc["RGI60-14.00001"]
    assert a["trend"] == pytest.approx(5.0, rel=1e-3)
    assert a["trend_percent_per_yr"] == pytest.approx(5.0 / 107.5 * 100, rel=1e-3)
    # Errors of 2 m/yr (fully correlated) at 4 years one year apart: 2 / sqrt(5).
    assert a["trend_error"] == pytest.approx(2.0 / math.sqrt(5.0), rel=1e-3)
    assert a["significant"]
    b = trends.loc["RGI60-14.00002"]
    assert b["trend"] == pytest.approx(0.0, abs=1e-6) and not b["significant"]
    assert (a["first_year"], a["last_year"], a["years"]) == (1999, 2002, 4)


def _surge_series(rise: float, reach_cols: slice, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    before = np.full((40, 70), np.nan)
    before[10:30, 10:30] = 80.0
    before[10:30, 40:60] = 60.0
    after = before.copy()
    after[10:30, reach_cols] *= rise
    before += rng.normal(0, noise, before.shape)
    after += rng.normal(0, noise, after.shape)
    return [composite(2000, before, 3.0, T), composite(2001, after, 3.0, T)]


def test_a_doubling_over_a_reach_is_flagged_and_only_there():
    glaciers = two_glaciers()
    comps = _surge_series(2.3, slice(40, 50), noise=1.0)  # half of the second glacier
    surges = detect_surges(comps, glaciers)
    assert list(surges["glacier_id"]) == ["RGI60-14.00002"]
    row = surges.iloc[0]
    assert (row["year_from"], row["year_to"]) == (2000, 2001)
    assert row["reach_area_km2"] == pytest.approx(2.0, rel=0.02)  # 20 x 10 cells of 0.01 km^2
    assert row["reach_length_km"] == pytest.approx(2.0)
    assert row["ratio_median"] == pytest.approx(2.3, rel=0.02)
    assert row["reach_fraction"] == pytest.approx(0.5, rel=0.02)


def test_no_flag_for_a_smaller_rise_a_tiny_reach_or_a_slowdown():
    glaciers = two_glaciers()
    assert detect_surges(_surge_series(1.8, slice(40, 60)), glaciers).empty
    assert detect_surges(_surge_series(3.0, slice(40, 45)), glaciers, min_area_km2=2.0).empty
    assert detect_surges(_surge_series(0.5, slice(40, 60)), glaciers).empty


def test_no_flag_for_noise_on_still_ice():
    """Still ice: speeds are noise around zero, whose ratios are wild but not significant."""
    glaciers = two_glaciers()
    rng = np.random.default_rng(3)
    comps = []
    for year in (2000, 2001, 2002):
        v = np.abs(rng.normal(0, 3.0, (40, 70)))
        comps.append(composite(year, v, 3.0, T))
    assert detect_surges(comps, glaciers).empty


def test_surge_settings_are_checked():
    with pytest.raises(InputError, match="above 1"):
        detect_surges([], two_glaciers(), factor=1.0)


def test_rgi_ids_and_names_are_read_from_real_outlines(shared_data):
    rgi = glacier_table(read_outlines(EVEREST_RGI, "EPSG:32645"))
    assert rgi["glacier_id"].str.startswith("RGI60-15.").all()
    assert rgi["area_km2"].sum() == pytest.approx(
        gpd.read_file(EVEREST_RGI)["Area"].sum(), rel=0.02
    )
    baltoro = glacier_table(
        read_outlines(shared_data / "karakoram_rgi_dem" / "baltoro_wgs84.shp", "EPSG:32643")
    )
    assert list(baltoro["glacier_id"]) == ["BALTORO"]
    assert baltoro["area_km2"].iloc[0] == pytest.approx(551.9, rel=0.01)
    with pytest.raises(InputError, match="no attribute 'GLAC_ID'"):
        glacier_table(read_outlines(EVEREST_RGI, "EPSG:32645"), id_field="GLAC_ID")
    # Reading the table straight from the file gives the same glaciers, and names the file.
    direct = read_glacier_table(EVEREST_RGI, "EPSG:32645")
    assert list(direct["glacier_id"]) == list(rgi["glacier_id"])
    np.testing.assert_array_equal(direct["area_km2"], rgi["area_km2"])
    with pytest.raises(InputError, match="no attribute 'GLAC_ID'") as exc_info:
        read_glacier_table(EVEREST_RGI, "EPSG:32645", id_field="GLAC_ID")
    assert EVEREST_RGI.name in str(exc_info.value)


def test_profile_along_the_baltoro_centreline(shared_data):
    path = shared_data / "karakoram_rgi_dem" / "centerlines_baltoro_wgs84.shp"
    main = read_lines(path, "EPSG:32643", where={"MAIN": 1})
    assert len(main) == 1
    line = main.geometry.iloc[0]
    # OGGM measures its lines in a local projection; UTM 43N lengths agree within 0.5 %.
    assert line.length == pytest.approx(63202.8, rel=0.005)
    x0, y0, x1, y1 = line.bounds
    transform = Affine(60, 0, math.floor(x0 / 60) * 60 - 600, 0, -60, math.ceil(y1 / 60) * 60 + 600)
    ny = int((transform.f - (y0 - 600)) / 60) + 1
    nx = int((x1 + 600 - transform.c) / 60) + 1
    rows, cols = np.mgrid[0:ny, 0:nx]
    xs = transform.c + 60 * (cols + 0.5)
    ys = transform.f - 60 * (rows + 0.5)
    # A speed that is a linear function of position: bilinear sampling is exact.
    v = 0.002 * (xs - x0) + 0.001 * (ys - y0) + 10.0
    comps = [composite(2000, v, 2.0, transform), composite(2001, 2 * v, 2.0, transform)]
    prof = sample_profiles(comps, main, spacing_m=500.0)
    assert set(prof["year"]) == {2000, 2001}
    first = prof[prof["year"] == 2000]
    assert first["distance_m"].iloc[-1] == pytest.approx(63000.0)
    expected = 0.002 * (first["x"] - x0) + 0.001 * (first["y"] - y0) + 10.0
    np.testing.assert_allclose(first["v"], expected, rtol=1e-4)
    second = prof[prof["year"] == 2001]
    np.testing.assert_allclose(second["v"].to_numpy(), 2 * first["v"].to_numpy(), rtol=1e-5)
    # The main trunk starts at the head, in the east, and runs west to the terminus.
    assert first["lon"].iloc[0] > first["lon"].iloc[-1]
    assert first["lat"].between(35.6, 35.9).all()


def test_read_lines_refuses_unknown_attributes_and_polygons(shared_data, tmp_path):
    path = shared_data / "karakoram_rgi_dem" / "centerlines_baltoro_wgs84.shp"
    with pytest.raises(InputError, match="no attribute 'TRUNK'"):
        read_lines(path, "EPSG:32643", where={"TRUNK": 1})
    with pytest.raises(InputError, match="holds no lines"):
        read_lines(shared_data / "karakoram_rgi_dem" / "baltoro_wgs84.shp", "EPSG:32643")
    with pytest.raises(InputError, match="not found"):
        read_lines(tmp_path / "none.shp", "EPSG:32643")
