"""The JSON API, tiles and downloads of ``glacierflow serve``, as a real process on loopback."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import portal_testing as pt
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds

PAIR_ITEM = "pair_20160718_20160803"


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pt.products(tmp_path_factory)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pt.catalog(tmp_path_factory)


@pytest.fixture(scope="module")
def server(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pt.PortalServer]:
    srv = pt.PortalServer(catalog, tmp_path_factory.mktemp("api-server") / "server.log")
    yield srv
    srv.stop()


def _ids(server: pt.PortalServer, query: str) -> list[str]:
    status, body = server.get_json("/api/datasets?" + query)
    assert status == 200, body
    return sorted(d["id"] for d in body["datasets"])


def test_search_by_bbox_and_time_finds_and_misses(server: pt.PortalServer) -> None:
    both = sorted([pt.ANNUAL_ID, pt.PAIR_ID])
    assert _ids(server, "") == both
    assert _ids(server, "bbox=-141.5,60.1,-141.3,60.2") == both
    assert _ids(server, "bbox=-141.5,60.1,-141.3,60.2&datetime=2016-07-20/2016-07-25") == both
    assert _ids(server, "bbox=-141.5,60.1,-141.3,60.2&datetime=2016-08-04/2016-12-01") == [
        pt.ANNUAL_ID
    ]
    assert _ids(server, "datetime=2017") == [pt.ANNUAL_ID]
    assert _ids(server, "datetime=../2015-12-31") == []
    assert _ids(server, "bbox=75.5,35.0,77.5,36.5") == []  # the Karakoram: elsewhere
    assert _ids(server, "bbox=-141.0,60.1,-140.0,60.2") == []  # just east of the grid
    assert _ids(server, "bbox=179,59,-141.5,61") == both  # across the antimeridian
    assert _ids(server, "keyword=Icy%20Bay") == [pt.ANNUAL_ID]
    assert _ids(server, "q=oli+pair") == [pt.PAIR_ID]
    status, body = server.get_json("/api/datasets?limit=1&offset=1")
    assert body["total"] == 2 and len(body["datasets"]) == 1


def test_record_extent_and_dates_equal_the_products(
    server: pt.PortalServer, products: dict[str, Path]
) -> None:
    status, record = server.get_json(f"/api/datasets/{pt.PAIR_ID}")
    assert status == 200
    with rasterio.open(products["pair_cog"]) as src:
        bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        tags, epsg, res = src.tags(), src.crs.to_epsg(), src.res[0]
    assert record["bbox"] == pytest.approx(bounds, abs=1e-9)
    assert record["extent"]["north"] == pytest.approx(bounds[3], abs=1e-9)
    start, end = record["interval"]
    assert dt.datetime.fromisoformat(start) == dt.datetime.fromisoformat(tags["ref_time"])
    assert dt.datetime.fromisoformat(end) == dt.datetime.fromisoformat(tags["sec_time"])
    assert record["time_frame"] == {"start": "2016-07-18", "end": "2016-08-03"}
    assert record["projection"] == [{"code": f"EPSG:{epsg}", "name": "WGS 84 / UTM zone 7N"}]
    assert record["scale"]["grid_spacing_m"] == [res]
    assert record["keywords"]["place"] == ["Yahtse Glacier", "Alaska"]
    assert record["stac"]["type"] == "Collection"
    assert record["items_total"] == record["items_available"] == 1

    status, items = server.get_json(f"/api/datasets/{pt.ANNUAL_ID}/items")
    assert [(i["id"], i["start_date"], i["end_date"]) for i in items["items"]] == [
        ("annual_2016", "2016-01-01", "2016-12-31"),
        ("annual_2017", "2017-01-01", "2017-12-31"),
    ]
    status, item = server.get_json(f"/api/datasets/{pt.PAIR_ID}/items/{PAIR_ITEM}")
    assert status == 200 and item["stac"]["id"] == PAIR_ITEM and item["available"]


def test_download_is_byte_identical_with_type_and_length(
    server: pt.PortalServer, products: dict[str, Path]
) -> None:
    status, item = server.get_json(f"/api/datasets/{pt.PAIR_ID}/items/{PAIR_ITEM}")
    urls = {a["key"]: a["url"] for a in item["assets"]}
    expected_types = {
        "velocity": "image/tiff; application=geotiff; profile=cloud-optimized",
        "netcdf": "application/x-netcdf",
        "quicklook": "image/png",
        "summary": "application/json",
    }
    for key, url in urls.items():
        status, headers, body = server.request("GET", url)
        original = products["pair"] / "yahtse_20160718_20160803" / url.rsplit("/", 1)[1]
        assert status == 200
        assert body == original.read_bytes(), key
        assert int(headers["content-length"]) == len(body)
        assert headers["content-type"].startswith(expected_types[key])
        assert headers["accept-ranges"] == "bytes"
    status, items = server.get_json(f"/api/datasets/{pt.ANNUAL_ID}/items")
    annual = items["items"][0]["assets"][0]
    # the stand-ins are plain tiled GeoTIFFs; publish writes every velocity GeoTIFF as a COG
    cog_type = "image/tiff; application=geotiff; profile=cloud-optimized"
    assert annual["type"] == cog_type
    status, headers, _ = server.request("GET", annual["url"])
    assert headers["content-type"] == cog_type
    status, headers, _ = server.request("HEAD", urls["velocity"])
    assert status == 200 and int(headers["content-length"]) == products["pair_cog"].stat().st_size
    assert "attachment" in headers["content-disposition"]


def test_range_requests_return_the_right_bytes(
    server: pt.PortalServer, products: dict[str, Path]
) -> None:
    data = products["pair_cog"].read_bytes()
    status, item = server.get_json(f"/api/datasets/{pt.PAIR_ID}/items/{PAIR_ITEM}")
    url = next(a["url"] for a in item["assets"] if a["key"] == "velocity")
    for spec, (lo, hi) in {
        "bytes=0-15": (0, 16),
        "bytes=1000-1999": (1000, 2000),
        f"bytes=-{100}": (len(data) - 100, len(data)),
        f"bytes={len(data) - 10}-": (len(data) - 10, len(data)),
        f"bytes=5-{len(data) + 50}": (5, len(data)),
    }.items():
        status, headers, body = server.request("GET", url, {"Range": spec})
        assert status == 206, spec
        assert body == data[lo:hi], spec
        assert headers["content-range"] == f"bytes {lo}-{hi - 1}/{len(data)}"
        assert int(headers["content-length"]) == hi - lo
    status, headers, body = server.request("GET", url, {"Range": "bytes=0-3,10-13"})
    assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
    assert data[0:4] in body and data[10:14] in body
    status, headers, body = server.request("GET", url, {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
    assert json.loads(body)["status"] == 416


def test_point_query_returns_the_time_series_of_the_pixel(
    server: pt.PortalServer, products: dict[str, Path]
) -> None:
    lon, lat, row, col = pt.valid_lonlat(products["pair_cog"])
    with rasterio.open(products["pair_cog"]) as src:
        names = list(src.descriptions)
        pixel = {
            n: float(src.read(names.index(n) + 1)[row, col])
            for n in ("v", "vx", "vy", "v_error", "vx_error", "vy_error")
            if n in names
        }
    status, body = server.get_json(f"/api/datasets/{pt.ANNUAL_ID}/point?lon={lon}&lat={lat}")
    assert status == 200 and body["units"] == "m/yr"
    series = body["series"]
    assert [s["item_id"] for s in series] == ["annual_2016", "annual_2017"]  # by mid-date
    assert series[0]["v"] == pytest.approx(pixel["v"], rel=1e-6)
    assert series[0]["vx"] == pytest.approx(pixel["vx"], rel=1e-6)
    assert series[1]["vy"] == pytest.approx(pt.ANNUAL_2017_SCALE * pixel["vy"], rel=1e-6)
    assert series[1]["v_error"] == pytest.approx(pt.ANNUAL_V_ERROR_M_PER_YR)
    status, body = server.get_json(f"/api/datasets/{pt.PAIR_ID}/point?lon={lon}&lat={lat}")
    assert [s["item_id"] for s in body["series"]] == [PAIR_ITEM]
    assert body["series"][0]["v"] == pytest.approx(pixel["v"], rel=1e-6)
    # v_error where the pair product has that band (newer products), null where it has not
    assert body["series"][0]["v_error"] == pytest.approx(pixel.get("v_error"), rel=1e-6)
    for name in ("vx_error", "vy_error"):  # the components' own errors, likewise
        assert body["series"][0][name] == pytest.approx(pixel.get(name), rel=1e-6)
    status, headers, csv = server.request(
        "GET", f"/api/datasets/{pt.ANNUAL_ID}/point?lon={lon}&lat={lat}&format=csv"
    )
    lines = csv.decode().splitlines()
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert lines[0] == "item_id,start,end,mid,v,vx,vy,v_error,vx_error,vy_error"
    assert len(lines) == 3
    status, body = server.get_json(f"/api/datasets/{pt.PAIR_ID}/point?lon=76.5&lat=35.8")
    assert status == 200 and body["series"] == []  # the Karakoram is outside every grid


def _png(body: bytes) -> np.ndarray:
    """The bands of a PNG (alpha last)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(body) as mem, mem.open() as src:
            return src.read()


