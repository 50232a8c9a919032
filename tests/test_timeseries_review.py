"""The reviewer's cases on the time series (a new user and an attacker on the bundled Yahtse
pair): own cubes as inputs, settings refused at both doors before any work, points checked
before the work, a scene named as not a pair product, duplicate pairs, honest reporting.

Input: the one-pair project of ``test_timeseries_cli`` (the Yahtse pair cropped to 400 x 400
px, 2016-07-18 to 2016-08-03) with monthly steps, run once.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from pyproj import CRS, Transformer
from regression_cases import run_cli, yahtse_crop
from test_timeseries_cli import PROJECT

from glacierflow.errors import InputError, SettingsError
from glacierflow.timeseries.inversion import invert_pairs, time_steps
from glacierflow.timeseries.itslive import read_itslive_cube
from glacierflow.timeseries.settings import SeriesSettings
from glacierflow.timeseries.workflow import run_series, series_steps


@pytest.fixture(scope="module")
def monthly(tmp_path_factory) -> dict:
    """The one-pair project with monthly steps and a point on the moving tongue, run once."""
    root = tmp_path_factory.mktemp("monthly")
    ref, sec = yahtse_crop(root / "scenes")
    with rasterio.open(ref) as src:
        b = src.bounds
    x, y = b.left + 0.35 * (b.right - b.left), b.bottom + 0.45 * (b.top - b.bottom)
    lon, lat = Transformer.from_crs("EPSG:32607", "EPSG:4326", always_xy=True).transform(x, y)
    text = PROJECT.format(
        ref=f"scenes/{ref.name}",
        sec=f"scenes/{sec.name}",
        left=b.left,
        bottom=b.bottom,
        right=b.right,
        top=b.top,
        lon=lon,
        lat=lat,
    ).replace("freq = 16", 'freq = "monthly"')
    (root / "project.toml").write_text(text)
    log = run_cli(["run", str(root / "project.toml"), "--no-progress"])
    pair = next((root / "out" / "pairs").iterdir())
    return {"root": root, "out": root / "out", "pair": pair, "lon": lon, "lat": lat, "log": log}


def _fails(args: list[str]) -> str:
    with pytest.raises(RuntimeError) as info:
        run_cli(args)
    text = str(info.value)
    assert "Traceback" not in text
    return text


# 1. Our own cubes are inputs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["pairs_cube.zarr", "pairs_cube.nc", "velocity_series.zarr", "velocity_series.nc"]
)
def test_own_cubes_are_accepted_as_inputs(monthly, tmp_path, name):
    ts = monthly["out"] / "timeseries"
    at = f"--at={monthly['lon']},{monthly['lat']}"
    log = run_cli(["timeseries", str(ts / name), "-o", str(tmp_path), "--freq", "16", at])
    assert "1 point series" in log
    pairs = read_itslive_cube(tmp_path / "pairs_cube.zarr").load()
    given = read_itslive_cube(ts / name).load()
    assert pairs.sizes["mid_date"] == given.sizes["mid_date"]
    # The pairs come back value for value, and their satellite names as text.
    np.testing.assert_array_equal(pairs["vx"].values, given["vx"].values)
    assert [str(s) for s in pairs["satellite_img1"].values] == [
        str(s) for s in given["satellite_img1"].values
    ]
    if name.startswith("pairs_cube"):
        # One 16-day step over the pair: the step is the pair (where the data determine it).
        series = read_itslive_cube(tmp_path / "velocity_series.zarr").load()
        ok = np.isfinite(series["v"].values[0])
        assert ok.sum() > 200
        np.testing.assert_allclose(
            series["v"].values[0][ok], pairs["v"].values[0][ok], rtol=1e-4, atol=1e-3
        )


# 2. Settings refused at both doors before the work ----------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--freq", "annual-13-45", "must name a day of every year"),
        ("--freq", "annual-02-29", "not 02-29"),
        ("--min-resolution", "nan", "must be a number from 0 to 1"),
        ("--lam", "inf", "finite number"),
        ("--lam", "nan", "finite number"),
    ],
)
def test_bad_cli_settings_are_one_line_naming_the_flag(monthly, tmp_path, flag, value, says):
    text = _fails(["timeseries", str(monthly["out"]), "-o", str(tmp_path / "o"), flag, value])
    assert f"'{flag}'" in text and says in text
    assert not (tmp_path / "o").exists()


def test_bad_project_settings_are_refused_at_load_naming_line_and_key(monthly, tmp_path):
    from glacierflow.project import load_project

    text = (monthly["root"] / "project.toml").read_text()
    line = text.splitlines().index('freq = "monthly"') + 1
    for body, expected in (
        ('freq = "annual-13-45"', rf"line {line}: freq must name a day of every year"),
        ("min_resolution = nan", rf"line {line}: min_resolution must be a number from 0 to 1"),
        ("lam = inf", rf"line {line}: lam must be .*finite number"),
    ):
        path = monthly["root"] / "bad.toml"
        path.write_text(text.replace('freq = "monthly"', body))
        with pytest.raises(InputError, match=expected) as info:
            load_project(path)
        assert str(path) in str(info.value)


def _cube_over(days: int, start: str = "2015-01-01") -> xr.Dataset:
    """A 2 x 2 cube of 12 pairs of 30 days spread over ``days`` days, 100 m/yr east."""
    t1 = np.datetime64(start, "D") + np.linspace(0, days - 30, 12).astype(int)
    t2 = t1 + 30
    shape = (12, 2, 2)
    return xr.Dataset(
        {
            "vx": (("mid_date", "y", "x"), np.full(shape, 100.0, np.float32)),
            "vy": (("mid_date", "y", "x"), np.zeros(shape, np.float32)),
            "vx_error": ("mid_date", np.full(12, 10.0)),
            "vy_error": ("mid_date", np.full(12, 10.0)),
            "acquisition_date_img1": ("mid_date", t1.astype("datetime64[ns]")),
            "acquisition_date_img2": ("mid_date", t2.astype("datetime64[ns]")),
        },
        coords={"mid_date": t1 + 15, "x": [500100.0, 500300.0], "y": [6650300.0, 6650100.0]},
        attrs={
            "crs_wkt": CRS.from_epsg(32607).to_wkt(),
            "transform": [500000.0, 200.0, 0, 6650400.0, 0, -200.0],
        },
    )


def test_steps_are_bounded_before_the_work_and_cover_only_the_data(tmp_path):
    cube = _cube_over(3 * 365)
    # Daily steps over three years: refused at once (before 1,095^2 matrices per pixel).
    started = time.perf_counter()
    with pytest.raises(SettingsError, match=r"freq 1 gives 1095 step\(s\).*at most 600"):
        run_series([cube], tmp_path / "o", SeriesSettings(freq=1))
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "o").exists()
    # Steps longer than the data are one step over the data, not 273 years of months.
    edges = series_steps(cube, SeriesSettings(freq=100000))
    t1 = cube["acquisition_date_img1"].values.min().astype("datetime64[D]")
    t2 = cube["acquisition_date_img2"].values.max().astype("datetime64[D]")
    assert list(edges) == [t1, t2]
    result = run_series([cube], tmp_path / "big", SeriesSettings(freq=100000, formats=["zarr"]))
    np.testing.assert_allclose(result.series["vx"].values, 100.0, atol=0.5)


# 3. Points checked before the work ------------------------------------------------------------


def test_project_points_are_checked_at_load(monthly):
    from glacierflow.project import load_project

    text = (monthly["root"] / "project.toml").read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("points"))
    path = monthly["root"] / "points.toml"
    for points, expected in (
        ("[[500, 500]]", "points must be \\[longitude, latitude\\] in degrees"),
        ("[[10, 10]]", "points: point 1 \\[10.0, 10.0\\] lies outside the project grid"),
    ):
        new = [f"points = {points}" if t.startswith("points") else t for t in text.splitlines()]
        path.write_text("\n".join(new))
        with pytest.raises(InputError, match=rf"line {line}: {expected}") as info:
            load_project(path)
        assert str(path) in str(info.value)


def test_a_cli_point_off_the_grid_is_refused_before_inverting(monthly, tmp_path):
    text = _fails(["timeseries", str(monthly["out"]), "-o", str(tmp_path / "o"), "--at", "10,10"])
    assert "point 1 (10.0, 10.0) lies outside the grid; the grid covers longitude" in text
    assert "time series:" not in text  # nothing was inverted
    assert not (tmp_path / "o").exists()


# 4. A scene is not a pair product ---------------------------------------------------------------


def test_a_scene_is_named_as_not_a_pair_product(monthly, tmp_path):
    scene = next((monthly["root"] / "scenes").glob("*.TIF"))
    text = _fails(["timeseries", str(scene), "-o", str(tmp_path / "o")])
    assert f"{scene}: not a glacierflow pair product" in text
    assert "ITS_LIVE granule or cube" in text
    assert str(tmp_path / "o") + ":" not in text


# 5. Duplicates --------------------------------------------------------------------------------


def test_the_same_pair_given_twice_counts_once(monthly, tmp_path):
    pair = monthly["pair"]
    log = run_cli(
        [
            "timeseries",
            str(pair / "velocity.tif"),
            str(pair / "velocity.nc"),
            "-o",
            str(tmp_path),
            "--freq",
            "16",
        ]
    )
    assert "1 duplicate pair(s) left out" in log
    assert "time series: 1 pair(s) on" in log
    assert read_itslive_cube(tmp_path / "pairs_cube.zarr").sizes["mid_date"] == 1


# 6. Honest reporting ----------------------------------------------------------------------------


def test_monthly_steps_span_the_data_and_counts_are_honest(monthly):
    log = monthly["log"]
    assert sum(line.startswith("time series") for line in log.splitlines()) == 1
    series = read_itslive_cube(monthly["out"] / "timeseries" / "velocity_series.zarr").load()
    # The steps start at the first acquisition and end at the last: no step outside the data.
    assert str(series["acquisition_date_img1"].values[0])[:10] == "2016-07-18"
    assert str(series["acquisition_date_img2"].values[-1])[:10] == "2016-08-03"
    steps = series.sizes["mid_date"]
    with_value = int(np.isfinite(series["v"].values).any(axis=(1, 2)).sum())
    covered = int((series["coverage_days"].values > 0).any(axis=(1, 2)).sum())
    assert (
        f"{steps} step(s) (monthly), {with_value} with a value at some pixel, "
        f"{covered - with_value} covered by pairs but unresolved everywhere, "
        f"{steps - covered} without data" in log
    )


def test_a_step_the_data_do_not_determine_is_a_gap_not_a_value(monthly):
    # One 16-day pair split between two monthly steps: only their time-weighted sum is known.
    series = read_itslive_cube(monthly["out"] / "timeseries" / "velocity_series.zarr").load()
    pair = read_itslive_cube(monthly["out"] / "timeseries" / "pairs_cube.zarr").load()
    err = series["v_error"].values
    v = series["v"].values
    reported = np.isfinite(v)
    limit = np.maximum(v, 2 * pair["v_error"].values[0][None])
    assert np.all(err[reported] <= limit[reported] + 1e-3)
    # The rule bites: steps the resolution alone would have reported are gaps.
    res_ok = series["resolution"].values >= 0.5
    assert (res_ok & ~reported & (series["coverage_days"].values > 0)).sum() > 50
    # The point: no value with an error larger than itself is printed as resolved.
    csv = pd.read_csv(monthly["out"] / "timeseries" / "points" / "point_1.csv")
    shown = csv[np.isfinite(csv["v"])]
    assert np.all(shown["v_error"] <= np.maximum(shown["v"], 2 * 200.0))


def test_two_steps_known_only_by_their_sum_are_not_reported_as_values():
    # Truth 0: pairs of 20 days straddling the edge of two 16-day steps, error 30 m/yr.
    rng = np.random.default_rng(3)
    t1 = np.datetime64("2020-01-05") + np.arange(3).astype("timedelta64[D]")
    t2 = t1 + 20
    edges = time_steps("2020-01-01", "2020-02-02", 16)
    vx = rng.normal(0, 30, (50, 3))
    r = invert_pairs(vx, np.zeros_like(vx), np.full(3, 30.0), np.full(3, 30.0), t1, t2, edges)
    v = np.hypot(r["vx"], r["vy"])
    err = np.sqrt((r["vx_error"] ** 2 + r["vy_error"] ** 2) / 2)
    ok = np.isfinite(v)
    assert np.all(err[ok] <= np.maximum(v[ok], 60.0) + 1e-9)
    assert (~ok & (r["resolution"] >= 0.5)).any()  # the resolution alone would report them


def test_the_speed_band_of_the_point_figure_stops_at_zero():
    from glacierflow.timeseries.figure import series_figure

    pairs = pd.DataFrame(
        {
            "date1": pd.to_datetime(["2020-01-01"]),
            "date2": pd.to_datetime(["2020-02-01"]),
            "v": [50.0],
            "v_error": [300.0],
        }
    )
    steps = pd.DataFrame(
        {
            "start": pd.to_datetime(["2020-01-01"]),
            "end": pd.to_datetime(["2020-02-01"]),
            "v": [80.0],
            "v_error": [300.0],
        }
    )
    fig = series_figure(pairs, steps)
    ax = fig.axes[0]
    band = next(p for p in ax.patches if "band" in str(p.get_label()))
    assert float(np.min(band.get_data().baseline)) == 0.0
    assert "clipped at 0" in band.get_label()
    assert ax.get_ylim()[0] >= -0.1 * 380


def test_own_netcdf_cube_is_not_read_as_a_granule(monthly, tmp_path):
    # The file the project wrote, given alone: read as a cube, not refused as a granule.
    result = run_series(
        [monthly["out"] / "timeseries" / "pairs_cube.nc"],
        tmp_path,
        SeriesSettings(freq="annual", formats=["netcdf"]),
    )
    assert result.pairs.sizes["mid_date"] == 1
    assert Path(result.files["velocity_series_netcdf"]).is_file()
