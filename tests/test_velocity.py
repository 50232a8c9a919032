"""Per-node errors and stable-ground statistics: models, calibration, and honesty on real data.

``v_error`` is the one-sigma error of each velocity component. On a pair with known motion and
noise about 68 % of the component errors must fall within it, on ice as on rock; on the real
Yahtse pair the stable-ground statistics in the attributes must be those of the product's own
stable nodes, and the errors there must match their scatter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from scipy import ndimage

from glacierflow.coregister import nmad
from glacierflow.demo import demo_inputs, node_mask_from_outlines
from glacierflow.filters import Quality
from glacierflow.matching import make_grid
from glacierflow.pair import make_pair
from glacierflow.products import read_product, write_products
from glacierflow.scenes import Scene
from glacierflow.synthetic import glacier_field, warp_image
from glacierflow.track import track, track_pair
from glacierflow.velocity import (
    DAYS_PER_YEAR,
    DEFAULT_PEAK_SIGMA_SCALE,
    ERROR_VARIABLES,
    PEAK_COVARIANCE_BOUNDS,
    PEAK_SIGMA_FLOOR_PX,
    QUALITY_VARIABLES,
    VARIABLES,
    calibrate_component_sigma,
    calibrate_peak_sigma,
    component_gradients,
    displacement_gradient,
    error_px_to_m_per_yr,
    peak_covariance_shape,
    peak_sigma_px,
    peak_sigma_shape,
    stable_statistics,
    velocity_dataset,
)

EVEREST = Path(__file__).parent / "data" / "everest" / "LE71400412000304SGS00_B4.tif"
#: Band numbers of a product's COG, by variable (its band order).
VARIABLES_BANDS = {name: i + 1 for i, name in enumerate([*VARIABLES, *ERROR_VARIABLES])}


# --------------------------------------------------------------------------------------------
# The model


def test_peak_sigma_shape_follows_the_correlation_and_curvature():
    rho = np.array([0.3, 0.5, 0.7, 0.9, 0.99])
    s = peak_sigma_shape(rho, chip_px=32)
    assert np.all(np.diff(s) < 0)
    assert s[2] == pytest.approx(np.sqrt(1 - 0.49) / (0.7 * 32))
    # Half the chip side: twice the sigma (four times fewer pixels).
    np.testing.assert_allclose(peak_sigma_shape(rho, chip_px=16), 2 * s)
    # A peak twice as sharp locates its maximum sqrt(2) times better.
    c = np.full(rho.shape, 0.2)
    blunt = peak_sigma_shape(rho, 32, c, c)
    sharp = peak_sigma_shape(rho, 32, 2 * c, 2 * c)
    np.testing.assert_allclose(blunt / sharp, np.sqrt(2))
    assert peak_sigma_px(np.zeros(3), 5.0)[0] == pytest.approx(PEAK_SIGMA_FLOOR_PX)


def test_calibration_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    rho = rng.uniform(0.3, 0.98, 5000)
    shape = peak_sigma_shape(rho, 32)
    sigma = peak_sigma_px(shape, 4.0)
    rx, ry = rng.normal(0, sigma), rng.normal(0, sigma)
    assert calibrate_peak_sigma(rx, ry, shape) == pytest.approx(4.0, rel=0.05)
    # Scatter the floor alone explains: no scale at all.
    tiny = rng.normal(0, 0.005, (2, 5000))
    assert calibrate_peak_sigma(tiny[0], tiny[1], shape) == 0.0
    with pytest.raises(ValueError, match="only 10 stable nodes"):
        calibrate_peak_sigma(rx[:10], ry[:10], shape[:10])


def test_component_calibration_recovers_each_scale():
    rng = np.random.default_rng(1)
    shape = peak_sigma_shape(rng.uniform(0.3, 0.98, 5000), 32)
    rx = rng.normal(0, peak_sigma_px(shape, 6.0))
    ry = rng.normal(0, peak_sigma_px(shape, 2.0))
    assert calibrate_component_sigma(rx, shape) == pytest.approx(6.0, rel=0.05)
    assert calibrate_component_sigma(ry, shape) == pytest.approx(2.0, rel=0.05)
    # The joint scale of both lies between them.
    assert 2.0 < calibrate_peak_sigma(rx, ry, shape) < 6.0
    with pytest.raises(ValueError, match="only 10 stable nodes"):
        calibrate_component_sigma(rx[:10], shape[:10])


def test_peak_covariance_follows_the_texture():
    """Stripes pin the offset across them and leave it loose along them; real texture is
    about isotropic; the factors average 1."""
    rows, cols = np.mgrid[0:200, 0:300].astype(float)
    grid_r, grid_c = np.arange(40, 160, 8), np.arange(40, 260, 8)
    # East-west stripes (intensity varies with the row only): dy is fixed, dx is not.
    c_x, c_y = peak_covariance_shape(np.sin(rows / 3.0), None, grid_r, grid_c, 32)
    np.testing.assert_allclose(c_x, PEAK_COVARIANCE_BOUNDS[1])
    np.testing.assert_allclose(c_y, PEAK_COVARIANCE_BOUNDS[0])
    # Stripes at 45 degrees constrain both components alike.
    c_x, c_y = peak_covariance_shape(np.sin((rows + cols) / 3.0), None, grid_r, grid_c, 32)
    np.testing.assert_allclose(c_x, 1.0, atol=1e-9)
    # Pixels outside the valid mask do not count: a valid half of north-south stripes.
    img = np.where(cols < 150, np.sin(cols / 3.0), np.sin(rows / 3.0))
    c_x, _ = peak_covariance_shape(img, cols < 150, grid_r, grid_c, 32)
    assert np.all(c_x[:, grid_c + 17 < 150] == PEAK_COVARIANCE_BOUNDS[0])
    # A flat chip: no information either way.
    c_x, c_y = peak_covariance_shape(np.ones((200, 300)), None, grid_r, grid_c, 32)
    assert np.all(c_x == 1.0) and np.all(c_y == 1.0)
    with rasterio.open(EVEREST) as src:
        img = src.read(1).astype(np.float64)
    g = make_grid(img.shape, chip_px=32, search_px=16, step_px=8)
    c_x, c_y = peak_covariance_shape(img, None, g.rows_px(), g.cols_px(), 32)
    np.testing.assert_allclose(c_x + c_y, 2.0)
    assert 0.8 < np.median(c_x) < 1.2


def test_component_gradients_of_a_linear_field():
    rows, cols = np.mgrid[0:20, 0:30].astype(float)
    dx = (0.02 * cols + 0.01 * rows) * 8.0
    dy = -0.03 * rows * 8.0
    gdx, gdy = component_gradients(dx, dy, 8.0)
    np.testing.assert_allclose(gdx, np.hypot(0.02, 0.01), rtol=1e-9)
    np.testing.assert_allclose(gdy, 0.03, rtol=1e-9)
    np.testing.assert_allclose(displacement_gradient(dx, dy, 8.0), np.hypot(gdx, gdy))


def test_displacement_gradient_of_a_linear_field():
    rows, cols = np.mgrid[0:20, 0:30].astype(float)
    step = 8.0
    dx = 0.02 * cols * step + 0.01 * rows * step  # d(dx)/dx = 0.02, d(dx)/dy = 0.01 px/px
    dy = -0.03 * rows * step
    dx[5, 5] = np.nan
    g = displacement_gradient(dx, dy, step)
    expected = np.sqrt(0.02**2 + 0.01**2 + 0.03**2)
    ok = np.isfinite(g)
    assert ok.sum() == dx.size - 1
    np.testing.assert_allclose(g[ok], expected, rtol=1e-9)


def test_stable_statistics_units():
    vx = np.array([[10.0, -10.0], [20.0, np.nan]])
    vy = np.array([[0.0, 5.0], [-5.0, 1.0]])
    stable = np.array([[True, True], [True, True]])
    st = stable_statistics(vx, vy, stable, pixel_size_m=15.0, dt_days=16.0)
    assert st["stable_nodes"] == 3
    assert st["stable_vx_mean_m_per_yr"] == pytest.approx(20 / 3)
    assert st["stable_vx_median_m_per_yr"] == pytest.approx(10.0)
    assert st["stable_vx_std_m_per_yr"] == pytest.approx(np.std([10, -10, 20], ddof=1))
    assert st["stable_vx_rmse_m_per_yr"] == pytest.approx(np.sqrt(600 / 3))
    assert st["stable_vy_nmad_m_per_yr"] == pytest.approx(nmad(np.array([0.0, 5.0, -5.0])))
    m = 16.0 / DAYS_PER_YEAR
    assert st["stable_vx_std_m"] == pytest.approx(st["stable_vx_std_m_per_yr"] * m)
    assert st["stable_vx_std_px"] == pytest.approx(st["stable_vx_std_m"] / 15.0)
    transform = Affine(15, 0, 0, 0, -15, 0)
    assert error_px_to_m_per_yr(1.0, transform, 16.0) == pytest.approx(15 * DAYS_PER_YEAR / 16)


def test_error_and_quality_layers_follow_the_seven():
    z = np.zeros((3, 4))
    q = np.zeros((3, 4), dtype=np.uint8)
    q[0, 0] = Quality.LOW_CORR
    ds = velocity_dataset(
        z,
        z,
        z,
        z,
        image_transform=Affine(15, 0, 0, 0, -15, 0),
        row0_px=16,
        col0_px=16,
        step_px=8,
        crs_wkt=None,
        dt_days=16.0,
        extra={"extra_layer": z},
        v_error=z + 1,
        quality=q,
    )
    assert list(ds.data_vars) == [*VARIABLES, "v_error", "quality", "extra_layer"]
    assert ds["quality"].dtype == np.uint16
    assert ds["quality"].attrs["flag_masks"] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert ds["v_error"].attrs["units"] == "m/yr"
    assert "each velocity component" in ds["v_error"].attrs["long_name"]
    assert ds.attrs["quality_flag_meanings"] == QUALITY_VARIABLES["quality"]["flag_meanings"]


# --------------------------------------------------------------------------------------------
# Calibration on a pair with known motion and noise


def warped_pair(blur_px: tuple[float, float] | None = None):
    """Everest texture (smoothed by ``blur_px`` rows, columns), a 10 px glacier flow, and noise
    of 15 % of the image's spread: the pair, its stable nodes and the true offsets there."""
    with rasterio.open(EVEREST) as src:
        img, transform, crs = src.read(1).astype(np.float64), src.transform, src.crs
    if blur_px is not None:
        img = ndimage.gaussian_filter(img, blur_px)
    gx, gy = glacier_field(img.shape, peak_px=10.0)
    sec = warp_image(img, gx, gy)
    rng = np.random.default_rng(7)
    noise = 0.15 * img.std()
    a = img + rng.normal(0, noise, img.shape)
    b = sec + rng.normal(0, noise, img.shape)

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

    pair = make_pair(scene(a, "ref.tif", 1), scene(b, "sec.tif", 17))
    g = make_grid(img.shape, chip_px=32, search_px=16, step_px=8)
    rr, cc = np.meshgrid(g.rows_px(), g.cols_px(), indexing="ij")
    moving = np.hypot(gx, gy) > 1e-3
    stable = ~ndimage.binary_dilation(moving, iterations=20)[rr, cc]
    return pair, stable, gx[rr, cc], gy[rr, cc]


