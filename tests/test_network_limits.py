"""Servers that hang or fail: every network request has a bounded time, and GDAL's retry
chatter stays out of the terminal unless ``-v`` is given.

Real local servers: a socket that accepts connections and never answers (the reviewer's
``track http://127.0.0.1:PORT/A.tif`` ran 5 min 34 s, ``search --url`` never returned), and an
HTTP server that answers 503 to everything. The time-outs are shortened through the
environment variables users have for it, so each case runs in seconds.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from glacierflow.demo import demo_inputs
from glacierflow.errors import InputError
from glacierflow.remote import NETWORK_ENV, network_limits

#: Short limits for the tests: 1 s to connect, 1 s without a byte, 1 retry.
SHORT = {NETWORK_ENV["connect_s"]: "1", NETWORK_ENV["read_s"]: "1", NETWORK_ENV["retries"]: "1"}
DATES = ["--ref-date", "2016-07-18", "--sec-date", "2016-08-03"]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT``: accepts every connection, reads nothing, answers nothing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def failing_server() -> Iterator[tuple[str, list[str]]]:
    """``http://127.0.0.1:PORT`` answering 503 to every request, and the request lines."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _fail(self) -> None:
            seen.append(self.requestline)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _fail

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def _glacierflow(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "glacierflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GLACIERFLOW_CACHE_DIR": "off", **env},
    )
    return done, time.monotonic() - start


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glacierflow: error: "), done.stderr
    return lines[0]


def test_track_from_a_silent_server_stops_after_its_time_outs(silent_server, tmp_path):
    url = f"{silent_server}/A.tif"
    done, took_s = _glacierflow(
        "track", url, str(demo_inputs()[1]), "-o", str(tmp_path / "out"), *DATES, env=SHORT
    )
    line = _one_error_line(done)
    assert url in line and "did not answer within 1 s" in line
    assert took_s < 30, took_s  # 1 s time-outs: seconds, not minutes
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_search_of_a_silent_server_stops_after_its_time_outs(silent_server):
    done, took_s = _glacierflow(
        "search", "--bbox", "-141.5", "60.1", "-141.4", "60.2", "--start", "2016-01-01",
        "--end", "2016-12-31", "--url", silent_server + "/", "-o", os.devnull, env=SHORT,
    )  # fmt: skip
    line = _one_error_line(done)
    assert "did not answer within 1 s" in line and silent_server in line
    assert took_s < 30, took_s


@pytest.mark.parametrize("verbose", [False, True])
def test_gdal_retry_lines_show_only_with_verbose(failing_server, tmp_path, verbose):
    base, seen = failing_server
    url = f"{base}/A.tif"
    env = {**SHORT, NETWORK_ENV["retries"]: "2"}
    args = ["-v"] if verbose else []
    done, _ = _glacierflow(
        *args, "track", url, str(demo_inputs()[1]), "-o", str(tmp_path / "out"), *DATES, env=env
    )
    assert done.returncode == 2, done.stderr
    assert sum(" /A.tif " in line for line in seen) >= 3  # GDAL did retry
    assert "HTTP 503" in done.stderr.strip().splitlines()[-1]
    assert "CPLE_AppDefined" not in done.stderr and "Retrying again" not in done.stderr
    retries = [line for line in done.stderr.splitlines() if "retrying in" in line]
    if verbose:
        assert retries and all(line.startswith(f"glacierflow: {url}: ") for line in retries)
    else:
        assert not retries and len(done.stderr.strip().splitlines()) == 1


def test_the_default_limits_bound_a_failing_request_to_two_minutes(monkeypatch):
    for name in NETWORK_ENV.values():
        monkeypatch.delenv(name, raising=False)
    limits = network_limits()
    assert (limits.connect_s, limits.read_s, limits.retries) == (10.0, 30.0, 2)
    assert (limits.retries + 1) * (limits.connect_s + limits.read_s) <= 120


@pytest.mark.parametrize(
    ("name", "value"), [("read_s", "soon"), ("retries", "-1"), ("connect_s", "0")]
)
def test_a_bad_limit_names_its_variable(monkeypatch, name, value):
    monkeypatch.setenv(NETWORK_ENV[name], value)
    with pytest.raises(InputError, match=rf"^\${NETWORK_ENV[name]} must be .*got '{value}'"):
        network_limits()
