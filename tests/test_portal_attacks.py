"""Hostile and broken input: the server refuses with 4xx, serves nothing outside the catalog,
shows broken items as unavailable, and stays up.

The server runs on a private copy of the catalog that also holds symbolic links pointing out
of it; the last tests here break files of that copy on purpose.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import portal_testing as pt
import pytest

from glacierflow.portal.catalog import publish

SECRET = b"glacierflow-test-secret-7f3a9c"
XSS_ID = "hostile-metadata"
XSS_TOML = f"""
id = "{XSS_ID}"
title = "<script>alert('title')</script> velocity"
description = "</script><img src=x onerror=alert(1)>"
[keywords]
place = ["<svg onload=alert(2)>"]
[[references]]
citation = "<iframe src=javascript:alert(3)>"
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pt.PortalServer, Path]]:
    catalog = pt.copy_catalog(tmp_path_factory, "attacks")
    outside = catalog.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (catalog.parent / "secret.txt").write_bytes(SECRET)
    os.symlink(outside / "secret.txt", catalog / pt.PAIR_ID / "secret-link.txt")
    os.symlink(outside, catalog / "outside-dir")
    (catalog / ".hidden.txt").write_bytes(SECRET)
    meta = catalog.parent / "xss.toml"
    meta.write_text(XSS_TOML, encoding="utf-8")
    publish(pt.products(tmp_path_factory)["pair"], meta, catalog)
    server = pt.PortalServer(catalog, catalog.parent / "server.log")
    yield server, catalog
    server.stop()


@pytest.fixture(scope="module")
def server(setup: tuple[pt.PortalServer, Path]) -> pt.PortalServer:
    return setup[0]


TRAVERSALS = [
    "/files/../secret.txt",
    "/files/../../../../../../etc/passwd",
    "/files/..%2fsecret.txt",
    "/files/..%2F..%2F..%2Fetc%2Fpasswd",
    "/files/%2e%2e/secret.txt",
    "/files/%2E%2E%2Fsecret.txt",
    "/files/%252e%252e/secret.txt",
    "/files/%252e%252e%252fsecret.txt",
    "/files/.%2e/secret.txt",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    f"/files/{pt.PAIR_ID}/..%5c..%5csecret.txt",
    f"/files/{pt.PAIR_ID}/..\\..\\secret.txt",
    f"/files/{pt.PAIR_ID}/secret-link.txt",
    "/files/outside-dir/secret.txt",
    "/files/.hidden.txt",
    "/files/catalog.json%00.png",
    "/files/",
    "/static/../../portal/app.py",
    "/static/%2e%2e/%2e%2e/secret.txt",
    "/static/..%2f..%2fapp.py",
    "/../secret.txt",
    "/datasets/..%2f..%2fsecret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_refused_and_nothing_outside_is_served(
    server: pt.PortalServer, path: str
) -> None:
    status, headers, body = server.request("GET", path)
    assert 400 <= status < 500, (path, status)
    assert SECRET not in body and b"root:" not in body and b"def create_app" not in body
    if path.startswith(("/files/", "/static/")):
        assert json.loads(body)["status"] == status


BAD_PARAMETERS = {
    "/api/datasets?bbox=1,2,3": 400,
    "/api/datasets?bbox=a,b,c,d": 400,
    "/api/datasets?bbox=nan,0,1,1": 400,
    "/api/datasets?bbox=0,1e999,1,1": 400,
    "/api/datasets?bbox=0,10,1,5": 400,
    "/api/datasets?bbox=-200,0,1,1": 400,
    "/api/datasets?bbox=" + "1," * 3000: 422,
    "/api/datasets?datetime=yesterday": 400,
    "/api/datasets?datetime=2017/2016": 400,
    "/api/datasets?datetime=2016/2017/2018": 400,
    "/api/datasets?datetime=" + "9" * 5000: 422,
    "/api/datasets?q=" + "x" * 60_000: 422,
    "/api/datasets?keyword=" + "k" * 1000: 422,
    "/api/datasets?limit=-1": 422,
    "/api/datasets?limit=100000": 422,
    "/api/datasets?limit=abc": 422,
    "/api/datasets?offset=" + "9" * 400: 422,
    f"/api/datasets/{pt.PAIR_ID}/point?lon=1": 422,
    f"/api/datasets/{pt.PAIR_ID}/point?lon=nan&lat=60": 400,
    f"/api/datasets/{pt.PAIR_ID}/point?lon=inf&lat=60": 400,
    f"/api/datasets/{pt.PAIR_ID}/point?lon=-141&lat=91": 400,
    f"/api/datasets/{pt.PAIR_ID}/point?lon=1e400&lat=0": 400,
    f"/api/datasets/{pt.PAIR_ID}/point?lon=x&lat=0": 422,
    f"/api/datasets/{pt.PAIR_ID}/point?lon=0&lat=0&format=xml": 422,
    f"/api/datasets/{pt.ANNUAL_ID}/items/annual_2016/tiles/25/0/0.png": 422,
    f"/api/datasets/{pt.ANNUAL_ID}/items/annual_2016/tiles/3/8/0.png": 400,
    f"/api/datasets/{pt.ANNUAL_ID}/items/annual_2016/tiles/3/0/{'9' * 50}.png": 400,
    f"/api/datasets/{pt.ANNUAL_ID}/items/annual_2016/tiles/-1/0/0.png": 422,
    f"/api/datasets/{pt.ANNUAL_ID}/legend?stops=100000": 422,
    "/?page=0": 422,
    "/?west=1": 400,
}


