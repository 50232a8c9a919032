"""Prior velocity rasters (m/yr) to per-node search centres (pixels)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS, Proj

from glacierflow.errors import InputError
from glacierflow.prior import prior_offsets, prior_offsets_from_grids, velocity_to_offsets

PAIR_CRS = CRS.from_epsg(32607)
#: A 15 m north-up pair grid near Yahtse Glacier (UTM 7N).
PAIR_TRANSFORM = Affine(15.0, 0.0, 500_000.0, 0.0, -15.0, 6_700_000.0)


def _write(path, data, transform, crs, nodata=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as ds:
        ds.write(data.astype(np.float32), 1)


def test_velocity_to_offsets_north_up() -> None:
    """15 m pixels, one day: 15 * 365.25 m/yr east is one pixel right; north is one pixel up."""
    v = 15.0 * 365.25
    dx, dy = velocity_to_offsets(np.array([v, 0.0]), np.array([0.0, v]), PAIR_TRANSFORM, 1.0)
    np.testing.assert_allclose(dx, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(dy, [0.0, -1.0], atol=1e-12)
    # A rotated grid (rows running north-east) turns the same vector.
    rot = PAIR_TRANSFORM @ Affine.rotation(30.0)
    dx, dy = velocity_to_offsets(v, 0.0, rot, 1.0)
    np.testing.assert_allclose(np.hypot(dx, dy), 1.0)


def test_prior_offsets_same_crs(tmp_path) -> None:
    """An ITS_LIVE-like 120 m mosaic over the pair: 730.5 m/yr east, 365.25 m/yr south."""
    prior_transform = Affine(120.0, 0.0, 499_000.0, 0.0, -120.0, 6_701_000.0)
    vx = np.full((60, 60), 730.5)
    vy = np.full((60, 60), -365.25)
    vx[20:30, 20:30] = -32767.0  # nodata hole
    _write(tmp_path / "vx.tif", vx, prior_transform, PAIR_CRS, nodata=-32767.0)
    _write(tmp_path / "vy.tif", vy, prior_transform, PAIR_CRS, nodata=-32767.0)
    rows = np.arange(20, 400, 40)
    cols = np.arange(20, 400, 40)
    dx, dy = prior_offsets(
        tmp_path / "vx.tif",
        tmp_path / "vy.tif",
        crs=PAIR_CRS,
        transform=PAIR_TRANSFORM,
        rows_px=rows,
        cols_px=cols,
        dt_days=16.0,
    )
    assert dx.shape == (rows.size, cols.size)
    # 730.5 m/yr for 16 days is 32 m, 2.133 px right; 16 m south is 1.067 px down.
    ok = np.isfinite(dx)
    np.testing.assert_allclose(dx[ok], 730.5 * 16 / 365.25 / 15.0, rtol=1e-6)
    np.testing.assert_allclose(dy[ok], 365.25 * 16 / 365.25 / 15.0, rtol=1e-6)
    # Nodes on the nodata hole (prior pixels 20..29) have no prior; nodes well off it have one.
    pc = (500_000.0 + 15.0 * (cols + 0.5) - 499_000.0) / 120.0 - 0.5  # prior column coordinate
    pr = (6_701_000.0 - 6_700_000.0 + 15.0 * (rows + 0.5)) / 120.0 - 0.5
    on = (pr[:, None] > 20.5) & (pr[:, None] < 28.5) & (pc[None, :] > 20.5) & (pc[None, :] < 28.5)
    off = (np.abs(pr[:, None] - 24.5) > 6.5) | (np.abs(pc[None, :] - 24.5) > 6.5)
    assert on.any() and off.any()
    assert not ok[on].any()
    assert ok[off].all()


def test_prior_in_another_crs_is_turned_with_the_grid(tmp_path) -> None:
    """A prior in UTM zone 6 over a zone-7 pair: the vectors turn by the meridian convergence."""
    crs6 = CRS.from_epsg(32606)
    lon, lat = Proj(PAIR_CRS)(506_000.0, 6_697_000.0, inverse=True)
    x6, y6 = Proj(crs6)(lon, lat)
    prior_transform = Affine(100.0, 0.0, x6 - 20_000.0, 0.0, -100.0, y6 + 20_000.0)
    speed = 1000.0
    _write(tmp_path / "vx.tif", np.full((400, 400), speed), prior_transform, crs6)
    _write(tmp_path / "vy.tif", np.zeros((400, 400)), prior_transform, crs6)
    dx, dy = prior_offsets(
        tmp_path / "vx.tif",
        tmp_path / "vy.tif",
        crs=PAIR_CRS,
        transform=PAIR_TRANSFORM,
        rows_px=np.array([200]),
        cols_px=np.array([400]),
        dt_days=365.25,
    )
    # Grid north of each zone differs from true north by its meridian convergence; east in zone
    # 6 is east turned by the difference of the two convergences in zone 7's grid.
    conv6 = Proj(crs6).get_factors(lon, lat).meridian_convergence
    conv7 = Proj(PAIR_CRS).get_factors(lon, lat).meridian_convergence
    angle = np.degrees(np.arctan2(-dy[0, 0], dx[0, 0]))  # map angle, counter-clockwise from east
    assert abs(conv7 - conv6) > 3.0  # the test means something
    assert abs(angle - (conv7 - conv6)) < 0.05 or abs(angle + (conv7 - conv6)) < 0.05
    assert abs(np.hypot(dx[0, 0], dy[0, 0]) * 15.0 - speed) < 0.01 * speed
    # Naively resampled components would not turn at all.
    assert abs(angle) > 3.0


def test_prior_that_misses_the_pair_is_an_input_error(tmp_path) -> None:
    far = Affine(100.0, 0.0, 100_000.0, 0.0, -100.0, 5_000_000.0)
    _write(tmp_path / "vx.tif", np.ones((10, 10)), far, PAIR_CRS)
    _write(tmp_path / "vy.tif", np.ones((10, 10)), far, PAIR_CRS)
    with pytest.raises(InputError, match="does not cover"):
        prior_offsets(
            tmp_path / "vx.tif",
            tmp_path / "vy.tif",
            crs=PAIR_CRS,
            transform=PAIR_TRANSFORM,
            rows_px=np.array([10]),
            cols_px=np.array([10]),
            dt_days=16.0,
        )
    _write(tmp_path / "vy2.tif", np.ones((12, 10)), far, PAIR_CRS)
    with pytest.raises(InputError, match="not on one grid"):
        prior_offsets(
            tmp_path / "vx.tif",
            tmp_path / "vy2.tif",
            crs=PAIR_CRS,
            transform=PAIR_TRANSFORM,
            rows_px=np.array([10]),
            cols_px=np.array([10]),
            dt_days=16.0,
        )


def test_prior_from_arrays_equals_prior_from_files(tmp_path) -> None:
    """The math without files: arrays on a UTM 6 grid give the offsets the rasters give."""
    crs6 = rasterio.crs.CRS.from_epsg(32606)
    lon, lat = Proj(PAIR_CRS)(506_000.0, 6_697_000.0, inverse=True)
    x6, y6 = Proj(crs6)(lon, lat)
    prior_transform = Affine(100.0, 0.0, x6 - 20_000.0, 0.0, -100.0, y6 + 20_000.0)
    yy, xx = np.mgrid[0:400, 0:400]
    vx = (300.0 + xx).astype(np.float32)
    vy = (-50.0 - 0.5 * yy).astype(np.float32)
    vx[:50, :50] = np.nan
    _write(tmp_path / "vx.tif", vx, prior_transform, crs6)
    _write(tmp_path / "vy.tif", vy, prior_transform, crs6)
    nodes = {
        "crs": rasterio.crs.CRS.from_epsg(32607),
        "transform": PAIR_TRANSFORM,
        "rows_px": np.arange(0, 600, 37),
        "cols_px": np.arange(0, 800, 41),
        "dt_days": 48.0,
    }
    from_files = prior_offsets(tmp_path / "vx.tif", tmp_path / "vy.tif", **nodes)
    from_arrays = prior_offsets_from_grids(
        vx.astype(np.float64), vy, prior_transform=prior_transform, prior_crs=crs6, **nodes
    )
    assert np.isfinite(from_files[0]).sum() > 100
    for a, b in zip(from_files, from_arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="dt_days"):
        prior_offsets_from_grids(
            vx, vy, prior_transform=prior_transform, prior_crs=crs6, **{**nodes, "dt_days": 0}
        )


def test_prior_raster_without_crs_or_in_degrees_is_refused(tmp_path) -> None:
    _write(tmp_path / "vx.tif", np.ones((10, 10)), PAIR_TRANSFORM, None)
    _write(tmp_path / "vy.tif", np.ones((10, 10)), Affine(0.01, 0, -140, 0, -0.01, 60), "EPSG:4326")
    nodes = {
        "crs": PAIR_CRS,
        "transform": PAIR_TRANSFORM,
        "rows_px": np.array([10]),
        "cols_px": np.array([10]),
        "dt_days": 16.0,
    }
    with pytest.raises(InputError, match="prior vx raster has no CRS") as exc_info:
        prior_offsets(tmp_path / "vx.tif", tmp_path / "vy.tif", **nodes)
    assert "vx.tif" in str(exc_info.value)
    with pytest.raises(InputError, match="prior vx raster is in a geographic CRS"):
        prior_offsets(tmp_path / "vy.tif", tmp_path / "vy.tif", **nodes)
    with pytest.raises(InputError, match="cannot read the prior vx raster"):
        prior_offsets(tmp_path / "missing.tif", tmp_path / "vy.tif", **nodes)
