"""Faults, bad input and resumes (issue 12, items 2, 3, 4 and 6), on real files and processes.

Every failure must be one line and exit status 2, found before the work it would spoil; every
damaged or foreign piece of a resumed run must be recomputed, and the products must then equal
an undisturbed run's, value for value.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

from glacierflow.errors import InputError, OutputError
from glacierflow.project import load_project, pair_is_complete, plan_pairs, run_project

EVEREST = Path(__file__).parent / "data" / "everest" / "LE71400412000304SGS00_B4.tif"
REF_NAME = "LC80630182016200LGN00_B8_yahtse.TIF"
SEC_NAME = "LC80630182016216LGN00_B8_yahtse.TIF"


def cli(*args: object, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``glacierflow ARGS`` in a subprocess (this checkout's code through PYTHONPATH)."""
    return subprocess.run(
        [sys.executable, "-m", "glacierflow.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, no traceback, one ``glacierflow: error:`` line holding every needle."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("glacierflow: error:")]
    assert len(errors) == 1, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def pair(yahtse_dir) -> tuple[Path, Path]:
    return yahtse_dir / REF_NAME, yahtse_dir / SEC_NAME


def _products(folder: Path) -> dict[str, np.ndarray]:
    with xr.open_dataset(folder / "velocity.nc", engine="h5netcdf") as ds:
        return {name: ds[name].values.copy() for name in ("vx", "vy", "v", "v_error")}


def assert_same_products(a: Path, b: Path) -> None:
    """Both folders' products hold the same values (NaN where the other has NaN)."""
    pa, pb = _products(a), _products(b)
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)
    with rasterio.open(a / "velocity.tif") as fa, rasterio.open(b / "velocity.tif") as fb:
        np.testing.assert_array_equal(fa.read(), fb.read())


# --------------------------------------------------------------------------------------------
# Item 2: bounds from the inputs, before any work


def _write_huge_sparse(path: Path, side_px: int = 400_000) -> None:
    """A GeoTIFF of side_px x side_px pixels that holds no block (a few megabytes on disk)."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=side_px,
        height=side_px,
        count=1,
        dtype="uint8",
        crs="EPSG:32607",
        transform=Affine(15, 0, 500000, 0, -15, 6700000),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        SPARSE_OK=True,
        BIGTIFF="YES",
    ):
        pass


def test_a_node_grid_beyond_memory_is_refused_with_the_numbers(tmp_path):
    for name in ("a.tif", "b.tif"):
        _write_huge_sparse(tmp_path / name)
    t0 = time.monotonic()
    done = cli(
        "track", tmp_path / "a.tif", tmp_path / "b.tif", "-o", tmp_path / "out",
        "--ref-date", "2016-07-18", "--sec-date", "2016-08-03", timeout=120,
    )  # fmt: skip
    line = assert_one_line_error(done, "a.tif", "49,993 x 49,993 nodes", "GiB", "--step-px")
    assert "available" in line
    assert time.monotonic() - t0 < 30, "refused only after work"
    assert not (tmp_path / "out").exists()


GRID_PROJECT = """name = "g"
output = "out"

[scenes]
folder = "scenes"

