"""Scenes from URLs: full-scene COGs served over HTTP by a local server that counts its bytes.

The two COGs are the bundled Yahtse pair in the middle of a 3 x 3 mirrored mosaic (5,094 x
3,261 px each, 512 px tiles, deflate, with overviews), named by their Landsat scene IDs and with
no MTL beside them, so the acquisition time comes from the name for a URL and a file alike.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
import xarray as xr
from affine import Affine
from click.testing import CliRunner

from glacierflow import remote
from glacierflow.cli import cli
from glacierflow.errors import InputError
from glacierflow.pair import Pair
from glacierflow.remote import NetworkError, SceneURL
from glacierflow.scenes import header_window, read_area, read_header
from glacierflow.track import load_pair_tiled, track_pair, track_to_products

REF_NAME = "LC80630182016200LGN00_B8_full.TIF"
SEC_NAME = "LC80630182016216LGN00_B8_full.TIF"
#: A 2 x 2 km box (UTM 7N) over the fast terminus of Yahtse Glacier, as lon/lat degrees.
BOX_UTM = (478_500.0, 6_669_500.0, 480_500.0, 6_671_500.0)
OPTIONS = ["--chip-px", "32", "--search-px", "16", "--step-px", "4", "--workers", "1"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows read from URLs are cached in the test's folder, never in the user's."""
    monkeypatch.setenv("GLACIERFLOW_CACHE_DIR", str(tmp_path / "window-cache"))


def _bbox_deg() -> tuple[float, float, float, float]:
    w, s, e, n = BOX_UTM
    lons, lats = rasterio.warp.transform("EPSG:32607", "EPSG:4326", [w, e, e, w], [s, s, n, n])
    # The largest lon/lat box inside the UTM square, so the window is about 2 x 2 km.
    return (sorted(lons)[1], sorted(lats)[1], sorted(lons)[2], sorted(lats)[2])


class _Handler(BaseHTTPRequestHandler):
    """GET and HEAD of in-memory files with single and multiple byte ranges."""

    protocol_version = "HTTP/1.1"
    server: _CountingServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _send(self, code: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)
            with self.server.lock:
                self.server.sent[self.name] += len(payload)

    def _serve(self, body: bool) -> None:
        srv = self.server
        self.name = self.path.split("?", 1)[0].lstrip("/")
        with srv.lock:
            srv.requests[self.name] += 1
            failing = srv.fail_next[self.name] > 0
            srv.fail_next[self.name] -= failing
        if failing:
            self._send(503, {}, b"", body)
            return
        data = srv.files.get(self.name)
        if data is None:
            self._send(404, {}, b"not found", body)
            return
        head = {"ETag": f'"{len(data)}"', "Accept-Ranges": "bytes"}
        ranges = self._ranges(len(data))
        if ranges is None:
            self._send(200, {**head, "Content-Type": "image/tiff"}, data, body)
        elif len(ranges) == 1:
            a, b = ranges[0]
            head["Content-Range"] = f"bytes {a}-{b}/{len(data)}"
            self._send(206, {**head, "Content-Type": "image/tiff"}, data[a : b + 1], body)
        else:
            parts = []
            for a, b in ranges:
                parts.append(
                    f"--SEP\r\nContent-Type: image/tiff\r\nContent-Range: bytes {a}-{b}/"
                    f"{len(data)}\r\n\r\n".encode()
                    + data[a : b + 1]
                    + b"\r\n"
                )
            payload = b"".join(parts) + b"--SEP--\r\n"
            head["Content-Type"] = "multipart/byteranges; boundary=SEP"
            self._send(206, head, payload, body)

    def _ranges(self, size: int) -> list[tuple[int, int]] | None:
        spec = self.headers.get("Range", "")
        if not spec.startswith("bytes="):
            return None
        out = []
        for part in spec[len("bytes=") :].split(","):
            first, _, last = part.strip().partition("-")
            a = int(first) if first else size - int(last)
            b = min(int(last), size - 1) if first and last else size - 1
            out.append((a, b))
        return out


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.lock = threading.Lock()
        self.sent: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.fail_next: Counter[str] = Counter()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


def _mosaic_cog(src: Path, dst: Path) -> None:
    """The scene in the middle of a 3 x 3 mirrored mosaic, georeferenced in place, as a COG."""
    with rasterio.open(src) as ds:
        a, crs, transform = ds.read(1), ds.crs, ds.transform
    h, w = a.shape
    row = np.concatenate([a[:, ::-1], a, a[:, ::-1]], axis=1)
    big = np.ascontiguousarray(np.concatenate([row[::-1], row, row[::-1]], axis=0))
    profile = {
        "driver": "COG",
        "dtype": big.dtype,
        "width": big.shape[1],
        "height": big.shape[0],
        "count": 1,
        "crs": crs,
        "transform": transform @ Affine.translation(-w, -h),
        "compress": "DEFLATE",
        "blocksize": 512,
    }
    with rasterio.open(dst, "w", **profile) as out:
        out.write(big, 1)


