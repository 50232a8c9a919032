"""Helpers for the portal tests: real products, a published catalog, a real server process.

The products are made once per test session (cached on pytest's base temporary folder) from the
bundled Landsat 8 pair of Yahtse Glacier with :func:`glacierflow.demo.run_demo`. Two datasets
are published into one catalog:

``yahtse-pair``
    the pair product itself (``velocity.tif`` and its sidecars), 2016-07-18 to 2016-08-03;
``yahtse-annual``
    two annual products ``v_2016.tif`` and ``v_2017.tif`` in the layout of the stack module's
    annual composites (bands vx, vy, v, v_error, count). They are stand-ins made from the real
    pair: 2016 is the pair's field, 2017 the same field scaled by :data:`ANNUAL_2017_SCALE`, so
    that the two years look different on the map.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

PAIR_ID = "yahtse-pair"
ANNUAL_ID = "yahtse-annual"
ANNUAL_2017_SCALE = 0.5
ANNUAL_V_ERROR_M_PER_YR = 12.5
SPEED_MAX_M_PER_YR = 3000

PAIR_TOML = f"""
id = "{PAIR_ID}"
title = "Surface velocity of Yahtse Glacier, Alaska, 18 July to 3 August 2016"
description = "Feature-tracking velocity of Yahtse Glacier from one Landsat 8 OLI pair."
license = "CC-BY-4.0"
creators = ["Glacierflow Test Suite"]
publisher = "glacierflow tests"
[keywords]
theme = ["glacier velocity"]
discipline = ["glaciology"]
place = ["Yahtse Glacier", "Alaska"]
time = ["2016"]
[[references]]
citation = "Landsat 8 OLI images courtesy of the U.S. Geological Survey."
[[providers]]
name = "glacierflow tests"
roles = ["producer", "host"]
[display]
speed_max_m_per_yr = {SPEED_MAX_M_PER_YR}
"""

ANNUAL_TOML = f"""
id = "{ANNUAL_ID}"
title = "Annual velocity of Yahtse Glacier (test stand-ins), 2016-2017"
description = "Annual composites in the stack layout, made from the Yahtse pair for testing."
license = "CC-BY-4.0"
creators = ["Glacierflow Test Suite"]
[keywords]
theme = ["glacier velocity", "ice flow"]
place = ["Yahtse Glacier", "Alaska", "Icy Bay"]
time = ["2016", "2017"]
[[references]]
citation = "Sun, Y. et al. Remote Sensing 2017, 9(10), 1064."
doi = "10.3390/rs9101064"
[[providers]]
name = "glacierflow tests"
roles = ["producer"]
[[projects]]
name = "TO BE FILLED: supporting project"
[display]
speed_max_m_per_yr = {SPEED_MAX_M_PER_YR}
"""


@functools.cache
def _products(base: Path) -> dict[str, Path]:
    from glacierflow.demo import run_demo

    pair_dir = base / "products" / "pair" / "yahtse_20160718_20160803"
    run_demo(pair_dir)
    annual_dir = base / "products" / "annual"
    annual_dir.mkdir(parents=True)
    cog = pair_dir / "velocity.tif"
    for year, scale in ((2016, 1.0), (2017, ANNUAL_2017_SCALE)):
        write_annual_standin(cog, annual_dir / f"v_{year}.tif", year, scale)
    return {"pair": pair_dir.parent, "pair_cog": cog, "annual": annual_dir}


def write_annual_standin(pair_cog: Path, out: Path, year: int, scale: float) -> None:
    """An annual product (bands vx, vy, v, v_error, count) made from a pair product's COG."""
    with rasterio.open(pair_cog) as src:
        names = list(src.descriptions)
        bands = {n: src.read(names.index(n) + 1) * scale for n in ("vx", "vy", "v")}
        profile = src.profile
    valid = np.isfinite(bands["v"])
    bands["v_error"] = np.where(valid, ANNUAL_V_ERROR_M_PER_YR, np.nan).astype(np.float32)
    bands["count"] = np.where(valid, 1.0, np.nan).astype(np.float32)
    profile.update(count=5, driver="GTiff", tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(out, "w", **profile) as dst:
        for i, (name, data) in enumerate(bands.items(), start=1):
            dst.write(data.astype(np.float32), i)
            dst.set_band_description(i, name)
            dst.update_tags(i, units="1" if name == "count" else "m/yr")
        dst.update_tags(year=str(year), glacierflow_version="test")


def products(tmp_path_factory: Any) -> dict[str, Path]:
    """Paths of the session's real products: ``pair`` (folder), ``pair_cog``, ``annual``."""
    return _products(Path(tmp_path_factory.getbasetemp()))


@functools.cache
def _catalog(base: Path) -> Path:
    from glacierflow.portal.catalog import publish

    made = _products(base)
    catalog = base / "catalog"
    for name, toml, folder in (
        ("pair", PAIR_TOML, made["pair"]),
        ("annual", ANNUAL_TOML, made["annual"]),
    ):
        meta = base / f"{name}_dataset.toml"
        meta.write_text(toml, encoding="utf-8")
        publish(folder, meta, catalog)
    return catalog


def catalog(tmp_path_factory: Any) -> Path:
    """The session's catalog with the datasets ``yahtse-pair`` and ``yahtse-annual``."""
    return _catalog(Path(tmp_path_factory.getbasetemp()))


def copy_catalog(tmp_path_factory: Any, name: str) -> Path:
    """A private copy of the session's catalog, for tests that change it."""
    target = Path(tmp_path_factory.mktemp(name)) / "catalog"
    shutil.copytree(catalog(tmp_path_factory), target)
    return target


def free_port() -> int:
    """A TCP port on the loopback interface that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortalServer:
    """``glacierflow serve`` as a real subprocess on 127.0.0.1, stopped by :meth:`stop`.

    With ``options`` (e.g. ``{"tile_timeout_s": 3}``) the server runs as
    ``python -m glacierflow.portal.server`` with those options instead (as ``glacierflow
    serve`` with ``cli=True``). The tile cache is kept in a ``cache`` folder beside the log.
    """

    def __init__(
        self,
        catalog_dir: Path,
        log_path: Path,
        options: dict[str, Any] | None = None,
        *,
        cli: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cache_dir = log_path.parent / f"{log_path.stem}-cache"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        module = options and not cli
        entry = ["glacierflow.portal.server"] if module else ["glacierflow.cli", "serve"]
        command = [sys.executable, "-m", *entry, "--catalog", str(catalog_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        for key, value in (options or {}).items():
            command += ["--" + key.replace("_", "-"), str(value)]
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": str(self.cache_dir)},
        )
        self._wait_until_up(timeout_s=60.0)

    def _wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                status, _, _ = self.request("GET", "/api/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer in {timeout_s} s: {self.log_path.read_text()}")

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, timeout: float = 30
    ) -> tuple[int, dict[str, str], bytes]:
        """Send ``path`` exactly as given (no normalisation); (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            conn.close()

    def get_json(self, path: str) -> tuple[int, Any]:
        """GET ``path``; (status, decoded JSON body)."""
        status, headers, body = self.request("GET", path)
        assert headers.get("content-type", "").startswith("application/json"), (path, headers)
        return status, json.loads(body)

    def alive(self) -> bool:
        """Whether the process runs and answers its health check."""
        return self.process.poll() is None and self.request("GET", "/api/health")[0] == 200

    def stop(self) -> None:
        """Stop the process (terminate, then kill) and close its log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def valid_lonlat(cog: Path, min_speed_m_per_yr: float = 300.0) -> tuple[float, float, int, int]:
    """Longitude/latitude of the centre of a fast, valid pixel of a velocity COG (and row, col).

    The pixel is chosen well inside a block of valid pixels, so a click a few screen pixels off
    still lands on valid data.
    """
    from pyproj import Transformer
    from scipy.ndimage import minimum_filter

    with rasterio.open(cog) as src:
        v = src.read(list(src.descriptions).index("v") + 1)
        fast = np.isfinite(v) & (v > min_speed_m_per_yr)
        core = minimum_filter(fast.astype(np.uint8), size=7) > 0
        rows, cols = np.nonzero(core)
        assert rows.size, "no block of fast valid pixels in the test product"
        k = rows.size // 2
        row, col = int(rows[k]), int(cols[k])
        x, y = src.xy(row, col)
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return float(lon), float(lat), row, col