[grid]
crs = "EPSG:32645"
resolution_m = RES
bounds = [478000, 3106220, 479920, 3108140]
"""


@pytest.mark.parametrize(
    ("res", "needle"),
    [
        ("0.001", "an output grid of 1,920,000 x 1,920,000 cells"),
        ("inf", "resolution_m must be a finite number"),
        ("nan", "resolution_m must be a finite number"),
        ("1e-320", "resolution_m and bounds give no usable grid"),
    ],
)
def test_impossible_grids_are_refused_at_load_with_their_line(tmp_path, res, needle):
    (tmp_path / "scenes").mkdir()
    (tmp_path / "p.toml").write_text(GRID_PROJECT.replace("RES", res))
    with pytest.raises(InputError) as info:
        load_project(tmp_path / "p.toml")
    assert f"p.toml: line 9: {needle}" in str(info.value)
    if res == "0.001":
        done = cli("run", tmp_path / "p.toml", timeout=60)
        assert_one_line_error(done, "line 9", "TiB of memory")
        assert not (tmp_path / "out").exists()


def _mount_tmpfs(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture()
def read_only_dir(tmp_path):
    folder = tmp_path / "ro"
    if not _mount_tmpfs(folder, "ro,size=1m"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_unwritable_outputs_fail_in_a_second_leaving_nothing(pair, tmp_path, read_only_dir):
    ref, sec = pair
    # The time to start and refuse a bad setting, which reads nothing: the baseline.
    t0 = time.monotonic()
    assert_one_line_error(cli("track", ref, sec, "-o", tmp_path / "x", "--chip-px", "0"))
    baseline = time.monotonic() - t0
    (tmp_path / "a_file").write_text("in the way")
    cases = {
        tmp_path / "a_file" / "out": "a_file is a file",
        tmp_path / "a_file": "it is a file",
        Path("/proc/glacierflow-out"): "cannot write into /proc",
        read_only_dir / "out": "Read-only file system",
    }
    for out, needle in cases.items():
        t0 = time.monotonic()
        # Matching at a 4 px step would take tens of seconds: the margin tells it from a
        # refusal on a machine busy enough to slow the start-up down.
        done = cli("track", ref, sec, "-o", out, "--tile-nodes", "2000", "--step-px", "4")
        assert_one_line_error(done, str(out), needle)
        assert time.monotonic() - t0 < baseline + 3.0, f"{out}: refused only after work"
        assert not (out / ".glacierflow-work").exists()
    assert (tmp_path / "a_file").read_text() == "in the way"
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("dates", "needle"),
    [
        (("2016-07-18T00:00:00", "2016-07-18T00:00:01"), "1 s apart, under 1 day"),
        (("0001-01-01", "9999-01-01"), "0001-01-01T00:00:00Z is before Landsat 1"),
        (("1980-07-18", "2016-07-18"), "36 years apart, over 30 years"),
        (("2016-07-18", "2999-01-01"), "2999-01-01T00:00:00Z is in the future"),
    ],
)
def test_pairs_with_absurd_dates_are_refused_naming_them(pair, tmp_path, dates, needle):
    ref, sec = pair
    # Trusted: dates on other days than the MTL files' stop earlier (tests/test_dates.py).
    done = cli(
        "track", ref, sec, "-o", tmp_path / "out", "--ref-date", dates[0], "--sec-date", dates[1],
        "--trust-given-dates",
    )  # fmt: skip
    assert_one_line_error(done, needle, "check the dates")
    assert not (tmp_path / "out").exists()


def test_setting_errors_and_a_bogus_scheduler_leave_no_work_folder(pair, tmp_path):
    ref, sec = pair
    done = cli("track", ref, sec, "-o", tmp_path / "a", "--ice-buffer-m", "inf")
    assert_one_line_error(done, "--ice-buffer-m must be a finite number")
    done = cli("track", ref, sec, "-o", tmp_path / "b", "--scheduler", "tcp://127.0.0.1:1")
    assert_one_line_error(done, "cannot reach the dask scheduler")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --------------------------------------------------------------------------------------------
# Item 6: I/O and GDAL errors at the edges, one line each


def test_corrupt_inputs_are_one_line_each(pair, tmp_path):
    ref, sec = pair
    cut = tmp_path / "cut.tif"
    cut.write_bytes(ref.read_bytes()[:100_000])
    for extra in ([], ["--tile-nodes", "2000"]):
        out = tmp_path / f"out{len(extra)}"
        done = cli("track", cut, sec, "-o", out, "--ref-date", "2016-07-18", *extra)
        assert_one_line_error(done, "cut.tif", "truncated, corrupt")
        assert not (out / ".glacierflow-work").exists(), "a failed run left its work folder"
    done = cli("track", ref, sec, "-o", tmp_path / "p", "--prior-vx", cut, "--prior-vy", cut)
    assert_one_line_error(done, "cut.tif", "prior vx raster")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)) * 8)
    assert_one_line_error(cli("run", binary), "binary.toml", "not a text file")


@pytest.fixture()
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    if not _mount_tmpfs(folder, "size=300k"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_during_a_tiled_track_is_one_line(pair, small_disk):
    ref, sec = pair
    done = cli("track", ref, sec, "-o", small_disk / "out", "--tile-nodes", "2000")
    assert_one_line_error(done, "No space left on device")


# --------------------------------------------------------------------------------------------
# Items 3 and 4: tiles, product sets


def test_damaged_and_foreign_tiles_are_recomputed_to_the_same_products(pair, tmp_path):
    ref, sec = pair
    work = tmp_path / "work"
    args = ("--tile-nodes", "2000", "--workers", "2", "--work-dir", work)
    first = cli("track", ref, sec, "-o", tmp_path / "first", *args)
    assert first.returncode == 0, first.stderr
    (key,) = [p for p in work.iterdir() if p.is_dir()]
    other = cli("track", ref, sec, "-o", tmp_path / "other", *args[:-1], tmp_path / "w2",
                "--search-px", "12")  # fmt: skip
    assert other.returncode == 0, other.stderr
    (foreign_key,) = [p for p in (tmp_path / "w2").iterdir() if p.is_dir()]
    tiles = sorted(key.glob("tile_*.npz"))
    assert len(tiles) >= 4
    tiles[0].write_bytes(tiles[0].read_bytes()[:700])  # truncated
    data = bytearray(tiles[1].read_bytes())
    data[len(data) // 2] ^= 0x10  # one bit flipped in the values
    tiles[1].write_bytes(bytes(data))
    shutil.copy(foreign_key / tiles[2].name, tiles[2])  # a valid tile of another run
    again = cli("track", ref, sec, "-o", tmp_path / "again", *args)
    assert again.returncode == 0, again.stderr
    notices = [ln for ln in again.stderr.splitlines() if "discarded tile_" in ln]
    assert len(notices) == 3, again.stderr
    assert any("another run" in ln for ln in notices)
    assert_same_products(tmp_path / "again", tmp_path / "first")
    for tile in tiles[:3]:
        assert tile.is_file(), "a recomputed tile is kept again"


def test_a_failed_product_set_keeps_the_old_set_whole(pair, tmp_path):
    from glacierflow.products import PRODUCT_NAMES, read_product, write_products

    ref, sec = pair
    out = tmp_path / "out"
    first = cli("track", ref, sec, "-o", out, "--tile-nodes", "2000")
    assert first.returncode == 0, first.stderr
    before = {name: (out / name).read_bytes() for name in PRODUCT_NAMES.values()}
    ds = read_product(out / "velocity.nc")
    ds.attrs["title"] = "a new set"

    def blocked(path: Path) -> None:
        raise OSError(28, "No space left on device", str(path))

    with pytest.raises(OutputError, match="No space left on device"):
        write_products(ds, out, quicklook=blocked)
    (out / "quicklook.png").unlink()
    (out / "quicklook.png").mkdir()  # something in the way of one product
    with pytest.raises(OutputError, match="quicklook.png"):
        write_products(ds, out)
    (out / "quicklook.png").rmdir()
    (out / "quicklook.png").write_bytes(before["quicklook.png"])
    after = {name: (out / name).read_bytes() for name in PRODUCT_NAMES.values()}
    assert after == before, "the old set changed"
    assert sorted(p.name for p in out.iterdir()) == sorted(PRODUCT_NAMES.values())


def test_a_kill_during_the_product_write_leaves_nothing_for_long(pair, tmp_path):
    from glacierflow.products import STAGING_PREFIX, read_product, write_products

    ref, sec = pair
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "glacierflow.cli", "track", str(ref), str(sec), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        staged = []
        while time.monotonic() < deadline and proc.poll() is None:
            staged = list(out.glob(f"{STAGING_PREFIX}*/*")) if out.is_dir() else []
            if staged:
                break
            time.sleep(0.01)
        assert staged, "the staging folder never appeared"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert list(out.glob(f"{STAGING_PREFIX}*")), "the kill came too late to leave anything"
    again = cli("track", ref, sec, "-o", out)
    assert again.returncode == 0, again.stderr
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    write_products(read_product(out / "velocity.nc"), out)  # the library cleans up too
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------------------------
# Item 3: pair products of a project


PROJECT = """name = "faults"
output = "out"