def test_tiles_draw_speed_on_the_fixed_scale_and_are_empty_outside(
    server: pt.PortalServer, products: dict[str, Path]
) -> None:
    import morecantile

    lon, lat, _, _ = pt.valid_lonlat(products["pair_cog"])
    tile = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 11)
    base = f"/api/datasets/{pt.ANNUAL_ID}/items"
    images = {}
    for item in ("annual_2016", "annual_2017"):
        status, headers, body = server.request(
            "GET", f"{base}/{item}/tiles/11/{tile.x}/{tile.y}.png"
        )
        assert status == 200 and headers["content-type"] == "image/png"
        images[item] = _png(body)
    rgba = images["annual_2016"]
    assert rgba.shape == (4, 256, 256)
    assert (rgba[3] == 255).mean() > 0.2 and (rgba[3] == 0).any()  # data, and transparent gaps
    assert np.abs(images["annual_2016"][:3].astype(int) - images["annual_2017"][:3]).mean() > 5
    status, _, body = server.request("GET", f"{base}/annual_2016/tiles/11/0/0.png")
    assert status == 200 and (_png(body)[-1] == 0).all()  # far away: fully transparent (alpha)
    status, legend = server.get_json(f"/api/datasets/{pt.ANNUAL_ID}/legend")
    assert legend["colormap"] == "viridis" and legend["vmax"] == pt.SPEED_MAX_M_PER_YR
    assert legend["stops"][0]["color"] == "#440154" and legend["stops"][-1]["color"] == "#fde724"
    status, headers, body = server.request("GET", "/api/legend.png")
    assert status == 200 and _png(body).shape[1:] == (16, 256)


