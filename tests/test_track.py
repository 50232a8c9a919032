"""The whole pipeline on the real Yahtse pair: geometry, physics, co-registration, dates, CRS.

Yahtse Glacier's lower tongue moves about 11 px (165 m) south-south-west in the 16 days between
the two Landsat 8 scenes; the exposed rock around it does not move, apart from a real
misregistration of the pair of about (0.12, 0.21) px.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from pyproj import CRS
from rasterio.crs import CRS as RioCRS
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window

from glacierflow.demo import CLEAR_TONGUE_BOX_M, TONGUE_BOX_M, box_nodes, demo_inputs
from glacierflow.outlines import outline_mask
from glacierflow.track import track
from glacierflow.velocity import DAYS_PER_YEAR

PIXEL_M = 15.0
DT_DAYS = 16.0
#: A 600 x 600 px window (rows 300:900, cols 600:1200) holding the tongue box and some rock.
CROP = Window(col_off=600, row_off=300, width=600, height=600)


# --------------------------------------------------------------------------------------------
# Helpers


def tongue_nodes(ds: xr.Dataset) -> np.ndarray:
    """Nodes inside :data:`TONGUE_BOX_M` (image columns 900-1050, rows 600-900)."""
    x0, x1, y0, y1 = TONGUE_BOX_M
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


def outline_nodes(ds: xr.Dataset, outlines: Path) -> np.ndarray:
    """Nodes of ``ds`` whose centres lie inside the polygons of ``outlines``."""
    return outline_mask(
        outlines,
        crs=ds.attrs["crs_wkt"],
        transform=Affine.from_gdal(*ds.attrs["transform"]),
        shape=ds["v"].shape,
    )


def offset_px(ds: xr.Dataset) -> np.ndarray:
    """Offset magnitude per node, in pixels."""
    return np.hypot(ds["dx"].values, ds["dy"].values)


def bearing_deg(ds: xr.Dataset, nodes: np.ndarray) -> float:
    """Median flow bearing over ``nodes``, degrees clockwise from north."""
    ok = nodes & np.isfinite(ds["v"].values)
    vx, vy = np.median(ds["vx"].values[ok]), np.median(ds["vy"].values[ok])
    return math.degrees(math.atan2(vx, vy)) % 360.0


def window_transform(window: Window, transform: Affine) -> Affine:
    """Geotransform of ``window`` of a grid (``rasterio.windows.transform`` without ``*``)."""
    return transform @ Affine.translation(window.col_off, window.row_off)


def write_window(src: Path, dst: Path, window: Window) -> Path:
    """Copy ``window`` of ``src`` to a GeoTIFF ``dst`` with its georeferencing."""
    with rasterio.open(src) as ds:
        profile = ds.profile.copy()
        data = ds.read(1, window=window)
        profile.update(
            width=int(window.width),
            height=int(window.height),
            transform=window_transform(window, ds.transform),
        )
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data, 1)
    return dst


def copy_mtls(folder: Path) -> None:
    """Put the MTL files of the Yahtse pair in ``folder`` (found by the scene-ID prefix)."""
    for mtl in demo_inputs()[0].parent.glob("*_MTL.txt"):
        shutil.copy(mtl, folder / mtl.name)


# --------------------------------------------------------------------------------------------
# Fixtures: each full-resolution run takes about 2 s, so each is made once per module


@pytest.fixture(scope="module")
def inputs() -> tuple[Path, Path, Path]:
    return demo_inputs()


@pytest.fixture(scope="module")
def yahtse(inputs) -> xr.Dataset:  # raw offsets: no co-registration
    """The Yahtse pair tracked with the defaults, no co-registration."""
    ref, sec, _ = inputs
    return track(ref, sec, progress=False, coreg="none")


@pytest.fixture(scope="module")
def rock_halves(inputs, tmp_path_factory) -> tuple[Path, Path]:
    """The 42 rock polygons split alternately by index: (fit half, held-out half)."""
    rock = gpd.read_file(inputs[2])
    assert len(rock) == 42
    folder = tmp_path_factory.mktemp("rock")
    even = np.arange(len(rock)) % 2 == 0
    fit, held_out = folder / "rock_fit.gpkg", folder / "rock_held_out.gpkg"
    rock[even].to_file(fit)
    rock[~even].to_file(held_out)
    return fit, held_out


@pytest.fixture(scope="module")
def coregistered(inputs, rock_halves) -> xr.Dataset:
    """The Yahtse pair co-registered on one half of the rock outlines."""
    ref, sec, _ = inputs
    return track(ref, sec, progress=False, stable_mask=rock_halves[0])


# --------------------------------------------------------------------------------------------
# Metadata and geometry


def test_crs_and_time_span_come_from_the_files(yahtse):
    assert CRS.from_wkt(yahtse.attrs["crs_wkt"]).to_epsg() == 32607
    assert RioCRS.from_wkt(yahtse.attrs["crs_wkt"]).to_epsg() == 32607
    # MTL scene-centre times 20:37:06.34 and 20:37:09.46: 16 days and 3.1 s.
    assert yahtse.attrs["dt_days"] == pytest.approx(DT_DAYS + 3.12 / 86400, abs=1e-3)
    assert yahtse.attrs["ref_time"].startswith("2016-07-18T20:37:06")
    assert yahtse.attrs["sec_time"].startswith("2016-08-03T20:37:09")
    assert yahtse.attrs["ref_time_source"] == yahtse.attrs["sec_time_source"] == "MTL"
    assert yahtse.attrs["coreg_method"] == "none"


def test_node_grid_sits_on_input_pixel_centres(yahtse, inputs):
    with rasterio.open(inputs[0]) as src:
        file_transform, (rows, cols) = src.transform, src.shape
    image = Affine.from_gdal(*yahtse.attrs["image_transform"])
    nodes = Affine.from_gdal(*yahtse.attrs["transform"])
    step = yahtse.attrs["step_px"]
    chip, search = yahtse.attrs["chip_px"], yahtse.attrs["search_px"]
    assert step == 8
    # The pair grid is the file's grid, at most cut by whole pixels.
    col_off, row_off = ~file_transform @ (image.c, image.f)
    assert col_off == pytest.approx(round(col_off), abs=1e-9)
    assert row_off == pytest.approx(round(row_off), abs=1e-9)
    assert (image.a, image.b, image.d, image.e) == pytest.approx(
        (file_transform.a, file_transform.b, file_transform.d, file_transform.e)
    )
    ny, nx = yahtse["v"].shape
    col0_f, row0_f = ~file_transform @ (float(yahtse.x[0]), float(yahtse.y[0]))
    col0, row0 = math.floor(col0_f), math.floor(row0_f)
    # Every chip and search window of the node grid lies inside the image.
    half = chip // 2
    assert row0 - half - search >= 0 and col0 - half - search >= 0
    assert row0 + (ny - 1) * step + (chip - half) + search <= rows
    assert col0 + (nx - 1) * step + (chip - half) + search <= cols
    for i, j in [(0, 0), (0, nx - 1), (ny - 1, 0), (ny // 2, nx // 3), (ny - 1, nx - 1)]:
        x, y = float(yahtse.x[j]), float(yahtse.y[i])
        # The node grid transform puts output pixel centre (j + 0.5, i + 0.5) on the node.
        assert nodes @ (j + 0.5, i + 0.5) == pytest.approx((x, y), abs=1e-6)
        col_f, row_f = ~file_transform @ (x, y)
        assert col_f % 1 == pytest.approx(0.5, abs=1e-6), (i, j, col_f)
        assert row_f % 1 == pytest.approx(0.5, abs=1e-6), (i, j, row_f)
        col, row = math.floor(col_f), math.floor(row_f)
        assert (col - col0, row - row0) == (j * step, i * step)
        # The input transform applied to that pixel centre gives the node coordinates back.
        assert file_transform @ (col + 0.5, row + 0.5) == pytest.approx((x, y), abs=1e-6)


# --------------------------------------------------------------------------------------------
# Physics on the glacier


def test_lower_tongue_moves_11_px_south_south_west(yahtse):
    tongue = tongue_nodes(yahtse)
    mag = offset_px(yahtse)
    ok = tongue & np.isfinite(mag)
    assert ok.sum() >= 300, "the tongue box should hold hundreds of valid nodes"
    # On the clear lower tongue (no icefall beyond the search range, no shear margins) nearly
    # every node survives the outlier filters.
    clear = box_nodes(yahtse, CLEAR_TONGUE_BOX_M)
    assert clear.sum() >= 100
    assert np.isfinite(mag[clear]).mean() >= 0.9
    assert 10.0 <= np.median(mag[ok]) <= 13.0
    assert 180.0 <= bearing_deg(yahtse, tongue) <= 250.0


def test_speeds_follow_from_offsets_pixel_size_and_time(yahtse):
    tongue = tongue_nodes(yahtse) & np.isfinite(yahtse["v"].values)
    median_px = np.median(offset_px(yahtse)[tongue])
    expected = median_px * PIXEL_M / DT_DAYS * DAYS_PER_YEAR
    assert np.median(yahtse["v"].values[tongue]) == pytest.approx(expected, rel=0.02)
    # Components: x right is east, y down is south on this north-up grid.
    scale = PIXEL_M / yahtse.attrs["dt_days"] * DAYS_PER_YEAR
    np.testing.assert_allclose(yahtse["vx"].values, yahtse["dx"].values * scale, rtol=1e-5)
    np.testing.assert_allclose(yahtse["vy"].values, -yahtse["dy"].values * scale, rtol=1e-5)
    assert yahtse["v"].attrs["units"] == "m/yr"


# --------------------------------------------------------------------------------------------
# Stable rock and co-registration, cross-validated


def test_coregistration_on_half_the_rock_stills_the_other_half(yahtse, coregistered, rock_halves):
    fit, held_out = rock_halves
    held = outline_nodes(coregistered, held_out)
    assert held.sum() >= 100
    corrected = offset_px(coregistered)[held]
    raw = offset_px(yahtse)[held]
    assert np.isfinite(corrected).mean() > 0.9
    # Before: the pair's misregistration of about a quarter pixel; after: still rock.
    assert np.nanmedian(raw) > 0.2
    assert np.nanmedian(corrected) <= 0.2
    assert np.nanmedian(corrected) < 0.7 * np.nanmedian(raw)


def test_coregistration_reports_the_real_misregistration(yahtse, coregistered, rock_halves):
    attrs = coregistered.attrs
    assert attrs["coreg_method"] == "constant"
    assert 0.05 <= attrs["coreg_dx_px"] <= 0.2
    assert 0.12 <= attrs["coreg_dy_px"] <= 0.3
    assert attrs["coreg_nodes"] >= 100
    assert attrs["stable_source"] == rock_halves[0].name
    # The fitted shift is the raw offset of the fit half, and it is removed from every node.
    fit_nodes = outline_nodes(yahtse, rock_halves[0])
    assert attrs["coreg_dx_px"] == pytest.approx(
        np.nanmedian(yahtse["dx"].values[fit_nodes]), abs=0.05
    )
    assert attrs["coreg_dy_px"] == pytest.approx(
        np.nanmedian(yahtse["dy"].values[fit_nodes]), abs=0.05
    )
    np.testing.assert_allclose(
        coregistered["dx"].values, yahtse["dx"].values - attrs["coreg_dx_px"], atol=1e-5
    )
    np.testing.assert_allclose(
        coregistered["dy"].values, yahtse["dy"].values - attrs["coreg_dy_px"], atol=1e-5
    )
    assert 10.0 <= np.nanmedian(offset_px(coregistered)[tongue_nodes(coregistered)]) <= 13.0


# --------------------------------------------------------------------------------------------
# Order and dates


def test_swapped_inputs_give_the_same_product(yahtse, inputs):
    ref, sec, _ = inputs
    swapped = track(sec, ref, progress=False, coreg="none")
    assert swapped.attrs["dt_days"] > 0
    assert swapped.attrs["ref_file"] == ref.name
    xr.testing.assert_identical(swapped, yahtse)


def test_dates_given_override_the_metadata(yahtse, inputs):
    """Trusted (sec_date is not the MTL file's 2016-08-03: untrusted it stops, test_dates.py)."""
    from glacierflow.acquisition import trusting_given_dates

    ref, sec, _ = inputs
    with trusting_given_dates():
        ds = track(
            ref, sec, progress=False, coreg="none", ref_date="2016-07-18", sec_date="2016-08-19"
        )
    assert ds.attrs["dt_days"] == pytest.approx(32.0, abs=1e-9)
    assert ds.attrs["ref_time_source"] == ds.attrs["sec_time_source"] == "option"
    # Same images, same offsets; twice the time, half the speed.
    np.testing.assert_array_equal(ds["dx"].values, yahtse["dx"].values)
    ok = np.isfinite(yahtse["v"].values) & (yahtse["v"].values > 0)
    ratio = ds["v"].values[ok] / yahtse["v"].values[ok]
    np.testing.assert_allclose(ratio, 0.5, atol=1e-3)


# --------------------------------------------------------------------------------------------
# A secondary in another projection


@pytest.fixture(scope="module")
def reprojected_pair(inputs, tmp_path_factory) -> tuple[Path, Path]:
    """A crop of the reference (UTM 7N) and the same crop of the secondary warped to EPSG:3338."""
    ref, sec, _ = inputs
    folder = tmp_path_factory.mktemp("albers")
    copy_mtls(folder)
    ref_crop = write_window(ref, folder / "LC80630182016200LGN00_B8_crop.TIF", CROP)
    with rasterio.open(sec) as src:
        profile = src.profile.copy()
        data = src.read(1, window=CROP)
        src_transform = window_transform(CROP, src.transform)
        src_crs = src.crs
    h, w = data.shape
    west, north = src_transform @ (0, 0)
    east, south = src_transform @ (w, h)
    # The crop's footprint in Alaska Albers, on a north-up 15 m grid there (turned by several
    # degrees against the UTM grid).
    left, bottom, right, top = transform_bounds(src_crs, "EPSG:3338", west, south, east, north)
    dst_w, dst_h = math.ceil((right - left) / PIXEL_M), math.ceil((top - bottom) / PIXEL_M)
    dst_transform = Affine(PIXEL_M, 0.0, left, 0.0, -PIXEL_M, top)
    warped = np.zeros((dst_h, dst_w), dtype=data.dtype)
    reproject(
        data,
        warped,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=0,
        dst_transform=dst_transform,
        dst_crs="EPSG:3338",
        dst_nodata=0,
        resampling=Resampling.cubic,
    )
    profile.update(width=dst_w, height=dst_h, transform=dst_transform, crs="EPSG:3338", nodata=0)
    sec_albers = folder / "LC80630182016216LGN00_B8_albers.TIF"
    with rasterio.open(sec_albers, "w", **profile) as out:
        out.write(warped, 1)
    return ref_crop, sec_albers


def test_secondary_in_another_projection_is_resampled_and_tracked(reprojected_pair, inputs):
    ref_crop, sec_albers = reprojected_pair
    ds = track(ref_crop, sec_albers, progress=False)
    assert ds.attrs["secondary_reprojected"] == 1
    assert CRS.from_wkt(ds.attrs["crs_wkt"]).to_epsg() == 32607
    assert ds.attrs["dt_days"] == pytest.approx(DT_DAYS, abs=1e-3)
    tongue = tongue_nodes(ds)
    mag = offset_px(ds)
    assert np.isfinite(mag[tongue]).sum() >= 200
    assert 10.0 <= np.nanmedian(mag[tongue]) <= 13.0
    assert 180.0 <= bearing_deg(ds, tongue) <= 250.0
    rock = outline_nodes(ds, inputs[2])
    assert np.isfinite(mag[rock]).sum() >= 30
    assert np.nanmedian(mag[rock]) < 0.5