@pytest.fixture(scope="module")
def noisy_pair():
    """Everest texture, a 10 px glacier flow, and noise of 15 % of the image's spread."""
    return warped_pair()


def coverage(ds: xr.Dataset, gx: np.ndarray, gy: np.ndarray, nodes: np.ndarray) -> float:
    """Fraction of component errors (px) within the reported one-sigma ``v_error``."""
    a = ds.attrs
    sigma_px = ds["v_error"].values / (a["pixel_size_m"] * DAYS_PER_YEAR / a["dt_days"])
    ok = nodes & (ds["quality"].values == 0)
    ex = np.abs(ds["dx"].values - gx)[ok]
    ey = np.abs(ds["dy"].values - gy)[ok]
    return float(np.mean(np.concatenate([ex <= sigma_px[ok], ey <= sigma_px[ok]])))


def test_v_error_is_a_calibrated_one_sigma(noisy_pair):
    pair, stable, gx, gy = noisy_pair
    ds = track_pair(pair, stable_mask=stable)
    valid = ds["quality"].values == 0
    assert valid.mean() > 0.95
    assert ds.attrs["v_error_scale"] > 0
    assert 0.60 <= coverage(ds, gx, gy, valid) <= 0.76
    # It holds on the moving ice too, where the strain across a chip adds to the error.
    ice = np.hypot(gx, gy) > 2
    assert 0.60 <= coverage(ds, gx, gy, valid & ice) <= 0.76
    assert np.median(ds["v_error"].values[ice & valid]) > np.median(
        ds["v_error"].values[stable & valid]
    )


