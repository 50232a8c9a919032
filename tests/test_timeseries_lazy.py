"""Large cubes and centrelines: a Zarr cube in ITS_LIVE's layout inverted block by block in
bounded memory, equal to the in-memory inversion, and the series along a centreline.

The cubes are synthetic with a known truth: monthly mean speeds (a summer gap without pairs,
then a surge to 3x) times a speed that grows along x, pairs from 6 to 24 days, written with
glacierflow's ITS_LIVE cube writer and read back with its ITS_LIVE cube reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import xarray as xr
from shapely.geometry import LineString

from glacierflow.products import write_zarr_cube
from glacierflow.timeseries.cube import pairs_cube
from glacierflow.timeseries.inversion import closure_matrix, time_steps
from glacierflow.timeseries.settings import SeriesSettings
from glacierflow.timeseries.workflow import run_series

CRS = pyproj.CRS.from_epsg(32607).to_wkt()
X0, Y0, CELL = 500_000.0, 6_670_000.0, 100.0
D = np.timedelta64(1, "D")


def _network(every: int, spans: tuple[int, ...], limit: int | None = None):
    """Pairs over 2020 from ``every``-day acquisitions, none across July-August."""
    days = np.arange(np.datetime64("2020-01-01"), np.datetime64("2021-01-01"), every * D)
    t1, t2 = [], []
    for i, a in enumerate(days):
        for k in spans:
            if i + k < days.size:
                b = days[i + k]
                if b <= np.datetime64("2020-07-01") or a >= np.datetime64("2020-09-01"):
                    t1.append(a)
                    t2.append(b)
    t1, t2 = np.array(t1), np.array(t2)
    if limit is not None:
        take = np.random.default_rng(0).choice(t1.size, limit, replace=t1.size < limit)
        t1, t2 = t1[take], t2[take]
    return t1, t2


def _truth(edges: np.ndarray) -> np.ndarray:
    """Monthly speeds (m/yr): 100, a surge to 300 from October."""
    return np.where(edges[:-1] >= np.datetime64("2020-10-01"), 300.0, 100.0)


def _cube(t1, t2, ny: int, nx: int, noise: float, chunks: dict | None) -> xr.Dataset:
    edges = time_steps(t1.min(), t2.max(), "monthly")
    along = 1.0 + np.arange(nx) / nx  # speed grows along x
    pair_v = closure_matrix(t1, t2, edges) @ _truth(edges)  # (n,)
    n = t1.size
    shape = (n, ny, nx)
    if chunks:
        rng = da.random.default_rng(1)
        eps = rng.normal(0, noise, shape, chunks=(chunks["mid_date"], ny, nx)).astype(np.float32)
        base = da.from_array(pair_v.astype(np.float32), chunks=chunks["mid_date"])
        vx = base[:, None, None] * along[None, None, :].astype(np.float32) + eps
        vy = rng.normal(0, noise, shape, chunks=(chunks["mid_date"], ny, nx)).astype(np.float32)
    else:
        rng = np.random.default_rng(1)
        vx = (pair_v[:, None, None] * along[None, None, :]).astype(np.float32)
        vx = vx + rng.normal(0, noise, shape).astype(np.float32)
        vy = rng.normal(0, noise, shape).astype(np.float32)
    order = np.argsort(t1 + (t2 - t1) / 2, kind="stable")
    g3 = ("mid_date", "y", "x")
    cube = xr.Dataset(
        {
            "vx": (g3, vx[order]),
            "vy": (g3, vy[order]),
            "vx_error": (("mid_date",), np.full(n, 5.0, np.float32)),
            "vy_error": (("mid_date",), np.full(n, 5.0, np.float32)),
            "acquisition_date_img1": (("mid_date",), t1[order].astype("datetime64[ns]")),
            "acquisition_date_img2": (("mid_date",), t2[order].astype("datetime64[ns]")),
            "satellite_img1": (("mid_date",), np.full(n, "2A", dtype=object)),
        },
        coords={
            "mid_date": (t1 + (t2 - t1) / 2)[order].astype("datetime64[ns]"),
            "y": Y0 - CELL * (np.arange(ny) + 0.5),
            "x": X0 + CELL * (np.arange(nx) + 0.5),
        },
        attrs={"crs_wkt": CRS, "transform": [X0, CELL, 0.0, Y0, 0.0, -CELL]},
    )
    if chunks:
        cube = cube.chunk(chunks)
    return pairs_cube(cube)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lazy")
    t1, t2 = _network(6, (1, 2, 4))
    cube = _cube(t1, t2, 9, 12, 2.0, None)
    store = write_zarr_cube(cube.chunk({"mid_date": 40, "y": 4, "x": 5}), root / "cube.zarr")
    line = LineString([(X0 + 50, Y0 - 450), (X0 + 1150, Y0 - 450)])  # along row 4, 1.1 km
    lines = gpd.GeoDataFrame({"RGIId": ["RGI60-01.test"], "MAIN": [1]}, geometry=[line], crs=CRS)
    other = LineString([(X0 + 50, Y0 - 50), (X0 + 50, Y0 - 850)])
    lines = pd.concat(
        [lines, gpd.GeoDataFrame({"RGIId": ["tributary"], "MAIN": [0]}, geometry=[other], crs=CRS)]
    )
    lines.to_file(root / "centrelines.gpkg")
    return {"root": root, "store": store, "lines": root / "centrelines.gpkg"}


def test_a_zarr_cube_inverts_block_by_block_equal_to_in_memory(small):
    from glacierflow.timeseries.itslive import read_itslive_cube

    settings = SeriesSettings(freq="monthly", formats=("zarr",))
    lazy = run_series([small["store"]], small["root"] / "lazy", settings)
    run_series([read_itslive_cube(small["store"]).load()], small["root"] / "mem", settings)
    assert lazy.series["v"].chunks is not None  # the lazy run kept the cube lazy
    assert not any(p.name.startswith(".") for p in (small["root"] / "lazy").iterdir())
    with (
        xr.open_zarr(small["root"] / "lazy" / "velocity_series.zarr") as a,
        xr.open_zarr(small["root"] / "mem" / "velocity_series.zarr") as b,
    ):
        assert a.sizes["mid_date"] == 12
        for name in ("v", "vx_error", "coverage_days", "pair_count", "first_date", "resolution"):
            xr.testing.assert_equal(a[name].load(), b[name].load())
        assert a.attrs["steps_with_data"] == b.attrs["steps_with_data"] == 10
        v = a["v"].values
    # The truth is back: the surge month at the start of the line, and July-August are gaps.
    assert np.nanmedian(v[10, :, 0]) == pytest.approx(300.0, rel=0.03)
    assert np.all(np.isnan(v[6:8]))


def test_a_large_cube_inverts_in_bounded_memory(tmp_path):
    """2,000 pairs x 64 x 64: 65 MB of float32 speeds, 131 MB as the solver's float64."""
    t1, t2 = _network(1, (6, 12, 18, 24), limit=2000)
    cube = _cube(t1, t2, 64, 64, 2.0, {"mid_date": 250, "y": 32, "x": 32})
    store = write_zarr_cube(cube, tmp_path / "big.zarr")
    materialised = 2 * 2000 * 64 * 64 * 4
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        import numpy as np
        from glacierflow.timeseries.settings import SeriesSettings
        from glacierflow.timeseries.workflow import run_series
        from glacierflow.timeseries.itslive import read_itslive_cube
        from glacierflow.products import write_zarr_cube
        # Warm up every library the run uses, on a corner of the cube.
        corner = read_itslive_cube({str(store)!r}).isel(y=slice(0, 2), x=slice(0, 2))
        run_series([corner.isel(mid_date=slice(0, 300))], {str(tmp_path / "warm")!r},
                   SeriesSettings(formats=("zarr",)))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        r = run_series([{str(store)!r}], {str(tmp_path / "out")!r},
                       SeriesSettings(freq="monthly", formats=("zarr",)))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({{"before": before, "after": after,
                          "steps": int(r.series.sizes["mid_date"])}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    grown = rss["after"] - rss["before"]
    print(f"peak RSS grew {grown / 2**20:.0f} MiB for {materialised / 2**20:.0f} MiB of input")
    assert rss["steps"] == 12
    assert grown < 0.5 * materialised
    with xr.open_zarr(tmp_path / "out" / "velocity_series.zarr") as ds:
        v = ds["v"].isel(mid_date=10).values
    assert np.nanmedian(v[:, 0]) == pytest.approx(300.0, rel=0.03)


def test_centreline_series_csv_and_distance_time_figure(small):
    out = small["root"] / "lines_run"
    result = run_series(
        [small["store"]],
        out,
        SeriesSettings(freq="monthly", formats=("zarr",)),
        centrelines=small["lines"],
        centreline_where={"MAIN": 1},
        spacing_m=100.0,
    )
    csv = pd.read_csv(out / "lines" / "RGI60-01.test.csv", parse_dates=["time", "start", "end"])
    assert not (out / "lines" / "tributary.csv").exists()  # MAIN = 0: left out
    for col in ("distance_m", "time", "v", "v_error", "coverage_days"):
        assert col in csv.columns
    assert sorted(csv["distance_m"].unique()) == pytest.approx(np.arange(0, 1101, 100.0))
    assert csv["time"].nunique() == 12
    # Along the line the speed grows as the truth does (1 + x/12 at cell x; the line starts
    # at the centre of cell 0), in the surge month at 3x; July and August are gaps.
    oct_ = csv[csv["start"] == "2020-10-01"].sort_values("distance_m")
    truth = 300.0 * (1.0 + (oct_["distance_m"].to_numpy() / CELL) / 12)
    np.testing.assert_allclose(oct_["v"], truth, rtol=0.03)
    july = csv[csv["start"] == "2020-07-01"]
    assert july["v"].isna().all() and (july["coverage_days"] == 0).all()
    assert result.lines is not None and set(result.lines["line_id"]) == {"RGI60-01.test"}

    from matplotlib.image import imread

    png = imread(out / "lines" / "RGI60-01.test.png")[..., :3]
    # The gap is drawn without colour (the grey background), the surge in viridis yellow.
    grey = np.all(np.abs(png - 0.93) < 0.01, axis=-1)
    yellow = (png[..., 0] > 0.7) & (png[..., 1] > 0.7) & (png[..., 2] < 0.4)
    assert grey.sum() > 2000 and yellow.sum() > 2000


def test_a_killed_runs_spill_store_is_removed_by_the_next_run(tmp_path):
    """The spill store of a run killed midway (its process gone) is recognised as stale."""
    from glacierflow.products import remove_stale_staging
    from glacierflow.timeseries.workflow import spill_store

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = spill_store(tmp_path, int(dead.stdout))
    (stale / "vx").mkdir(parents=True)
    live = spill_store(tmp_path)
    live.mkdir()
    assert remove_stale_staging(tmp_path) == [stale]
    assert not stale.exists() and live.exists()