@pytest.mark.parametrize(("path", "expected"), BAD_PARAMETERS.items(), ids=lambda p: str(p)[:60])
def test_bad_parameters_get_json_4xx(server: pt.PortalServer, path: str, expected: int) -> None:
    status, headers, body = server.request("GET", path)
    assert status == expected, (path[:80], status, body[:300])
    if path.startswith("/api/"):
        error = json.loads(body)
        assert error["status"] == expected and error["detail"]
        assert len(body) < 4000  # the error does not echo a huge input back


UNKNOWN = [
    "/api/datasets/no-such-dataset",
    "/api/datasets/no-such-dataset/items",
    "/api/datasets/no-such-dataset/point?lon=0&lat=0",
    "/api/datasets/no-such-dataset/legend",
    f"/api/datasets/{pt.PAIR_ID}/items/no-such-item",
    f"/api/datasets/{pt.PAIR_ID}/items/no-such-item/tiles/1/0/0.png",
    "/api/datasets/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "/api/datasets/" + "a" * 5000,
    "/api/no-such-endpoint",
    "/files/no-such-file.tif",
    "/datasets/no-such-dataset",
    "/datasets/%3Cscript%3E",
    "/no-such-page",
]


@pytest.mark.parametrize("path", UNKNOWN, ids=lambda p: p[:60])
def test_unknown_ids_get_4xx(server: pt.PortalServer, path: str) -> None:
    status, headers, body = server.request("GET", path)
    assert status in (404, 422), (path, status)
    assert b"<script>alert" not in body  # never reflected unescaped
    if path.startswith(("/api/", "/files/")):
        assert headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_server_is_read_only(setup: tuple[pt.PortalServer, Path], method: str) -> None:
    server, catalog = setup
    before = sorted(p.relative_to(catalog) for p in catalog.rglob("*"))
    for path in ("/api/datasets", f"/api/datasets/{pt.PAIR_ID}", "/files/catalog.json", "/"):
        status, _, _ = server.request(method, path, {"Content-Length": "0"})
        assert status == 405, (method, path)
    assert sorted(p.relative_to(catalog) for p in catalog.rglob("*")) == before


def test_malformed_ranges_get_4xx(server: pt.PortalServer) -> None:
    for spec, expected in {
        "bytes=abc": 400,
        "bytes=5-2": 400,
        "bytes=-": 400,
        "items=0-5": 400,
        "bytes=" + ",".join(["0-1"] * 100): 400,
        "bytes=99999999999-": 416,
    }.items():
        status, headers, body = server.request("GET", "/files/catalog.json", {"Range": spec})
        assert status == expected, spec
        assert json.loads(body)["status"] == expected


def test_oversized_requests_are_refused_and_the_server_stays_up(server: pt.PortalServer) -> None:
    for path, headers in (
        ("/api/datasets?q=" + "x" * 1_000_000, {}),
        ("/api/health", {"X-Padding": "y" * 200_000}),
    ):
        try:
            status, _, _ = server.request("GET", path, headers, timeout=10)
        except (ConnectionError, http.client.HTTPException):
            status = None  # the server closed the connection: refused as well
        assert status is None or 400 <= status < 500
    assert server.alive()


def test_a_burst_of_bad_requests_leaves_the_server_up(server: pt.PortalServer) -> None:
    paths = (TRAVERSALS + list(BAD_PARAMETERS) + UNKNOWN) * 2
    deadline = time.monotonic() + 30

    def hit(path: str) -> int:
        if time.monotonic() > deadline:
            return 0
        return server.request("GET", path, timeout=10)[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(hit, paths))
    assert all(s == 0 or 400 <= s < 500 for s in statuses)
    assert server.alive()