def component_coverage(
    ds: xr.Dataset, gx: np.ndarray, gy: np.ndarray, nodes: np.ndarray
) -> tuple[float, float]:
    """Fractions of the errors of dx within ``vx_error`` and of dy within ``vy_error`` (px)."""
    a = ds.attrs
    per_px = a["pixel_size_m"] * DAYS_PER_YEAR / a["dt_days"]
    ok = nodes & (ds["quality"].values == 0)
    ex = np.abs(ds["dx"].values - gx)[ok]
    ey = np.abs(ds["dy"].values - gy)[ok]
    sx, sy = (ds[name].values[ok] / per_px for name in ("vx_error", "vy_error"))
    return float(np.mean(ex <= sx)), float(np.mean(ey <= sy))


def test_component_errors_are_calibrated_one_sigmas(noisy_pair):
    """vx_error and vy_error each hold about 68 % of their component's errors, on rock (where
    they are calibrated) and on the ice (where strain across the chip adds to them)."""
    pair, stable, gx, gy = noisy_pair
    ds = track_pair(pair, stable_mask=stable)
    valid = ds["quality"].values == 0
    ice = np.hypot(gx, gy) > 2
    for nodes in (valid, valid & stable, valid & ice):
        fx, fy = component_coverage(ds, gx, gy, nodes)
        assert 0.60 <= fx <= 0.76 and 0.60 <= fy <= 0.76, (fx, fy)
    assert ds.attrs["v_error_scale_vx"] > 0 and ds.attrs["v_error_scale_vy"] > 0
    assert ds.attrs["v_error_peak_shape"] == "structure tensor of the reference chip"
    # v_error is still the isotropic model: between the two, and the same calibration.
    err = {name: ds[name].values[valid] for name in ERROR_VARIABLES}
    assert np.all(np.minimum(err["vx_error"], err["vy_error"]) < err["v_error"] * 1.5)
    halved = ds.copy()
    halved["vx_error"], halved["vy_error"] = ds["vx_error"] / 2, ds["vy_error"] / 2
    assert max(component_coverage(halved, gx, gy, valid)) < 0.5


