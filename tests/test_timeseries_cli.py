"""Time series end to end: a one-pair project with [timeseries], the timeseries command on a mix
of the project's pairs and ITS_LIVE granules, cubes read back as ITS_LIVE's are, honest periods.

Inputs: the bundled Yahtse pair cropped as in the regression net (400 x 400 px, 2016-07-18 to
2016-08-03); granules written from the project's own pair product with other dates and known
speed factors, so the inverted steps have a known truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from pyproj import Transformer
from regression_cases import run_cli, yahtse_crop

from glacierflow.products import read_product
from glacierflow.timeseries.itslive import read_itslive_cube, write_itslive_granule
from glacierflow.timeseries.network import invert_cube

PROJECT = """name = "Yahtse one pair"
output = "out"

[scenes]
paths = ["{ref}", "{sec}"]

[grid]
crs = "EPSG:32607"
resolution_m = 240
bounds = [{left}, {bottom}, {right}, {top}]

[matching]
chip_px = 32
search_px = 16
step_px = 16
workers = 1

[timeseries]
freq = 16
points = [[{lon}, {lat}]]
formats = ["zarr", "netcdf"]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """The one-pair project, run once: its folder, output and a point on moving ice."""
    root = tmp_path_factory.mktemp("one_pair")
    ref, sec = yahtse_crop(root / "scenes")
    with rasterio.open(ref) as src:
        b = src.bounds
    # A point on the moving tongue of the crop (the lower-left third, fast ice).
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
    )
    (root / "project.toml").write_text(text)
    log = run_cli(["run", str(root / "project.toml"), "--no-progress"])
    return {"root": root, "out": root / "out", "lon": lon, "lat": lat, "log": log}


def test_a_16_day_pair_says_its_16_days_everywhere(project, tmp_path):
    """Issue 14's honesty case: one pair 2016-07-18/2016-08-03 in the calendar year 2016."""
    out = project["out"]
    assert "data 2016-07-18 to 2016-08-03, 16 of 366 days" in project["log"]
    with xr.open_dataset(out / "velocity_cube.nc", engine="h5netcdf") as cube:
        assert cube.attrs["data_start_datetime"][:10] == "2016-07-18"
        assert cube.attrs["data_end_datetime"][:10] == "2016-08-03"
        assert str(cube["data_start"].values[0])[:10] == "2016-07-18"
        assert str(cube["data_end"].values[0])[:10] == "2016-08-03"
        assert float(cube["coverage_days"].values[0]) == pytest.approx(16.0)
        assert float(cube["period_days"].values[0]) == pytest.approx(366.0)
        assert int(cube["pair_count"].values[0]) == 1
    with rasterio.open(out / "v_2016.tif") as src:
        tags = src.tags()
    assert tags["coverage_text"] == "16 of 366 days"
    report = (out / "report.html").read_text()
    assert "data 2016-07-18 to 2016-08-03, 16 of 366 days covered" in report
    assert "Velocity time series at points" in report

    (tmp_path / "dataset.toml").write_text(
        'id = "yahtse-one-pair"\ntitle = "Yahtse, one 16-day pair"\n'
        'description = "Honest periods."\nlicense = "CC-BY-4.0"\ncreators = ["tests"]\n'
    )
    run_cli(
        [
            "publish",
            str(out / "v_2016.tif"),
            "--meta",
            str(tmp_path / "dataset.toml"),
            "--catalog",
            str(tmp_path / "catalog"),
        ]
    )
    collection = json.loads(
        next((tmp_path / "catalog").rglob("collection.json")).read_text(encoding="utf-8")
    )
    interval = collection["extent"]["temporal"]["interval"][0]
    assert (interval[0][:10], interval[1][:10]) == ("2016-07-18", "2016-08-03")
    item_path = next(
        p for p in (tmp_path / "catalog").rglob("*.json") if "annual" in p.stem.lower()
    )
    props = json.loads(item_path.read_text(encoding="utf-8"))["properties"]
    assert (props["start_datetime"][:10], props["end_datetime"][:10]) == (
        "2016-07-18",
        "2016-08-03",
    )


def test_project_series_step_is_the_pair_and_cubes_carry_its_dates(project):
    ts = project["out"] / "timeseries"
    series = read_itslive_cube(ts / "velocity_series.zarr").load()
    v_2016 = read_product(project["out"] / "v_2016.tif")
    assert series.attrs["data_start_datetime"][:10] == "2016-07-18"
    assert series.attrs["data_end_datetime"][:10] == "2016-08-03"
    # One pair, one 16-day step over exactly its span: the step is the pair on the grid.
    step = series["v"].values[0]
    ok = np.isfinite(step) & np.isfinite(v_2016["v"].values)
    assert ok.sum() > 200
    np.testing.assert_allclose(step[ok], v_2016["v"].values[ok], rtol=1e-4, atol=1e-3)
    assert float(series["coverage_days"].values[0][ok].max()) == pytest.approx(16.0)
    assert str(series["acquisition_date_img1"].values[0])[:10] == "2016-07-18"
    assert (ts / "points" / "point_1.csv").is_file() and (ts / "points" / "point_1.png").is_file()


