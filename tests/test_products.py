"""Products on disk: real GeoTIFF and NetCDF files written, reopened and checked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import xarray as xr
from affine import Affine
from pyproj import CRS

from glacierflow import products
from glacierflow.atomic import atomic_write
from glacierflow.errors import InputError
from glacierflow.products import (
    PRODUCT_NAMES,
    read_product,
    write_cog,
    write_gpkg,
    write_netcdf,
    write_netcdf_cube,
    write_products,
    write_summary,
    write_table,
)
from glacierflow.velocity import DAYS_PER_YEAR, VARIABLES, velocity_dataset

DATA = Path(__file__).resolve().parents[1] / "src" / "glacierflow" / "data" / "yahtse"
IMAGE_TRANSFORM = Affine(15, 0, 465067.5, 0, -15, 6681577.5)
ROW0_PX, COL0_PX, STEP_PX = 16, 16, 8
PAIR_ATTRS = {
    "ref_time": "2016-07-18T20:46:12Z",
    "sec_time": "2016-08-03T20:46:18Z",
    "ref_sensor": "Landsat 8",
    "sec_sensor": "Landsat 8",
    "ref_file": "LC80630182016200LGN00_B8_yahtse.TIF",
    "sec_file": "LC80630182016216LGN00_B8_yahtse.TIF",
    "chip_px": 32,
    "search_px": 20,
    "method": "ncc",
    "glacierflow_version": "0.1.0",
}


def make_dataset(
    ny: int = 40,
    nx: int = 60,
    *,
    seed: int = 0,
    crs: bool = True,
    extra: dict[str, np.ndarray] | None = None,
) -> xr.Dataset:
    """A product over the Yahtse grid from a smooth, known displacement field with NaN holes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    bump = np.exp(-(((xx - 0.6 * nx) / (0.25 * nx)) ** 2) - ((yy - 0.4 * ny) / (0.2 * ny)) ** 2)
    dx_px = -2.5 * bump + 0.01 * xx / nx
    dy_px = 1.2 * bump - 0.02
    holes = rng.random((ny, nx)) < 0.08
    holes[: ny // 5, : nx // 6] = True
    dx_px[holes] = np.nan
    dy_px[holes] = np.nan
    corr = np.where(holes, np.nan, 0.5 + 0.4 * rng.random((ny, nx)))
    snr = np.where(holes, np.nan, 3 + 20 * rng.random((ny, nx)))
    return velocity_dataset(
        dx_px,
        dy_px,
        corr,
        snr,
        image_transform=IMAGE_TRANSFORM,
        row0_px=ROW0_PX,
        col0_px=COL0_PX,
        step_px=STEP_PX,
        crs_wkt=rasterio.crs.CRS.from_epsg(32607).to_wkt() if crs else None,
        dt_days=16.0,
        attrs=PAIR_ATTRS,
        extra=extra,
    )


@pytest.fixture(scope="module")
def ds() -> xr.Dataset:
    return make_dataset()


# ---------------------------------------------------------------------------------------------
# Cloud-Optimized GeoTIFF
# ---------------------------------------------------------------------------------------------


def test_cog_layout_and_metadata(ds, tmp_path):
    path = write_cog(ds, tmp_path / "velocity.tif")
    with rasterio.open(path) as dst:
        assert dst.driver == "GTiff"
        assert dst.count == 7
        assert dst.descriptions == ("vx", "vy", "v", "dx", "dy", "corr", "snr")
        assert set(dst.dtypes) == {"float32"}
        assert np.isnan(dst.nodata)
        assert dst.crs.to_epsg() == 32607
        assert dst.profile["tiled"]
        assert set(dst.block_shapes) == {(256, 256)}
        assert dst.compression == rasterio.enums.Compression.deflate
        structure = dst.tags(ns="IMAGE_STRUCTURE")
        assert structure["PREDICTOR"] == "3"
        assert structure.get("LAYOUT") == "COG"
        for band, name in enumerate(dst.descriptions, start=1):
            tags = dst.tags(band)
            assert tags["units"] == VARIABLES[name]["units"]
            assert tags["long_name"] == VARIABLES[name]["long_name"]
            assert tags.get("standard_name") == VARIABLES[name].get("standard_name")
        assert dst.tags(1)["standard_name"] == "land_ice_surface_x_velocity"
        assert dst.units[:3] == ("m/yr", "m/yr", "m/yr")
        tags = dst.tags()
        assert tags["ref_time"] == PAIR_ATTRS["ref_time"]
        assert tags["sec_time"] == PAIR_ATTRS["sec_time"]
        assert tags["ref_sensor"] == "Landsat 8"
        assert float(tags["dt_days"]) == 16.0
        assert int(tags["chip_px"]) == 32
        assert int(tags["step_px"]) == STEP_PX
        assert tags["glacierflow_version"] == "0.1.0"
        # ITS_LIVE's pair dates, as in velocity.nc's img_pair_info.
        assert tags["acquisition_date_img1"] == "20160718T20:46:12.000000"
        assert tags["acquisition_date_img2"] == "20160803T20:46:18.000000"
        assert tags["date_center"] == "20160726T20:46:15.000000"
        assert float(tags["date_dt"]) == 16.0


def test_cog_pixel_centres_are_the_matching_nodes(ds, tmp_path):
    path = write_cog(ds, tmp_path / "velocity.tif")
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    with rasterio.open(path) as dst:
        assert (dst.height, dst.width) == (ny, nx)
        for i, j in [(0, 0), (0, nx - 1), (ny - 1, 0), (ny - 1, nx - 1), (17, 23)]:
            expected = IMAGE_TRANSFORM @ (COL0_PX + j * STEP_PX + 0.5, ROW0_PX + i * STEP_PX + 0.5)
            assert dst.xy(i, j) == pytest.approx(expected, abs=1e-6)
            assert (float(ds.x[j]), float(ds.y[i])) == pytest.approx(expected, abs=1e-6)


def test_cog_values_round_trip_exactly(ds, tmp_path):
    path = write_cog(ds, tmp_path / "velocity.tif")
    with rasterio.open(path) as dst:
        for band, name in enumerate(dst.descriptions, start=1):
            np.testing.assert_array_equal(dst.read(band), ds[name].values.astype(np.float32))
    back = read_product(path)
    assert list(back.data_vars) == list(VARIABLES)
    for name in VARIABLES:
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name].values, ds[name].values)
        assert back[name].attrs["units"] == VARIABLES[name]["units"]
    np.testing.assert_allclose(back.x.values, ds.x.values)
    np.testing.assert_allclose(back.y.values, ds.y.values)
    assert back.y.values[0] > back.y.values[-1]  # north-up: y descends
    for key, value in PAIR_ATTRS.items():
        assert back.attrs[key] == value
        assert type(back.attrs[key]) is type(value)
    assert back.attrs["dt_days"] == 16.0
    assert back.attrs["step_px"] == STEP_PX
    assert back.attrs["transform"] == pytest.approx(ds.attrs["transform"])
    assert back.attrs["image_transform"] == pytest.approx(ds.attrs["image_transform"])
    assert CRS.from_wkt(back.attrs["crs_wkt"]).to_epsg() == 32607