def test_component_errors_follow_elongated_texture():
    """Texture smoothed along the rows (streaks running east-west, like crevasse-free flow
    stripes) pins dy and leaves dx loose: vx_error grows to match, where one isotropic
    v_error holds under half of the dx errors and over 75 % of the dy errors."""
    pair, stable, gx, gy = warped_pair(blur_px=(0.5, 3.0))
    ds = track_pair(pair, stable_mask=stable)
    valid = ds["quality"].values == 0
    assert valid.mean() > 0.85
    ex, ey = ds["dx"].values - gx, ds["dy"].values - gy
    true_ratio = nmad(ex[valid]) / nmad(ey[valid])
    sigma_ratio = np.median(ds["vx_error"].values[valid] / ds["vy_error"].values[valid])
    assert true_ratio > 2.0
    assert sigma_ratio == pytest.approx(true_ratio, rel=0.2)
    for nodes in (valid, valid & stable):
        fx, fy = component_coverage(ds, gx, gy, nodes)
        assert 0.60 <= fx <= 0.76 and 0.60 <= fy <= 0.76, (fx, fy)
    iso = ds.copy()
    iso["vx_error"], iso["vy_error"] = ds["v_error"], ds["v_error"]
    fx, fy = component_coverage(iso, gx, gy, valid)
    assert fx < 0.5 and fy > 0.75


