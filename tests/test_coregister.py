"""Co-registration: fit on stable ground, then apply; robust, with honest uncertainties.

The end-to-end tests add a known misregistration (a constant 0.4 px, and a 0.5 px ramp across
the image) to a known glacier flow on real Landsat 7 texture (Everest, 30 m), track the pair
with stable ground outside the glacier, and require both the misregistration and the ice flow
back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from glacierflow.coregister import (
    AffineShift,
    ConstantShift,
    Poly2Shift,
    fit_on_slowest,
    make_coreg,
    nmad,
    slowest_nodes,
)
from glacierflow.matching import make_grid
from glacierflow.pair import make_pair
from glacierflow.scenes import Scene
from glacierflow.synthetic import glacier_field, warp_image
from glacierflow.track import track_pair

EVEREST = Path(__file__).parent / "data" / "everest" / "LE71400412000304SGS00_B4.tif"


# --------------------------------------------------------------------------------------------
# Fits on constructed offsets


def grid(ny: int = 60, nx: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:ny, 0:nx].astype(float)
    return cols * 8 + 30, rows * 8 + 30  # image pixels of nodes 8 px apart


def test_constant_shift_ignores_a_third_of_moving_nodes():
    cols, rows = grid()
    rng = np.random.default_rng(0)
    dx = 0.4 + rng.normal(0, 0.1, cols.shape)
    dy = -0.2 + rng.normal(0, 0.1, cols.shape)
    moving = rng.random(cols.shape) < 0.33
    dx[moving] += rng.uniform(1, 10, moving.sum())
    dy[moving] += rng.uniform(-5, 5, moving.sum())
    dx[::7, ::5] = np.nan
    shift = ConstantShift().fit(dx, dy, np.ones(dx.shape, dtype=bool), cols, rows)
    assert shift.dx_px == pytest.approx(0.4, abs=0.01)
    assert shift.dy_px == pytest.approx(-0.2, abs=0.01)
    # A plain mean would have been dragged by half a pixel or more.
    assert np.nanmean(dx) - 0.4 > 0.5
    # The uncertainty is the scatter over the root of the nodes kept.
    assert shift.dx_err_px == pytest.approx(0.1 / np.sqrt(shift.n_nodes), rel=0.15)
    assert 0.6 * (~moving).sum() < shift.n_nodes <= (~moving).sum()
    out_x, out_y = shift.apply(dx, dy, cols, rows)
    assert np.nanmedian(out_x[~moving]) == pytest.approx(0.0, abs=0.01)
    assert out_x.dtype == np.float32


def test_overlapping_chips_widen_the_uncertainty():
    cols, rows = grid()
    rng = np.random.default_rng(1)
    dx, dy = rng.normal(0, 0.1, (2, *cols.shape))
    stable = np.ones(dx.shape, dtype=bool)
    alone = ConstantShift().fit(dx, dy, stable)
    shared = ConstantShift(nodes_per_sample=16).fit(dx, dy, stable)
    assert shared.dx_err_px == pytest.approx(4 * alone.dx_err_px)
    assert shared.dx_px == alone.dx_px


@pytest.mark.parametrize(
    ("cls", "coefs_x", "coefs_y"),
    [
        (AffineShift, [0.3, 0.25, -0.1], [-0.2, 0.05, 0.2]),
        (Poly2Shift, [0.3, 0.25, -0.1, 0.1, -0.05, 0.08], [-0.2, 0.05, 0.2, 0.0, 0.1, -0.1]),
    ],
)
def test_surfaces_are_recovered_despite_outliers(cls, coefs_x, coefs_y):
    cols, rows = grid()
    u = (cols - (cols.min() + cols.max()) / 2) / ((cols.max() - cols.min()) / 2)
    v = (rows - (rows.min() + rows.max()) / 2) / ((cols.max() - cols.min()) / 2)
    terms = [np.ones_like(u), u, v, u * u, u * v, v * v]
    tx = sum(c * t for c, t in zip(coefs_x, terms, strict=False))
    ty = sum(c * t for c, t in zip(coefs_y, terms, strict=False))
    rng = np.random.default_rng(2)
    dx = tx + rng.normal(0, 0.05, u.shape)
    dy = ty + rng.normal(0, 0.05, u.shape)
    bad = rng.random(u.shape) < 0.2
    dx[bad] += 5.0
    fit = cls().fit(dx, dy, np.ones(u.shape, dtype=bool), cols, rows)
    np.testing.assert_allclose(fit.coef_dx_px, coefs_x, atol=0.02)
    np.testing.assert_allclose(fit.coef_dy_px, coefs_y, atol=0.02)
    cx, cy = fit.correction(cols, rows)
    assert np.abs(cx - tx).max() < 0.03 and np.abs(cy - ty).max() < 0.03
    attrs = fit.attrs()
    assert attrs["coreg_method"] == cls.method
    assert len(attrs["coreg_dx_coef_px"]) == len(attrs["coreg_terms"].split()) == len(coefs_x)
    assert all(e > 0 for e in attrs["coreg_dx_coef_err_px"])


def test_fit_needs_enough_stable_nodes_and_a_fit_before_apply():
    cols, rows = grid(10, 10)
    dx = np.zeros(cols.shape)
    stable = np.zeros(cols.shape, dtype=bool)
    stable[0, :5] = True
    with pytest.raises(ValueError, match="only 5 stable nodes"):
        ConstantShift().fit(dx, dx, stable)
    with pytest.raises(RuntimeError, match="fit"):
        AffineShift().apply(dx, dx)
    with pytest.raises(ValueError, match="one of"):
        make_coreg("rubber-sheet")
    assert isinstance(make_coreg("poly2"), Poly2Shift)


def test_slowest_quarter_finds_still_ground_under_a_misregistration():
    cols, rows = grid()
    rng = np.random.default_rng(3)
    ny, nx = cols.shape
    speed = np.where(np.arange(nx) < nx * 0.6, 6.0 * np.sin(np.arange(nx) / nx * np.pi), 0.0)
    dx = 0.3 + speed[None, :] + rng.normal(0, 0.08, cols.shape)
    dy = -0.25 + 0.5 * speed[None, :] + rng.normal(0, 0.08, cols.shape)
    still = np.broadcast_to(speed[None, :] == 0, dx.shape)
    picked = slowest_nodes(dx, dy)
    assert picked.sum() == pytest.approx(0.25 * dx.size, rel=0.05)
    assert still[picked].mean() > 0.95
    model = ConstantShift()
    stable = fit_on_slowest(model, dx, dy, cols, rows)
    assert still[stable].mean() > 0.95
    assert model.dx_px == pytest.approx(0.3, abs=0.02)
    assert model.dy_px == pytest.approx(-0.25, abs=0.02)
    # Picked by their neighbourhood, not by their own luck: the scatter is not truncated.
    assert nmad(dx[stable]) == pytest.approx(0.08, rel=0.2)


# --------------------------------------------------------------------------------------------
# End to end on real texture


def scene(data: np.ndarray, name: str, day: int, transform, crs) -> Scene:
    return Scene(
        path=Path(name),
        data=data.astype(np.float32),
        valid=np.ones(data.shape, dtype=bool),
        crs=crs,
        transform=transform,
        acquired=datetime(2000, 10, day, tzinfo=UTC),
        sensor="Landsat 7 ETM+",
        scene_id=None,
        time_source="option",
    )


@pytest.fixture(scope="module")
def everest():
    with rasterio.open(EVEREST) as src:
        return src.read(1).astype(np.float64), src.transform, src.crs


def misregistered_pair(everest, mis_x: np.ndarray, mis_y: np.ndarray, peak_px: float = 5.0):
    """The Everest image and its copy moved by a glacier flow plus a misregistration."""
    img, transform, crs = everest
    gx, gy = glacier_field(img.shape, peak_px=peak_px)
    sec = warp_image(img, gx + mis_x, gy + mis_y)
    pair = make_pair(
        scene(img, "ref.tif", 1, transform, crs), scene(sec, "sec.tif", 17, transform, crs)
    )
    g = make_grid(img.shape, chip_px=32, search_px=16, step_px=8)
    rr, cc = np.meshgrid(g.rows_px(), g.cols_px(), indexing="ij")
    moving = np.hypot(gx, gy) > 1e-3
    # Stable: no glacier motion within 20 px, so no chip reaches the ice.
    stable = ~ndimage.binary_dilation(moving, iterations=20)[rr, cc]
    ice = np.hypot(gx, gy)[rr, cc] > 1.0
    return pair, stable, ice, gx[rr, cc], gy[rr, cc], rr, cc


def ice_error_px(ds, ice, gx, gy) -> float:
    ok = ice & (ds["quality"].values == 0)
    assert ok.sum() > 1000
    return float(np.median(np.hypot(ds["dx"].values[ok] - gx[ok], ds["dy"].values[ok] - gy[ok])))


def fitted_surface(ds, rr, cc) -> tuple[np.ndarray, np.ndarray]:
    """The correction recorded in the product's attributes, evaluated at the nodes."""
    a = ds.attrs
    u = (cc - a["coreg_centre_col_px"]) / a["coreg_scale_px"]
    v = (rr - a["coreg_centre_row_px"]) / a["coreg_scale_px"]
    terms = [np.ones_like(u), u, v, u * u, u * v, v * v]
    fx = sum(c * t for c, t in zip(a["coreg_dx_coef_px"], terms, strict=False))
    fy = sum(c * t for c, t in zip(a["coreg_dy_coef_px"], terms, strict=False))
    return fx, fy


