"""Projects end to end: a synthetic multi-year series with known truth, resuming, bad files.

The series: one real texture (Landsat 7 ETM+ band 4 of Everest, 400 x 400 px of 30 m) advected
over four years by known velocity fields, one scene per date, on the seed's irregular
separations (336, 400, 384, 336 days). Two glaciers move: "Alpha" changes by at most 1.33x
from year to year; "Beta" has a reach that more than doubles from the 2000 to the 2001
period (a surge); "Gamma" does not move. Each scene also carries its own small
misregistration, and the third scene a gap (Landsat fill) over Alpha.

Scene k is the texture warped by the cumulative displacement ``D_k``:
``D_{k+1}(p) = D_k(p) + d_k(p + D_k(p))``, so a feature at ``q`` in scene k is at
``q + d_k(q)`` in scene k + 1 exactly, and the truth of pair k at a node is ``d_k`` there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from affine import Affine
from scipy import ndimage
from shapely.geometry import box, shape

from glacierflow.errors import InputError
from glacierflow.project import (
    compose_products,
    load_project,
    pair_is_complete,
    plan_pairs,
    run_project,
)

EVEREST = Path(__file__).parent / "data" / "everest" / "LE71400412000304SGS00_B4.tif"
SIZE = 400
ROW0, COL0 = 255, 0  # the most textured 400 x 400 crop of the Everest image
PIXEL_M = 30.0
DATES = [
    date(1999, 7, 16),
    date(2000, 6, 16),
    date(2001, 7, 21),
    date(2002, 8, 9),
    date(2003, 7, 11),
]
YEARS = [1999, 2000, 2001, 2002]  # glaciological years from 1 July, one pair each
#: Misregistration of each scene, (dx, dy) pixels.
MISREG = [(0.0, 0.0), (0.2, -0.1), (-0.15, 0.1), (0.1, 0.2), (0.0, -0.2)]
#: The gap (Landsat fill, DN 0) in the third scene: rows, cols.
GAP = (slice(40, 90), slice(150, 200))
ALPHA_PEAK, BETA_PEAK = 150.0, 80.0  # m/yr
ALPHA_MULT = [1.0, 1.2, 0.9, 1.1]
BETA_BASE = [1.0, 0.95, 1.0, 1.0]
BETA_SURGE = [0.0, 0.0, 1.3, 0.6]  # added on the surge reach: x2.4 from 2000 to 2001


def _plateau(x: np.ndarray, half_flat: float, ramp: float) -> np.ndarray:
    t = np.clip((half_flat + ramp - np.abs(x)) / ramp, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _band(centre: tuple[float, float], bearing_deg: float):
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    th = np.deg2rad(bearing_deg)
    ux, uy = np.sin(th), -np.cos(th)  # flow direction in image axes (y down)
    along = (x - centre[1]) * ux + (y - centre[0]) * uy
    across = -(x - centre[1]) * uy + (y - centre[0]) * ux
    return _plateau(across, 35, 30) * _plateau(along, 90, 30), along, (ux, uy)


def velocity_fields():
    """Per year: (vx, vy_down) in m/yr on the image pixels; and the two glaciers' shapes."""
    alpha, _, ua = _band((105, 205), 100)
    beta, along_b, ub = _band((295, 195), 260)
    reach = _plateau(along_b - 10, 35, 30)
    out = []
    for k in range(4):
        sa = ALPHA_PEAK * ALPHA_MULT[k] * alpha
        sb = BETA_PEAK * beta * (BETA_BASE[k] + BETA_SURGE[k] * reach)
        out.append((sa * ua[0] + sb * ub[0], sa * ua[1] + sb * ub[1]))
    return out, alpha, beta


def scene_name(day: date) -> str:
    return f"LE07_L1TP_148035_{day:%Y%m%d}_20200918_02_T1_B8.TIF"