def test_cog_tags_read_back_as_written(tmp_path):
    odd = {"count_text": "16", "none": None, "flag": True, "nested": {"a": [1, 2]}, "q": '"x"'}
    ds = make_dataset(8, 9)
    ds.attrs.update(odd)
    back = read_product(write_cog(ds, tmp_path / "v.tif"))
    for key, value in odd.items():
        assert back.attrs[key] == value


def test_cog_has_overviews_when_larger_than_a_tile(tmp_path):
    big = make_dataset(300, 520, seed=1)
    path = write_cog(big, tmp_path / "big.tif")
    with rasterio.open(path) as dst:
        assert dst.overviews(1), "a 300 x 520 grid should carry overviews"
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        # Averaged overview keeps the field's scale (NaN nodes ignored).
        overview = dst.read(3, out_shape=(dst.height // 2, dst.width // 2))
        assert np.nanmax(overview) == pytest.approx(np.nanmax(big["v"].values), rel=0.1)


def test_cog_grid_smaller_than_a_block(tmp_path):
    tiny = make_dataset(3, 5)
    path = write_cog(tiny, tmp_path / "tiny.tif")
    with rasterio.open(path) as dst:
        assert (dst.height, dst.width) == (3, 5)
        assert not dst.overviews(1)
        np.testing.assert_array_equal(dst.read(3), tiny["v"].values)


def test_tiled_geotiff_fallback_without_cog_driver(tmp_path, monkeypatch):
    monkeypatch.setattr(products, "_has_cog_driver", lambda: False)
    big = make_dataset(300, 520, seed=2)
    path = write_cog(big, tmp_path / "big.tif")
    with rasterio.open(path) as dst:
        assert set(dst.block_shapes) == {(256, 256)}
        assert dst.compression == rasterio.enums.Compression.deflate
        assert dst.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        assert dst.overviews(1) == [2, 4]
        assert dst.descriptions == tuple(VARIABLES)
        assert dst.tags(3)["units"] == "m/yr"
        assert dst.tags()["ref_time"] == PAIR_ATTRS["ref_time"]
        np.testing.assert_array_equal(dst.read(3), big["v"].values)


def test_cog_extra_variables_follow_the_standard_bands(tmp_path):
    ny, nx = 10, 12
    extra = {
        "quality": np.ones((ny, nx)),
        "v_error": np.full((ny, nx), 5.0),
    }
    ds = make_dataset(ny, nx, extra=extra)
    ds["v_error"].attrs.update(units="m/yr", long_name="velocity error")
    path = write_cog(ds, tmp_path / "v.tif")
    with rasterio.open(path) as dst:
        assert dst.descriptions == tuple(VARIABLES) + ("quality", "v_error")
        assert dst.tags(9) == {"units": "m/yr", "long_name": "velocity error"}
        assert dst.tags(1)["standard_name"] == "land_ice_surface_x_velocity"
    chosen = write_cog(ds, tmp_path / "two.tif", variables=["v", "v_error"])
    with rasterio.open(chosen) as dst:
        assert dst.descriptions == ("v", "v_error")
        np.testing.assert_array_equal(dst.read(2), 5.0)


def test_cog_without_georeferencing(tmp_path):
    ds = make_dataset(6, 7, crs=False)
    back = read_product(write_cog(ds, tmp_path / "v.tif"))
    assert back.attrs["crs_wkt"] == ""
    np.testing.assert_array_equal(back["vx"].values, ds["vx"].values)


def test_cog_rejects_unknown_variable(ds, tmp_path):
    with pytest.raises(InputError, match="no variable 'speed'"):
        write_cog(ds, tmp_path / "v.tif", variables=["speed"])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# NetCDF
# ---------------------------------------------------------------------------------------------


def test_netcdf_is_cf_and_round_trips(ds, tmp_path):
    path = write_netcdf(ds, tmp_path / "velocity.nc")
    with xr.open_dataset(path, engine="h5netcdf") as nc:
        assert nc.attrs["Conventions"] == "CF-1.8, ACDD-1.3"
        for key in ("title", "history", "source", "summary", "references", "date_created"):
            assert nc.attrs[key]
        assert nc.attrs["time_coverage_start"] == "2016-07-18T20:46:12Z"
        assert nc.attrs["time_coverage_end"] == "2016-08-03T20:46:18Z"
        pair = nc["img_pair_info"].attrs
        assert pair["ref_time"] == PAIR_ATTRS["ref_time"]
        assert pair["sec_time"] == PAIR_ATTRS["sec_time"]
        assert pair["dt_days"] == 16.0
        assert "spatial_ref" not in nc.variables
        grid_mapping = dict(nc["mapping"].attrs)
        assert CRS.from_cf(grid_mapping) == CRS.from_epsg(32607)
        assert CRS.from_wkt(grid_mapping["spatial_ref"]).to_epsg() == 32607
        assert grid_mapping["spatial_epsg"] == 32607
        geotransform = [float(c) for c in grid_mapping["GeoTransform"].split()]
        assert geotransform == pytest.approx(ds.attrs["transform"])
        for name in VARIABLES:
            assert nc[name].attrs["grid_mapping"] == "mapping"
            assert nc[name].attrs["units"] == VARIABLES[name]["units"]
            assert nc[name].attrs["long_name"] == VARIABLES[name]["long_name"]
            assert np.isnan(nc[name].encoding["_FillValue"])
            assert nc[name].encoding["zlib"] is True
            np.testing.assert_array_equal(nc[name].values, ds[name].values)
        for name in ("vx", "vy", "v"):
            assert nc[name].attrs["units"] == "m/yr"
        assert nc["x"].attrs["standard_name"] == "projection_x_coordinate"
        assert nc["y"].attrs["standard_name"] == "projection_y_coordinate"
        assert (nc["x"].attrs["axis"], nc["y"].attrs["axis"]) == ("X", "Y")
        assert nc["x"].attrs["units"] == nc["y"].attrs["units"] == "m"
        np.testing.assert_array_equal(nc["x"].values, ds["x"].values)
        np.testing.assert_array_equal(nc["y"].values, ds["y"].values)
    back = read_product(path)
    assert not {"spatial_ref", "mapping", "img_pair_info", "processing_info"} & set(back.variables)
    assert back.attrs["transform"] == pytest.approx(ds.attrs["transform"])
    assert back.attrs["image_transform"] == pytest.approx(ds.attrs["image_transform"])
    assert back.attrs["chip_px"] == 32
    assert CRS.from_wkt(back.attrs["crs_wkt"]).to_epsg() == 32607
    for name in VARIABLES:
        np.testing.assert_array_equal(back[name].values, ds[name].values)


#: Flat attributes as :func:`glacierflow.track.track` gives them, by the group they belong to.
TRACK_ATTRS = {
    "coreg_method": "constant",
    "coreg_dx_px": 0.066,
    "coreg_dy_px": 0.132,
    "coreg_dx_coef_px": [0.066],
    "coreg_nodes": 394,
    "filter_min_corr": 0.3,
    "filter_fill_holes": 0,
    "prefilter": "none",
    "stable_source": "slowest quarter of valid nodes (no outlines given)",
    "stable_nodes": 397,
    "stable_vx_rmse_m_per_yr": 36.8,
    "stable_vy_rmse_m_per_yr": 33.3,
    "stable_vx_nmad_px": 0.102,
    "stable_v_error_median_m_per_yr": 35.7,
    "v_error_scale": 4.97,
    "v_error_calibration": "stable ground: slowest quarter of valid nodes (no outlines given)",
    "project": "Yahtse",
    "pair_id": "20160718_20160803",
}


def _track_like(**kw) -> xr.Dataset:
    ds = make_dataset(**kw)
    ds["v_error"] = xr.full_like(ds["v"], 30.0)
    ds.attrs.update(TRACK_ATTRS)
    return ds


def test_netcdf_files_the_metadata_where_itslive_granules_keep_it(tmp_path):
    ds = _track_like()
    with xr.open_dataset(write_netcdf(ds, tmp_path / "velocity.nc")) as nc:
        glob = nc.attrs
        # A short CF/ACDD list, not the flat list of every attribute.
        assert len(glob) <= 25
        assert not [k for k in glob if k.startswith(("coreg_", "filter_", "stable_", "v_error"))]
        assert not {"ref_time", "dt_days", "chip_px", "crs_wkt", "transform"} & set(glob)
        assert (glob["project"], glob["pair_id"]) == ("Yahtse", "20160718_20160803")
        info, proc = nc["img_pair_info"].attrs, nc["processing_info"].attrs
        assert "id_img1" not in info  # no scene id given
        assert info["ref_file"] == PAIR_ATTRS["ref_file"]
        assert (info["mission_img1"], info["satellite_img1"]) == ("L", "8")
        assert (proc["chip_px"], proc["method"], proc["coreg_method"]) == (32, "ncc", "constant")
        assert proc["filter_min_corr"] == 0.3 and proc["step_px"] == STEP_PX
        assert nc["vx"].attrs["stable_vx_rmse_m_per_yr"] == 36.8
        assert nc["vy"].attrs["stable_vy_rmse_m_per_yr"] == 33.3
        assert nc["vx"].attrs["stable_nodes"] == nc["vy"].attrs["stable_nodes"] == 397
        assert "stable_vy_rmse_m_per_yr" not in nc["vx"].attrs
        assert nc["v_error"].attrs["v_error_scale"] == 4.97
        assert nc["v_error"].attrs["stable_v_error_median_m_per_yr"] == 35.7
        # ITS_LIVE's error attributes: the stable RMSE, from the slowest nodes (flag 2), and
        # the shift the co-registration subtracted, as velocity: 0.066 px of 15 m in 16 days
        # east, 0.132 px down = south.
        vx, vy = nc["vx"].attrs, nc["vy"].attrs
        assert (vx["error"], vy["error"]) == (36.8, 33.3)
        assert vx["error_slow"] == 36.8 and np.isnan(vx["error_stationary"])
        assert vx["stable_shift_flag"] == vy["stable_shift_flag"] == 2
        assert vx["stable_count_slow"] == 394 and vx["stable_count_stationary"] == 0
        assert vx["stable_shift"] == pytest.approx(0.066 * 15 * DAYS_PER_YEAR / 16)
        assert vy["stable_shift"] == pytest.approx(-0.132 * 15 * DAYS_PER_YEAR / 16)
        assert vx["ancillary_variables"] == "v_error"


def test_read_product_gives_back_the_flat_attributes(tmp_path):
    ds = _track_like()
    ds["quality"] = xr.zeros_like(ds["v"], dtype=np.uint8)
    ds["quality"].attrs.update(flag_masks=[1, 2], flag_meanings="no_match low_correlation")
    ds.attrs.update(quality_flag_masks=[1, 2], quality_flag_meanings="no_match low_correlation")
    back = read_product(write_netcdf(ds, tmp_path / "velocity.nc"))
    for key, value in ds.attrs.items():
        if key == "crs_wkt":
            assert CRS.from_wkt(back.attrs[key]) == CRS.from_wkt(value)
        elif key.endswith("transform"):
            assert back.attrs[key] == pytest.approx(value), key
        elif isinstance(value, list):  # netCDF gives a 1-element list back as a number
            assert list(np.atleast_1d(back.attrs[key])) == value, key
        elif key != "title":  # the file's title names the sensor and dates
            assert back.attrs[key] == value, key
    for name in ("vx", "v_error"):  # the statistics are back in attrs, not on the variables
        assert not [k for k in back[name].attrs if k.startswith(("stable_v", "v_error_"))]
    assert back["vx"].attrs["standard_name"] == "land_ice_surface_x_velocity"
    # Written again, the file is the same (nothing is filed twice or lost).
    again = read_product(write_netcdf(back, tmp_path / "again.nc"))
    assert set(again.attrs) == set(back.attrs)
    with xr.open_dataset(tmp_path / "again.nc") as nc:
        assert not [k for k in nc.attrs if k.startswith(("date_center", "acquisition_date"))]


def test_netcdf_without_georeferencing_keeps_its_grid(tmp_path):
    ds = make_dataset(6, 7, crs=False)
    path = write_netcdf(ds, tmp_path / "velocity.nc")
    with xr.open_dataset(path) as nc:
        assert "mapping" not in nc.variables
        assert "grid_mapping" not in nc["v"].attrs
    back = read_product(path)
    assert back.attrs["crs_wkt"] == ""
    assert back.attrs["transform"] == pytest.approx(ds.attrs["transform"])


#: A product written by glacierflow before the ITS_LIVE layout (every attribute global, grid
#: mapping ``spatial_ref``); see tests/data/legacy/README.md.
LEGACY = Path(__file__).parent / "data" / "legacy" / "velocity_flat_attrs.nc"


def test_products_written_before_the_itslive_layout_still_read(tmp_path):
    back = read_product(LEGACY)
    assert "spatial_ref" not in back.variables
    assert CRS.from_wkt(back.attrs["crs_wkt"]).to_epsg() == 32607
    # The node grid: 8 px steps of 15 m from image pixel (16, 16) of the Yahtse scene.
    assert back.attrs["transform"] == [465255.0, 120.0, 0.0, 6681390.0, 0.0, -120.0]
    assert back.attrs["ref_time"] == "2016-07-18T20:46:12+00:00"
    assert back.attrs["stable_vx_rmse_m_per_yr"] == 31.5
    assert back.attrs["coreg_dx_px"] == 0.066
    assert back.attrs["quality_flag_masks"] == [1, 2, 4, 8, 16, 32]
    # Rewritten, it takes the new layout and reads back to the same attributes.
    again = read_product(write_netcdf(back, tmp_path / "velocity.nc"))
    for key in ("ref_time", "dt_days", "coreg_dx_px", "stable_vx_rmse_m_per_yr", "chip_px"):
        assert again.attrs[key] == back.attrs[key]
    with xr.open_dataset(tmp_path / "velocity.nc") as nc:
        assert nc["vx"].attrs["stable_shift_flag"] == 1  # stable ground from outlines
        assert nc["img_pair_info"].attrs["date_center"] == "20160726T20:46:15.000000"


def test_netcdf_is_georeferenced_for_gdal(ds, tmp_path):
    with rasterio.Env() as env:
        if "netCDF" not in env.drivers():
            pytest.skip("this GDAL has no netCDF driver")
    path = write_netcdf(ds, tmp_path / "velocity.nc")
    with rasterio.open(f"netcdf:{path}:v") as dst:
        assert dst.crs.to_epsg() == 32607
        assert dst.transform.almost_equals(Affine.from_gdal(*ds.attrs["transform"]))
        np.testing.assert_array_equal(dst.read(1), ds["v"].values)


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "product.txt"
    target.write_text("old")
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".product.txt.tmp-")
        assert not tmp.exists()
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["product.txt"]


def _half_write_then_fail(*args, **kwargs):
    """Stand-in for a writer that dies after starting its output file."""
    dst = next(a for a in args if isinstance(a, str | os.PathLike))
    Path(dst).write_bytes(b"II*\x00 half a file")
    raise OSError("disk full (simulated)")


def test_failed_cog_keeps_the_old_product(ds, tmp_path, monkeypatch):
    target = write_cog(ds, tmp_path / "velocity.tif")
    before = target.read_bytes()
    changed = ds.copy(deep=True)
    changed["v"][:] = 1.0
    monkeypatch.setattr(rasterio.shutil, "copy", _half_write_then_fail)
    monkeypatch.setattr(products, "_copy_tiled_geotiff", _half_write_then_fail)
    with pytest.raises(OSError, match="simulated"):
        write_cog(changed, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["velocity.tif"]


def test_failed_netcdf_keeps_the_old_product(ds, tmp_path, monkeypatch):
    target = write_netcdf(ds, tmp_path / "velocity.nc")
    before = target.read_bytes()

    def fail(self, path, *args, **kwargs):
        _half_write_then_fail(path)

    monkeypatch.setattr(xr.Dataset, "to_netcdf", fail)
    with pytest.raises(OSError, match="simulated"):
        write_netcdf(ds, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["velocity.nc"]


def test_unwritable_variable_leaves_nothing(tmp_path):
    ds = make_dataset(5, 6)
    ds["label"] = (("y", "x"), np.full((5, 6), "ice", dtype=object))
    with pytest.raises(ValueError):
        write_cog(ds, tmp_path / "velocity.tif")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def test_summary_statistics(ds, tmp_path):
    path = write_summary(ds, tmp_path / "summary.json", extra={"note": np.float32(2.5)})
    text = path.read_text()
    assert text.startswith("{\n  ")  # pretty-printed
    summary = json.loads(text)
    v = ds["v"].values.astype(np.float64)
    valid = v[np.isfinite(v)]
    assert summary["nodes"] == {
        "total": v.size,
        "valid": valid.size,
        "valid_fraction": pytest.approx(valid.size / v.size),
    }
    assert 0 < valid.size < v.size
    expected = np.percentile(valid, [5, 25, 50, 75, 95])
    for p, q in zip((5, 25, 50, 75, 95), expected, strict=True):
        assert summary["speed_m_per_yr"][f"p{p}"] == pytest.approx(q, rel=1e-12)
        assert summary["speed_m_per_day"][f"p{p}"] == pytest.approx(q / DAYS_PER_YEAR, rel=1e-12)
    assert summary["speed_m_per_yr"]["max"] == pytest.approx(valid.max())
    assert summary["ref_time"] == PAIR_ATTRS["ref_time"]
    assert summary["sec_time"] == PAIR_ATTRS["sec_time"]
    assert summary["dt_days"] == 16.0
    assert summary["ref_sensor"] == summary["sec_sensor"] == "Landsat 8"
    assert summary["grid"]["crs_epsg"] == 32607
    assert summary["grid"]["shape"] == [ds.sizes["y"], ds.sizes["x"]]
    assert summary["grid"]["node_spacing_m"] == 15.0 * STEP_PX
    assert summary["grid"]["transform"] == pytest.approx(ds.attrs["transform"])
    assert summary["settings"] == {"chip_px": 32, "search_px": 20, "step_px": 8, "method": "ncc"}
    assert summary["glacierflow_version"] == "0.1.0"
    assert summary["note"] == 2.5


def test_summary_without_valid_nodes_is_still_json(tmp_path):
    ds = make_dataset(4, 4)
    for name in ds.data_vars:
        ds[name][:] = np.nan
    summary = json.loads(write_summary(ds, tmp_path / "s.json").read_text())
    assert summary["nodes"]["valid"] == 0
    assert summary["nodes"]["valid_fraction"] == 0.0
    assert summary["speed_m_per_yr"]["p50"] is None


# ---------------------------------------------------------------------------------------------
# All products of one pair, and reading errors
# ---------------------------------------------------------------------------------------------


def test_write_products_fills_a_folder_and_spares_other_files(ds, tmp_path):
    out = tmp_path / "pairs" / "2016-07-18_2016-08-03"
    paths = write_products(ds, out)
    assert set(paths) == {"cog", "netcdf", "quicklook", "summary"}
    assert {p.name for p in paths.values()} == {
        "velocity.tif",
        "velocity.nc",
        "quicklook.png",
        "summary.json",
    }
    assert all(p.parent == out and p.stat().st_size > 0 for p in paths.values())
    assert paths["quicklook"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (out / "notes.txt").write_text("keep me")
    faster = ds.copy(deep=True)
    faster["v"] = faster["v"] * 2
    write_products(faster, out)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["notes.txt", "velocity.tif", "velocity.nc", "quicklook.png", "summary.json"]
    )
    for kind in ("cog", "netcdf"):
        np.testing.assert_array_equal(read_product(paths[kind])["v"].values, faster["v"].values)


def test_products_written_on_workers_are_the_products_written_here(ds, tmp_path):
    from glacierflow.execute import Executor

    here = write_products(ds, tmp_path / "here")
    with Executor(2) as executor:
        there = write_products(ds, tmp_path / "there", executor=executor)
    for kind in ("quicklook", "summary"):
        assert there[kind].read_bytes() == here[kind].read_bytes(), kind
    for kind in ("cog", "netcdf"):
        a, b = read_product(here[kind]), read_product(there[kind])
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values)
        stamped = {"date_created", "date_modified", "history"}  # times of writing
        assert {k: v for k, v in a.attrs.items() if k not in stamped} == {
            k: v for k, v in b.attrs.items() if k not in stamped
        }
    assert sorted(p.name for p in (tmp_path / "there").iterdir()) == sorted(PRODUCT_NAMES.values())


def test_a_writer_failing_on_a_worker_keeps_the_old_set(ds, tmp_path):
    from glacierflow.errors import OutputError
    from glacierflow.execute import Executor

    out = tmp_path / "out"
    write_products(ds, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    broken = ds.copy()
    broken.attrs = {k: v for k, v in ds.attrs.items() if k != "transform"}
    with Executor(2) as executor, pytest.raises((InputError, OutputError)):
        write_products(broken, out, executor=executor)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging left either


def test_warm_writers_writes_nothing(tmp_path, monkeypatch):
    from glacierflow.products import warm_writers

    monkeypatch.chdir(tmp_path)
    warm_writers()
    assert list(tmp_path.iterdir()) == []


def test_read_product_errors(tmp_path):
    with pytest.raises(InputError, match="no such product"):
        read_product(tmp_path / "missing.tif")
    other = tmp_path / "velocity.zip"
    other.write_bytes(b"PK")
    with pytest.raises(InputError, match="unknown product type"):
        read_product(other)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="broken.tif"):
        read_product(broken)


# ---------------------------------------------------------------------------------------------
# The cube of period composites, tables and GeoPackages
# ---------------------------------------------------------------------------------------------


def _yearly_composites() -> list[xr.Dataset]:
    """Composites of two Yahtse-grid products a year apart, with v_error (m/yr) from the SNR."""
    from glacierflow.stack import Grid, annual_composites

    pairs = []
    for seed, year in ((1, 2016), (2, 2017)):
        pair = make_dataset(seed=seed)
        pair.attrs.update(ref_time=f"{year}-07-18T20:46:12Z", sec_time=f"{year}-08-03T20:46:18Z")
        pair["v_error"] = 200.0 / pair["snr"]
        pairs.append(pair)
    first = pairs[0]
    grid = Grid(
        first.attrs["crs_wkt"],
        Affine.from_gdal(*first.attrs["transform"]),
        first["v"].shape,
    )
    return annual_composites(pairs, grid)


def test_netcdf_cube_reads_back_with_its_grid_and_time_axis(tmp_path):
    from glacierflow.stack import cube_dataset

    cube = cube_dataset(_yearly_composites())
    path = write_netcdf_cube(cube, tmp_path / "velocity_cube.nc")
    assert [p.name for p in tmp_path.iterdir()] == ["velocity_cube.nc"]
    with xr.open_dataset(path, engine="h5netcdf") as back:
        back = back.load()
    assert back.attrs["Conventions"] == "CF-1.8"
    assert list(back.attrs["years"]) == [2016, 2017]
    np.testing.assert_array_equal(back["time"].values, cube["time"].values)
    np.testing.assert_array_equal(back["time_bnds"].values, cube["time_bnds"].values)
    for name in ("v", "vx", "vy", "v_error"):
        assert back[name].dtype == np.float32
        assert back[name].attrs["grid_mapping"] == "spatial_ref"
        np.testing.assert_array_equal(back[name].values, cube[name].values.astype(np.float32))
    assert np.isnan(back["v"].values).any()  # the holes stay holes, not zeros
    assert back["count"].dtype == np.int16
    np.testing.assert_array_equal(back["count"].values, cube["count"].values)
    gm = back["spatial_ref"].attrs
    assert CRS.from_cf(gm).to_epsg() == 32607
    assert gm["GeoTransform"].split() == [repr(float(c)) for c in cube.attrs["transform"]]
    # The pair product's grid mapping and the cube's are written by the same code.
    single = xr.open_dataset(write_netcdf(make_dataset(), tmp_path / "pair.nc"), engine="h5netcdf")
    with single:
        pair_gm = dict(single["mapping"].attrs)
    assert {k: v for k, v in gm.items() if k != "GeoTransform"} == {
        k: v for k, v in pair_gm.items() if k != "GeoTransform"
    }
    # GDAL finds the CRS and the grid of one layer of the cube.
    with rasterio.open(f"netcdf:{path}:v") as v:
        assert v.crs.to_epsg() == 32607
        assert v.count == 2
        assert v.transform.almost_equals(Affine.from_gdal(*cube.attrs["transform"]))


def test_netcdf_cube_without_crs_is_refused(tmp_path):
    from glacierflow.stack import cube_dataset

    cube = cube_dataset(_yearly_composites())
    cube.attrs["crs_wkt"] = ""
    with pytest.raises(InputError, match="crs_wkt"):
        write_netcdf_cube(cube, tmp_path / "cube.nc")
    assert list(tmp_path.iterdir()) == []


def test_table_and_gpkg_round_trip(tmp_path):
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import box

    table = pd.DataFrame({"glacier_id": ["G0001", "G0002"], "v_mean": [123.456789123, np.nan]})
    path = write_table(table, tmp_path / "stats.csv")
    assert path.read_text().splitlines() == ["glacier_id,v_mean", "G0001,123.4568", "G0002,"]
    gdf = gpd.GeoDataFrame(
        table, geometry=[box(0, 0, 100, 100), box(100, 0, 300, 50)], crs="EPSG:32607"
    )
    path = write_gpkg(gdf, tmp_path / "glaciers.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glaciers.gpkg", "stats.csv"]
    back = gpd.read_file(path, layer="glaciers")
    assert back.crs.to_epsg() == 32607
    assert list(back["glacier_id"]) == ["G0001", "G0002"]
    np.testing.assert_allclose(back.geometry.area, [1e4, 1e4])