def test_constant_misregistration_is_removed(everest):
    shape = everest[0].shape
    pair, stable, ice, gx, gy, rr, cc = misregistered_pair(
        everest, np.full(shape, 0.4), np.full(shape, -0.25)
    )
    raw = track_pair(pair, stable_mask=stable, coreg="none")
    assert ice_error_px(raw, ice, gx, gy) > 0.3  # the misregistration is there
    ds = track_pair(pair, stable_mask=stable)
    assert ds.attrs["coreg_method"] == "constant"
    assert ds.attrs["coreg_dx_px"] == pytest.approx(0.4, abs=0.03)
    assert ds.attrs["coreg_dy_px"] == pytest.approx(-0.25, abs=0.03)
    assert 0 < ds.attrs["coreg_dx_err_px"] < 0.03
    assert ds.attrs["stable_source"] == "array"
    assert ice_error_px(ds, ice, gx, gy) <= 0.05


@pytest.mark.parametrize("coreg", ["affine", "poly2"])
def test_a_ramp_across_the_image_is_removed(everest, coreg):
    h, w = everest[0].shape
    rows, cols = np.mgrid[0:h, 0:w].astype(float)
    # 0.5 px from one side of the image to the other, in x along columns and in y along rows.
    mis_x, mis_y = 0.1 + 0.5 * cols / w, -0.3 + 0.5 * rows / h
    pair, stable, ice, gx, gy, rr, cc = misregistered_pair(everest, mis_x, mis_y)
    constant = track_pair(pair, stable_mask=stable, coreg="constant")
    ds = track_pair(pair, stable_mask=stable, coreg=coreg)
    fx, fy = fitted_surface(ds, rr, cc)
    assert np.abs(fx - mis_x[rr, cc]).max() <= 0.03
    assert np.abs(fy - mis_y[rr, cc]).max() <= 0.03
    assert ice_error_px(ds, ice, gx, gy) <= 0.05
    # A constant cannot follow the ramp: the ice is off by about a quarter of it.
    assert ice_error_px(constant, ice, gx, gy) > 0.08


