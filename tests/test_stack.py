"""Composites: how pairs count for periods, inverse-variance weights, resampling, rotation, cube."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from pyproj import CRS, Proj

from glacierflow.stack import (
    Grid,
    Period,
    annual_composites,
    calendar_periods,
    composite,
    cube_dataset,
    period_fractions,
    regrid,
    vector_rotation,
)
from glacierflow.velocity import velocity_dataset

UTM43 = CRS.from_epsg(32643).to_wkt()
UTM44 = CRS.from_epsg(32644).to_wkt()


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


#: The seed's four Landsat 7 pairs.
SEED = [
    ("1999-07-16", "2000-06-16"),
    ("2000-06-16", "2001-07-21"),
    ("2001-07-21", "2002-08-09"),
    ("2002-04-19", "2003-03-21"),
]


def test_the_seed_pairs_split_over_calendar_years_by_their_days():
    years = calendar_periods(day("1999-07-16"), day("2003-03-21"))
    assert [p.year for p in years] == [1999, 2000, 2001, 2002, 2003]
    shares = [period_fractions(day(a), day(b), years, "overlap") for a, b in SEED]
    assert shares[0] == pytest.approx({1999: 169 / 336, 2000: 167 / 336})
    assert shares[1] == pytest.approx({2000: 199 / 400, 2001: 201 / 400})
    assert shares[3] == pytest.approx({2002: 257 / 336, 2003: 79 / 336})
    for share in shares:
        assert sum(share.values()) == pytest.approx(1.0)
    majority = [period_fractions(day(a), day(b), years, "majority") for a, b in SEED]
    assert majority == [{1999: 1.0}, {2001: 1.0}, {2002: 1.0}, {2002: 1.0}]
    midpoint = [period_fractions(day(a), day(b), years, "midpoint") for a, b in SEED]
    assert midpoint == [{1999: 1.0}, {2001: 1.0}, {2002: 1.0}, {2002: 1.0}]


def test_glaciological_years_hold_one_seed_pair_each():
    years = [Period(y, day(f"{y}-07-01"), day(f"{y + 1}-07-01")) for y in range(1999, 2003)]
    majority = [period_fractions(day(a), day(b), years, "majority") for a, b in SEED]
    assert majority == [{1999: 1.0}, {2000: 1.0}, {2001: 1.0}, {2002: 1.0}]


def test_bad_periods_and_rules_are_refused():
    with pytest.raises(ValueError, match="assign"):
        period_fractions(day("2000-01-01"), day("2001-01-01"), [], "nearest")
    with pytest.raises(ValueError, match="end after"):
        period_fractions(day("2001-01-01"), day("2000-01-01"), [], "overlap")
    with pytest.raises(ValueError, match="not after"):
        Period(2000, day("2001-01-01"), day("2000-01-01"))


def _on_grid(grid: Grid, vx, vy, err, ref="2000-01-01", sec="2001-01-01") -> xr.Dataset:
    layers = {
        "vx": np.broadcast_to(np.asarray(vx, np.float32), grid.shape).copy(),
        "vy": np.broadcast_to(np.asarray(vy, np.float32), grid.shape).copy(),
        "v_error": np.broadcast_to(np.asarray(err, np.float32), grid.shape).copy(),
    }
    ds = xr.Dataset({k: (("y", "x"), v) for k, v in layers.items()}, coords=grid.coords())
    ds.attrs.update(
        grid.attrs(), ref_time=f"{ref}T00:00:00+00:00", sec_time=f"{sec}T00:00:00+00:00"
    )
    return ds


def test_composite_weights_by_inverse_variance_and_overlap():
    grid = Grid(UTM43, Affine(100, 0, 500000, 0, -100, 4000000), (3, 4))
    a = _on_grid(grid, 10.0, 0.0, 2.0)
    b = _on_grid(grid, 20.0, 5.0, 4.0)
    b["vx"].values[0, 0] = np.nan  # only pair a there
    period = Period(2000, day("2000-01-01"), day("2001-01-01"))
    comp = composite([a, b], [1.0, 0.5], grid, period)
    wa, wb = 1.0 / 2.0**2, 0.5 / 4.0**2
    assert comp["vx"].values[1, 1] == pytest.approx((wa * 10 + wb * 20) / (wa + wb))
    assert comp["vy"].values[1, 1] == pytest.approx(wb * 5 / (wa + wb))
    assert comp["v"].values[1, 1] == pytest.approx(
        math.hypot(comp["vx"].values[1, 1], comp["vy"].values[1, 1])
    )
    expected_err = math.sqrt((wa * 2) ** 2 + (wb * 4) ** 2) / (wa + wb)
    assert comp["v_error"].values[1, 1] == pytest.approx(expected_err, rel=1e-6)
    assert comp["count"].values[1, 1] == 2
    assert comp["count"].values[0, 0] == 1
    assert comp["vx"].values[0, 0] == pytest.approx(10.0)
    assert comp["v_error"].values[0, 0] == pytest.approx(2.0)
    # With full weights the error is 1 / sqrt(sum 1 / err^2).
    full = composite([a, b], [1.0, 1.0], grid, period)
    assert full["v_error"].values[2, 2] == pytest.approx(1 / math.sqrt(1 / 4 + 1 / 16), rel=1e-6)
    assert comp.attrs["year"] == 2000
    assert comp["count"].dtype == np.int16


def test_component_errors_propagate_with_the_same_weights():
    """vx_error and vy_error combine like v_error, with the weights v_error set (so vx, vy and
    v_error are as without them); a pair without them lends v_error to both."""
    grid = Grid(UTM43, Affine(100, 0, 500000, 0, -100, 4000000), (3, 4))
    a = _on_grid(grid, 10.0, 0.0, 2.0)
    a["vx_error"], a["vy_error"] = a["v_error"] * 1.5, a["v_error"] * 0.5
    b = _on_grid(grid, 20.0, 5.0, 4.0)  # an older product: v_error only
    period = Period(2000, day("2000-01-01"), day("2001-01-01"))
    comp = composite([a, b], [1.0, 0.5], grid, period)
    plain = composite([a.drop_vars(["vx_error", "vy_error"]), b], [1.0, 0.5], grid, period)
    for name in ("vx", "vy", "v_error"):
        np.testing.assert_array_equal(comp[name].values, plain[name].values)
    wa, wb = 1.0 / 2.0**2, 0.5 / 4.0**2
    for name, ea in (("vx_error", 3.0), ("vy_error", 1.0)):
        expected = math.sqrt((wa * ea) ** 2 + (wb * 4.0) ** 2) / (wa + wb)
        assert comp[name].values[1, 1] == pytest.approx(expected, rel=1e-6)
        assert comp[name].attrs["units"] == "m/yr"
    cube = cube_dataset([comp])
    assert cube["vx_error"].dims == ("time", "y", "x")


def test_component_errors_turn_with_the_vectors():
    """Into another UTM zone, the errors of an east-west-elongated error ellipse mix as the
    vectors turn: hypot(cos * ex, sin * ey) and hypot(sin * ex, cos * ey)."""
    t = Affine(100, 0, 730000, 0, -100, 4000000)
    ds = _pair_product(UTM43, t, (30, 30), 1.0, 0.0)
    ds["vx_error"], ds["vy_error"] = ds["v_error"] * 4.0, ds["v_error"] * 1.0
    same = regrid(ds, Grid(UTM43, Affine.from_gdal(*ds.attrs["transform"]), (30, 30)))
    np.testing.assert_allclose(same["vx_error"].values, 12.0, rtol=1e-6)
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(UTM43, "EPSG:4326", always_xy=True).transform(731500, 3998500)
    x44, y44 = Transformer.from_crs("EPSG:4326", UTM44, always_xy=True).transform(lon, lat)
    grid = Grid.from_bounds(UTM44, (x44 - 600, y44 - 600, x44 + 600, y44 + 600), 100)
    out = regrid(ds, grid)
    cos, sin = vector_rotation(UTM43, grid)
    c, s_ = cos[6, 6], sin[6, 6]
    assert abs(s_) > 0.02
    assert out["vx_error"].values[6, 6] == pytest.approx(math.hypot(12 * c, 3 * s_), rel=1e-4)
    assert out["vy_error"].values[6, 6] == pytest.approx(math.hypot(12 * s_, 3 * c), rel=1e-4)
    assert out["v_error"].values[6, 6] == pytest.approx(3.0, rel=1e-4)


def test_no_pair_leaves_nan_and_count_zero():
    grid = Grid(UTM43, Affine(100, 0, 500000, 0, -100, 4000000), (2, 2))
    a = _on_grid(grid, np.nan, np.nan, 1.0)
    comp = composite([a], [1.0], grid, Period(2000, day("2000-01-01"), day("2001-01-01")))
    assert np.isnan(comp["v"].values).all()
    assert (comp["count"].values == 0).all()


def _pair_product(crs_wkt: str, transform: Affine, shape, dx_px, dy_px, dt_days=365.25):
    ny, nx = shape
    dx = np.broadcast_to(np.asarray(dx_px, float), shape).copy()
    dy = np.broadcast_to(np.asarray(dy_px, float), shape).copy()
    ds = velocity_dataset(
        dx,
        dy,
        np.ones(shape),
        np.full(shape, 10.0),
        image_transform=transform,
        row0_px=0,
        col0_px=0,
        step_px=1,
        crs_wkt=crs_wkt,
        dt_days=dt_days,
        v_error=np.full(shape, 3.0),
        attrs={"ref_time": "2000-01-01T00:00:00+00:00", "sec_time": "2001-01-01T00:00:00+00:00"},
    )
    return ds


def test_regrid_onto_the_same_grid_is_exact():
    t = Affine(30, 0, 500000, 0, -30, 4000000)
    rng = np.random.default_rng(1)
    ds = _pair_product(UTM43, t, (20, 30), rng.normal(0, 2, (20, 30)), rng.normal(0, 2, (20, 30)))
    grid = Grid(UTM43, Affine.from_gdal(*ds.attrs["transform"]), (20, 30))
    out = regrid(ds, grid)
    for name in ("vx", "vy", "v", "v_error"):
        np.testing.assert_allclose(out[name].values, ds[name].values, rtol=1e-6, atol=1e-4)


def test_regrid_to_a_finer_grid_interpolates_a_linear_field_exactly():
    t = Affine(120, 0, 500000, 0, -120, 4000000)
    cols = np.arange(20)[None, :] * np.ones((20, 1))
    ds = _pair_product(UTM43, t, (20, 20), 0.1 * cols, 0.0)
    grid = Grid.from_bounds(UTM43, (500000 + 240, 4000000 - 2160, 500000 + 2160, 4000000 - 240), 30)
    out = regrid(ds, grid)
    # vx = 0.1 px per column of 120 m per year: 12 m/yr per 120 m eastwards.
    expected = 12.0 * (grid.x - 500000 - 60) / 120.0
    inner = out["vx"].values[5:-5, 5:-5]
    np.testing.assert_allclose(inner, np.broadcast_to(expected[5:-5], inner.shape), atol=1e-3)


def test_vectors_turn_by_the_meridian_convergence_between_utm_zones():
    """A vector due grid-east in UTM 43N seen in UTM 44N (78 E, 36 N): its true direction is
    kept, so its grid direction changes by the difference of the two zones' convergence."""
    t = Affine(100, 0, 730000, 0, -100, 4000000)  # near 77.5 E, 36.1 N, east edge of zone 43
    ds = _pair_product(UTM43, t, (30, 30), 1.0, 0.0)  # 100 m/yr east in 43N
    # The same place in UTM 44N.
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(UTM43, "EPSG:4326", always_xy=True).transform(731500, 3998500)
    x44, y44 = Transformer.from_crs("EPSG:4326", UTM44, always_xy=True).transform(lon, lat)
    grid = Grid.from_bounds(UTM44, (x44 - 600, y44 - 600, x44 + 600, y44 + 600), 100)
    out = regrid(ds, grid)
    vx, vy = out["vx"].values[6, 6], out["vy"].values[6, 6]
    assert math.hypot(vx, vy) == pytest.approx(100.0, rel=1e-4)  # length kept
    angle = math.degrees(math.atan2(vy, vx))
    # Meridian convergence (grid north from true north) from pyproj, per zone.
    c43 = Proj(UTM43).get_factors(lon, lat).meridian_convergence
    c44 = Proj(UTM44).get_factors(lon, lat).meridian_convergence
    assert abs(c43 - c44) > 1.0  # a real test: the zones differ by degrees here
    assert angle == pytest.approx(c44 - c43, abs=0.01)
    cos, sin = vector_rotation(UTM43, grid)
    assert math.degrees(math.atan2(sin[6, 6], cos[6, 6])) == pytest.approx(c44 - c43, abs=0.01)


