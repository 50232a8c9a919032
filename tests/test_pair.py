"""Pairs: time order, a common grid, and the crop to the overlap, on the real Yahtse pair."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.transform
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from glacierflow.errors import InputError
from glacierflow.pair import make_pair
from glacierflow.scenes import Scene, read_scene

REF_NAME = "LC80630182016200LGN00_B8_yahtse.TIF"
SEC_NAME = "LC80630182016216LGN00_B8_yahtse.TIF"
UTM7_15M = Affine(15.0, 0.0, 465067.5, 0.0, -15.0, 6681577.5)
INTERIOR = np.s_[300:812, 600:1112]  # 512 x 512 px of glacier, rock and snow, away from edges


@pytest.fixture(scope="module")
def ref(yahtse_dir) -> Scene:
    return read_scene(yahtse_dir / REF_NAME)


@pytest.fixture(scope="module")
def sec(yahtse_dir) -> Scene:
    return read_scene(yahtse_dir / SEC_NAME)


def write_like(path: Path, data: np.ndarray, transform: Affine, crs="EPSG:32607", nodata=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data, 1)
    return path


def shift_px(a: np.ndarray, b: np.ndarray, fmax: float = 0.15) -> np.ndarray:
    """(dy, dx) in pixels such that ``b(x) = a(x - d)``, for shifts below about 2 px.

    Fits a plane to the phase of the cross-power spectrum at low frequencies, weighted by its
    magnitude; unlike a parabola through a correlation peak it has no bias towards integers.
    """
    a = a - a.mean()
    b = b - b.mean()
    taper = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    cross = np.fft.fft2(b * taper) * np.conj(np.fft.fft2(a * taper))
    fy, fx = np.meshgrid(np.fft.fftfreq(a.shape[0]), np.fft.fftfreq(a.shape[1]), indexing="ij")
    sel = (np.abs(fy) < fmax) & (np.abs(fx) < fmax) & ((fy != 0) | (fx != 0))
    weight = np.sqrt(np.abs(cross[sel]))
    design = np.stack([-2 * np.pi * fy[sel], -2 * np.pi * fx[sel]], axis=1) * weight[:, None]
    return np.linalg.lstsq(design, np.angle(cross[sel]) * weight, rcond=None)[0]


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_shift_estimator_sees_a_quarter_pixel(sec):
    # The measuring tool of the tests below must itself detect a small misregistration.
    moved = np.zeros_like(sec.data)
    reproject(
        sec.data,
        moved,
        src_transform=sec.transform,
        src_crs=sec.crs,
        dst_transform=sec.transform @ Affine.translation(-0.25, 0.5),
        dst_crs=sec.crs,
        resampling=Resampling.cubic,
    )
    np.testing.assert_allclose(
        shift_px(sec.data[INTERIOR], moved[INTERIOR]), [-0.5, 0.25], atol=0.03
    )
    np.testing.assert_allclose(shift_px(sec.data[INTERIOR], sec.data[INTERIOR]), [0, 0], atol=1e-6)


def test_same_grid_needs_no_reprojection(ref, sec):
    pair = make_pair(ref, sec)
    assert not pair.reprojected
    assert not pair.swapped
    assert pair.shape == (1087, 1698)
    assert pair.transform == UTM7_15M
    assert pair.crs.to_epsg() == 32607
    assert pair.sec.transform == pair.ref.transform
    np.testing.assert_array_equal(pair.ref.data, ref.data)
    np.testing.assert_array_equal(pair.sec.data, sec.data)
    assert pair.valid.all()
    # 2016-07-18T20:37:06.339158Z to 2016-08-03T20:37:09.463613Z
    assert pair.dt_days == pytest.approx(16 + 3.124455 / 86400, abs=1e-9)


def test_later_image_first_is_swapped_and_logged(ref, sec):
    notes: list[str] = []
    pair = make_pair(sec, ref, log=notes.append)
    assert pair.swapped
    assert pair.ref.path.name == REF_NAME
    assert pair.sec.path.name == SEC_NAME
    assert pair.dt_days > 15.9
    assert len(notes) == 1
    assert "later image first" in notes[0] and REF_NAME in notes[0] and SEC_NAME in notes[0]
    assert not make_pair(ref, sec, log=notes.append).swapped
    assert len(notes) == 1


def test_default_log_goes_to_glacierflow_logger(ref, sec, caplog):
    with caplog.at_level(logging.INFO, logger="glacierflow"):
        make_pair(sec, ref)
    assert any("later image first" in r.getMessage() for r in caplog.records)


def test_equal_times_name_both_files(ref, sec):
    same_time = replace(sec, acquired=ref.acquired)
    with pytest.raises(InputError) as exc_info:
        make_pair(ref, same_time)
    message = str(exc_info.value)
    assert REF_NAME in message and SEC_NAME in message
    assert "two different times" in message


def test_scene_without_crs_is_refused(ref, sec):
    with pytest.raises(InputError, match=SEC_NAME):
        make_pair(ref, replace(sec, crs=None))


# rasterio's own calculate_default_transform still multiplies Affines with `*`.
@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")
def test_secondary_in_another_crs_comes_back_aligned(ref, sec, tmp_path):
    # The secondary warped to Alaska Albers at 20 m: rotated by about 10 degrees against UTM 7N,
    # coarser, with a different origin, and stored as uint16 with nodata 0 outside the scene.
    bounds = rasterio.transform.array_bounds(*sec.shape, sec.transform)
    albers, width, height = calculate_default_transform(
        sec.crs, "EPSG:3338", sec.shape[1], sec.shape[0], *bounds, resolution=20.0
    )
    warped = np.zeros((height, width), np.uint16)
    reproject(
        sec.data.astype(np.uint16),
        warped,
        src_transform=sec.transform,
        src_crs=sec.crs,
        dst_transform=albers,
        dst_crs="EPSG:3338",
        dst_nodata=0,
        resampling=Resampling.cubic,
    )
    path = write_like(tmp_path / "yahtse_sec_albers.tif", warped, albers, "EPSG:3338", nodata=0)
    moved = read_scene(path, acquired=sec.acquired)
    assert moved.crs.to_epsg() == 3338 and moved.pixel_size_m == 20.0

    pair = make_pair(ref, moved)
    assert pair.reprojected
    assert pair.crs == ref.crs
    assert pair.sec.transform == pair.ref.transform
    assert pair.ref.pixel_size_m == 15.0
    # The grid is a window of the reference grid: same lattice, whole-pixel offset.
    col, row = ~UTM7_15M @ (pair.transform.c, pair.transform.f)
    col0, row0 = round(col), round(row)
    assert (col, row) == pytest.approx((col0, row0), abs=1e-9)
    h, w = pair.shape
    assert h >= 1085 and w >= 1696  # at most a pixel lost on each side
    assert pair.valid.mean() > 0.995
    np.testing.assert_array_equal(pair.ref.data, ref.data[row0 : row0 + h, col0 : col0 + w])

    # Image content is where it was: the round trip 15 m UTM -> 20 m Albers -> 15 m UTM blurs
    # but does not shift.
    original = sec.data[row0 : row0 + h, col0 : col0 + w][INTERIOR]
    back = pair.sec.data[INTERIOR]
    assert ncc(original, back) > 0.95
    assert np.hypot(*shift_px(original, back)) < 0.05


def test_integer_shift_is_cut_not_resampled_and_cropped(ref, sec, tmp_path):
    # The secondary's grid starts 300 columns east and 200 rows south of the reference's.
    shifted = UTM7_15M @ Affine.translation(300, 200)
    path = write_like(tmp_path / "sec_shifted.tif", sec.data.astype(np.uint16), shifted)
    moved = read_scene(path, acquired=sec.acquired)
    pair = make_pair(ref, moved)
    assert not pair.reprojected
    assert pair.shape == (1087 - 200, 1698 - 300)
    assert pair.transform == shifted
    np.testing.assert_array_equal(pair.ref.data, ref.data[200:, 300:])
    np.testing.assert_array_equal(pair.sec.data, sec.data[:887, :1398])
    assert pair.valid.all()


def test_subpixel_shift_is_resampled_onto_reference_grid(ref, sec, tmp_path):
    shifted = UTM7_15M @ Affine.translation(300.25, 200.25)
    path = write_like(tmp_path / "sec_subpixel.tif", sec.data.astype(np.float32), shifted)
    moved = read_scene(path, acquired=sec.acquired)
    pair = make_pair(ref, moved)
    assert pair.reprojected
    assert pair.shape == (887, 1398)
    assert pair.transform == UTM7_15M @ Affine.translation(300, 200)
    # On the reference grid the secondary's content sits a quarter pixel right and down.
    np.testing.assert_allclose(
        shift_px(sec.data[:887, :1398][INTERIOR], pair.sec.data[INTERIOR]), [0.25, 0.25], atol=0.03
    )


def test_fill_margin_is_cropped_away(ref, sec, tmp_path):
    data = sec.data.astype(np.uint16)
    data[:, :100] = 0  # Landsat fill
    data[-50:, :] = 0
    path = write_like(tmp_path / "LC80630182016216LGN00_B8_fill.TIF", data, UTM7_15M)
    moved = read_scene(path)
    assert moved.acquired.date().isoformat() == "2016-08-03"
    pair = make_pair(ref, moved)
    assert not pair.reprojected
    assert pair.shape == (1087 - 50, 1698 - 100)
    assert pair.transform == UTM7_15M @ Affine.translation(100, 0)
    assert pair.valid.all()


def test_far_apart_scenes_do_not_overlap(ref, sec, tmp_path):
    far = Affine.translation(100_000, 0) @ UTM7_15M
    path = write_like(tmp_path / "sec_100km_east.tif", sec.data.astype(np.uint16), far)
    moved = read_scene(path, acquired=sec.acquired)
    with pytest.raises(InputError) as exc_info:
        make_pair(moved, ref)
    message = str(exc_info.value)
    assert "do not overlap" in message
    assert REF_NAME in message and "sec_100km_east.tif" in message
    # Each extent (the earlier image first) in degrees with its CRS, checkable on a map: the
    # corners of each image, projected with pyproj, lie on the bounds given (the edges between
    # them bulge a little).
    extents = _lonlat_extents(message)
    assert [crs for _, crs in extents] == ["EPSG:32607, WGS 84 / UTM zone 7N"] * 2
    for (bounds, _), x0 in zip(extents, (465_067.5, 565_067.5), strict=True):
        _assert_corners_on(bounds, x0, 6_681_577.5, 1698 * 15.0, 1087 * 15.0, "EPSG:32607")


def _lonlat_extents(message: str) -> list[tuple[tuple[float, ...], str]]:
    """``(lon0, lon1, lat0, lat1), crs`` of each ``lon a..b, lat c..d (CRS)`` in a message."""
    import re

    found = re.findall(
        r"lon (-?[\d.]+)\.\.(-?[\d.]+), lat (-?[\d.]+)\.\.(-?[\d.]+) \(([^)]*)\)", message
    )
    return [(tuple(float(v) for v in f[:4]), f[4]) for f in found]


def _assert_corners_on(bounds, x0, y1, width_m, height_m, crs) -> None:
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    xs = [x0, x0 + width_m, x0, x0 + width_m]
    ys = [y1, y1, y1 - height_m, y1 - height_m]
    lon, lat = to_lonlat.transform(xs, ys)
    lon0, lon1, lat0, lat1 = bounds
    assert lon0 == pytest.approx(min(lon), abs=2e-3) and lon1 == pytest.approx(max(lon), abs=2e-3)
    assert lat1 == pytest.approx(max(lat), abs=0.02) and lat0 == pytest.approx(min(lat), abs=0.02)
    assert lat0 <= min(lat) + 1e-3 and lat1 >= max(lat) - 1e-3


def test_no_overlap_across_utm_zones_is_given_in_degrees(ref, sec, tmp_path):
    # The secondary in the next UTM zone, 300 km east: metres of two zones cannot be compared.
    x0 = 300_000.0
    zone8 = Affine(15.0, 0.0, x0, 0.0, -15.0, 6_700_000.0)
    path = write_like(tmp_path / "sec_zone8.tif", sec.data.astype(np.uint16), zone8, "EPSG:32608")
    moved = read_scene(path, acquired=sec.acquired)
    with pytest.raises(InputError, match="do not overlap") as exc_info:
        make_pair(ref, moved)
    (ref_bounds, ref_crs), (sec_bounds, sec_crs) = _lonlat_extents(str(exc_info.value))
    assert ref_crs == "EPSG:32607, WGS 84 / UTM zone 7N"
    assert sec_crs == "EPSG:32608, WGS 84 / UTM zone 8N"
    _assert_corners_on(ref_bounds, 465_067.5, 6_681_577.5, 1698 * 15.0, 1087 * 15.0, "EPSG:32607")
    _assert_corners_on(sec_bounds, x0, 6_700_000.0, 1698 * 15.0, 1087 * 15.0, "EPSG:32608")
    assert sec_bounds[0] > ref_bounds[1]  # east of the reference, as placed


def test_overlap_of_one_column_is_too_small(ref, sec, tmp_path):
    edge = UTM7_15M @ Affine.translation(1697, 0)
    path = write_like(tmp_path / "sec_edge.tif", sec.data.astype(np.uint16), edge)
    moved = read_scene(path, acquired=sec.acquired)
    with pytest.raises(InputError, match="do not overlap.*1087 x 1"):
        make_pair(ref, moved)