def test_moving_ice_inside_the_stable_mask_does_not_drag_the_fit(everest):
    shape = everest[0].shape
    pair, stable, ice, gx, gy, rr, cc = misregistered_pair(
        everest, np.full(shape, 0.4), np.full(shape, -0.25)
    )
    # A careless mask: a fifth of its nodes are on fast ice.
    sloppy = stable.copy()
    fast = np.argwhere(ice & (np.hypot(gx, gy) > 3))
    take = fast[np.linspace(0, len(fast) - 1, stable.sum() // 4).astype(int)]
    sloppy[take[:, 0], take[:, 1]] = True
    assert 0.15 < (sloppy & ~stable).sum() / sloppy.sum() < 0.3
    ds = track_pair(pair, stable_mask=sloppy)
    assert ds.attrs["coreg_dx_px"] == pytest.approx(0.4, abs=0.03)
    assert ds.attrs["coreg_dy_px"] == pytest.approx(-0.25, abs=0.03)
    assert ds.attrs["coreg_nodes"] < 0.9 * ds.attrs["coreg_candidate_nodes"]


def test_without_outlines_the_slowest_quarter_stands_in(everest):
    shape = everest[0].shape
    pair, stable, ice, gx, gy, rr, cc = misregistered_pair(
        everest, np.full(shape, 0.4), np.full(shape, -0.25)
    )
    ds = track_pair(pair)
    assert ds.attrs["stable_source"] == "slowest quarter of valid nodes (no outlines given)"
    assert ds.attrs["coreg_dx_px"] == pytest.approx(0.4, abs=0.03)
    assert ds.attrs["coreg_dy_px"] == pytest.approx(-0.25, abs=0.03)
    assert ice_error_px(ds, ice, gx, gy) <= 0.05


def test_correction_error_grows_away_from_the_data():
    cols, rows = grid()
    rng = np.random.default_rng(4)
    dx, dy = rng.normal(0, 0.1, (2, *cols.shape))
    stable = np.zeros(cols.shape, dtype=bool)
    stable[:, :20] = True  # only the western quarter is stable
    fit = AffineShift().fit(dx, dy, stable, cols, rows)
    err = fit.correction_error(cols, rows)
    assert err[:, -1].mean() > 3 * err[:, 10].mean()
    const = ConstantShift().fit(dx, dy, stable, cols, rows)
    np.testing.assert_allclose(
        const.correction_error(cols, rows),
        np.hypot(const.dx_err_px, const.dy_err_px) / np.sqrt(2),
    )