[scenes]
folder = "scenes"
pattern = "*_B8.TIF"

[pairs]
min_days = 300
max_days = MAXDAYS

[grid]
crs = "EPSG:32645"
resolution_m = 60
bounds = [{left}, {bottom}, {right}, {top}]

[matching]
chip_px = 32
search_px = 8
step_px = 8
"""
SIZE, ROW0, COL0 = 128, 300, 120
DATES = [date(1999, 7, 16), date(2000, 6, 16), date(2001, 7, 21)]


def _scene_name(day: date) -> str:
    return f"LE07_L1TP_148035_{day:%Y%m%d}_20200918_02_T1_B8.TIF"


def _write_scene(path: Path, texture, crs, transform, years: float) -> None:
    from glacierflow.synthetic import warp_image

    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    tongue = np.exp(-(((yy - 64) / 25) ** 2 + ((xx - 64) / 35) ** 2))
    image = warp_image(texture, 2.0 * years * tongue, 0.8 * years * tongue)
    with rasterio.open(
        path, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="float32",
        crs=crs, transform=transform,
    ) as dst:  # fmt: skip
        dst.write(image.astype(np.float32), 1)


def _build_project(root: Path, max_days: int = 420) -> Path:
    """Three real-texture scenes (Everest, moved by a known tongue), two pairs."""
    with rasterio.open(EVEREST) as src:
        texture = src.read(1)[ROW0 : ROW0 + SIZE, COL0 : COL0 + SIZE].astype(np.float64)
        crs, transform = src.crs, src.transform @ Affine.translation(COL0, ROW0)
    (root / "scenes").mkdir(parents=True)
    for day in DATES:
        years = (day - DATES[0]).days / 365.25
        _write_scene(root / "scenes" / _scene_name(day), texture, crs, transform, years)
    left, top = transform.c, transform.f
    text = PROJECT.replace("MAXDAYS", str(max_days)).format(
        left=left, bottom=top - SIZE * 30.0, right=left + SIZE * 30.0, top=top
    )
    (root / "project.toml").write_text(text)
    return root / "project.toml"


def test_damaged_or_stale_pairs_are_tracked_again_and_stale_folders_not_published(tmp_path):
    from glacierflow.portal.discover import find_products

    path = _build_project(tmp_path)
    done = cli("run", path, "--no-report")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    reference = tmp_path / "reference"
    shutil.copytree(out / "pairs", reference)
    first, second = sorted(p.pair_id for p in plan_pairs(load_project(path)))

    # A bit flipped in a product: the pair is tracked again, with a notice.
    nc = out / "pairs" / first / "velocity.nc"
    data = bytearray(nc.read_bytes())
    data[len(data) // 2] ^= 0x01
    nc.write_bytes(bytes(data))
    # A scene replaced at the same path, same size and time: its pair is tracked again.
    scene = tmp_path / "scenes" / _scene_name(DATES[2])
    st = scene.stat()
    original = scene.read_bytes()
    changed = bytearray(original)
    changed[-4000:] = bytes(4000)
    scene.write_bytes(bytes(changed))
    os.utime(scene, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = cli("run", path, "--no-report")
    assert again.returncode == 0, again.stderr
    assert "2 pair(s) tracked, 0 kept" in again.stdout, again.stdout
    assert f"pair {first}: velocity.nc is damaged" in again.stderr
    assert f"pair {second}: a scene file changed" in again.stderr
    assert_same_products(out / "pairs" / first, reference / first)

    # The scene back as it was: tracked again, the products equal the undisturbed run's.
    scene.write_bytes(original)
    os.utime(scene, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = cli("run", path, "--no-report")
    assert "1 pair(s) tracked, 1 kept" in again.stdout, again.stderr
    for pair_id in (first, second):
        assert_same_products(out / "pairs" / pair_id, reference / pair_id)
        assert pair_is_complete(out / "pairs" / pair_id)

    # A narrower plan: the pair left out is neither composed nor published.
    path.write_text(path.read_text().replace("max_days = 420", "max_days = 340"))
    result = run_project(path, report=False)
    assert result.pairs and [p.pair_id for p in result.pairs] == [first]
    assert json.loads((out / "pairs" / "plan.json").read_text())["pairs"] == [first]
    products, skipped = find_products(out)
    assert (out / "pairs" / second).is_dir()
    assert all(second not in str(p.cog) for p in products)
    assert any(second in str(p) and "outside the project's plan" in r for p, r in skipped)


# --------------------------------------------------------------------------------------------
# Item 6: fuzzing the command line and the project file: no traceback, exit 0 or 2

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from glacierflow.errors import GlacierflowError  # noqa: E402
from glacierflow.settings import LEAVES  # noqa: E402

#: Values every option is tried with: edges, non-numbers, paths that are not there.
ODD_VALUES = ["0", "-1", "1", "2", "8", "32", "1e309", "inf", "-inf", "nan", "", "abc", "3.5",
              "100000", "-0", "1e-300", "/nonexistent.tif", "phase", "ncc", "none", "wallis",
              "2016-07-18", "9999-12-31"]  # fmt: skip


def _crop_pair(folder: Path, yahtse_dir: Path, side_px: int = 128) -> tuple[Path, Path]:
    """A small window of both Yahtse scenes, so that a fuzz case that runs does so quickly."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in (REF_NAME, SEC_NAME):
        with rasterio.open(yahtse_dir / name) as src:
            win = rasterio.windows.Window(400, 400, side_px, side_px)
            profile = src.profile | {
                "width": side_px,
                "height": side_px,
                "transform": src.window_transform(win),
            }
            profile.pop("blockxsize", None), profile.pop("blockysize", None)
            profile["tiled"] = False
            with rasterio.open(folder / name, "w", **profile) as dst:
                dst.write(src.read(1, window=win), 1)
        out.append(folder / name)
    return out[0], out[1]


