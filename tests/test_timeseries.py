"""Network inversion: known truth back, outliers down-weighted, honest gaps and coverage."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from glacierflow.timeseries.inversion import (
    InversionSettings,
    closure_matrix,
    invert_pairs,
    time_steps,
)
from glacierflow.timeseries.network import invert_cube

D = np.timedelta64(1, "D")


def _d(text: str) -> np.datetime64:
    return np.datetime64(text, "D")


def _pairs_from_truth(edges, truth, t1, t2):
    """Pair velocities (m/yr) from per-step truth by exact temporal closure."""
    return closure_matrix(t1, t2, edges) @ truth


def test_time_steps_monthly_annual_days_and_glaciological_years():
    e = time_steps("2016-07-18", "2016-08-03", "monthly")
    assert list(e) == [_d("2016-07-01"), _d("2016-08-01"), _d("2016-09-01")]
    e = time_steps("1999-07-16", "2003-03-21", "annual-07-01")
    assert e[0] == _d("1999-07-01") and e[-1] == _d("2003-07-01") and e.size == 5
    e = time_steps("2020-01-01", "2020-01-20", 8)
    assert list(np.diff(e)) == [8 * D] * 3
    with pytest.raises(ValueError, match="freq"):
        time_steps("2020-01-01", "2020-02-01", "weekly")


def test_an_end_on_a_step_edge_adds_no_empty_trailing_step():
    # 2020-01-01 + 2 x 16 days = 2020-02-02: the last acquisition falls exactly on an edge.
    e = time_steps("2020-01-01", "2020-02-02", 16)
    assert list(e) == [_d("2020-01-01"), _d("2020-01-17"), _d("2020-02-02")]
    # One second later the pair reaches into a third step, which is then needed.
    e = time_steps("2020-01-01", "2020-02-02T00:00:01", 16)
    assert e.size == 4 and e[-1] == _d("2020-02-18")
    # The same for calendar months and years, and a single day is one step.
    assert time_steps("2020-01-05", "2020-03-01", "monthly")[-1] == _d("2020-03-01")
    assert list(time_steps("2020-01-01", "2021-01-01", "annual")) == [
        _d("2020-01-01"),
        _d("2021-01-01"),
    ]
    assert time_steps("2020-01-01", "2020-01-01", 16).size == 2
    # Every step of an inversion over pairs ending on the edge has data.
    t1 = np.array([_d("2020-01-01"), _d("2020-01-17"), _d("2020-01-01")])
    t2 = np.array([_d("2020-01-17"), _d("2020-02-02"), _d("2020-02-02")])
    edges = time_steps(t1.min(), t2.max(), 16)
    r = invert_pairs(
        np.array([100.0, 120.0, 110.0]), np.zeros(3), np.full(3, 5.0), np.full(3, 5.0),
        t1, t2, edges,
    )  # fmt: skip
    assert r["coverage_days"].tolist() == [16.0, 16.0]
    np.testing.assert_allclose(r["vx"], [100.0, 120.0], atol=1.0)
    # A single 16-day pair is a single step, resolved (no penalty between steps to lean on),
    # with either solver and either order of differences.
    for settings in (
        InversionSettings(),
        InversionSettings(solver="direct"),
        InversionSettings(regularisation="second"),
    ):
        one = invert_pairs(
            np.array([100.0]), np.zeros(1), np.full(1, 5.0), np.full(1, 5.0),
            t1[:1], t2[:1], time_steps(t1[0], t2[0], 16), settings,
        )  # fmt: skip
        assert one["resolution"].tolist() == [pytest.approx(1.0)]
        assert one["vx"].tolist() == [pytest.approx(100.0)]
        assert one["vx_error"].tolist() == [pytest.approx(5.0)]


def test_closure_rows_sum_to_one_and_split_by_days():
    edges = time_steps("2020-01-01", "2020-12-31", "monthly")
    a = closure_matrix(np.array([_d("2020-01-22")]), np.array([_d("2020-02-11")]), edges)
    assert a[0, 0] == pytest.approx(10 / 20) and a[0, 1] == pytest.approx(10 / 20)
    assert a.sum() == pytest.approx(1.0)


def _dense_network(rng, start="2020-03-01", end="2020-11-01", every=6):
    days = np.arange(_d(start), _d(end), every * D)
    t1, t2 = [], []
    for i in range(days.size):
        for k in (1, 2, 4, 8):
            if i + k < days.size:
                t1.append(days[i])
                t2.append(days[i + k])
    return np.array(t1), np.array(t2)


def test_known_monthly_truth_is_recovered_within_its_errors():
    rng = np.random.default_rng(1)
    t1, t2 = _dense_network(rng)
    edges = time_steps(t1.min(), t2.max(), "monthly")
    m = edges.size - 1
    truth = 100 + 60 * np.sin(np.linspace(0, np.pi, m))  # a summer speed-up, m/yr
    clean = _pairs_from_truth(edges, truth, t1, t2)
    sigma = 2.0 / (((t2 - t1) / D) / 365.25)  # 2 m displacement error
    vx = clean[None] + rng.normal(size=(50, t1.size)) * sigma
    vy = rng.normal(size=(50, t1.size)) * sigma
    r = invert_pairs(vx, vy, sigma, sigma, t1, t2, edges)
    inner = slice(1, m - 1)  # the edge months are only partly covered
    err = r["vx"][:, inner] - truth[inner]
    assert np.all(np.isfinite(r["vx"][:, inner]))
    assert np.sqrt(np.mean(err**2)) < 6.0  # m/yr, on speeds of 100-160 m/yr
    # the stated errors are honest: about two thirds of the estimates within 1 sigma
    within = np.mean(np.abs(err) <= r["vx_error"][:, inner])
    assert 0.5 < within < 0.95


def test_an_outlier_pair_is_down_weighted():
    rng = np.random.default_rng(2)
    t1, t2 = _dense_network(rng)
    edges = time_steps(t1.min(), t2.max(), "monthly")
    truth = np.full(edges.size - 1, 150.0)
    clean = _pairs_from_truth(edges, truth, t1, t2)
    sigma = np.full(t1.size, 5.0)
    vx = clean + rng.normal(size=t1.size) * sigma
    bad = np.flatnonzero((t1 >= _d("2020-06-01")) & (t2 <= _d("2020-07-01")))[:3]
    vx[bad] += 400.0  # three gross mismatches in June
    vy = np.zeros_like(vx)
    robust = invert_pairs(vx, vy, sigma, sigma, t1, t2, edges)
    plain = invert_pairs(vx, vy, sigma, sigma, t1, t2, edges, InversionSettings(iterations=0))
    june = int(np.flatnonzero(edges == _d("2020-06-01"))[0])
    assert abs(plain["vx"][june] - 150) > 20  # the outliers pull a plain fit
    assert abs(robust["vx"][june] - 150) < 5  # the robust one ignores them


def test_a_winter_gap_is_nan_with_zero_coverage_and_the_rest_is_reported():
    rng = np.random.default_rng(3)
    t1a, t2a = _dense_network(rng, "2019-04-01", "2019-10-15")
    t1b, t2b = _dense_network(rng, "2020-04-01", "2020-10-15")
    t1, t2 = np.r_[t1a, t1b], np.r_[t2a, t2b]
    edges = time_steps(t1.min(), t2.max(), "monthly")
    clean = _pairs_from_truth(edges, np.full(edges.size - 1, 80.0), t1, t2)
    sigma = np.full(t1.size, 3.0)
    r = invert_pairs(clean, 0 * clean, sigma, sigma, t1, t2, edges)
    months = edges[:-1]
    winter = (months >= _d("2019-11-01")) & (months < _d("2020-04-01"))
    assert np.all(np.isnan(r["vx"][winter]))
    assert np.all(r["coverage_days"][winter] == 0) and np.all(r["pair_count"][winter] == 0)
    assert np.all(np.isnat(r["first_date"][winter]))
    summer = (months >= _d("2019-05-01")) & (months < _d("2019-10-01"))
    assert np.allclose(r["vx"][summer], 80.0, atol=0.5)


def test_coverage_pair_count_and_first_last_dates():
    t1 = np.array([_d("2016-07-18"), _d("2016-07-25")])
    t2 = np.array([_d("2016-08-03"), _d("2016-07-30")])
    edges = time_steps(t1.min(), t2.max(), "monthly")
    v = np.array([100.0, 100.0])
    r = invert_pairs(v, 0 * v, np.full(2, 5.0), np.full(2, 5.0), t1, t2, edges)
    assert list(r["coverage_days"]) == [14.0, 2.0]  # 18-31 July, 1-2 August
    assert list(r["pair_count"]) == [2, 1]
    assert r["first_date"][0] == np.datetime64("2016-07-18T00:00:00")
    assert r["last_date"][0] == np.datetime64("2016-08-01T00:00:00")
    assert r["first_date"][1] == np.datetime64("2016-08-01T00:00:00")
    assert r["last_date"][1] == np.datetime64("2016-08-03T00:00:00")


# The seed's four Karakoram pairs (336-400 days), with a surge in the 2001 glaciological year.
SEED = [
    ("1999-07-16", "2000-06-16"),
    ("2000-06-16", "2001-07-21"),
    ("2001-07-21", "2002-08-09"),
    ("2002-04-19", "2003-03-21"),
]


def test_seed_pairs_recover_each_year_within_2_percent_and_say_which_are_partial():
    t1 = np.array([_d(a) for a, _ in SEED])
    t2 = np.array([_d(b) for _, b in SEED])
    edges = time_steps(t1.min(), t2.max(), "annual-07-01")  # 1999-07-01 .. 2003-07-01
    assert edges[0] == _d("1999-07-01") and edges.size == 5
    truth = np.array([100.0, 95.0, 300.0, 160.0])  # the 2001 surge: x3.2
    rng = np.random.default_rng(4)
    clean = _pairs_from_truth(edges, truth, t1, t2)
    sigma = np.full(4, 0.3)  # m/yr: 0.3 px of 15 m over a year, as matched on textured ice
    vx = clean[None] + rng.normal(size=(20, 4)) * sigma
    r = invert_pairs(vx, 0 * vx, sigma, sigma, t1, t2, edges)
    assert np.all(np.isfinite(r["vx"]))
    assert np.all(np.abs(r["vx"] / truth - 1) < 0.02)
    # 1999-07-01/2000-07-01 covered from 16 July; 2002-07-01/2003-07-01 until 21 March.
    cov = r["coverage_days"][0]
    assert cov[0] == 366 - 15 and cov[3] == 263
    assert cov[1] == 365 and cov[2] == 365


def test_dask_chunked_cube_equals_in_memory():
    rng = np.random.default_rng(5)
    t1, t2 = _dense_network(rng, every=12)
    edges = time_steps(t1.min(), t2.max(), "monthly")
    truth = 100 + 30 * np.sin(np.linspace(0, np.pi, edges.size - 1))
    clean = _pairs_from_truth(edges, truth, t1, t2)
    ny, nx, n = 6, 7, t1.size
    vx = clean[None, None] + rng.normal(size=(ny, nx, n)) * 4
    vx[0, 0, :5] = np.nan
    cube = xr.Dataset(
        {
            "vx": (("mid_date", "y", "x"), np.moveaxis(vx, -1, 0).astype(np.float32)),
            "vy": (("mid_date", "y", "x"), np.zeros((n, ny, nx), np.float32)),
            "vx_error": (("mid_date",), np.full(n, 4.0)),
            "vy_error": (("mid_date",), np.full(n, 4.0)),
            "acquisition_date_img1": (("mid_date",), t1.astype("datetime64[ns]")),
            "acquisition_date_img2": (("mid_date",), t2.astype("datetime64[ns]")),
        },
        coords={"mid_date": t1 + (t2 - t1) / 2, "y": np.arange(ny), "x": np.arange(nx)},
    )
    memory = invert_cube(cube, "monthly")
    lazy = invert_cube(cube.chunk({"y": 3, "x": 4}), "monthly", chunk_pixels=9)
    assert lazy["vx"].chunks is not None
    lazy = lazy.compute()
    for name in ("vx", "vx_error", "coverage_days", "pair_count", "first_date", "resolution"):
        xr.testing.assert_equal(memory[name], lazy[name])
    assert memory.sizes["time"] == edges.size - 1


@pytest.mark.parametrize("lam", [0.03, "gcv", "discrepancy"])
@pytest.mark.parametrize("order", ["first", "second"])
def test_eigen_solver_equals_the_direct_one_on_the_same_weights(lam, order):
    """One eigendecomposition per pixel gives the estimate, errors and resolution that one
    inverse per lambda gives (iterations=0: both fit the stated weights, lambda per pixel)."""
    rng = np.random.default_rng(6)
    t1, t2 = _dense_network(rng, every=9)
    edges = time_steps(t1.min(), t2.max(), "monthly")
    truth = 100 + 50 * np.sin(np.linspace(0, np.pi, edges.size - 1))
    sigma = rng.uniform(2, 8, (30, t1.size))
    vx = _pairs_from_truth(edges, truth, t1, t2)[None] + rng.normal(size=sigma.shape) * sigma
    vx[3, :10] = np.nan
    vy = rng.normal(size=sigma.shape) * sigma
    out = {}
    for solver in ("eigen", "direct"):
        s = InversionSettings(iterations=0, lam=lam, regularisation=order, solver=solver)
        out[solver] = invert_pairs(vx, vy, sigma, sigma, t1, t2, edges, s)
    for name in ("vx", "vy", "vx_error", "resolution"):
        np.testing.assert_allclose(out["eigen"][name], out["direct"][name], rtol=1e-6, atol=1e-6)


def test_series_figure_draws_pairs_steps_and_gaps_and_csv_is_written(tmp_path):
    import pandas as pd

    from glacierflow.timeseries.figure import series_figure, write_series_csv

    rng = np.random.default_rng(7)
    t1a, t2a = _dense_network(rng, "2019-04-01", "2019-10-15", every=12)
    t1b, t2b = _dense_network(rng, "2020-04-01", "2020-10-15", every=12)
    t1, t2 = np.r_[t1a, t1b], np.r_[t2a, t2b]
    edges = time_steps(t1.min(), t2.max(), "monthly")
    clean = _pairs_from_truth(edges, np.full(edges.size - 1, 80.0), t1, t2)
    sigma = np.full(t1.size, 3.0)
    r = invert_pairs(clean, 0 * clean, sigma, sigma, t1, t2, edges)
    pairs = pd.DataFrame({"date1": t1, "date2": t2, "v": clean, "v_error": sigma})
    steps = pd.DataFrame(
        {"start": edges[:-1], "end": edges[1:], "v": r["vx"], "v_error": r["vx_error"]}
    )
    fig = series_figure(pairs, steps, title="test")
    ax = fig.axes[0]
    assert len(ax.collections[0].get_segments()) == t1.size  # one bar per pair
    labels = ax.get_legend_handles_labels()[1]
    assert "inverted series" in labels and "not resolved (gap)" in labels
    assert "m/yr" in ax.get_ylabel()
    png = tmp_path / "s.png"
    fig.savefig(png)
    assert png.stat().st_size > 10_000
    out = write_series_csv(tmp_path / "s.csv", steps)
    back = pd.read_csv(out)
    assert list(back.columns) == ["start", "end", "v", "v_error"]
    assert back["v"].isna().sum() == np.isnan(r["vx"]).sum() > 0  # gaps stay empty
    with pytest.raises(ValueError, match="pairs_df: missing column"):
        series_figure(pairs.drop(columns="v"), steps)


def test_annual_mean_of_a_seasonal_truth_from_summer_pairs_has_no_seasonal_bias():
    """Short pairs only in summer, when the glacier is fastest, plus year-long pairs: the annual
    value is the mean of the true daily speed over the calendar year (bias within 1 %), not the
    summer speed the short pairs see; a year modelled as one unknown is biased upwards by them
    (seasonal aliasing, +3-4 % here)."""
    rng = np.random.default_rng(8)
    start, end = _d("2018-01-01"), _d("2022-01-01")
    days = np.arange(start, end, D)
    doy = (days - days.astype("datetime64[Y]")) / D
    daily = 100.0 + 150.0 * np.exp(-0.5 * ((doy - 200) / 25) ** 2)  # m/yr, peak mid-July
    cum = np.r_[0.0, np.cumsum(daily)]
    t1, t2 = [], []
    for year in range(2018, 2022):  # short pairs, 6-48 days, April to October
        acq = np.arange(_d(f"{year}-04-01"), _d(f"{year}-10-31"), 6 * D)
        for k in (1, 2, 4, 8):
            t1 += list(acq[:-k])
            t2 += list(acq[k:])
    for year in range(2018, 2021):  # two year-long pairs from one summer to the next
        for first in (_d(f"{year}-06-01"), _d(f"{year}-09-01")):
            t1.append(first)
            t2.append(first + 364 * D)
    t1, t2 = np.array(t1), np.array(t2)
    i1, i2 = ((t1 - start) / D).astype(int), ((t2 - start) / D).astype(int)
    clean = (cum[i2] - cum[i1]) / (i2 - i1)
    sigma = 3.0 / ((i2 - i1) / 365.25)  # 3 m of displacement error
    vx = clean[None] + rng.normal(size=(20, t1.size)) * sigma
    edges = time_steps(start, end - D, "annual")
    year = np.searchsorted(edges, days, side="right") - 1
    truth = np.array([daily[year == k].mean() for k in range(edges.size - 1)])
    r = invert_pairs(vx, 0 * vx, sigma, sigma, t1, t2, edges)
    assert np.all(np.isfinite(r["vx"])) and np.all(r["resolution"] >= 0.5)
    assert np.all(np.abs(r["vx"].mean(axis=0) / truth - 1) < 0.01)  # mean over 20 series
    # the annual errors come from the posterior covariance: not understated (winter splits
    # across the year's edges are left to the smoothing prior, so they are conservative)
    z = (r["vx"] - truth) / r["vx_error"]
    assert np.sqrt(np.mean(z**2)) < 1.5 and np.all(r["vx_error"] < 0.2 * truth)
    # winter months (November to March) are filled by the regularisation, and the output says so
    assert np.all(r["resolved_days"] < 300) and np.all(r["resolved_days"] >= 180)
    assert np.all(r["coverage_days"][:, 1:3] >= 365)
    one = invert_pairs(vx, 0 * vx, sigma, sigma, t1, t2, edges, InversionSettings(base="steps"))
    assert np.all(one["vx"][:, 1:3].mean(axis=0) / truth[1:3] - 1 > 0.025)  # aliased upwards