def test_a_wrong_scale_is_caught(noisy_pair):
    """Halve the errors, and the coverage test fails: it can tell."""
    pair, stable, gx, gy = noisy_pair
    ds = track_pair(pair, stable_mask=stable)
    halved = ds.copy()
    halved["v_error"] = ds["v_error"] / 2
    assert coverage(halved, gx, gy, ds["quality"].values == 0) < 0.5


# --------------------------------------------------------------------------------------------
# The real pair


@pytest.fixture(scope="module")
def yahtse_products(tmp_path_factory):
    ref, sec, rock = demo_inputs()
    ds = track(ref, sec, progress=False, stable_mask=rock, workers=2)
    out = tmp_path_factory.mktemp("yahtse")
    paths = write_products(ds, out)
    return ds, paths, rock


def test_reported_stable_scatter_is_that_of_the_rock_in_the_product(yahtse_products):
    ds, paths, rock = yahtse_products
    back = read_product(paths["cog"])
    attrs = back.attrs
    rock_nodes = node_mask_from_outlines(back, rock) & (back["quality"].values == 0)
    vx, vy = back["vx"].values[rock_nodes], back["vy"].values[rock_nodes]
    assert attrs["stable_nodes"] == rock_nodes.sum() > 1000
    assert attrs["stable_vx_std_m_per_yr"] == pytest.approx(np.std(vx, ddof=1), rel=1e-4)
    assert attrs["stable_vy_std_m_per_yr"] == pytest.approx(np.std(vy, ddof=1), rel=1e-4)
    assert attrs["stable_vx_nmad_m_per_yr"] == pytest.approx(nmad(vx), rel=1e-4)
    assert attrs["stable_vx_median_px"] == pytest.approx(0.0, abs=0.02)  # co-registered
    # The per-node errors there match the scatter they describe (robustly: the rock has a few
    # mismatches that pass the filter, so the standard deviation exceeds the NMAD).
    err = back["v_error"].values[rock_nodes]
    inside = np.concatenate([np.abs(vx) <= err, np.abs(vy) <= err])
    assert 0.60 <= inside.mean() <= 0.76
    # Each component's own error holds about 68 % of that component on the rock; the rock's
    # vy scatters more than its vx, and vy_error says so.
    ex, ey = back["vx_error"].values[rock_nodes], back["vy_error"].values[rock_nodes]
    assert 0.60 <= np.mean(np.abs(vx) <= ex) <= 0.76
    assert 0.60 <= np.mean(np.abs(vy) <= ey) <= 0.76
    assert np.median(ey) / np.median(ex) == pytest.approx(nmad(vy) / nmad(vx), rel=0.15)
    assert np.median(err) == pytest.approx(np.mean([nmad(vx), nmad(vy)]), rel=0.25)
    # About 30 m/yr on rock for a 16-day Landsat 8 pair: 0.08 px of 15 m.
    assert 15 < attrs["stable_vx_nmad_m_per_yr"] < 50


def test_summary_and_netcdf_carry_the_statistics_and_flags(yahtse_products):
    ds, paths, _ = yahtse_products
    summary = json.loads(paths["summary"].read_text())
    st = summary["stable_ground"]
    assert st["source"] == "stable_rock_outlines.gpkg"
    assert st["vx_std_m_per_yr"] == pytest.approx(ds.attrs["stable_vx_std_m_per_yr"])
    for comp in ("vx", "vy"):
        for stat in ("mean", "median", "std", "nmad", "rmse"):
            for unit in ("px", "m", "m_per_yr"):
                assert f"{comp}_{stat}_{unit}" in st
    assert summary["coregistration"]["method"] == "constant"
    assert summary["v_error"]["scale"] == pytest.approx(ds.attrs["v_error_scale"])
    q = summary["quality_nodes"]
    assert q["good"] == summary["nodes"]["valid"]
    assert q["no_match"] + q["good"] <= summary["nodes"]["total"]
    with xr.open_dataset(paths["netcdf"], engine="h5netcdf") as nc:
        assert nc["quality"].dtype == np.uint16
        assert list(nc["quality"].attrs["flag_masks"]) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
        assert nc["quality"].attrs["flag_meanings"].startswith("no_match low_correlation")
        np.testing.assert_array_equal(nc["quality"].values, ds["quality"].values)
        # Each component points at its own error (CF ancillary_variables), as ITS_LIVE names it.
        assert nc["vx"].attrs["ancillary_variables"] == "vx_error v_error quality"
        assert nc["vy"].attrs["ancillary_variables"] == "vy_error v_error quality"
        assert nc["vx_error"].attrs["long_name"] == "1-sigma error of vx"
    with rasterio.open(paths["cog"]) as tif:
        assert tif.descriptions == (*VARIABLES, *ERROR_VARIABLES, "quality", "chip_px")
        assert tif.tags(VARIABLES_BANDS["vx_error"])["units"] == "m/yr"
        assert json.loads(tif.tags()["quality_flag_masks"]) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert summary["v_error"]["scale_vx"] == pytest.approx(ds.attrs["v_error_scale_vx"])
    for path in (paths["netcdf"], paths["cog"]):
        back = read_product(path)
        for name in ERROR_VARIABLES:
            np.testing.assert_allclose(back[name].values, ds[name].values, rtol=1e-6)
            assert back[name].attrs["units"] == "m/yr"


