"""Scene discovery against a real HTTP server on loopback serving recorded STAC responses.

The responses (``tests/data/stac``) are hand-written in the shape of the USGS LandsatLook STAC
API's Landsat Collection 2 Level-1 items. The server listens on 127.0.0.1 only; proxies are
switched off for the test so that no request can leave the machine.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import rasterio
from affine import Affine

from glacierflow.errors import InputError
from glacierflow.project import load_project, plan_pairs
from glacierflow.search import search_scenes

DATA = Path(__file__).parent / "data" / "stac"
BBOX = (75.5, 35.0, 77.5, 36.5)


class StacHandler(BaseHTTPRequestHandler):
    """Serves the landing page and two pages of /search, and records what it was asked."""

    root = ""
    requests: list[dict] = []
    conforms = True

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, doc: dict, status: int = 200) -> None:
        body = json.dumps(doc).replace("http://STAC_ROOT", self.root).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _doc(self, name: str) -> dict:
        return json.loads((DATA / name).read_text(encoding="utf-8"))

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path in ("/", ""):
            landing = self._doc("landing.json")
            if not self.conforms:
                landing["conformsTo"] = ["https://api.stacspec.org/v1.0.0/core"]
            self._send(landing)
        elif url.path == "/search":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            self.requests.append({"method": "GET", **query})
            self._send(self._doc("search_page1.json"))
        else:
            self._send({"code": "NotFound", "description": self.path}, 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.requests.append({"method": "POST", "path": self.path, **body})
        if urlparse(self.path).path != "/search":
            self._send({"code": "NotFound", "description": self.path}, 404)
        elif body.get("token") == "page2":
            self._send(self._doc("search_page2.json"))
        else:
            self._send(self._doc("search_page1.json"))


@pytest.fixture()
def stac(monkeypatch) -> Iterator[tuple[str, type[StacHandler]]]:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    class Handler(StacHandler):
        requests: list[dict] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.root = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Handler.root, Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_search_follows_pages_and_filters_cloud(stac):
    url, handler = stac
    found = search_scenes(BBOX, "1999-01-01", "2003-12-31", url=url, max_cloud=30)
    assert [s.datetime[:10] for s in found] == [
        "1999-07-16",
        "2000-06-16",
        "2001-07-21",
        "2001-07-28",
        "2002-04-19",
        "2002-08-09",
        "2003-03-21",
    ]
    first = found[0]
    assert first.scene_id == "LE07_L1TP_148035_19990716_20200918_02_T1"
    assert (first.wrs_path, first.wrs_row) == ("148", "035")
    assert first.platform == "LANDSAT_7" and first.instruments == "ETM"
    assert first.cloud_cover == 4.0
    assert first.pan_href.endswith(f"{first.scene_id}_B8.TIF")
    assert first.mtl_href.endswith(f"{first.scene_id}_MTL.txt")
    posts = [r for r in handler.requests if r["method"] == "POST"]
    assert len(posts) == 2  # both pages
    asked = posts[0]
    assert asked["collections"] == ["landsat-c2-l1"]
    assert asked["bbox"] == list(BBOX)
    assert asked["datetime"] == "1999-01-01T00:00:00Z/2003-12-31T23:59:59Z"
    assert asked["query"] == {"eo:cloud_cover": {"lte": 30.0}}
    everything = search_scenes(BBOX, "1999-01-01", "2003-12-31", url=url)
    assert len(everything) == 8  # the 78 % cloudy scene too


def test_the_cli_writes_a_scene_list_a_project_accepts(stac, tmp_path):
    url, _ = stac
    out = tmp_path / "scenes.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "glacierflow.cli",
            "search",
            "--bbox",
            *map(str, BBOX),
            "--start",
            "1999-01-01",
            "--end",
            "2003-12-31",
            "--collection",
            "landsat-c2-l1",
            "--max-cloud",
            "30",
            "--url",
            url,
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "7 scene(s) written" in done.stdout
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["scene_id"] == "LE07_L1TP_148035_19990716_20200918_02_T1"
    assert {r["wrs_path"] for r in rows} == {"148", "149"}

    # "Download" the path 148 scenes as tiny stand-ins named like USGS band files.
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for row in rows:
        with rasterio.open(
            scenes / f"{row['scene_id']}_B8.TIF",
            "w",
            driver="GTiff",
            width=32,
            height=32,
            count=1,
            dtype="uint8",
            crs="EPSG:32643",
            transform=Affine(15, 0, 540000, 0, -15, 3960000),
        ) as dst:
            dst.write(np.full((32, 32), 100, np.uint8), 1)
    (tmp_path / "p.toml").write_text(
        """output = "out"
