"""Dates that disagree (issue 16 item 5) and the scenes a project finds (its own products, links).

A date given for a scene that falls on another UTC day than its MTL file or the ID in its name
stops with one line naming the file, both dates and the metadata's source; a flag overrides it
with a warning. Dates that would make REF the later image stop instead of reversing the flow.
A project whose output folder is its scene folder does not take its own products for scenes,
and ``[scenes.dates]`` is keyed by the name the user gave a file, not its link target's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from glacierflow.acquisition import trusting_given_dates
from glacierflow.errors import DateConflictError, InputError
from glacierflow.pair import load_pair
from glacierflow.project import load_project, plan_pairs
from glacierflow.project.discovery import find_scenes

REF_NAME = "LC80630182016200LGN00_B8_yahtse.TIF"  # MTL: 2016-07-18 20:37:06 UTC
SEC_NAME = "LC80630182016216LGN00_B8_yahtse.TIF"  # MTL: 2016-08-03 20:37:09 UTC


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glacierflow.cli", *args], capture_output=True, text=True
    )


# --------------------------------------------------------------------------------------------
# One pair: --ref-date / --sec-date against the MTL files


def test_a_date_contradicting_the_mtl_stops_naming_both_sources(yahtse_dir, tmp_path):
    done = _cli(
        "track",
        str(yahtse_dir / REF_NAME),
        str(yahtse_dir / SEC_NAME),
        "-o",
        str(tmp_path / "out"),
        "--ref-date",
        "2016-07-20",
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    for needle in (
        REF_NAME,  # the file
        "--ref-date (2016-07-20",  # the given date, by its flag
        "LC80630182016200LGN00_MTL.txt",  # where the metadata's date came from
        "2016-07-18 20:37:06 UTC",  # the metadata's date
        "--trust-given-dates",  # the deliberate override
    ):
        assert needle in line, (needle, line)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # The secondary's date is named as --sec-date.
    done = _cli(
        "track",
        str(yahtse_dir / REF_NAME),
        str(yahtse_dir / SEC_NAME),
        "-o",
        str(tmp_path / "out"),
        "--sec-date",
        "2016-08-13",
    )
    assert done.returncode == 2 and "--sec-date (2016-08-13" in done.stderr
    assert SEC_NAME in done.stderr and "2016-08-03 20:37:09 UTC" in done.stderr


def test_the_same_utc_day_agrees_and_trust_overrides_with_a_warning(yahtse_dir, caplog):
    # A user gives the day, the MTL file the time of day: the same UTC day passes.
    pair = load_pair(
        yahtse_dir / REF_NAME,
        yahtse_dir / SEC_NAME,
        ref_date="2016-07-18",
        sec_date="2016-08-03T23:59:00",
    )
    assert pair.dt_days == pytest.approx(16 + 23.98 / 24, abs=1e-3)
    with pytest.raises(DateConflictError) as info:
        load_pair(yahtse_dir / REF_NAME, yahtse_dir / SEC_NAME, ref_date="2016-07-17T23:59")
    assert info.value.keys == ("ref_date", "trust_given_dates")
    with caplog.at_level(logging.WARNING, logger="glacierflow"), trusting_given_dates():
        trusted = load_pair(yahtse_dir / REF_NAME, yahtse_dir / SEC_NAME, ref_date="2016-07-20")
    assert trusted.ref.acquired == datetime(2016, 7, 20, tzinfo=UTC)
    assert trusted.dt_days == pytest.approx(14 + 20.619 / 24, abs=1e-3)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2016-07-20" in m and "trust_given_dates" in m for m in warned), warned
    # Outside the block the rule holds again.
    with pytest.raises(DateConflictError):
        load_pair(yahtse_dir / REF_NAME, yahtse_dir / SEC_NAME, ref_date="2016-07-20")


def test_the_trust_flag_runs_the_pair_with_the_given_date(yahtse_dir, tmp_path):
    """--trust-given-dates on the command line: the pair runs, with the given date in its
    products and a warning on stderr."""
    out = tmp_path / "out"
    done = _cli(
        "track",
        str(yahtse_dir / REF_NAME),
        str(yahtse_dir / SEC_NAME),
        "-o",
        str(out),
        "--ref-date",
        "2016-07-19",
        "--trust-given-dates",
        "--bbox",
        "-141.60",
        "60.10",
        "-141.50",
        "60.16",
        "--step-px",
        "16",
        "--workers",
        "1",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert "trust_given_dates" in done.stderr and "2016-07-19" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert json.dumps(summary).count("2016-07-19") >= 1
    with rasterio.open(out / "velocity.tif") as tif:
        assert tif.tags()["ref_time"].startswith("2016-07-19")


def test_swapped_dates_stop_instead_of_reversing_the_flow(yahtse_dir, tmp_path):
    """Files without metadata: the given dates are the only word on the order. Dates that
    make REF the later image are refused; files given later-first with their own metadata are
    still put in order (test_pair.py)."""
    a, b = tmp_path / "first.tif", tmp_path / "second.tif"
    shutil.copy(yahtse_dir / REF_NAME, a)
    shutil.copy(yahtse_dir / SEC_NAME, b)
    with pytest.raises(InputError) as info:
        load_pair(a, b, ref_date="2016-08-03", sec_date="2016-07-18")
    text = str(info.value)
    assert "reverse the flow" in text and "swap ref_date and sec_date" in text
    assert "first.tif" in text and "second.tif" in text
    assert "2016-08-03" in text and "2016-07-18" in text
    assert info.value.keys == ("ref_date", "sec_date")
    pair = load_pair(a, b, ref_date="2016-07-18", sec_date="2016-08-03")
    assert pair.ref.path == a and not pair.swapped and pair.dt_days == pytest.approx(16)
    done = _cli(
        "track", str(a), str(b), "-o", str(tmp_path / "o"), "--ref-date", "2016-08-03",
        "--sec-date", "2016-07-18",
    )  # fmt: skip
    assert done.returncode == 2 and "--ref-date and --sec-date" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# Projects: [scenes.dates], links, and the output folder as the scene folder


def _scene(path: Path, seed: int = 0, tags: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=1,
        dtype="uint8",
        crs="EPSG:32645",
        transform=Affine(30, 0, 478000.0, 0, -30, 3108140.0),
    ) as dst:
        dst.write(rng.integers(1, 255, (64, 64), dtype=np.uint8), 1)
        if tags:
            dst.update_tags(**tags)


def _landsat(day: date) -> str:
    return f"LE07_L1TP_148035_{day:%Y%m%d}_20200918_02_T1_B8.TIF"


PROJECT = """name = "tiny"
output = "{output}"

