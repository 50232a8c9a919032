"""Outlines to masks: RGI shapefiles and GeoPackages in EPSG:4326 onto UTM grids; bad input.

Areas are checked against the polygons' own area in the grid's projection, so a wrong
reprojection, a flipped axis or a half-cell shift would show.
"""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from shapely.geometry import box

from glacierflow.errors import InputError
from glacierflow.outlines import (
    ice_mask_from_outlines,
    mask_from_file,
    outline_mask,
    read_outlines,
)
from glacierflow.pair import make_pair
from glacierflow.scenes import Scene
from glacierflow.synthetic import warp_image
from glacierflow.track import FALLBACK_SOURCE, track_pair

DATA = Path(__file__).parent / "data" / "everest"
EVEREST_IMAGE = DATA / "LE71400412000304SGS00_B4.tif"
EVEREST_RGI = DATA / "15_rgi60_glacier_outlines.gpkg"


def utm_grid(bounds, cell_m: float) -> tuple[Affine, tuple[int, int]]:
    """A north-up grid of ``cell_m`` cells covering ``bounds`` (x0, y0, x1, y1) with a margin."""
    x0, y0, x1, y1 = bounds
    left = math.floor(x0 / cell_m) * cell_m - cell_m
    top = math.ceil(y1 / cell_m) * cell_m + cell_m
    shape = (math.ceil((top - y0) / cell_m) + 1, math.ceil((x1 - left) / cell_m) + 1)
    return Affine(cell_m, 0, left, 0, -cell_m, top), shape


# --------------------------------------------------------------------------------------------
# Reading and rasterising


def test_rgi_shapefile_in_wgs84_lands_on_a_utm_grid(shared_data):
    shp = shared_data / "karakoram_rgi_dem" / "baltoro_wgs84.shp"
    utm = CRS.from_epsg(32643)
    outlines = read_outlines(shp, utm)
    area_km2 = outlines.area.sum() / 1e6
    assert area_km2 == pytest.approx(551.9, rel=0.01)  # the README's GLIMS area
    transform, shape = utm_grid(outlines.total_bounds, 100.0)
    ice = ice_mask_from_outlines(shp, crs=utm, transform=transform, shape=shape)
    centres = outline_mask(shp, crs=utm, transform=transform, shape=shape)
    # Cell centres: the area within a few per cent; all touched cells: a little more.
    assert centres.sum() * 0.01 == pytest.approx(area_km2, rel=0.03)
    assert centres.sum() < ice.sum() < 1.3 * centres.sum()
    assert not (centres & ~ice).any()
    # North is up: the glacier's mapped centre lies where the rows say it does.
    rows, cols = np.nonzero(centres)
    cx, cy = transform @ (cols.mean() + 0.5, rows.mean() + 0.5)
    c = outlines.geometry.union_all().centroid
    assert (cx, cy) == pytest.approx((c.x, c.y), abs=300)


def test_small_rgi_glacier_and_a_buffer(shared_data):
    shp = shared_data / "karakoram_rgi_dem" / "RGI60-14.03439" / "RGI60-14.03439.shp"
    utm = CRS.from_epsg(32643)
    outlines = read_outlines(shp, utm)
    transform, shape = utm_grid(outlines.buffer(1000).total_bounds, 30.0)
    plain = outline_mask(shp, crs=utm, transform=transform, shape=shape)
    assert plain.sum() * 900 / 1e6 == pytest.approx(8.10, rel=0.03)
    grown = ice_mask_from_outlines(shp, crs=utm, transform=transform, shape=shape, buffer_m=300)
    expected = outlines.buffer(300).area.sum() / 900
    assert grown.sum() == pytest.approx(expected, rel=0.08)
    assert not (plain & ~grown).any()


def test_everest_geopackage_on_the_landsat_grid():
    with rasterio.open(EVEREST_IMAGE) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    ice = outline_mask(EVEREST_RGI, crs=crs, transform=transform, shape=shape)
    clipped = read_outlines(EVEREST_RGI, crs).clip(box(*rasterio.open(EVEREST_IMAGE).bounds))
    assert ice.sum() * 900 == pytest.approx(clipped.area.sum(), rel=0.03)
    assert 0.1 < ice.mean() < 0.9