def test_too_little_stable_ground_falls_back_to_the_default_scale(noisy_pair):
    pair, stable, gx, gy = noisy_pair
    few = np.zeros(stable.shape, dtype=bool)
    few[np.nonzero(stable)[0][:20], np.nonzero(stable)[1][:20]] = True
    ds = track_pair(pair, stable_mask=few)
    assert ds.attrs["v_error_calibration"].startswith("default scale (only")
    assert ds.attrs["v_error_scale"] == DEFAULT_PEAK_SIGMA_SCALE
    assert np.isfinite(ds["v_error"].values[ds["quality"].values == 0]).all()


def test_velocity_nc_reads_as_an_itslive_granule(yahtse_products):
    """Opened as ITS_LIVE's notebooks open image-pair granules, the product says what it is."""
    import pandas as pd
    from pyproj import CRS

    ds, paths, rock = yahtse_products
    with xr.open_dataset(paths["netcdf"]) as granule:
        granule = granule.load()
    assert granule.vx.attrs["standard_name"] == "land_ice_surface_x_velocity"
    assert granule.vy.attrs["standard_name"] == "land_ice_surface_y_velocity"
    assert granule.v.attrs["standard_name"] == "land_ice_surface_velocity"
    # The pair: ITS_LIVE's date format, parsed as its cube builders parse it.
    info = granule.img_pair_info.attrs
    t1 = datetime.strptime(info["acquisition_date_img1"], "%Y%m%dT%H:%M:%S.%f")
    t2 = datetime.strptime(info["acquisition_date_img2"], "%Y%m%dT%H:%M:%S.%f")
    assert (f"{t1:%Y-%m-%d}", f"{t2:%Y-%m-%d}") == ("2016-07-18", "2016-08-03")
    assert pd.to_datetime(info["date_center"]) == t1 + (t2 - t1) / 2
    assert f"{pd.to_datetime(info['date_center']):%Y-%m-%d}" == "2016-07-26"
    assert info["date_dt"] == pytest.approx(16.0, abs=1e-3)
    assert info["date_dt"] == pytest.approx((t2 - t1).total_seconds() / 86400, abs=1e-6)
    assert info["date_dt"] == ds.attrs["dt_days"]
    assert (info["mission_img1"], info["satellite_img1"], info["mission_img2"]) == ("L", "8", "L")
    assert info["id_img1"] == ds.attrs["ref_scene_id"]
    assert info["id_img2"] == ds.attrs["sec_scene_id"]
    # Glacier Yahtse, Icy Bay, Alaska.
    assert (info["latitude"], info["longitude"]) == pytest.approx((60.2, -141.3), abs=0.3)
    # The grid.
    assert int(granule.mapping.attrs["spatial_epsg"]) == 32607
    assert CRS.from_wkt(granule.mapping.attrs["crs_wkt"]).to_epsg() == 32607
    assert granule.vx.attrs["grid_mapping"] == "mapping"
    # The error of vx is the RMSE of the product's own vx on the rock it was co-registered on.
    back = read_product(paths["cog"])
    on_rock = node_mask_from_outlines(back, rock) & (back["quality"].values == 0)
    for comp in ("vx", "vy"):
        values = back[comp].values[on_rock].astype(np.float64)
        assert granule[comp].attrs["error"] == pytest.approx(np.sqrt(np.mean(values**2)), rel=1e-4)
        assert granule[comp].attrs["error_stationary"] == granule[comp].attrs["error"]
        assert granule[comp].attrs["stable_shift_flag"] == 1  # stable ground from outlines
        assert granule[comp].attrs["stable_count_stationary"] == ds.attrs["coreg_nodes"] > 1000
    assert 15 < granule.vx.attrs["error"] < 60
    # The global list is a short CF/ACDD one; the statistics sit on the variables.
    assert len(granule.attrs) <= 25
    assert granule.attrs["time_coverage_start"].startswith("2016-07-18")
    assert granule.vx.attrs["stable_vx_nmad_m_per_yr"] == ds.attrs["stable_vx_nmad_m_per_yr"]