def test_hostile_metadata_is_escaped_in_pages(server: pt.PortalServer) -> None:
    for path in ("/", f"/datasets/{XSS_ID}", "/?q=%3Cscript%3Ealert(9)%3C/script%3E"):
        status, headers, body = server.request("GET", path)
        html = body.decode()
        assert status == 200, path
        for raw in ("<script>alert", "<img src=x", "<svg onload", "<iframe", "<script>alert(9)"):
            assert raw not in html, (path, raw)
    assert "&lt;script&gt;alert(" in html  # shown, as text
    status, headers, body = server.request("GET", f"/datasets/{XSS_ID}")
    config = body.decode().split('id="map-config">', 1)[1].split("</script>", 1)[0]
    assert "<" not in config  # the embedded JSON cannot close its script element


# ---------------------------------------------------------------- broken assets (run last)


def _wait_for_reindex(server: pt.PortalServer, before: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, health = server.get_json("/api/health")
        if health["indexed_at"] != before:
            return
        time.sleep(0.2)
    raise AssertionError("the server did not re-index the changed catalog")


def test_broken_and_missing_assets_make_items_unavailable(
    setup: tuple[pt.PortalServer, Path],
) -> None:
    server, catalog = setup
    _, health = server.get_json("/api/health")
    (tif,) = (catalog / pt.ANNUAL_ID).glob("annual_2017/v_2017.tif")
    tif.write_bytes(tif.read_bytes()[:2048])  # truncated
    (catalog / pt.PAIR_ID / "pair_20160718_20160803" / "velocity.nc").unlink()  # missing sidecar
    _wait_for_reindex(server, health["indexed_at"])

    status, body = server.get_json(f"/api/datasets/{pt.ANNUAL_ID}/items")
    items = {i["id"]: i for i in body["items"]}
    assert items["annual_2016"]["available"] and items["annual_2016"]["tiles"]
    assert not items["annual_2017"]["available"] and items["annual_2017"]["tiles"] is None
    assert "size differs" in items["annual_2017"]["problem"]

    status, headers, page = server.request("GET", f"/datasets/{pt.ANNUAL_ID}")
    html = page.decode()
    assert status == 200 and "unavailable" in html and "(unavailable)" in html
    assert 'data-item="annual_2017" data-available="false"' in html

    status, body = server.get_json(
        f"/api/datasets/{pt.ANNUAL_ID}/items/annual_2017/tiles/11/300/600.png"
    )
    assert status == 404 and "unavailable" in body["detail"]
    lon, lat = -141.4, 60.2
    status, body = server.get_json(f"/api/datasets/{pt.ANNUAL_ID}/point?lon={lon}&lat={lat}")
    assert status == 200 and body["unavailable_items"] == ["annual_2017"]
    assert [s["item_id"] for s in body["series"]] == ["annual_2016"]

    # A missing sidecar leaves the pair available, with that file marked missing.
    status, item = server.get_json(f"/api/datasets/{pt.PAIR_ID}/items/pair_20160718_20160803")
    netcdf = next(a for a in item["assets"] if a["key"] == "netcdf")
    assert item["available"] and not netcdf["available"] and netcdf["url"] is None
    assert server.alive()


def test_a_corrupt_record_is_reported_and_the_rest_still_served(
    setup: tuple[pt.PortalServer, Path],
) -> None:
    server, catalog = setup
    _, health = server.get_json("/api/health")
    (catalog / pt.PAIR_ID / "collection.json").write_text("{ not json", encoding="utf-8")
    (item_json,) = (catalog / pt.ANNUAL_ID).glob("annual_2016/annual_2016.json")
    item_json.unlink()
    _wait_for_reindex(server, health["indexed_at"])

    status, health = server.get_json("/api/health")
    assert any("unreadable STAC document" in p for p in health["problems"])
    status, body = server.get_json("/api/datasets")
    assert sorted(d["id"] for d in body["datasets"]) == [XSS_ID, pt.ANNUAL_ID]
    status, _ = server.get_json(f"/api/datasets/{pt.PAIR_ID}")
    assert status == 404
    status, body = server.get_json(f"/api/datasets/{pt.ANNUAL_ID}/items")
    assert [(i["id"], i["available"]) for i in body["items"]] == [
        ("annual_2017", False),
        ("annual_2016", False),
    ]
    for path in ("/", f"/datasets/{pt.ANNUAL_ID}"):
        status, _, page = server.request("GET", path)
        assert status == 200, path
    assert server.alive()