def test_lines_are_not_outlines(shared_data):
    lines = shared_data / "karakoram_rgi_dem" / "centerlines_baltoro_wgs84.shp"
    with pytest.raises(InputError, match="holds no polygons .*LineString") as exc:
        read_outlines(lines, "EPSG:32643")
    assert str(lines) in str(exc.value)


def test_shapefile_without_prj(shared_data, tmp_path):
    src = shared_data / "karakoram_rgi_dem"
    for ext in ("shp", "shx", "dbf"):
        shutil.copy(src / f"baltoro_wgs84.{ext}", tmp_path / f"b.{ext}")
    with pytest.raises(InputError, match="no coordinate reference system"):
        read_outlines(tmp_path / "b.shp", "EPSG:32643")


def test_outlines_elsewhere_are_an_error():
    with rasterio.open(EVEREST_IMAGE) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    far = Affine.translation(0, 2_000_000) @ transform
    for fn in (outline_mask, ice_mask_from_outlines, mask_from_file):
        with pytest.raises(InputError, match="do not overlap the image grid") as exc:
            fn(EVEREST_RGI, crs=crs, transform=far, shape=shape)
        assert str(EVEREST_RGI) in str(exc.value)


def test_outlines_elsewhere_are_located_in_degrees(tmp_path):
    # Outlines drawn in degrees, an image grid in UTM 45N 1.8 degrees east of them: the error
    # gives both extents in degrees, with the file's and the grid's CRS.
    path = tmp_path / "drawn.gpkg"
    gpd.GeoDataFrame(geometry=[box(84.90, 27.90, 85.00, 28.00)], crs="EPSG:4326").to_file(path)
    transform, shape = Affine(30, 0, 480_000, 0, -30, 3_100_000), (100, 100)
    with pytest.raises(InputError, match="do not overlap the image grid") as exc:
        outline_mask(path, crs="EPSG:32645", transform=transform, shape=shape)
    message = str(exc.value)
    assert (
        "the outlines cover lon 84.900..85.000, lat 27.900..28.000 (file CRS EPSG:4326" in message
    )
    # The grid's corners (480-483 km E, 3097-3100 km N in zone 45N) projected with pyproj.
    assert "the image covers lon 86.797..86.827, lat 27.998..28.025 (EPSG:32645, " in message
    assert "UTM zone 45N" in message
    raster = tmp_path / "far_mask.tif"
    profile = dict(driver="GTiff", width=10, height=10, count=1, dtype="uint8", crs="EPSG:4326")
    with rasterio.open(
        raster, "w", transform=Affine(0.01, 0, 84.9, 0, -0.01, 28.0), **profile
    ) as dst:
        dst.write(np.ones((1, 10, 10), np.uint8))
    with pytest.raises(InputError, match="marks no stable cell") as exc:
        mask_from_file(raster, crs="EPSG:32645", transform=transform, shape=shape)
    assert "the mask covers lon 84.900..85.000, lat 27.900..28.000 (EPSG:4326" in str(exc.value)
    assert "lon 86.797..86.827" in str(exc.value)


def test_tiny_polygons_on_a_coarse_grid_say_so(tmp_path):
    path = tmp_path / "tiny.gpkg"
    gpd.GeoDataFrame(geometry=[box(100, 100, 110, 110)], crs="EPSG:32645").to_file(path)
    transform = Affine(120, 0, 0, 0, -120, 1200)
    with pytest.raises(InputError, match="contain no node centre") as exc:
        outline_mask(path, crs="EPSG:32645", transform=transform, shape=(10, 10))
    # The library names its own parameter, not a command-line flag.
    assert "step_px" in str(exc.value) and "--" not in str(exc.value)