def test_pages_and_openapi_are_served(server: pt.PortalServer) -> None:
    status, spec = server.get_json("/openapi.json")
    assert status == 200 and spec["info"]["title"] == "glacierflow data portal"
    assert {
        "/api/datasets",
        "/api/datasets/{dataset_id}",
        "/api/datasets/{dataset_id}/items",
        "/api/datasets/{dataset_id}/point",
        "/api/datasets/{dataset_id}/items/{item_id}/tiles/{z}/{x}/{y}.png",
        "/files/{path}",
    } <= set(spec["paths"])
    for path, needle in {
        "/": "Glacier velocity datasets",
        "/?keyword=Icy+Bay": "Annual velocity of Yahtse Glacier",
        f"/datasets/{pt.PAIR_ID}": "How to cite",
        "/api": "/api/datasets/{dataset_id}/point",
    }.items():
        status, headers, body = server.request("GET", path)
        assert status == 200 and headers["content-type"].startswith("text/html"), path
        assert needle in body.decode(), path
        assert "default-src 'self'" in headers["content-security-policy"]
    status, headers, body = server.request("GET", "/?west=1&south=2")
    assert status == 400 and "give all four" in body.decode()
    status, _, body = server.request("GET", "/files/" + quote("catalog.json"))
    assert status == 200 and json.loads(body)["type"] == "Catalog"
    status, _, body = server.request("GET", "/static/vendor/leaflet/leaflet.js")
    assert status == 200 and b"Leaflet" in body[:500]