def _option_strategy():
    flags = []
    for leaf in LEAVES.values():
        name = leaf.short.replace("_", "-")
        if leaf.annotation is bool:
            flags.append(st.sampled_from([[f"--{name}"], [f"--no-{name}"]]))
        else:
            value = st.one_of(
                st.sampled_from(ODD_VALUES),
                st.integers(-(10**6), 10**6).map(str),
                st.floats(allow_nan=True, allow_infinity=True).map(repr),
                st.text(st.characters(blacklist_characters="\x00"), max_size=6),
            )
            flags.append(value.map(lambda v, n=name: [f"--{n}", v]))
    extra = st.sampled_from(
        [
            ["--ref-date", "2016-07-01"],
            ["--sec-date", "yesterday"],
            ["--band", "0"],
            ["--band", "2"],
            ["--bogus"],
            ["--sec-date", "2016-07-18T00:00:01"],
        ]  # fmt: skip
    )
    # No NUL byte: a command line cannot carry one.
    return st.lists(st.one_of(st.one_of(flags), extra), max_size=4).map(
        lambda chunks: [part for chunk in chunks for part in chunk]
    )


@pytest.fixture(scope="module")
def fuzz_inputs(tmp_path_factory, yahtse_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    ref, sec = _crop_pair(root / "scenes", yahtse_dir)
    (root / "cut.tif").write_bytes(ref.read_bytes()[:5000])
    (root / "text.tif").write_text("not an image")
    (root / "a_file").write_text("x")
    return {"ref": ref, "sec": sec, "cut": root / "cut.tif", "text": root / "text.tif",
            "dir": root / "scenes", "missing": root / "missing.tif", "root": root}  # fmt: skip


def _invoke(args: list[str]) -> tuple[int, BaseException | None, str]:
    from click.testing import CliRunner

    from glacierflow.cli import cli as group

    result = CliRunner().invoke(group, args, catch_exceptions=True)
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    return result.exit_code, exc, result.output


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    inputs=st.sampled_from(
        [("ref", "sec")] * 4
        + [("cut", "sec"), ("text", "sec"), ("dir", "sec"), ("missing", "sec"), ("ref", "ref")]
    ),  # fmt: skip
    out=st.sampled_from(["out", "a_file", "a_file/out", "/proc/fuzz"]),
    options=_option_strategy(),
)
def test_fuzzed_track_arguments_never_give_a_traceback(fuzz_inputs, inputs, out, options):
    root = fuzz_inputs["root"]
    target = Path(out) if out.startswith("/") else root / out
    args = ["track", str(fuzz_inputs[inputs[0]]), str(fuzz_inputs[inputs[1]]), "-o", str(target)]
    args += ["--workers", "1", "--no-progress", *options]
    with contextlib.chdir(root):  # relative paths among the fuzzed options land in the sandbox
        code, exc, output = _invoke(args)
    assert exc is None, f"{args}: {exc!r}"
    assert code in (0, 2), (args, code, output[-2000:])
    shutil.rmtree(root / "out", ignore_errors=True)