def test_raster_stable_mask_in_another_crs(tmp_path):
    # A mask in geographic coordinates marking the western half of a UTM grid as stable.
    utm = CRS.from_epsg(32645)
    transform = Affine(100, 0, 480000, 0, -100, 3100000)
    shape = (40, 60)
    west, south, east, north = rasterio.warp.transform_bounds(
        utm, "EPSG:4326", 480000, 3096000, 483000, 3100000
    )
    data = np.zeros((200, 200), dtype=np.uint8)
    data[:, :100] = 1
    west, south, east, north = west - 0.05, south - 0.05, east + 0.05, north + 0.05
    geo = Affine((east - west) / 200, 0, west, 0, -(north - south) / 200, north)
    # Stable where the geographic mask's western half is: west of its middle longitude.
    path = tmp_path / "stable.tif"
    profile = dict(driver="GTiff", width=200, height=200, count=1, dtype="uint8", crs="EPSG:4326")
    with rasterio.open(path, "w", transform=geo, **profile) as dst:
        dst.write(data, 1)
    mask = mask_from_file(path, crs=utm, transform=transform, shape=shape)
    mid_lon = geo.c + 100 * geo.a
    rows, cols = np.mgrid[0:40, 0:60]
    xs, ys = transform @ (cols + 0.5, rows + 0.5)
    lon, _ = rasterio.warp.transform(utm, "EPSG:4326", xs.ravel(), ys.ravel())
    expected = (np.array(lon) < mid_lon).reshape(shape)
    assert (mask == expected).mean() > 0.98
    empty = tmp_path / "empty.tif"
    with rasterio.open(empty, "w", transform=geo, **profile) as dst:
        dst.write(np.zeros((200, 200), dtype=np.uint8), 1)
    with pytest.raises(InputError, match="marks no stable cell"):
        mask_from_file(empty, crs=utm, transform=transform, shape=shape)


# --------------------------------------------------------------------------------------------
# Stable ground in the pipeline, and the bad cases


@pytest.fixture(scope="module")
def everest_pair():
    """The Everest image and a copy in which only the RGI glaciers move, 16 days apart.

    The ice moves up to 3 px south-south-west; everything moves by a (0.3, -0.2) px
    misregistration.
    """
    with rasterio.open(EVEREST_IMAGE) as src:
        img, transform, crs = src.read(1).astype(np.float64), src.transform, src.crs
    ice = outline_mask(EVEREST_RGI, crs=crs, transform=transform, shape=img.shape)
    speed = 3.0 * ndimage.gaussian_filter(ice.astype(float), 4.0) * ice
    theta = np.deg2rad(200.0)
    sec = warp_image(img, speed * np.sin(theta) + 0.3, -speed * np.cos(theta) - 0.2)

    def scene(data, name, day):
        return Scene(
            Path(name),
            data.astype(np.float32),
            np.ones(data.shape, dtype=bool),
            crs,
            transform,
            datetime(2000, 10, day, tzinfo=UTC),
            "Landsat 7 ETM+",
            None,
            "option",
        )

    return make_pair(scene(img, "ref.tif", 1), scene(sec, "sec.tif", 17))


def test_glacier_outlines_give_off_ice_stable_ground(everest_pair):
    ds = track_pair(everest_pair, glacier_outlines=EVEREST_RGI)
    assert ds.attrs["stable_source"].startswith("off-ice: outside 15_rgi60_glacier_outlines")
    buffer_m = ds.attrs["stable_ice_buffer_m"]
    assert buffer_m == (32 / 2 + 8) * 30.0
    assert ds.attrs["coreg_dx_px"] == pytest.approx(0.3, abs=0.03)
    assert ds.attrs["coreg_dy_px"] == pytest.approx(-0.2, abs=0.03)
    assert ds.attrs["stable_nodes"] > 80  # most of the scene is ice or within 720 m of it
    # No stable node lies within the buffer of the ice.
    ice = ice_mask_from_outlines(
        EVEREST_RGI,
        crs=everest_pair.crs,
        transform=Affine.from_gdal(*ds.attrs["transform"]),
        shape=ds["v"].shape,
        buffer_m=buffer_m,
    )
    assert ds.attrs["stable_nodes"] <= (~ice & (ds["quality"].values == 0)).sum()
    narrow = track_pair(everest_pair, glacier_outlines=EVEREST_RGI, ice_buffer_m=0.0)
    assert narrow.attrs["stable_nodes"] > ds.attrs["stable_nodes"]


