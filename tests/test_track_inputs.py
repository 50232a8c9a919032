"""``glacierflow track`` as a reviewer tried it: the bundled Yahtse pair cropped to 200 x 200 px
and saved under plain names (no MTL, no scene ID: the times come from options or STAC items).

Local STAC items track; bad option values are refused in one line naming the option and the
allowed range before any large allocation; messages name only what the user must change.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import rasterio
from rasterio.windows import Window
from test_cli import assert_clean_failure, assert_nothing_written, run

from glacierflow.cli import cli
from glacierflow.demo import demo_inputs
from glacierflow.settings import LEAVES

REF_DATE, SEC_DATE = "2016-07-18", "2016-08-03"
DATES = ("--ref-date", REF_DATE, "--sec-date", SEC_DATE)
SIDE_PX = 200


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A.tif and B.tif: the middle 200 x 200 px of the demo pair, without MTL or scene ID."""
    folder = tmp_path_factory.mktemp("plain")
    out = []
    for src, name in zip(demo_inputs()[:2], ("A.tif", "B.tif"), strict=True):
        with rasterio.open(src) as ds:
            window = Window(ds.width // 2 - 100, ds.height // 2 - 100, SIDE_PX, SIDE_PX)
            profile = {**ds.profile, "width": SIDE_PX, "height": SIDE_PX}
            profile["transform"] = ds.window_transform(window)
            data = ds.read(1, window=window)
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(data, 1)
        out.append(folder / name)
    return out[0], out[1]


def _item(path: Path, href: str, assets: bool = True) -> Path:
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "LC08_yahtse_ref",
        "geometry": None,
        "properties": {"datetime": f"{REF_DATE}T20:37:06Z", "platform": "landsat-8"},
        "assets": {"pan": {"href": href}} if assets else {},
    }
    path.write_text(json.dumps(item))
    return path


@pytest.mark.parametrize("href", ["relative", "absolute"])
def test_a_local_stac_item_tracks_from_the_command_line(pair, tmp_path, href):
    ref, sec = pair
    folder = tmp_path / "items"
    folder.mkdir()
    given = str(ref)
    if href == "relative":  # relative to the item's folder
        (tmp_path / "data").mkdir()
        shutil.copy(ref, tmp_path / "data" / ref.name)
        given = f"../data/{ref.name}"
    item = _item(folder / "item.json", given)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "glacierflow.cli", "track", str(item), str(sec), "-o", str(out)]
        + ["--sec-date", SEC_DATE, "--workers", "1", "--step-px", "16", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    text = json.dumps(summary)
    assert REF_DATE in text and SEC_DATE in text
    assert (out / "velocity.tif").is_file()


def test_a_stac_item_without_assets_says_so(pair, tmp_path):
    item = _item(tmp_path / "empty.json", "", assets=False)
    result = run("track", item, pair[1], "-o", tmp_path / "out", "--sec-date", SEC_DATE)
    assert_clean_failure(result, "empty.json", "without assets")
    assert "its assets are" not in result.stderr


MESSAGES = {
    # A prose word equal to an option's name stays a word.
    "band": (
        ["--band", "0", *DATES],
        ["A.tif", "is a single-band image; --band 0 is out of range (1 to 1)"],
        ["single---band", "1 --band"],
    ),
    # Only the missing date is asked for, without internal function names.
    "sec date": (
        ["--ref-date", REF_DATE],
        ["B.tif", "give it as --sec-date"],
        ["--ref-date", "read_scene"],
    ),
    "ref date": (
        ["--sec-date", SEC_DATE],
        ["A.tif", "give it as --ref-date"],
        ["--sec-date", "read_scene"],
    ),
}


@pytest.mark.parametrize("case", list(MESSAGES))
def test_messages_name_what_to_change(pair, tmp_path, case):
    args, needles, absent = MESSAGES[case]
    out = tmp_path / "out"
    result = run("track", *pair, "-o", out, *args)
    assert_clean_failure(result, *needles)
    for word in absent:
        assert word not in result.stderr, (word, result.stderr)
    assert_nothing_written(out)


def test_an_unsupported_url_scheme_is_named(pair, tmp_path):
    result = run("track", "ftp://x/A.tif", pair[1], "-o", tmp_path / "out", *DATES)
    assert_clean_failure(result, "ftp://x/A.tif", "ftp://")
    assert "file not found" not in result.stderr


def test_an_empty_output_folder_is_refused(pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("track", *pair, "-o", "", *DATES)
    assert result.exit_code == 2 and "empty" in result.stderr
    assert list(tmp_path.iterdir()) == []


HIGHPASS = ["--prefilter", "highpass", "--highpass-sigma-px"]
REFUSED = {
    # Settings alone (a 1e9 px sigma asked for a 60 GiB kernel, a 100000 px retry chip for
    # 37 GiB of padding).
    "sigma": ([*HIGHPASS, "1e9"], "--highpass-sigma-px must be at most 250"),
    "wallis": (
        ["--prefilter", "wallis", "--wallis-window-px", "1e9"],
        "--wallis-window-px must be at most 1000",
    ),
    "retry chip": (["--retry-chip-px", "100000"], "--retry-chip-px must hold chip sizes of at"),
    "neighbours": (["--min-neighbours", "100"], "--min-neighbours must be 1 to 8"),
    "levels": (["--pyramid-levels", "50"], "--pyramid-levels must be 1 to 6"),
    # Settings against the image, before any matching.
    "step": (
        ["--step-px", "100000"],
        "A.tif: the image (200 x 200 px) holds fewer than 3 nodes per axis with --chip-px 32, "
        "--search-px 16 and --step-px 100000; use a --step-px of at most 68",
    ),
    "step, no coreg": (["--step-px", "100000", "--coreg", "none"], "fewer than 3 nodes per axis"),
    "retry chip > image": (["--retry-chip-px", "180"], "A.tif: the image (200 x 200 px) is small"),
    "sigma > image": (
        [*HIGHPASS, "240"],
        "--highpass-sigma-px 240 is larger than the image (200 x 200 px)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unusable_values_are_refused_in_one_line(pair, tmp_path, case):
    args, phrase = REFUSED[case]
    out = tmp_path / "out"
    result = run("track", *pair, "-o", out, *DATES, *args)
    assert_clean_failure(result, phrase)
    assert_nothing_written(out)


def test_the_help_names_the_first_setting_option():
    command = cli.get_command(click.Context(cli), "track")
    help_text = " ".join(command.help.split())
    first = help_text.split("Every option from ", 1)[1].split(" ", 1)[0]
    flags = [p.opts[-1] for p in command.params if isinstance(p, click.Option) and not p.hidden]
    settings = {"--" + leaf.short.replace("_", "-") for leaf in LEAVES.values()}
    i = flags.index(first)
    assert first in settings and not settings & set(flags[:i])
    assert set(flags[i:]) <= settings