def test_stable_shift_is_the_bias_of_the_raw_velocities_on_rock(yahtse_products):
    """ITS_LIVE's ``stable_shift`` is the velocity subtracted: that of the rock without it.

    The co-registration fits a constant offset to the rock nodes as the mean of those within 3
    NMAD of the median in both components, repeated until no node changes side; computed here
    from a run without co-registration, that mean is the shift the product reports.
    """
    ds, paths, rock = yahtse_products
    ref, sec, _ = demo_inputs()
    raw = track(ref, sec, progress=False, stable_mask=rock, coreg="none", workers=2)
    on_rock = node_mask_from_outlines(raw, rock) & (raw["quality"].values == 0)
    x, y = (raw[c].values[on_rock].astype(np.float64) for c in ("vx", "vy"))
    keep = np.ones(x.size, dtype=bool)
    for _ in range(20):
        near = np.abs(x - np.median(x[keep])) <= 3 * nmad(x[keep])
        near &= np.abs(y - np.median(y[keep])) <= 3 * nmad(y[keep])
        if np.array_equal(near, keep):
            break
        keep = near
    with xr.open_dataset(paths["netcdf"]) as granule:
        assert granule.vx.attrs["stable_count_stationary"] == keep.sum() > 1000
        for comp, values in (("vx", x), ("vy", y)):
            shift = granule[comp].attrs["stable_shift"]
            assert shift == pytest.approx(values[keep].mean(), abs=0.01), comp
            assert abs(shift) > 10  # a real bias of the pair: 0.1 px or more of 15 m in 16 days
            np.testing.assert_allclose(
                granule[comp].values[on_rock] + shift, raw[comp].values[on_rock], atol=0.05
            )


def test_a_pair_cube_of_the_time_series_keeps_the_component_errors():
    """The time series takes each component's own error from a pair product, and v_error for
    both from products written before vx_error/vy_error existed."""
    from pyproj import CRS

    from glacierflow.timeseries.network import pair_to_cube

    z = np.zeros((3, 4))
    ds = velocity_dataset(
        z,
        z,
        z + 1,
        z + 10,
        image_transform=Affine(15, 0, 500000, 0, -15, 6000000),
        row0_px=0,
        col0_px=0,
        step_px=8,
        crs_wkt=CRS.from_epsg(32607).to_wkt(),
        dt_days=16.0,
        attrs={"ref_time": "2016-07-18T00:00:00+00:00", "sec_time": "2016-08-03T00:00:00+00:00"},
        v_error=z + 2,
        vx_error=z + 1,
        vy_error=z + 3,
    )
    cube = pair_to_cube(ds)
    np.testing.assert_array_equal(cube["vx_error"].values[0], 1.0)
    np.testing.assert_array_equal(cube["vy_error"].values[0], 3.0)
    old = pair_to_cube(ds.drop_vars(["vx_error", "vy_error"]))
    np.testing.assert_array_equal(old["vx_error"].values[0], 2.0)
    np.testing.assert_array_equal(old["vy_error"].values[0], 2.0)