def build_series(root: Path) -> dict:
    """Scenes, outlines and the project file of the synthetic series under ``root``."""
    with rasterio.open(EVEREST) as src:
        texture = src.read(1)[ROW0 : ROW0 + SIZE, COL0 : COL0 + SIZE].astype(np.float64)
        crs = src.crs
        transform = src.transform @ Affine.translation(COL0, ROW0)
    from glacierflow.synthetic import warp_image

    fields, alpha, beta = velocity_fields()
    scenes = root / "scenes"
    scenes.mkdir(parents=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    dx_cum = np.zeros((SIZE, SIZE))
    dy_cum = np.zeros((SIZE, SIZE))
    for k, day in enumerate(DATES):
        image = warp_image(texture, dx_cum + MISREG[k][0], dy_cum + MISREG[k][1])
        if k == 2:
            image[GAP] = 0.0
        profile = {
            "driver": "GTiff",
            "width": SIZE,
            "height": SIZE,
            "count": 1,
            "dtype": "float32",
            "crs": crs,
            "transform": transform,
        }
        with rasterio.open(scenes / scene_name(day), "w", **profile) as dst:
            dst.write(image.astype(np.float32), 1)
        if k < 4:
            dt_yr = (DATES[k + 1] - day).days / 365.25
            vx, vy_down = fields[k]
            step_x = vx * dt_yr / PIXEL_M
            step_y = vy_down * dt_yr / PIXEL_M
            at = [yy + dy_cum, xx + dx_cum]
            dx_cum = dx_cum + ndimage.map_coordinates(step_x, at, order=1, mode="nearest")
            dy_cum = dy_cum + ndimage.map_coordinates(step_y, at, order=1, mode="nearest")

    polygons = []
    for gid, name, mask in (("RGI60-99.00001", "Alpha", alpha), ("RGI60-99.00002", "Beta", beta)):
        parts = [
            shape(g)
            for g, v in rasterio.features.shapes(
                (mask > 0.02).astype(np.uint8), transform=transform
            )
            if v == 1
        ]
        polygons.append((gid, name, max(parts, key=lambda g: g.area)))
    gx, gy = transform @ (340, 230)
    polygons.append(("RGI60-99.00003", "Gamma", box(gx, gy, gx + 1500, gy + 1500)))
    outlines = gpd.GeoDataFrame(
        {"RGIId": [p[0] for p in polygons], "Name": [p[1] for p in polygons]},
        geometry=[p[2] for p in polygons],
        crs=crs,
    ).to_crs("EPSG:4326")
    outlines.to_file(root / "outlines.gpkg")
    left, top = transform.c, transform.f
    periods = "\n".join(
        f'  {{year = {y}, start = "{y}-07-01", end = "{y + 1}-07-01"}},' for y in YEARS
    )
    text = f"""# Synthetic series: four pairs, glaciological years from 1 July
name = "Synthetic series"
output = "OUTPUT"

[scenes]
folder = "scenes"
pattern = "*_B8.TIF"
path_row = "148035"

[pairs]
min_days = 300
max_days = 420
same_path_row = true

[grid]
crs = "EPSG:32645"
resolution_m = 60
bounds = [{left}, {top - SIZE * PIXEL_M}, {left + SIZE * PIXEL_M}, {top}]

[matching]
chip_px = 32
search_px = 16
step_px = 4

[outlines]
glaciers = "outlines.gpkg"

[composites]
assign = "majority"
periods = [
{periods}
]
"""
    for label in ("lib", "cli", "resume"):
        (root / f"project_{label}.toml").write_text(text.replace("OUTPUT", f"out_{label}"))
    return {"root": root, "fields": fields, "alpha": alpha, "beta": beta, "transform": transform}


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> dict:
    return build_series(tmp_path_factory.mktemp("series"))


@pytest.fixture(scope="module")
def library_run(series):
    return run_project(series["root"] / "project_lib.toml")


def _truth_on_grid(series: dict, comp, k: int):
    """Truth speed (m/yr), evaluation mask (textured ice without strain) on a composite grid."""
    t = Affine.from_gdal(*comp.attrs["transform"])
    ny, nx = comp["v"].shape
    rows, cols = np.mgrid[0:ny, 0:nx]
    gx, gy = t @ (cols + 0.5, rows + 0.5)
    c, r = ~series["transform"] @ (gx, gy)
    at = [r - 0.5, c - 0.5]
    vx, vy_down = series["fields"][k]
    speed = np.hypot(vx, vy_down)
    truth = ndimage.map_coordinates(speed, at, order=1)
    # No strain: the speed varies by less than 1 % over a chip (33 px) around the node.
    spread = ndimage.maximum_filter(speed, 33) - ndimage.minimum_filter(speed, 33)
    flat = ndimage.map_coordinates(spread / np.maximum(speed, 1e-9), at, order=1) < 0.01
    ice = ndimage.map_coordinates(np.maximum(series["alpha"], series["beta"]), at, order=1) > 0.5
    with rasterio.open(EVEREST) as src:
        tex = src.read(1)[ROW0 : ROW0 + SIZE, COL0 : COL0 + SIZE].astype(float)
    mean = ndimage.uniform_filter(tex, 32)
    std = np.sqrt(np.clip(ndimage.uniform_filter(tex**2, 32) - mean**2, 0, None))
    saturated = ndimage.uniform_filter((tex >= 254).astype(float), 32)
    textured = (ndimage.map_coordinates(std, at, order=1) > 15) & (
        ndimage.map_coordinates(saturated, at, order=1) < 0.05
    )
    gap = np.zeros((SIZE, SIZE))
    gap[GAP] = 1
    near_gap = ndimage.map_coordinates(ndimage.maximum_filter(gap, 49), at, order=0) > 0
    inside = (r > 40) & (r < SIZE - 40) & (c > 40) & (c < SIZE - 40)
    return truth, flat & ice & textured & ~near_gap & inside, (r, c)


# --------------------------------------------------------------------------------------------
# The synthetic series


def test_pairs_follow_the_rules(series):
    project = load_project(series["root"] / "project_lib.toml")
    plans = plan_pairs(project)
    assert [p.pair_id for p in plans] == [
        f"{a:%Y%m%d}_{b:%Y%m%d}" for a, b in zip(DATES[:-1], DATES[1:], strict=True)
    ]
    assert [round(p.dt_days) for p in plans] == [336, 400, 384, 336]
    assert {p.ref.path_row for p in plans} == {"148035"}


def test_annual_maps_recover_each_years_speed(series, library_run):
    comps = {int(c.attrs["year"]): c for c in library_run.composites}
    assert sorted(comps) == YEARS
    for k, year in enumerate(YEARS):
        comp = comps[year]
        truth, mask, _ = _truth_on_grid(series, comp, k)
        v = comp["v"].values
        ok = mask & np.isfinite(v)
        assert ok.sum() > 800, f"{year}: only {ok.sum()} cells of textured ice to check"
        rel = (v[ok] - truth[ok]) / truth[ok]
        # Each year's speed within 2 % on textured ice away from the margins.
        assert np.percentile(np.abs(rel), 95) < 0.02, (year, np.percentile(np.abs(rel), 95))
        assert abs(np.mean(v[ok]) / np.mean(truth[ok]) - 1) < 0.01, year
        assert comp.attrs["pairs"] == [f"{DATES[k]:%Y-%m-%d}/{DATES[k + 1]:%Y-%m-%d}"]


def test_count_is_the_number_of_pairs_with_data(series, library_run):
    comps = {int(c.attrs["year"]): c for c in library_run.composites}
    for k, year in enumerate(YEARS):
        count = comps[year]["count"].values
        v = comps[year]["v"].values
        assert set(np.unique(count)) <= {0, 1}
        assert np.array_equal(count > 0, np.isfinite(v))
        # The gap in the third scene leaves its two pairs (2000 and 2001) without data there.
        _, _, (r, c) = _truth_on_grid(series, comps[year], k)
        centre = (np.abs(r - 65) < 8) & (np.abs(c - 175) < 8)
        assert centre.any()
        if year in (2000, 2001):
            assert (count[centre] == 0).all(), year
        else:
            assert (count[centre] == 1).all(), year


def test_the_surge_is_flagged_and_nothing_else(library_run):
    surges = library_run.surges
    assert list(surges["name"]) == ["Beta"]
    row = surges.iloc[0]
    assert (row["year_from"], row["year_to"]) == (2000, 2001)
    assert row["ratio_median"] == pytest.approx((1 + 1.3) / 0.95, rel=0.05)
    assert row["reach_area_km2"] > 2.0


def test_glacier_statistics_trends_and_files(series, library_run):
    stats = library_run.glacier_stats
    assert set(stats["name"]) == {"Alpha", "Beta", "Gamma"}
    alpha = stats[stats["name"] == "Alpha"].set_index("year")
    # The gap in the third scene lowers Alpha's valid area in the two years that use it.
    assert alpha.loc[2000, "valid_fraction"] < alpha.loc[1999, "valid_fraction"] - 0.03
    assert alpha.loc[1999, "v_max"] == pytest.approx(ALPHA_PEAK, rel=0.03)
    assert alpha.loc[2000, "v_max"] == pytest.approx(ALPHA_PEAK * 1.2, rel=0.03)
    gamma = stats[stats["name"] == "Gamma"]
    assert (gamma["v_median"] < 3).all()  # still ice: speeds of a few m/yr of noise
    trends = library_run.trends.set_index("name")
    assert trends.loc["Beta", "trend"] > 0 and trends.loc["Beta", "significant"]
    assert not trends.loc["Gamma", "significant"]
    out = series["root"] / "out_lib"
    for name in ("glacier_statistics.csv", "glacier_trends.csv", "surges.csv", "glaciers.gpkg"):
        assert (out / "glaciers" / name).is_file(), name
    gpkg = gpd.read_file(out / "glaciers" / "glaciers.gpkg")
    assert list(gpkg.loc[gpkg["surge_candidate"] == 1, "name"]) == ["Beta"]
    assert "v_mean_2001" in gpkg.columns
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 4 + 3 + 1  # maps, changes, series
    assert "Candidate surges" in html and "RGI60-99.00002" in html
    from glacierflow.portal.discover import read_product_facts

    for year in YEARS:
        with rasterio.open(out / f"v_{year}.tif") as src:
            assert src.descriptions == ("vx", "vy", "v", "v_error", "vx_error", "vy_error", "count")
            assert src.tags()["start_datetime"].startswith(f"{year}-07-01")
        facts = read_product_facts(out / f"v_{year}.tif")  # what the portal publishes
        assert facts.kind == "annual" and facts.year == year and facts.is_cog
        # Honest periods (issue 14): what the portal publishes is the span the pairs cover
        # inside the period (the period itself stays in start_datetime/end_datetime).
        assert f"{year}-07-01" <= f"{facts.start:%Y-%m-%d}" < f"{facts.end:%Y-%m-%d}"
        assert f"{facts.end:%Y-%m-%d}" <= f"{year + 1}-07-01"
        if year == 1999:  # the pair 1999-07-16 / 2000-06-16, wholly inside the period
            assert (f"{facts.start:%Y-%m-%d}", f"{facts.end:%Y-%m-%d}") == (
                "1999-07-16",
                "2000-06-16",
            )
        assert facts.sidecars["quicklook"] == out / f"v_{year}.png"
    import xarray as xr

    with xr.open_dataset(out / "velocity_cube.nc", engine="h5netcdf") as cube:
        assert cube["v"].dims == ("time", "y", "x")
        assert cube.sizes["time"] == 4
        assert cube["count"].dtype == np.int16
        assert str(cube["time"].values[0])[:10] == "1999-12-31"


def test_overlap_rule_on_calendar_years(series, library_run, tmp_path):
    """The default rule: every pair counts for each calendar year by its share of days."""
    import dataclasses

    project = load_project(series["root"] / "project_lib.toml")
    project = dataclasses.replace(project, periods=None, assign="overlap", output=tmp_path)
    result = compose_products(project, library_run.pair_dirs, report=False)
    comps = {int(c.attrs["year"]): c for c in result.composites}
    assert sorted(comps) == [1999, 2000, 2001, 2002, 2003]
    expected_counts = {1999: 1, 2000: 2, 2001: 2, 2002: 2, 2003: 1}
    from glacierflow.products import read_product
    from glacierflow.stack import regrid

    pairs = [
        regrid(read_product(d / "velocity.tif"), project.grid())
        for d in library_run.pair_dirs.values()
    ]
    for year, comp in comps.items():
        count = comp["count"].values
        assert count.max() == expected_counts[year], year
        assert comp.attrs["pair_count"] == expected_counts[year]
        # The composite is the weighted mean of the pairs, weights f / v_error^2.
        fractions = dict(zip(comp.attrs["pairs"], comp.attrs["pair_fractions"], strict=True))
        num = np.zeros(count.shape)
        den = np.zeros(count.shape)
        for k, ds in enumerate(pairs):
            label = f"{DATES[k]:%Y-%m-%d}/{DATES[k + 1]:%Y-%m-%d}"
            if label not in fractions:
                continue
            w = fractions[label] / ds["v_error"].values.astype(float) ** 2
            num += np.nan_to_num(w * ds["vx"].values)
            den += np.where(np.isfinite(ds["vx"].values), w, 0)
        full = count == expected_counts[year]
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = num / den
        np.testing.assert_allclose(comp["vx"].values[full], expected[full], rtol=1e-5, atol=1e-3)
    # 1999-07-16 / 2000-06-16: 169 of its 336 days in 1999.
    assert comps[1999].attrs["pair_fractions"] == [pytest.approx(169 / 336)]


# --------------------------------------------------------------------------------------------
# The command line and resuming


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "glacierflow.cli", *args]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with rasterio.open(path) as src:
        return {name: src.read(i + 1) for i, name in enumerate(src.descriptions)}