GOOD_PROJECT = """name = "fuzz"
output = "out"

[scenes]
folder = "scenes"

[pairs]
min_days = 1
max_days = 40

[grid]
crs = "EPSG:32607"
resolution_m = 60
bounds = [{left}, {bottom}, {right}, {top}]

[matching]
chip_px = 32
search_px = 8

[filtering]
min_corr = 0.2
"""

PROJECT_VALUES = ["0", "-1", "1e309", "inf", "nan", '"x"', "true", "[]", "[1, 2]", "{}",
                  '"EPSG:4326"', "1979-01-01", "0.001", "[0, 0, 1, 1]", '"/proc"', "3"]  # fmt: skip


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_project_files_never_give_a_traceback(fuzz_inputs, data):
    root = fuzz_inputs["root"]
    with rasterio.open(fuzz_inputs["ref"]) as src:
        left, bottom, right, top = src.bounds
    text = GOOD_PROJECT.format(left=left, bottom=bottom, right=right, top=top)
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        kind = data.draw(st.sampled_from(["value", "drop", "garbage", "key"]))
        if kind == "value" and "=" in lines[i]:
            value = data.draw(st.one_of(st.sampled_from(PROJECT_VALUES), st.text(max_size=5)))
            lines[i] = lines[i].split("=")[0] + "= " + value
        elif kind == "drop":
            lines[i] = ""
        elif kind == "garbage":
            lines[i] = data.draw(st.text(max_size=12))
        else:
            lines[i] = data.draw(st.sampled_from(["workers = 100000", "[nonsense]", "step_px = 0",
                                                  "min_days = 1e-9", "dates = 3"]))  # fmt: skip
    path = root / "fuzz.toml"
    raw = "\n".join(lines).encode("utf-8", "surrogatepass")
    if data.draw(st.booleans()) and data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))] + bytes([0xFF, 0xFE])
    path.write_bytes(raw)
    try:
        plan_pairs(load_project(path))
    except GlacierflowError:
        pass  # the command line says it in one line, exit 2