[scenes]
folder = "scenes"
{scenes_extra}

[pairs]
min_days = 300
max_days = 420

[grid]
crs = "EPSG:32645"
resolution_m = 60
bounds = [478000, 3106220, 479920, 3108140]
{tail}"""

DAYS = [date(1999, 7, 16), date(2000, 6, 16), date(2001, 7, 21)]


def _project(root: Path, output: str = "out", scenes_extra: str = "", tail: str = "") -> Path:
    path = root / "p.toml"
    path.write_text(PROJECT.format(output=output, scenes_extra=scenes_extra, tail=tail))
    return path


def test_a_project_date_contradicting_the_scene_id_names_its_line(tmp_path, caplog):
    for i, day in enumerate(DAYS):
        _scene(tmp_path / "scenes" / _landsat(day), seed=i)
    tail = f'\n[scenes.dates]\n"{_landsat(DAYS[1])}" = "2000-06-18"\n'
    path = _project(tmp_path, tail=tail)
    with pytest.raises(InputError) as info:
        find_scenes(load_project(path))
    text = str(info.value)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "2000-06-18" in t)
    assert text.startswith(f"{path}: line {line}:"), text
    assert "2000-06-18" in text and "2000-06-16" in text and "scene ID" in text
    assert "trust_dates" in text
    # The same UTC day passes; trust_dates uses the given date, with a warning.
    _project(tmp_path, tail=tail.replace("2000-06-18", "2000-06-16T18:00:00"))
    scenes = find_scenes(load_project(path))
    assert scenes[1].acquired == datetime(2000, 6, 16, 18, tzinfo=UTC)
    assert scenes[1].time_source == "project"
    _project(tmp_path, scenes_extra="trust_dates = true", tail=tail)
    with caplog.at_level(logging.WARNING, logger="glacierflow"):
        scenes = find_scenes(load_project(path))
    assert scenes[1].acquired == datetime(2000, 6, 18, tzinfo=UTC)
    assert any("trust_dates" in r.getMessage() for r in caplog.records)


def test_scene_dates_are_keyed_by_the_name_the_user_gave(tmp_path):
    """A link named ``ref.tif`` to ``data/raw_0001.tif``: its date is found under
    ``ref.tif`` (the name in the folder the project scans); the target's name still works."""
    _scene(tmp_path / "data" / "raw_0001.tif", seed=1)
    _scene(tmp_path / "data" / "raw_0002.tif", seed=2)
    (tmp_path / "scenes").mkdir()
    os.symlink(tmp_path / "data" / "raw_0001.tif", tmp_path / "scenes" / "ref.tif")
    os.symlink(tmp_path / "data" / "raw_0002.tif", tmp_path / "scenes" / "sec.tif")
    tail = '\n[scenes.dates]\n"ref.tif" = "2000-06-16"\n"raw_0002.tif" = "2001-07-21"\n'
    scenes = find_scenes(load_project(_project(tmp_path, tail=tail)))
    assert [(s.path.name, f"{s.acquired:%Y-%m-%d}") for s in scenes] == [
        ("ref.tif", "2000-06-16"),
        ("sec.tif", "2001-07-21"),
    ]
    assert all(s.time_source == "project" for s in scenes)
    assert scenes[0].path == tmp_path / "scenes" / "ref.tif"  # the link, as given
    plans = plan_pairs(load_project(tmp_path / "p.toml"))
    assert [(p.ref.path.name, p.sec.path.name) for p in plans] == [("ref.tif", "sec.tif")]


def test_the_output_folder_as_scene_folder_holds_no_scenes_of_its_own(tmp_path):
    """output = the scene folder: the annual maps, pair folders and any GeoTIFF tagged by
    glacierflow are left out when the project runs again."""
    folder = tmp_path / "scenes"
    for i, day in enumerate(DAYS):
        _scene(folder / _landsat(day), seed=i)
    # What a first run left there (names and tags of glacierflow's products).
    _scene(folder / "v_2000.tif", seed=5)
    _scene(folder / "pairs" / "19990716_20000616" / "velocity.tif", seed=6)
    _scene(folder / "moved_product.tif", seed=7, tags={"glacierflow_version": "0.9"})
    path = _project(
        tmp_path, output="scenes", scenes_extra='pattern = ["*.TIF", "*.tif", "**/*.tif"]'
    )
    scenes = find_scenes(load_project(path))
    assert [s.path.name for s in scenes] == [_landsat(d) for d in DAYS]
    assert [round(p.dt_days) for p in plan_pairs(load_project(path))] == [336, 400]
    # A user's own scene may be called v_2000.tif outside the output folder.
    other = _project(
        tmp_path, output="elsewhere", tail='\n[scenes.dates]\n"v_2000.tif" = "2000-01-01"\n'
    )
    names = {s.path.name for s in find_scenes(load_project(other))}
    assert "v_2000.tif" in names and "moved_product.tif" not in names
