"""The ``glacierflow`` command line, run in-process with click's CliRunner and once as a process.

A good run writes the four products; every bad input ends in exit status 2 with one line on
stderr naming the file (or option) and the problem, no traceback, and nothing written.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from click.testing import CliRunner, Result
from rasterio.windows import Window

from glacierflow.cli import cli
from glacierflow.demo import TONGUE_BOX_M, demo_inputs
from glacierflow.track import track

REF_ID, SEC_ID = "LC80630182016200LGN00", "LC80630182016216LGN00"
#: Rows 560:940, columns 860:1090: the lower-tongue box (rows 600-900, columns 900-1050) with
#: the 32 px a chip and its search window reach beyond a node.
CROP = Window(col_off=860, row_off=560, width=230, height=380)
BANDS = (
    *("vx", "vy", "v", "dx", "dy", "corr", "snr"),
    *("v_error", "vx_error", "vy_error", "quality", "chip_px"),
)
PRODUCTS = ("velocity.tif", "velocity.nc", "quicklook.png", "summary.json")


def write_tif(path: Path, data: np.ndarray, profile: dict, **changes) -> Path:
    """Write ``data`` (2-D or bands-first 3-D) as a GeoTIFF with ``profile`` updated."""
    stack = data if data.ndim == 3 else data[np.newaxis]
    profile = {**profile, "count": stack.shape[0], "dtype": str(stack.dtype), **changes}
    with rasterio.open(path, "w", **profile) as out:
        out.write(stack)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Cropped Yahtse pair with its MTLs, and one broken input for each kind of bad input."""
    ref, sec, rock = demo_inputs()
    good = tmp_path_factory.mktemp("good")
    for mtl in ref.parent.glob("*_MTL.txt"):
        shutil.copy(mtl, good / mtl.name)
    crops = {}
    for name, src in (("ref", ref), ("sec", sec)):
        with rasterio.open(src) as ds:
            data = ds.read(1, window=CROP)
            profile = ds.profile.copy()
            transform = ds.transform @ Affine.translation(CROP.col_off, CROP.row_off)
        profile.update(width=CROP.width, height=CROP.height, transform=transform)
        scene_id = REF_ID if name == "ref" else SEC_ID
        crops[name] = write_tif(good / f"{scene_id}_B8_crop.TIF", data, profile)
    bad = tmp_path_factory.mktemp("bad")
    text = bad / "x.tif"
    text.write_text("not an image\n")
    no_crs_profile = {k: v for k, v in profile.items() if k != "crs"}
    nodate = tmp_path_factory.mktemp("nodate")
    return {
        **crops,
        "rock": rock,
        "missing": good / f"{REF_ID}_B8_missing.TIF",
        "text": text,
        "three_bands": write_tif(bad / "three_bands.tif", np.stack([data] * 3), profile),
        "no_crs": write_tif(bad / f"{SEC_ID}_B8_nocrs.TIF", data, no_crs_profile),
        "far": write_tif(
            bad / f"{SEC_ID}_B8_far.TIF",
            data,
            profile,
            transform=Affine.translation(100_000.0, 0.0) @ transform,
        ),
        "zeros": write_tif(bad / f"{SEC_ID}_B8_zeros.TIF", np.zeros_like(data), profile, nodata=0),
        "no_date": write_tif(nodate / "plain_image.tif", data, profile),
    }


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean_failure(result: Result, *needles: str) -> None:
    """Exit 2, a single ``glacierflow: error:`` line on stderr holding ``needles``."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("glacierflow: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_nothing_written(out: Path) -> None:
    """The output folder is absent or empty: no product and no temporary file."""
    if out.exists():
        assert sorted(p.name for p in out.iterdir()) == []


def tongue_nodes(transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Nodes of a grid whose centres lie inside :data:`TONGUE_BOX_M`."""
    x0, x1, y0, y1 = TONGUE_BOX_M
    rows, cols = np.indices(shape)
    xx, yy = transform @ (cols + 0.5, rows + 0.5)
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


