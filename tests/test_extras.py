"""The optional extras: core commands run without them, a missing one is one clear line.

A fresh virtual environment with only the core installed takes minutes to build; instead each
test runs glacierflow in a subprocess whose ``sys.meta_path`` starts with a finder that refuses
the extras' modules, exactly as ``import fastapi`` fails where it is not installed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glacierflow._extras import EXTRAS
from glacierflow.demo import demo_inputs

ALL_EXTRAS = sorted({m for modules in EXTRAS.values() for m in modules})

BLOCKER = textwrap.dedent(
    """
    import sys
    BLOCKED = set(sys.argv[1].split(","))

    class Hide:
        # Wraps a finder of sys.meta_path; blocked modules are not found, as if not installed
        # (``importlib.util.find_spec`` gives None, ``import`` raises ModuleNotFoundError).
        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return None
            find = getattr(self.finder, "find_spec", None)
            return None if find is None else find(name, path, target)

        def __getattr__(self, attr):
            return getattr(self.finder, attr)

    for name in list(sys.modules):  # nothing of them imported before the blocker
        if name.split(".")[0] in BLOCKED:
            raise SystemExit(f"{name} already imported")
    sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
    sys.argv = sys.argv[2:]
    """
)

CLI = BLOCKER + "from glacierflow.cli import main\nmain()\n"


def run_without(blocked, *args: object, code: str = CLI) -> subprocess.CompletedProcess:
    """Run ``code`` (default: the command line with ``args``) with ``blocked`` modules missing."""
    return subprocess.run(
        [sys.executable, "-c", code, ",".join(blocked), "glacierflow", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_naming(proc: subprocess.CompletedProcess, extra: str, what: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("glacierflow: error: "), lines[0]
    assert f"pip install 'glacierflow[{extra}]'" in lines[0]
    assert what in lines[0]


def test_the_blocker_blocks():
    code = BLOCKER + "import importlib.util\nassert importlib.util.find_spec('fastapi') is None\n"
    assert run_without(["fastapi"], code=code).returncode == 0
    proc = run_without(["fastapi"], code=BLOCKER + "import fastapi\n")
    assert proc.returncode == 1 and "ModuleNotFoundError: No module named 'fastapi'" in proc.stderr


def test_serve_and_publish_without_the_portal_extra(tmp_path):
    proc = run_without(EXTRAS["portal"], "serve", "--catalog", tmp_path)
    assert_one_line_naming(proc, "portal", "glacierflow serve")
    meta = tmp_path / "dataset.toml"
    meta.write_text('title = "x"\n')
    proc = run_without(EXTRAS["portal"], "publish", tmp_path, "--meta", meta, "--catalog",
                       tmp_path / "catalog")  # fmt: skip
    assert_one_line_naming(proc, "portal", "glacierflow publish")
    assert not (tmp_path / "catalog").exists()


def test_search_without_the_search_extra(tmp_path):
    bbox = ("--bbox", "75.5", "35", "77.5", "36.5")
    dates = ("--start", "1999-01-01", "--end", "2003-12-31")
    proc = run_without(["pystac_client"], "search", *bbox, *dates, "-o", tmp_path / "s.csv")
    assert_one_line_naming(proc, "search", "glacierflow search")
    assert not (tmp_path / "s.csv").exists()


def test_a_scheduler_without_the_dask_extra():
    # Something listening, so that the address passes the connection probe.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        code = BLOCKER + textwrap.dedent(
            f"""
            from glacierflow.cli.options import fail
            from glacierflow.errors import GlacierflowError
            from glacierflow.execute import Executor
            try:
                Executor(scheduler={address!r})
            except GlacierflowError as exc:
                fail(exc)
            """
        )
        proc = run_without(EXTRAS["dask"], code=code)
    assert_one_line_naming(proc, "dask", address)


def test_the_core_tracks_a_pair_without_any_extra(tmp_path):
    ref, sec, rock = demo_inputs()
    out = tmp_path / "out"
    args = ("track", ref, sec, "-o", out, "--stable-mask", rock, "--step-px", 32)
    proc = run_without(ALL_EXTRAS, *args, "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    assert "nodes valid" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "quicklook.png",
        "summary.json",
        "velocity.nc",
        "velocity.tif",
    ]
    for command in ("track", "demo", "run", "search", "publish", "serve"):
        proc = run_without(ALL_EXTRAS, command, "--help")
        assert proc.returncode == 0, (command, proc.stderr)
        assert "Example" in proc.stdout, command


@pytest.mark.parametrize(
    "module", ["glacierflow.project", "glacierflow.report", "glacierflow.demo"]
)
def test_core_modules_import_without_any_extra(module):
    proc = run_without(ALL_EXTRAS, code=BLOCKER + f"import {module}\n")
    assert proc.returncode == 0, proc.stderr


def test_pyproject_extras_cover_the_guarded_modules():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    extras = project["optional-dependencies"]
    for name in ("portal", "dask", "search", "all", "test"):
        assert name in extras, name
    for heavy in ("fastapi", "uvicorn", "rio-tiler", "pystac", "dask", "jinja2"):
        assert heavy not in core, heavy
    (everything,) = extras["all"]
    assert set(everything.removeprefix("glacierflow[").rstrip("]").split(",")) == set(EXTRAS)
    assert "glacierflow[all]" in extras["test"]