def _granule(pair: xr.Dataset, path: Path, t1: str, t2: str, factor: float) -> Path:
    g = pair.copy()
    for name in ("vx", "vy", "v"):
        g[name] = pair[name] * factor
    g.attrs = {**pair.attrs, "ref_time": f"{t1}T00:00:00+00:00", "sec_time": f"{t2}T00:00:00+00:00"}
    return write_itslive_granule(g, path)


def test_mixed_project_and_granules_invert_and_cli_writes_csv_png_and_zarr(project, tmp_path):
    out = project["out"]
    pair = read_product(next((out / "pairs").glob("*/velocity.tif")))
    # The glacier 20 % faster from 3 to 19 August; a 32-day granule over both steps agrees
    # (temporal closure: its mean is 1.1 x the first step).
    g1 = _granule(pair, tmp_path / "g1.nc", "2016-08-03", "2016-08-19", 1.2)
    g2 = _granule(pair, tmp_path / "g2.nc", "2016-07-18", "2016-08-19", 1.1)
    at = f"{project['lon']:.6f},{project['lat']:.6f}"
    series_dir = tmp_path / "series"
    log = run_cli(
        ["timeseries", str(out), str(g1), str(g2), "-o", str(series_dir), "--freq", "16"]
        + ["--at", at]
    )
    assert "3 pair(s)" in log and "2016-07-18 to 2016-08-03:" in log

    # Read back as ITS_LIVE's notebooks open a cube: plain xarray on the Zarr store.
    with xr.open_dataset(series_dir / "velocity_series.zarr", engine="zarr") as ds:
        assert ds["vx"].attrs["standard_name"] == "land_ice_surface_x_velocity"
        assert ds["v"].attrs["units"] == "meter/year"
        assert int(ds["mapping"].attrs["spatial_epsg"]) == 32607
        assert ds["vx"].attrs["grid_mapping"] == "mapping"
        assert ds["date_dt"].dtype.kind == "m"
        assert {str(s) for s in ds["satellite_img1"].values} == {"inverted"}
        v = ds["v"].values
        cover = ds["coverage_days"].values
    with xr.open_dataset(series_dir / "pairs_cube.zarr", engine="zarr") as pc:
        assert pc.sizes["mid_date"] == 3
        for name in ("acquisition_date_img1", "acquisition_date_img2", "vx_error", "vy_error"):
            assert name in pc.variables
        assert pc["v"].attrs["standard_name"] == "land_ice_surface_velocity"
    base = v[0]
    ok = np.isfinite(base) & np.isfinite(v[1]) & (base > 100)
    assert ok.sum() > 100
    ratio = np.median(v[1][ok] / base[ok])
    assert ratio == pytest.approx(1.2, abs=0.02)
    # The last pair ends on the second step's end edge (2016-08-19): no empty third step.
    assert v.shape[0] == 2 and np.all(cover[1][ok] == 16)

    # The pairs cube, read with glacierflow's ITS_LIVE reader and inverted again, gives the
    # same series as the command wrote.
    pairs = read_itslive_cube(series_dir / "pairs_cube.zarr").load()
    again = invert_cube(pairs, 16).compute()
    np.testing.assert_allclose(again["v"].values, v, rtol=1e-4, atol=1e-3, equal_nan=True)

    csv = (series_dir / "points" / "point_1.csv").read_text().splitlines()
    assert csv[0].startswith("start,end,vx,vy,v,v_error,coverage_days,pair_count")
    assert csv[1].startswith("2016-07-18,2016-08-03,")
    from matplotlib.image import imread

    png = imread(series_dir / "points" / "point_1.png")
    blue = np.all(np.abs(png[..., :3] - np.array([0x1F, 0x5F, 0xA8]) / 255) < 0.03, axis=-1)
    assert blue.sum() > 100  # the inverted series is drawn


def test_a_point_outside_the_grid_is_one_line_naming_the_grid(project, tmp_path):
    with pytest.raises(RuntimeError, match=r"point 1 \(0.0, 0.0\).*the grid covers longitude"):
        run_cli(["timeseries", str(project["out"]), "-o", str(tmp_path), "--at", "0,0"])


def test_timeseries_table_errors_name_the_line(tmp_path):
    from glacierflow.errors import InputError
    from glacierflow.project import load_project

    (tmp_path / "s").mkdir()
    base = '[scenes]\nfolder = "s"\n[grid]\ncrs = "EPSG:32607"\nresolution_m = 240\n'
    base += "bounds = [0, 0, 1000, 1000]\n[timeseries]\n"
    for body, expected in (
        ('freq = "weekly"\n', r"line 8: freq must be \"monthly\""),
        ("lam = -1\n", "line 8: lam must be"),
        ("points = [[1, 2, 3]]\n", "line 8: points must be a list of"),
        ('formats = ["tiff"]\n', 'line 8: formats must name "zarr", "netcdf" or both'),
        ("frq = 3\n", "line 8: unknown key 'frq' in \\[timeseries\\]; did you mean 'freq'"),
    ):
        (tmp_path / "p.toml").write_text(base + body)
        with pytest.raises(InputError, match=expected):
            load_project(tmp_path / "p.toml")
