"""Pairs of a project run concurrently: local processes or a Dask cluster, same products.

A small project of three real-texture scenes (Landsat 7 ETM+ band 4 of Everest, 160 x 160 px of
30 m), each moved by a known field (a glacier tongue sliding east-south-east on still rock, plus
a small misregistration), gives two pairs. A run with two pairs at a time, and one on a
``distributed.LocalCluster``, must write per-pair products equal, value for value, to those of
the sequential run, and list the pairs in plan order.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from click.testing import CliRunner

from glacierflow.cli import cli
from glacierflow.errors import InputError, NoAcquisitionTimeError, OutputError
from glacierflow.project import load_project, pair_is_complete, plan_pairs, run_project

EVEREST = Path(__file__).parent / "data" / "everest" / "LE71400412000304SGS00_B4.tif"
SIZE = 160
ROW0, COL0 = 300, 120
DATES = [date(1999, 7, 16), date(2000, 6, 16), date(2001, 7, 21)]
MISREG = [(0.0, 0.0), (0.2, -0.1), (-0.15, 0.1)]  # (dx, dy) pixels, per scene

PROJECT = """name = "concurrent"
output = "out"

[scenes]
folder = "scenes"
pattern = "*_B8.TIF"

[pairs]
min_days = 300
max_days = 420

[grid]
crs = "EPSG:32645"
resolution_m = 60
bounds = [{left}, {bottom}, {right}, {top}]

[matching]
chip_px = 32
search_px = 8
step_px = 8
"""


def _scene_name(day: date) -> str:
    return f"LE07_L1TP_148035_{day:%Y%m%d}_20200918_02_T1_B8.TIF"


def _build(root: Path, *, blank_last: bool = False) -> Path:
    """Scenes and project file under ``root``; with ``blank_last`` the third scene is all fill."""
    from glacierflow.synthetic import warp_image

    with rasterio.open(EVEREST) as src:
        texture = src.read(1)[ROW0 : ROW0 + SIZE, COL0 : COL0 + SIZE].astype(np.float64)
        crs = src.crs
        transform = src.transform @ Affine.translation(COL0, ROW0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    tongue = np.exp(-(((yy - 80) / 30) ** 2 + ((xx - 80) / 45) ** 2))  # up to 2 px per year
    folder = root / "scenes"
    folder.mkdir(parents=True)
    for k, day in enumerate(DATES):
        years = (day - DATES[0]).days / 365.25
        image = warp_image(
            texture, 2.0 * years * tongue + MISREG[k][0], 0.8 * years * tongue + MISREG[k][1]
        )
        if blank_last and k == len(DATES) - 1:
            image[:] = 0.0  # Landsat fill: no valid pixel
        with rasterio.open(
            folder / _scene_name(day),
            "w",
            driver="GTiff",
            width=SIZE,
            height=SIZE,
            count=1,
            dtype="float32",
            crs=crs,
            transform=transform,
        ) as dst:
            dst.write(image.astype(np.float32), 1)
    left, top = transform.c, transform.f
    path = root / "project.toml"
    path.write_text(
        PROJECT.format(left=left, bottom=top - SIZE * 30.0, right=left + SIZE * 30.0, top=top)
    )
    return path


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The project, run one pair after another: (project file, lines, result)."""
    path = _build(tmp_path_factory.mktemp("concurrent"))
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
        result = run_project(path, report=False, echo=lines.append)
    return path, lines, result


def _copy_project(path: Path, dest: Path, output: str, matching: str = "") -> Path:
    """The same project (same scene files) writing to another output folder, with more
    ``[matching]`` lines (the last table)."""
    copy = dest / f"{output}.toml"
    text = path.read_text().replace('output = "out"', f'output = "{output}"')
    text = text.replace('folder = "scenes"', f'folder = "{path.parent / "scenes"}"')
    copy.write_text(text + matching)
    return copy


def _assert_same_pairs(result, reference) -> None:
    """Same pairs in the same order, and every per-pair product equal value for value."""
    assert [p.pair_id for p in result.pairs] == [p.pair_id for p in reference.pairs]
    assert result.processed == reference.processed == [p.pair_id for p in reference.pairs]
    for plan in reference.pairs:
        got, want = result.pair_dirs[plan.pair_id], reference.pair_dirs[plan.pair_id]
        assert pair_is_complete(got)
        with rasterio.open(got / "velocity.tif") as a, rasterio.open(want / "velocity.tif") as b:
            assert a.descriptions == b.descriptions
            np.testing.assert_array_equal(a.read(), b.read())
        with xr.open_dataset(got / "velocity.nc") as a, xr.open_dataset(want / "velocity.nc") as b:
            assert set(a.data_vars) == set(b.data_vars)
            for name in b.data_vars:
                np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    for year in reference.annual_paths:
        with (
            rasterio.open(result.annual_paths[year]) as a,
            rasterio.open(reference.annual_paths[year]) as b,
        ):
            np.testing.assert_array_equal(a.read(), b.read())


def _pair_lines(lines: list[str]) -> list[str]:
    """The per-pair lines without their timing."""
    return [line.rsplit(" (", 1)[0] for line in lines if line.startswith("pair ")]