@pytest.fixture()
def tiny_disk(tmp_path):
    folder = tmp_path / "tiny_disk"
    if not _mount_tmpfs(folder, "size=40k"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_during_a_run_is_one_line_leaving_no_staged_files(tmp_path, tiny_disk):
    path = _build_project(tmp_path)
    path.write_text(path.read_text().replace('output = "out"', f'output = "{tiny_disk}/out"'))
    done = cli("run", path, "--no-report")
    assert_one_line_error(done, "No space left on device")
    for folder in (tiny_disk / "out" / "pairs").glob("*/"):
        hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert hidden == [], f"{folder}: {hidden}"


def test_run_with_a_bogus_scheduler_or_an_unwritable_output_leaves_nothing(tmp_path):
    path = _build_project(tmp_path)
    done = cli("run", path, "--scheduler", "tcp://127.0.0.1:1", "--no-report")
    assert_one_line_error(done, "cannot reach the dask scheduler")
    assert not (tmp_path / "out").exists()
    (tmp_path / "blocker").write_text("x")
    path.write_text(path.read_text().replace('output = "out"', 'output = "blocker/out"'))
    done = cli("run", path, "--no-report")
    assert_one_line_error(done, "blocker is a file")
    assert (tmp_path / "blocker").read_text() == "x"