def _same(a: Path, b: Path) -> None:
    left, right = _arrays(a), _arrays(b)
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=f"{a.name} {name}")


def test_cli_run_equals_the_library_run(series, library_run):
    root = series["root"]
    done = subprocess.run(
        _cli("run", str(root / "project_cli.toml")), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "4 pair(s) tracked, 0 kept" in done.stdout
    for year in YEARS:
        _same(root / "out_cli" / f"v_{year}.tif", root / "out_lib" / f"v_{year}.tif")


def test_a_killed_run_resumes_and_redoes_only_unfinished_pairs(series, library_run):
    root = series["root"]
    out = root / "out_resume"
    proc = subprocess.Popen(
        _cli("run", str(root / "project_resume.toml")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list((out / "pairs").glob("*/done.json")):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    finished = sorted(p.parent.name for p in (out / "pairs").glob("*/done.json"))
    assert 1 <= len(finished) < 4
    assert not (out / "v_1999.tif").exists()
    project = load_project(root / "project_resume.toml")
    for folder in (out / "pairs").iterdir():
        if folder.name not in finished:
            assert not pair_is_complete(folder)
    kept = {name: (out / "pairs" / name / "velocity.tif").stat().st_mtime_ns for name in finished}

    again = subprocess.run(
        _cli("run", str(root / "project_resume.toml")), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert f"{4 - len(finished)} pair(s) tracked, {len(finished)} kept" in again.stdout
    assert again.stdout.count("complete, kept") == len(finished)
    for name, mtime in kept.items():
        assert (out / "pairs" / name / "velocity.tif").stat().st_mtime_ns == mtime
    for plan in plan_pairs(project):
        folder = out / "pairs" / plan.pair_id
        assert pair_is_complete(folder)
        assert not [p for p in folder.iterdir() if p.name.startswith(".")], "leftover temporaries"
        record = json.loads((folder / "done.json").read_text())
        assert record["pair"] == plan.pair_id
        _same(folder / "velocity.tif", root / "out_lib" / "pairs" / plan.pair_id / "velocity.tif")
    for year in YEARS:
        _same(out / f"v_{year}.tif", root / "out_lib" / f"v_{year}.tif")


# --------------------------------------------------------------------------------------------
# Bad project files: each error names the file and the line or the scene


def _tiny_scenes(folder: Path, days: list[date], origin=(478000.0, 3108140.0)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for day in days:
        with rasterio.open(
            folder / scene_name(day),
            "w",
            driver="GTiff",
            width=64,
            height=64,
            count=1,
            dtype="uint8",
            crs="EPSG:32645",
            transform=Affine(30, 0, origin[0], 0, -30, origin[1]),
        ) as dst:
            dst.write(rng.integers(1, 255, (64, 64), dtype=np.uint8), 1)


GOOD = """name = "tiny"
output = "out"

[scenes]
folder = "scenes"

[pairs]
min_days = 300
max_days = 420

[grid]
crs = "EPSG:32645"
resolution_m = 60
bounds = [478000, 3106220, 479920, 3108140]
"""


@pytest.fixture()
def tiny(tmp_path) -> Path:
    _tiny_scenes(tmp_path / "scenes", DATES[:3])
    (tmp_path / "p.toml").write_text(GOOD)
    return tmp_path


def _error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        plan_pairs(load_project(path))
    return str(info.value)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_a_good_tiny_project_plans_its_pairs(tiny):
    plans = plan_pairs(load_project(tiny / "p.toml"))
    assert [round(p.dt_days) for p in plans] == [336, 400]


def test_unknown_keys_name_their_line_and_the_known_key(tiny):
    text = GOOD.replace("resolution_m = 60", "resolution = 60")
    (tiny / "p.toml").write_text(text)
    message = _error(tiny / "p.toml")
    assert f"p.toml: line {_line_of(text, 'resolution = 60')}: unknown key 'resolution'" in message
    assert "did you mean 'resolution_m'" in message
    text = GOOD + "\n[matchin]\nchip_px = 32\n"
    (tiny / "p.toml").write_text(text)
    message = _error(tiny / "p.toml")
    assert f"line {_line_of(text, '[matchin]')}: unknown key 'matchin'" in message
    assert "'matching'" in message


def test_a_missing_scene_is_named_with_its_line(tiny):
    text = GOOD.replace(
        'folder = "scenes"',
        f'paths = [\n  "scenes/{scene_name(DATES[0])}",\n  "scenes/LE07_missing_B8.TIF",\n]',
    )
    (tiny / "p.toml").write_text(text)
    message = _error(tiny / "p.toml")
    assert f"line {_line_of(text, 'LE07_missing_B8.TIF')}: scene" in message
    assert "LE07_missing_B8.TIF" in message and "not found" in message


def test_a_scene_list_entry_without_a_file_is_named(tiny):
    listing = tiny / "scenes.csv"
    listing.write_text(
        "scene_id,datetime,pan_href\n"
        f"LE07_L1TP_148035_{DATES[0]:%Y%m%d}_20200918_02_T1,{DATES[0]},https://x/a_B8.TIF\n"
        "LE07_L1TP_148035_20040101_20200918_02_T1,2004-01-01,https://x/b_B8.TIF\n"
    )
    (tiny / "p.toml").write_text(
        GOOD.replace('folder = "scenes"', 'folder = "scenes"\nlist = "scenes.csv"')
    )
    message = _error(tiny / "p.toml")
    assert "scenes.csv: line 3: scene LE07_L1TP_148035_20040101_20200918_02_T1" in message
    assert "https://x/b_B8.TIF" in message


def test_a_grid_that_covers_no_scene_names_the_bounds(tiny):
    text = GOOD.replace(
        "bounds = [478000, 3106220, 479920, 3108140]", "bounds = [600000, 3000000, 610000, 3010000]"
    )
    (tiny / "p.toml").write_text(text)
    message = _error(tiny / "p.toml")
    assert f"line {_line_of(text, 'bounds =')}: the grid covers no scene" in message
    assert scene_name(DATES[0]) in message


def test_explicit_pairs_with_negative_or_zero_separation_name_the_line(tiny):
    backwards = '["2001-07-21", "2000-06-16"]'
    explicit = f'explicit = [\n  ["1999-07-16", "2000-06-16"],\n  {backwards},\n]\n'
    text = GOOD.replace("min_days = 300", explicit + "min_days = 300")
    (tiny / "p.toml").write_text(text)
    message = _error(tiny / "p.toml")
    assert f"line {_line_of(text, backwards)}:" in message
    assert "negative separation" in message and "swap" in message
    # Two files of the same date: zero separation.
    _tiny_scenes(tiny / "scenes", [DATES[0]])
    twin = tiny / "scenes" / scene_name(DATES[0]).replace("_B8", "_B8_copy")
    (tiny / "scenes" / scene_name(DATES[0])).rename(twin)
    _tiny_scenes(tiny / "scenes", [DATES[0]])
    text = GOOD.replace(
        "min_days = 300",
        f'explicit = [\n  ["{scene_name(DATES[0])}", "{twin.name}"],\n]\nmin_days = 300',
    )
    (tiny / "p.toml").write_text(text)
    message = _error(tiny / "p.toml")
    assert f"line {_line_of(text, twin.name)}:" in message and "zero separation" in message


def test_pairing_rules_with_non_positive_separation_are_refused(tiny):
    text = GOOD.replace("min_days = 300", "min_days = 0")
    (tiny / "p.toml").write_text(text)
    with pytest.raises(
        InputError, match=rf"line {_line_of(text, 'min_days')}: min_days must be positive"
    ):
        load_project(tiny / "p.toml")


def test_cli_run_reports_a_bad_project_in_one_line(tiny):
    (tiny / "p.toml").write_text(GOOD.replace("resolution_m = 60", "resolution_m = -60"))
    done = subprocess.run(_cli("run", str(tiny / "p.toml")), capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "resolution_m must be positive" in lines[0]


def test_the_karakoram_example_reproduces_the_seed_pairing_and_grid(tmp_path, shared_data):
    """The shipped example, with six stand-in scenes of the seed's dates in its scene folder."""
    example = Path(__file__).parents[1] / "examples" / "karakoram_1999_2003.toml"
    text = example.read_text(encoding="utf-8").replace(
        "../../shared/data/karakoram_rgi_dem", str(shared_data / "karakoram_rgi_dem")
    )
    (tmp_path / "karakoram_1999_2003.toml").write_text(text)
    import shutil

    for ext in ("shp", "shx", "dbf", "prj"):
        shutil.copy(
            shared_data / "karakoram_rgi_dem" / f"baltoro_wgs84.{ext}",
            tmp_path / f"rgi60_14_karakoram.{ext}",
        )
    folder = tmp_path / "karakoram_scenes"
    folder.mkdir()
    seed = ["1999-07-16", "2000-06-16", "2001-07-21", "2002-04-19", "2002-08-09", "2003-03-21"]
    for text_day in seed:
        name = f"LE07_L1TP_148035_{text_day.replace('-', '')}_20200918_02_T1_B8.TIF"
        with rasterio.open(
            folder / name,
            "w",
            driver="GTiff",
            width=16,
            height=16,
            count=1,
            dtype="uint8",
            crs="EPSG:32643",
            transform=Affine(15, 0, 600000, 0, -15, 3960000),  # inside the grid
        ) as dst:
            dst.write(np.full((16, 16), 90, np.uint8), 1)
    project = load_project(tmp_path / "karakoram_1999_2003.toml")
    plans = plan_pairs(project)
    assert [(f"{p.ref.acquired:%Y-%m-%d}", f"{p.sec.acquired:%Y-%m-%d}") for p in plans] == [
        ("1999-07-16", "2000-06-16"),
        ("2000-06-16", "2001-07-21"),
        ("2001-07-21", "2002-08-09"),
        ("2002-04-19", "2003-03-21"),
    ]
    assert [round(p.dt_days) for p in plans] == [336, 400, 384, 336]
    grid = project.grid()
    assert grid.resolution_m == 30 and "32643" in project.grid_crs
    from pyproj import Transformer

    to_grid = Transformer.from_crs("EPSG:4326", grid.crs_wkt, always_xy=True)
    left, bottom, right, top = grid.bounds
    for lon in np.linspace(75.5, 77.5, 21):  # the whole lon/lat box is on the grid
        for lat in np.linspace(35.0, 36.5, 16):
            x, y = to_grid.transform(lon, lat)
            assert left <= x <= right and bottom <= y <= top
    assert [p[0] for p in project.periods] == [1999, 2000, 2001, 2002]
    assert project.assign == "majority"
    assert project.centreline_where == {"MAIN": 1}
    assert project.transects[0].name == "Baltoro at Concordia"


# --------------------------------------------------------------------------------------------
# [matching] and [filtering] are the settings tree of glacierflow track


@pytest.mark.parametrize(
    ("table", "line", "needle"),
    [
        ("matching", 'chip_px = "32"', "chip_px must be a whole number, got '32'"),
        ("matching", "chip_px = true", "chip_px must be a whole number, got True"),
        ("matching", "chip_px = 2", "chip_px must be at least 4 pixels, got 2"),
        ("matching", 'method = "sad"', "method must be one of"),
        ("filtering", 'coreg = "quad"', "coreg must be one of constant, affine, poly2, none"),
        ("filtering", "min_corr = 1.5", "min_corr must be at most 1"),
        ("filtering", "ice_bufer_m = 100", "did you mean 'ice_buffer_m'?"),
    ],
)
def test_bad_tracking_settings_name_their_line(tiny, table, line, needle):
    text = f"{GOOD}\n[{table}]\n{line}\n"
    (tiny / "p.toml").write_text(text)
    with pytest.raises(InputError) as info:
        load_project(tiny / "p.toml")
    message = str(info.value)
    assert f"p.toml: line {_line_of(text, line)}: " in message and needle in message


def test_the_tracking_tables_fill_the_settings_tree_and_its_defaults(tiny):
    from glacierflow.project.resume import fingerprint
    from glacierflow.settings import TrackSettings

    project = load_project(tiny / "p.toml")
    assert project.track_settings == TrackSettings()  # no table: the defaults of track
    plan = plan_pairs(project)[0]
    text = GOOD + '\n[matching]\nmethod = "phase"\nstep_px = 4\n\n[filtering]\ncoreg = "none"\n'
    (tiny / "p.toml").write_text(text)
    changed = load_project(tiny / "p.toml")
    s = changed.track_settings
    assert (s.matching.method, s.matching.step_px, s.coreg.method) == ("phase", 4, "none")
    assert s.filter_settings().min_corr == pytest.approx(0.1)  # phase correlation's threshold
    # Any setting that changes the products changes the fingerprint: the pair is redone.
    assert fingerprint(changed, plan) != fingerprint(project, plan)
    (tiny / "p.toml").write_text(GOOD + "\n[matching]\nworkers = 3\n")
    assert fingerprint(load_project(tiny / "p.toml"), plan) == fingerprint(project, plan)