def test_the_sequential_run_tracks_both_pairs(sequential):
    _, lines, result = sequential
    assert len(result.pairs) == 2
    assert result.processed == [p.pair_id for p in result.pairs]
    with rasterio.open(result.pair_dirs[result.pairs[0].pair_id] / "velocity.tif") as src:
        assert np.isfinite(src.read(1)).mean() > 0.3


def test_two_pairs_at_a_time_give_the_sequential_products(sequential, tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    path, lines, reference = sequential
    got: list[str] = []
    result = run_project(
        _copy_project(path, tmp_path, "two"),
        concurrent_pairs=2,
        workers=2,
        report=False,
        echo=got.append,
    )
    _assert_same_pairs(result, reference)
    assert _pair_lines(got) == _pair_lines(lines)

    # A rerun keeps both pairs, in plan order.
    again: list[str] = []
    rerun = run_project(result.project.path, concurrent_pairs=2, report=False, echo=again.append)
    assert rerun.processed == [] and rerun.skipped == reference.processed
    heads = [line.split(": ")[0] for line in _pair_lines(lines)]
    assert [line for line in again if line.startswith("pair ")] == [
        f"{head}: complete, kept" for head in heads
    ]


def test_concurrent_pairs_each_show_a_node_bar(sequential, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    path, _, reference = sequential
    result = run_project(
        _copy_project(path, tmp_path, "bars"),
        concurrent_pairs=2,
        workers=2,
        report=False,
        progress=True,
    )
    _assert_same_pairs(result, reference)
    err = capsys.readouterr().err
    assert "pairs:" in err
    # One bar per pair, fed with node counts from its worker process, up to its total.
    for i in (1, 2):
        shown = re.findall(rf"pair {i}: +\d+%.*?(\d+)/(\d+) \[", err)
        assert shown, err[-2000:]
        done, total = (int(v) for v in shown[-1])
        assert total > 100 and done == total


def test_a_dask_local_cluster_gives_the_sequential_products(sequential, tmp_path):
    distributed = pytest.importorskip("distributed")
    path, lines, reference = sequential
    got: list[str] = []
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        result = run_project(
            _copy_project(path, tmp_path, "dask"),
            scheduler=cluster.scheduler_address,
            report=False,
            echo=got.append,
        )
    _assert_same_pairs(result, reference)
    assert _pair_lines(got) == _pair_lines(lines)


def test_cli_run_takes_concurrent_pairs_from_the_project_file(sequential, tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    path, lines, reference = sequential
    copy = _copy_project(path, tmp_path, "cli", matching="concurrent_pairs = 2\n")
    assert load_project(copy).concurrent_pairs == 2
    done = CliRunner().invoke(cli, ["run", str(copy), "--workers", "2", "--no-report"])
    assert done.exit_code == 0, (done.output, done.exception)
    assert "2 pair(s) tracked, 0 kept" in done.stdout
    assert _pair_lines(done.stdout.splitlines()) == _pair_lines(lines)
    result = run_project(copy, report=False)  # everything kept: the CLI run's folders
    _assert_same_pairs(dataclasses.replace(result, processed=reference.processed), reference)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("concurrent_pairs = 0", "concurrent_pairs must be 1 or more, got 0"),
        ("concurrent_pairs = 1.5", "concurrent_pairs must be a whole number"),
        ("concurent_pairs = 2", "did you mean 'concurrent_pairs'?"),
    ],
)
def test_a_bad_concurrent_pairs_names_its_line(sequential, tmp_path, line, needle):
    copy = _copy_project(sequential[0], tmp_path, "bad", matching=f"{line}\n")
    with pytest.raises(InputError) as info:
        load_project(copy)
    number = len(copy.read_text().splitlines())
    assert f"line {number}: " in str(info.value) and needle in str(info.value)
    with pytest.raises(InputError, match="concurrent_pairs must be 1 or more"):
        run_project(sequential[0], concurrent_pairs=0)


def test_a_failing_pair_raises_the_sequential_error_and_keeps_the_finished_one(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    path = _build(tmp_path, blank_last=True)
    plans = plan_pairs(load_project(path))
    with pytest.raises(InputError) as sequential:
        run_project(path, report=False)
    shutil.rmtree(tmp_path / "out")
    lines: list[str] = []
    with pytest.raises(InputError) as concurrent:
        run_project(path, concurrent_pairs=2, report=False, echo=lines.append)
    assert str(concurrent.value) == str(sequential.value)
    assert concurrent.value.path == sequential.value.path
    assert concurrent.value.path.endswith(_scene_name(DATES[2]))
    assert "holds no valid pixels" in str(concurrent.value)
    said = [line for line in lines if line.startswith("pair ")]
    assert len(said) == 2 and ": tracked, " in said[0] and said[1].endswith(": failed")
    out = tmp_path / "out" / "pairs"
    assert pair_is_complete(out / plans[0].pair_id)
    assert not pair_is_complete(out / plans[1].pair_id)


@pytest.mark.parametrize(
    "error",
    [
        InputError("the scenes share no valid pixel", "/data/ref.tif"),
        InputError("concurrent_pairs must be 1 or more, got 0"),
        NoAcquisitionTimeError("no acquisition time; give --ref-date", "/data/a.tif"),
        OutputError("no space left", "/out/velocity.tif"),
    ],
    ids=repr,
)
def test_errors_survive_the_trip_back_from_a_worker_process(error):
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (str(back), back.path, back.problem) == (str(error), error.path, error.problem)