[scenes]
list = "scenes.csv"
folder = "scenes"
pattern = "*_B8.TIF"
path_row = "148035"
[pairs]
explicit = [
  ["1999-07-16", "2000-06-16"],
  ["2000-06-16", "2001-07-21"],
  ["2001-07-21", "2002-08-09"],
  ["2002-04-19", "2003-03-21"],
]
[grid]
crs = "EPSG:32643"
resolution_m = 30
bounds = [540000, 3959520, 540480, 3960000]
"""
    )
    plans = plan_pairs(load_project(tmp_path / "p.toml"))
    assert [round(p.dt_days) for p in plans] == [336, 400, 384, 336]
    assert all(p.ref.path_row == "148035" for p in plans)


def test_an_api_without_item_search_is_refused(stac):
    url, handler = stac
    handler.conforms = False
    with pytest.raises(InputError, match="item search"):
        search_scenes(BBOX, "1999-01-01", "2003-12-31", url=url)


def test_unreachable_server_and_bad_arguments(tmp_path):
    import socket

    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(InputError, match="cannot search|refused"):
        search_scenes(BBOX, "1999-01-01", "2003-12-31", url=f"http://127.0.0.1:{port}")
    with pytest.raises(InputError, match=r"^bbox must be west south east north"):
        search_scenes(
            (77.5, 35.0, 75.5, 36.5), "1999-01-01", "2003-12-31", url="http://127.0.0.1:9"
        )
    with pytest.raises(InputError, match=r"^end \(1999-12-31\) must be after start \(2003-01-01\)"):
        search_scenes(BBOX, "2003-01-01", "1999-12-31", url="http://127.0.0.1:9")
    with pytest.raises(InputError, match=r"^start must be a date"):
        search_scenes(BBOX, "yesterday", "1999-12-31", url="http://127.0.0.1:9")


def _no_proxy_env() -> dict[str, str]:
    import os

    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    return {k: v for k, v in os.environ.items() if k.lower() not in proxies}


def test_search_without_network_says_so_in_one_line(tmp_path):
    # .invalid never resolves (RFC 2606): what a machine without network sees for any host.
    out = tmp_path / "scenes.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "glacierflow.cli", "search", "--bbox", *map(str, BBOX),
         "--start", "1999-01-01", "--end", "2003-12-31", "--url", "http://nonexistent.invalid",
         "-o", str(out)],
        capture_output=True, text=True, timeout=120, env=_no_proxy_env(),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no retry lines of the HTTP client
    assert lines[0].startswith("glacierflow: error: cannot search the STAC API at ")
    assert "host 'nonexistent.invalid' could not be resolved" in lines[0]
    assert "refused" not in lines[0] and not out.exists()


def test_a_refused_connection_is_named_as_such(monkeypatch):
    import socket
    import time

    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(InputError) as exc_info:
        search_scenes(BBOX, "1999-01-01", "2003-12-31", url=f"http://127.0.0.1:{port}")
    message = str(exc_info.value)
    assert f"the connection to 127.0.0.1 port {port} was refused" in message
    assert "Max retries" not in message
    assert time.monotonic() - start < 5  # not retried with back-off