# --------------------------------------------------------------------------------------------
# A good run


def test_track_writes_the_four_products(files, tmp_path):
    out = tmp_path / "out"
    result = run("track", files["ref"], files["sec"], "-o", out)
    assert result.exit_code == 0, result.output
    assert "16.00 days" in result.stdout
    assert "nodes valid" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(PRODUCTS)
    with rasterio.open(out / "velocity.tif") as tif:
        assert tif.descriptions == BANDS
        assert tif.dtypes == ("float32",) * len(BANDS)
        assert tif.crs.to_epsg() == 32607
        assert tif.res == (120.0, 120.0)
        dx, dy, v = tif.read(4), tif.read(5), tif.read(3)
        tongue = tongue_nodes(tif.transform, tif.shape)
    # The tongue moves about 11 px in the 16 days the MTLs give (the median over the box
    # shifts by about a pixel with the node lattice of a crop: 10 to 13 px on the full image).
    mag = np.hypot(dx, dy)[tongue]
    assert np.isfinite(mag).sum() >= 200
    assert 9.0 <= np.nanmedian(mag) <= 13.0
    assert np.nanmedian(v[tongue]) == pytest.approx(
        np.nanmedian(mag) * 15.0 / 16.0 * 365.25, rel=0.02
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dt_days"] == pytest.approx(16.0, abs=1e-3)
    assert summary["grid"]["crs_epsg"] == 32607
    with xr.open_dataset(out / "velocity.nc") as nc:
        np.testing.assert_array_equal(nc["v"].values, v)
    # The command line is a thin layer: the library gives the same numbers.
    ds = track(files["ref"], files["sec"], progress=False)
    np.testing.assert_array_equal(ds["dx"].values, dx)
    np.testing.assert_array_equal(ds["v"].values, v)


def test_track_coregisters_on_stable_mask_outlines(tmp_path):
    ref, sec, rock = demo_inputs()  # full scene: the crop holds no rock polygon
    out = tmp_path / "out"
    result = run("track", ref, sec, "-o", out, "--stable-mask", rock)
    assert result.exit_code == 0, result.output
    with rasterio.open(out / "velocity.tif") as tif:
        assert tif.tags()["coreg_method"] == "constant"


# --------------------------------------------------------------------------------------------
# Bad input: exit 2, one line, nothing written

BAD_INPUTS = {
    # case: (arguments after "track", with {key} for a file of the fixture; name; key phrase)
    "missing file": (["{missing}", "{sec}"], "{missing}", "file not found"),
    "text named .tif": (["{text}", "{sec}"], "{text}", "not a raster"),
    "three bands": (["{three_bands}", "{sec}"], "{three_bands}", "choose one with --band"),
    "no CRS": (["{ref}", "{no_crs}"], "{no_crs}", "no coordinate reference system"),
    "no overlap": (["{ref}", "{far}"], "{far}", "do not overlap"),
    "equal times": (
        # (trusted: a date on another day than the MTL file's stops earlier, test_dates.py)
        ["{ref}", "{sec}", "--ref-date", "2016-07-18", "--sec-date", "2016-07-18"]
        + ["--trust-given-dates"],
        "{ref}",
        "both acquired",
    ),
    "unreadable date": (["{ref}", "{sec}", "--ref-date", "yesterday"], "{ref}", "ISO date"),
    "chip larger than image": (
        ["{ref}", "{sec}", "--chip-px", "4000"],
        "{ref}",
        "smaller than one chip",
    ),
    "chip zero": (["{ref}", "{sec}", "--chip-px", "0"], "--chip-px", "positive"),
    "search negative": (["{ref}", "{sec}", "--search-px", "-1"], "--search-px", "positive"),
    "step zero": (["{ref}", "{sec}", "--step-px", "0"], "--step-px", "positive"),
    "all nodata": (["{ref}", "{zeros}"], "{zeros}", "no valid pixels"),
    "no date": (["{no_date}", "{sec}"], "{no_date}", "--ref-date"),
}


def _fill(template: str, files: dict[str, Path]) -> str:
    return template.format(**{k: str(v) for k, v in files.items()})


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_cleanly(case, files, tmp_path):
    args, name, phrase = BAD_INPUTS[case]
    out = tmp_path / "out"
    result = run("track", *[_fill(a, files) for a in args], "-o", out)
    assert_clean_failure(result, _fill(name, files), phrase)
    assert_nothing_written(out)


def test_output_folder_that_is_a_file_fails_cleanly(files, tmp_path):
    out = tmp_path / "velocity_out"
    out.write_text("keep me\n")
    result = run("track", files["ref"], files["sec"], "-o", out)
    assert_clean_failure(result, str(out), "is a file")
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["velocity_out"]


@pytest.mark.parametrize(
    "extra",
    [
        # fails while pairing
        ["--ref-date", "2016-08-03", "--sec-date", "2016-08-03", "--trust-given-dates"],
        ["--chip-px", "4000"],  # fails after both images are read and paired
    ],
    ids=["equal-times", "chip-too-large"],
)
def test_failed_run_keeps_existing_products(files, tmp_path, extra):
    out = tmp_path / "out"
    out.mkdir()
    sentinels = {name: f"earlier product {name}\n".encode() for name in PRODUCTS}
    for name, content in sentinels.items():
        (out / name).write_bytes(content)
    result = run("track", files["ref"], files["sec"], "-o", out, "--overwrite", *extra)
    assert result.exit_code == 2, result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == sentinels


def test_existing_products_are_kept_without_overwrite(files, tmp_path):
    out = tmp_path / "out"
    first = run("track", files["ref"], files["sec"], "-o", out, "--step-px", "16")
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with rasterio.open(out / "velocity.tif") as tif:
        assert tif.res == (240.0, 240.0)
    again = run("track", files["ref"], files["sec"], "-o", out)
    assert_clean_failure(again, str(out), "velocity.tif", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # One product left is enough to refuse; --overwrite replaces the set (step 16 -> 8 px).
    (out / "velocity.tif").unlink()
    assert_clean_failure(run("track", files["ref"], files["sec"], "-o", out), "velocity.nc")
    replaced = run("track", files["ref"], files["sec"], "-o", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert sorted(p.name for p in out.iterdir()) == sorted(PRODUCTS)
    with rasterio.open(out / "velocity.tif") as tif:
        assert tif.res == (120.0, 120.0)  # the second run's 8 px nodes


def test_unwritable_product_fails_cleanly(files, tmp_path):
    out = tmp_path / "out"
    (out / "velocity.nc").mkdir(parents=True)
    result = run("track", files["ref"], files["sec"], "-o", out, "--overwrite")
    assert_clean_failure(result, "velocity.nc")
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]


def test_bad_input_exit_status_end_to_end(files, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "glacierflow.cli", "track", str(files["missing"])]
        + [str(files["sec"]), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("glacierflow: error: ")
    assert files["missing"].name in lines[0] and "file not found" in lines[0]
    assert_nothing_written(out)


# --------------------------------------------------------------------------------------------
# The demo


def test_demo_tracks_yahtse(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "-o", out)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("m/day" in line for line in lines), result.stdout
    assert any("stable rock" in line for line in lines), result.stdout
    for name in PRODUCTS:
        assert (out / name).is_file(), name
    demo = json.loads((out / "summary.json").read_text())["demo"]
    assert 9.0 <= demo["tongue_speed_p95_m_per_day"] <= 16.0
    assert demo["stable_offset_median_px"] <= 0.2
    assert demo["stable_nodes"] >= 500
    assert 10.0 <= demo["tongue_offset_median_px"] <= 13.0
    assert 180.0 <= demo["tongue_direction_deg"] <= 250.0
    assert not math.isnan(demo["tongue_speed_p95_m_per_day"])


# --------------------------------------------------------------------------------------------
# Options built from the settings tree; library errors name the flags


def test_every_setting_has_its_option_with_the_library_default():
    from glacierflow.cli.track import OVERRIDES, command
    from glacierflow.settings import LEAVES

    options = {p.name: p for p in command.params}
    for key, leaf in LEAVES.items():
        option = options[leaf.short]
        assert option.opts[0] == "--" + leaf.short.replace("_", "-"), key
        if key not in OVERRIDES:
            assert option.default == leaf.default or (option.multiple and not leaf.default), key
        assert option.help == leaf.description or key in OVERRIDES, key
    assert list(options["coreg"].type.choices) == ["constant", "affine", "poly2", "none"]


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--min-corr", "1.5"], "--min-corr must be at most 1"),
        (["--retry-chip-px", "2"], "--retry-chip-px must hold chip sizes of 4 px or more"),
        (["--ice-buffer-m", "-5"], "--ice-buffer-m must be at least 0"),
    ],
)
def test_bad_setting_names_its_flag(files, tmp_path, args, phrase):
    out = tmp_path / "out"
    result = run("track", files["ref"], files["sec"], "-o", out, *args)
    assert_clean_failure(result, phrase)
    assert_nothing_written(out)


def test_search_error_names_its_flag():
    result = run(
        "search", "--bbox", "77.5", "35", "75.5", "36.5", "--start", "1999-01-01",
        "--end", "2003-12-31", "--url", "http://127.0.0.1:9",
    )  # fmt: skip
    assert_clean_failure(result, "--bbox must be west south east north")


# --------------------------------------------------------------------------------------------
# Manners: one --workers, examples in every command's help


def test_workers_means_the_same_in_track_demo_and_run():
    from glacierflow.execute import available_cpus

    options = {}
    for name in ("track", "demo", "run"):
        command = cli.get_command(click.Context(cli), name)
        (option,) = [p for p in command.params if p.name == "workers"]
        options[name] = option
        assert option.opts == ["--workers"], name
        assert option.get_default(click.Context(command)) == available_cpus(), name
    helps = {o.help for o in options.values()}
    assert len(helps) == 1 and "Processes" in helps.pop()
    assert len({repr(o.type) for o in options.values()}) == 1


@pytest.mark.parametrize("name", ["track", "demo", "run", "search", "publish", "serve"])
def test_every_command_shows_usage_examples(name):
    result = run(name, "--help")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() in ("Example:", "Examples:"))
    examples = [line.strip() for line in lines[start + 1 :] if line.startswith("    glacierflow")]
    assert examples and all(e.startswith(f"glacierflow {name}") for e in examples), examples