def test_stable_mask_covering_everything_is_refused(everest_pair):
    from glacierflow.matching import make_grid

    g = make_grid(everest_pair.shape, chip_px=32, search_px=16, step_px=8)
    with pytest.raises(InputError, match="covers .* of the .* valid nodes"):
        track_pair(everest_pair, stable_mask=np.ones(g.shape, dtype=bool))
    with pytest.raises(InputError, match="none holds a valid offset"):
        track_pair(everest_pair, stable_mask=np.zeros(g.shape, dtype=bool))
    with pytest.raises(InputError, match="node grid"):
        track_pair(everest_pair, stable_mask=np.ones((3, 3), dtype=bool))


def test_ice_everywhere_leaves_no_stable_ground(everest_pair, tmp_path):
    whole = tmp_path / "everything.gpkg"
    b = everest_pair.ref.transform
    x0, y1 = b.c, b.f
    x1 = x0 + b.a * everest_pair.shape[1]
    y0 = y1 + b.e * everest_pair.shape[0]
    gpd.GeoDataFrame(geometry=[box(x0, y0, x1, y1)], crs=everest_pair.crs).to_file(whole)
    with pytest.raises(InputError, match="no valid node is left off the ice") as exc:
        track_pair(everest_pair, glacier_outlines=whole)
    assert str(whole) in str(exc.value)


def test_outlines_elsewhere_fail_the_pipeline(everest_pair, tmp_path):
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1000, 1000)], crs=everest_pair.crs).to_file(far)
    for kw in ({"glacier_outlines": far}, {"stable_mask": far}):
        with pytest.raises(InputError, match="do not overlap"):
            track_pair(everest_pair, **kw)


def test_no_outlines_falls_back_and_says_so(everest_pair):
    ds = track_pair(everest_pair)
    assert ds.attrs["stable_source"] == FALLBACK_SOURCE
    assert ds.attrs["coreg_dx_px"] == pytest.approx(0.3, abs=0.03)
    assert ds.attrs["coreg_dy_px"] == pytest.approx(-0.2, abs=0.03)
    none = track_pair(everest_pair, coreg="none")
    assert none.attrs["coreg_method"] == "none"
    assert none.attrs["stable_source"] == FALLBACK_SOURCE
    # Not co-registered: the misregistration stays in the stable-ground statistics.
    assert none.attrs["stable_vx_mean_px"] > 0.15
    with pytest.raises(
        InputError, match="coreg.method must be one of constant, affine, poly2, none"
    ):
        track_pair(everest_pair, coreg="rubber")


# --------------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def pair_files(everest_pair, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli")
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "crs": everest_pair.crs,
        "transform": everest_pair.transform,
        "height": everest_pair.shape[0],
        "width": everest_pair.shape[1],
    }
    paths = []
    for name, sc in (("ref.tif", everest_pair.ref), ("sec.tif", everest_pair.sec)):
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(sc.data, 1)
        paths.append(folder / name)
    return paths[0], paths[1]


def _cli(*args):
    from click.testing import CliRunner

    from glacierflow.cli import cli

    dates = ("--ref-date", "2000-10-01", "--sec-date", "2000-10-17")
    return CliRunner().invoke(cli, ["track", *map(str, args), *dates])


def test_cli_stable_ground_options(pair_files, tmp_path):
    ref, sec = pair_files
    out = tmp_path / "ok"
    result = _cli(ref, sec, "-o", out, "--glacier-outlines", EVEREST_RGI, "--coreg", "affine")
    assert result.exit_code == 0, result.output
    assert "co-registration (affine, on off-ice" in result.stdout
    assert "stable ground:" in result.stdout
    with rasterio.open(out / "velocity.tif") as tif:
        assert tif.descriptions[-5:] == ("v_error", "vx_error", "vy_error", "quality", "chip_px")
        assert tif.tags()["coreg_method"] == "affine"


def test_cli_bad_outlines_fail_cleanly(pair_files, tmp_path):
    ref, sec = pair_files
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1000, 1000)], crs="EPSG:32645").to_file(far)
    for option in ("--glacier-outlines", "--stable-mask"):
        out = tmp_path / option.strip("-")
        result = _cli(ref, sec, "-o", out, option, far)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(far) in lines[0] and "do not overlap" in lines[0]
        assert not out.exists() or not any(out.iterdir())
