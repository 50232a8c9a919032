"""Fuzz the command line and the project file; print the outcomes, counted.

Thousands of random ``glacierflow track`` argument lists (every setting of the tree with edge,
non-numeric and path values, broken or missing inputs, unwritable outputs) and of mutated
project files (wrong values, dropped or garbage lines, truncated or binary bytes) run in this
process. The expected outcomes are exit 0 (it ran) and exit 2 (usage or a one-line error);
anything else, a traceback above all, is printed with its arguments. Arguments hold no NUL
byte: a command line cannot carry one.

    python benchmarks/fuzz.py --track 2000 --project 2000 --seed 0
"""

from __future__ import annotations

import argparse
import collections
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import rasterio
from click.testing import CliRunner

from glacierflow.cli import cli
from glacierflow.demo import demo_inputs
from glacierflow.errors import GlacierflowError
from glacierflow.project import load_project, plan_pairs
from glacierflow.settings import LEAVES

ODD = ["0", "-1", "1", "2", "8", "32", "1e309", "inf", "-inf", "nan", "", "abc", "3.5", "100000",
       "-0", "1e-300", "/nonexistent.tif", "phase", "ncc", "none", "wallis", "2016-07-18",
       "9999-12-31", "é", "--", "-5.5e3"]  # fmt: skip
PROJECT_VALUES = ["0", "-1", "1e309", "inf", "nan", '"x"', "true", "[]", "[1, 2]", "{}",
                  '"EPSG:4326"', "1979-01-01", "0.001", "[0, 0, 1, 1]", '"/proc"', "3"]  # fmt: skip
PROJECT = """name = "fuzz"
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


def crop_inputs(root: Path, side_px: int = 128) -> dict[str, Path]:
    """Small windows of the Yahtse pair, and broken inputs beside them."""
    (root / "scenes").mkdir(parents=True)
    paths = []
    for src_path in demo_inputs()[:2]:
        with rasterio.open(src_path) as src:
            win = rasterio.windows.Window(400, 400, side_px, side_px)
            profile = src.profile | {"width": side_px, "height": side_px, "tiled": False}
            profile["transform"] = src.window_transform(win)
            profile.pop("blockxsize", None), profile.pop("blockysize", None)
            with rasterio.open(root / "scenes" / Path(src_path).name, "w", **profile) as dst:
                dst.write(src.read(1, window=win), 1)
        paths.append(root / "scenes" / Path(src_path).name)
    (root / "cut.tif").write_bytes(paths[0].read_bytes()[:5000])
    (root / "text.tif").write_text("not an image")
    (root / "a_file").write_text("x")
    return {"ref": paths[0], "sec": paths[1], "cut": root / "cut.tif", "text": root / "text.tif",
            "dir": root / "scenes", "missing": root / "missing.tif"}  # fmt: skip


def random_text(rng: random.Random, n: int) -> str:
    return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(1, 0x2FF)])) for _ in
                   range(rng.randrange(n + 1)))  # fmt: skip


def track_args(rng: random.Random, inputs: dict[str, Path], root: Path) -> list[str]:
    names = ["ref"] * 4 + ["cut", "text", "dir", "missing"]
    out = rng.choice([str(root / "out"), str(root / "a_file"), str(root / "a_file/o"), "/proc/o"])
    args = ["track", str(inputs[rng.choice(names)]), str(inputs["sec"]), "-o", out]
    args += ["--workers", "1", "--no-progress"]
    leaves = list(LEAVES.values())
    for _ in range(rng.randrange(5)):
        leaf = rng.choice(leaves)
        name = leaf.short.replace("_", "-")
        if leaf.annotation is bool:
            args.append(rng.choice([f"--{name}", f"--no-{name}"]))
            continue
        value = rng.choice(
            [
                rng.choice(ODD),
                str(rng.randint(-(10**6), 10**6)),
                repr(rng.uniform(-1e6, 1e6)),
                random_text(rng, 6),
            ]  # fmt: skip
        )
        args += [f"--{name}", value]
    if rng.random() < 0.2:
        args += rng.choice(
            [
                ["--ref-date", "2016-07-01"],
                ["--sec-date", "yesterday"],
                ["--band", "0"],
                ["--bogus"],
                ["--sec-date", "2016-07-18T00:00:01"],
            ]  # fmt: skip
        )
    return args


def project_bytes(rng: random.Random, template: str) -> bytes:
    lines = template.splitlines()
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        kind = rng.choice(["value", "drop", "garbage", "key"])
        if kind == "value" and "=" in lines[i]:
            value = rng.choice(PROJECT_VALUES + [random_text(rng, 5)])
            lines[i] = lines[i].split("=")[0] + "= " + value
        elif kind == "drop":
            lines[i] = ""
        elif kind == "garbage":
            lines[i] = random_text(rng, 12)
        else:
            lines[i] = rng.choice(["workers = 100000", "[nonsense]", "step_px = 0",
                                   "min_days = 1e-9", "dates = 3", "max_days = 1e12"])  # fmt: skip
    raw = "\n".join(lines).encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:
        raw = raw[: rng.randrange(len(raw) + 1)] + bytes([0xFF, 0xFE])
    return raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", type=int, default=2000, help="track cases")
    parser.add_argument("--project", type=int, default=2000, help="project file cases")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    rng = random.Random(opts.seed)
    counts: collections.Counter[str] = collections.Counter()
    bad: list[str] = []
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = crop_inputs(root)
        t0 = time.perf_counter()
        for _ in range(opts.track):
            args = track_args(rng, inputs, root)
            result = runner.invoke(cli, args, catch_exceptions=True)
            exc = result.exception
            if exc is not None and not isinstance(exc, SystemExit):
                counts["track: traceback"] += 1
                bad.append(f"{args}: {exc!r}")
            elif result.exit_code == 0:
                counts["track: exit 0 (ran)"] += 1
            elif result.exit_code == 2 and "glacierflow: error:" in result.output:
                counts["track: exit 2 (one-line error)"] += 1
            elif result.exit_code == 2:
                counts["track: exit 2 (usage)"] += 1
            else:
                counts[f"track: exit {result.exit_code}"] += 1
                bad.append(f"{args}: exit {result.exit_code}: {result.output[-300:]}")
            shutil.rmtree(root / "out", ignore_errors=True)
        t_track = time.perf_counter() - t0
        with rasterio.open(inputs["ref"]) as src:
            left, bottom, right, top = src.bounds
        template = PROJECT.format(left=left, bottom=bottom, right=right, top=top)
        path = root / "fuzz.toml"
        t0 = time.perf_counter()
        for _ in range(opts.project):
            path.write_bytes(project_bytes(rng, template))
            try:
                plan_pairs(load_project(path))
                counts["project: planned"] += 1
            except GlacierflowError:
                counts["project: one-line error"] += 1
            except Exception as exc:  # noqa: BLE001 - what the fuzz is looking for
                counts["project: traceback"] += 1
                bad.append(f"{path.read_bytes()[:400]!r}: {exc!r}")
        t_project = time.perf_counter() - t0
    print(f"{'outcome':<34} {'cases':>7}")
    print(f"{'-' * 34} {'-' * 7}")
    for outcome, n in sorted(counts.items()):
        print(f"{outcome:<34} {n:>7}")
    print(f"\ntrack: {opts.track} cases in {t_track:.0f} s", end="; ")
    print(f"project: {opts.project} cases in {t_project:.0f} s")
    for line in bad[:20]:
        print("UNEXPECTED", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