def test_annual_composites_and_cube():
    grid = Grid(UTM43, Affine(100, 0, 500000, 0, -100, 4000000), (4, 5))
    pairs = [
        _on_grid(grid, 10.0, 0.0, 1.0, "1999-07-16", "2000-06-16"),
        _on_grid(grid, 20.0, 0.0, 1.0, "2000-06-16", "2001-07-21"),
    ]
    comps = annual_composites(pairs, grid)  # calendar years, overlap
    assert [c.attrs["year"] for c in comps] == [1999, 2000, 2001]
    assert [int(c["count"].max()) for c in comps] == [1, 2, 1]
    f1, f2 = 167 / 336, 199 / 400
    assert comps[1]["vx"].values[0, 0] == pytest.approx((f1 * 10 + f2 * 20) / (f1 + f2), rel=1e-6)
    assert comps[0].attrs["composite_assign"] == "overlap"
    cube = cube_dataset(comps)
    assert cube["v"].dims == ("time", "y", "x")
    assert cube.sizes["time"] == 3
    assert str(cube["time"].values[0])[:10] == "1999-07-02"  # middle of 1999
    assert str(cube["time_bnds"].values[1, 1])[:10] == "2001-01-01"
    assert cube.attrs["years"] == [1999, 2000, 2001]
    lazy = annual_composites({f"p{i}": (lambda ds=ds: ds) for i, ds in enumerate(pairs)}, grid)
    for a, b in zip(comps, lazy, strict=True):
        np.testing.assert_array_equal(a["vx"].values, b["vx"].values)


def test_grid_from_lonlat_bounds_covers_the_box():
    grid = Grid.from_bounds("EPSG:32643", (75.5, 35.0, 77.5, 36.5), 30, bounds_crs="EPSG:4326")
    from pyproj import Transformer

    to = Transformer.from_crs("EPSG:4326", "EPSG:32643", always_xy=True)
    left, bottom, right, top = grid.bounds
    for lon in np.linspace(75.5, 77.5, 9):
        for lat in (35.0, 36.5):
            x, y = to.transform(lon, lat)
            assert left <= x <= right and bottom <= y <= top
    assert left % 30 == 0 and top % 30 == 0
    assert grid.resolution_m == 30
    assert 5900 < grid.shape[1] < 6300 and 5500 < grid.shape[0] < 5800  # about 180 x 167 km