def test_help_lists_commands_without_importing_them():
    """``glacierflow --help`` imports neither numpy nor the settings tree (pydantic) nor any
    command, and lists the commands exactly as a group holding them all would."""
    import importlib

    import click

    probe = (
        "import sys; from glacierflow.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'pydantic', 'glacierflow.settings', 'xarray',"
        " 'glacierflow.cli.track') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out
    cli_main = importlib.import_module("glacierflow.cli.main")
    eager = click.Group("glacierflow")
    for name, (module, _) in cli_main.COMMANDS.items():
        eager.add_command(importlib.import_module(f"glacierflow.cli.{module}").command, name)
    # Every command module of the package is in the table.
    import pkgutil

    import glacierflow.cli as package

    modules = {m.name for m in pkgutil.iter_modules(package.__path__) if m.name[0] != "_"}
    with_command = {
        m for m in modules if hasattr(importlib.import_module(f"glacierflow.cli.{m}"), "command")
    }
    assert with_command == {module for module, _ in cli_main.COMMANDS.values()}
    lazy = cli_main.GlacierflowGroup("glacierflow")  # no command imported yet
    listed = CliRunner().invoke(lazy, ["--help"]).output.split("Commands:")[1]
    assert listed == CliRunner().invoke(eager, ["--help"]).output.split("Commands:")[1]
    assert lazy.commands == {}