@pytest.fixture(scope="module")
def cogs(tmp_path_factory: pytest.TempPathFactory, yahtse_dir: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cogs")
    out = {}
    for name in (REF_NAME, SEC_NAME):
        src = yahtse_dir / name.replace("_full", "_yahtse")
        _mosaic_cog(src, folder / name)
        out[name] = folder / name
    return out


@pytest.fixture(scope="module")
def server(cogs: dict[str, Path]):
    files = {name: path.read_bytes() for name, path in cogs.items()}
    files["alias/" + REF_NAME] = files[REF_NAME]
    srv = _CountingServer(files)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _run_cli(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env_code = (
        "import os, sys; os.environ['GLACIERFLOW_CACHE_DIR'] = sys.argv.pop(1); "
        "from glacierflow.cli import main; sys.argv[0] = 'glacierflow'; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", env_code, str(cache), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_window_from_urls_reads_little_and_matches_local_files(
    server: _CountingServer,
    cogs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bbox = [f"{v:.6f}" for v in _bbox_deg()]
    urls = [server.url(REF_NAME), server.url(SEC_NAME)]
    total = sum(len(server.files[n]) for n in (REF_NAME, SEC_NAME))
    before = sum(server.sent.values())
    proc = _run_cli(
        ["track", *urls, "-o", str(tmp_path / "url"), "--bbox", *bbox, *OPTIONS],
        tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr
    read = sum(server.sent.values()) - before
    print(f"first run read {read} of {total} bytes ({read / total:.2%})")
    assert 0 < read < 0.05 * total, f"read {read} of {total} bytes"

    # The same window from the same files on disk.
    box = tuple(float(v) for v in bbox)
    ref, sec = (read_area(cogs[n], box) for n in (REF_NAME, SEC_NAME))
    assert all(abs(n - 2000 / 15) <= 3 for n in ref.shape), ref.shape  # 2 x 2 km at 15 m
    ds_local, _ = track_to_products(
        ref, sec, tmp_path / "local", chip_px=32, search_px=16, step_px=4, workers=1
    )
    with xr.open_dataset(tmp_path / "url" / "velocity.nc") as ds_url:
        ds_url = ds_url.load()
    with xr.open_dataset(tmp_path / "local" / "velocity.nc") as on_disk:
        on_disk = on_disk.load()
    assert set(ds_url.data_vars) == set(on_disk.data_vars)
    for name in on_disk.data_vars:
        np.testing.assert_array_equal(ds_url[name].values, on_disk[name].values, err_msg=name)
    stamp = re.compile(r"^\S+Z: ")  # the time each file was written
    ds_url.attrs["history"] = stamp.sub("", ds_url.attrs["history"])
    on_disk.attrs["history"] = stamp.sub("", on_disk.attrs["history"])
    for written in (ds_url, on_disk):
        written.attrs.pop("date_created")  # when each file was written
    np.testing.assert_equal(ds_url.attrs, on_disk.attrs)
    # The window is on the glacier: fast ice (> 1,000 m/yr) and most nodes valid.
    v = ds_local["v"].values
    assert np.isfinite(v).mean() > 0.5 and np.nanmax(v) > 1000

    # Read again (in this process, which has not read them) with the run's disk cache: the
    # windows come from the cache, only the headers travel again.
    monkeypatch.setenv("GLACIERFLOW_CACHE_DIR", str(tmp_path / "cache"))
    before = sum(server.sent.values())
    again_ref, again_sec = (read_area(url, box) for url in urls)
    again = sum(server.sent.values()) - before
    print(f"rerun read {again} bytes")
    assert again < read / 4, f"rerun read {again} bytes, first run {read}"
    np.testing.assert_array_equal(again_ref.data, ref.data)
    np.testing.assert_array_equal(again_sec.valid, sec.valid)
    assert again_ref.transform == ref.transform and again_ref.acquired == ref.acquired


def test_transient_503_is_retried(server: _CountingServer) -> None:
    name = "alias/" + REF_NAME
    server.fail_next[name] = 1
    head = read_header(server.url(name))
    assert head.shape == (3261, 5094)
    assert head.scene_id == "LC80630182016200LGN00"
    assert isinstance(head.path, SceneURL) and head.path == server.url(name)
    assert server.requests[name] >= 2 and server.fail_next[name] == 0


def test_unreachable_url_is_one_line_network_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/{REF_NAME}"
    with pytest.raises(NetworkError, match="network failure"):
        read_header(url)
    result = CliRunner().invoke(cli, ["track", url, url, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "network failure" in lines[0], result.stderr


def test_missing_file_on_server_is_network_error(server: _CountingServer) -> None:
    url = server.url("nothing_B8.TIF")
    with pytest.raises(NetworkError, match=re.escape(url) + ".*HTTP 404"):
        read_header(url)
    server.files["text_B8.TIF"] = b"no TIFF here\n" * 100
    with pytest.raises(InputError, match="not a raster") as caught:
        read_header(server.url("text_B8.TIF"))
    assert not isinstance(caught.value, NetworkError)


def test_stac_item_resolves_to_its_asset(server: _CountingServer, tmp_path: Path) -> None:
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "LC08_L1TP_063018_20160718_20200906_02_T1",
        "properties": {
            "datetime": "2016-07-18T20:37:06.339Z",
            "platform": "landsat-8",
            "instruments": ["oli", "tirs"],
        },
        "assets": {
            "red": {"href": server.url("missing_B4.TIF")},
            "pan": {"href": server.url(REF_NAME)},
        },
        "geometry": None,
        "links": [],
    }
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    head = read_header(path)
    assert head.path == server.url(REF_NAME)
    assert head.acquired.isoformat() == "2016-07-18T20:37:06.339000+00:00"
    assert (head.sensor, head.time_source) == ("Landsat 8 OLI", "STAC")
    assert head.scene_id == item["id"]
    with pytest.raises(InputError, match="has no asset B08"):
        read_header(f"{path}#B08")
    # The item at a URL, its asset's href relative to it.
    item["assets"]["pan"]["href"] = f"../{REF_NAME}"
    server.files["items/item.json"] = json.dumps(item).encode()
    head = read_header(server.url("items/item.json"))
    assert head.path == server.url(REF_NAME) and head.time_source == "STAC"


def test_locations_map_to_gdal_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_NO_SIGN_REQUEST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert remote.gdal_options("s3://usgs-landsat/x_B8.TIF")["AWS_NO_SIGN_REQUEST"] == "YES"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    assert "AWS_NO_SIGN_REQUEST" not in remote.gdal_options("s3://usgs-landsat/x_B8.TIF")
    assert "AWS_NO_SIGN_REQUEST" not in remote.gdal_options("https://h/x_B8.TIF")
    assert remote.gdal_path("https://h/a/LC08_B8.TIF") == "/vsicurl/https://h/a/LC08_B8.TIF"
    assert remote.gdal_path("s3://usgs-landsat/c2/x_B8.TIF") == "/vsis3/usgs-landsat/c2/x_B8.TIF"
    assert remote.gdal_path("/vsis3/b/k.tif") == "/vsis3/b/k.tif"
    assert remote.gdal_path("/data/x.tif") == "/data/x.tif"
    url = remote.location("https://h/a/LC08_B8.TIF?sig=1")
    assert (url.name, url.stem, url.suffix) == ("LC08_B8.TIF", "LC08_B8", ".TIF")
    assert remote.location("/vsis3/b/k.tif") == "s3://b/k.tif"
    assert remote.is_stac("https://h/items/x.json#pan") and not remote.is_stac("a.tif")


def test_project_reads_its_grid_from_urls(server: _CountingServer, tmp_path: Path) -> None:
    from glacierflow.project import run_project

    w, s, e, n = BOX_UTM
    (tmp_path / "project.toml").write_text(
        f"""name = "Yahtse from URLs"
output = "out"

[scenes]
paths = ["{server.url(REF_NAME)}", "{server.url(SEC_NAME)}"]

[pairs]
min_days = 1
max_days = 30

[grid]
crs = "EPSG:32607"
resolution_m = 60
bounds = [{w}, {s}, {e}, {n}]

[matching]
chip_px = 32
search_px = 16
step_px = 4
workers = 1
"""
    )
    total = sum(len(server.files[name]) for name in (REF_NAME, SEC_NAME))
    before = sum(server.sent.values())
    result = run_project(tmp_path / "project.toml", report=False, progress=False)
    read = sum(server.sent.values()) - before
    assert len(result.processed) == 1
    assert 0 < read < 0.05 * total, f"read {read} of {total} bytes"
    with xr.open_dataset(next((tmp_path / "out").rglob("velocity.nc"))) as ds:
        v = ds["v"].values
    assert np.isfinite(v).mean() > 0.5 and np.nanmax(v) > 1000


def _tiled_window(ref: str | Path, sec: str | Path, work: Path) -> xr.Dataset:
    """Tiled matching (windows read per tile from the files) of a 300 x 300 px area."""
    pair = load_pair_tiled(ref, sec)
    r0, c0 = 1087 + 200, 1698 + 700  # in the middle copy: Yahtse's terminus
    a = header_window(pair.ref, r0, c0, 300, 300)
    b = dataclasses.replace(header_window(pair.sec, r0, c0, 300, 300), transform=a.transform)
    area = Pair(ref=a, sec=b, swapped=False, reprojected=False)
    return track_pair(
        area, chip_px=32, search_px=16, step_px=8, tile_nodes=200, work_dir=work, workers=1
    )


def test_tiled_matching_reads_windows_from_urls(
    server: _CountingServer, cogs: dict[str, Path], tmp_path: Path
) -> None:
    total = sum(len(server.files[name]) for name in (REF_NAME, SEC_NAME))
    before = sum(server.sent.values())
    from_urls = _tiled_window(server.url(REF_NAME), server.url(SEC_NAME), tmp_path / "u")
    read = sum(server.sent.values()) - before
    assert 0 < read < 0.05 * total, f"read {read} of {total} bytes"
    from_files = _tiled_window(cogs[REF_NAME], cogs[SEC_NAME], tmp_path / "f")
    for name in from_files.data_vars:
        np.testing.assert_array_equal(from_urls[name].values, from_files[name].values, name)
    assert np.isfinite(from_files["v"].values).mean() > 0.5
