"""Publish checks the record against the data; citations and the provider box on real pages.

The products are the real demo products (``glacierflow demo``: Yahtse Glacier, Alaska,
Landsat 8, 2016-07-18 to 2016-08-03); the wrong record is the Karakoram 1999-2003 example.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import portal_testing as pt
import pytest
import rasterio
from click.testing import CliRunner

from glacierflow.cli import cli
from glacierflow.errors import InputError
from glacierflow.portal.catalog import publish
from glacierflow.portal.coverage import acquisition_span
from glacierflow.portal.discover import read_product_facts
from glacierflow.portal.meta import load_meta

EXAMPLE_TOML = Path(__file__).resolve().parents[1] / "examples/karakoram_1999_2003_dataset.toml"

# The demo pair's acquisition times (Landsat 8 MTL) and its grid's box in degrees.
REF_DAY, SEC_DAY = dt.date(2016, 7, 18), dt.date(2016, 8, 3)

BASE_TOML = """
id = "check"
title = "Yahtse check"
description = "Record used to check publish against the data."
license = "CC-BY-4.0"
creators = ["Glacierflow Test Suite"]
"""


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pt.products(tmp_path_factory)


def _record(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "dataset.toml"
    path.write_text(BASE_TOML + extra, encoding="utf-8")
    return path


def _collection(catalog: Path, dataset_id: str = "check") -> dict:
    return json.loads((catalog / dataset_id / "collection.json").read_text("utf-8"))


def test_the_karakoram_record_over_the_alaska_demo_stops_with_both_extents(
    products: dict[str, Path], tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog"
    args = ["publish", str(products["pair"]), "--meta", str(EXAMPLE_TOML), "--catalog"]
    result = CliRunner().invoke(cli, [*args, str(catalog)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output  # one clear line, no traceback
    line = lines[0]
    assert str(EXAMPLE_TOML) in line
    # the record's box and years, and the data's box and acquisition dates, in degrees/dates
    for expected in ("75.5000° E to 77.5000° E", "35.0000° N to 36.5000° N"):
        assert expected in line
    assert "1999-01-01 to 2003-12-31" in line
    assert "141.6" in line and "° W" in line and "60.1" in line and "60.2" in line
    assert f"{REF_DAY} to {SEC_DAY}" in line
    assert "outside its bounding box and outside its time frame" in line
    assert not catalog.exists() or not any(catalog.iterdir())


def test_a_record_that_contains_the_data_is_published_with_both_extents(
    products: dict[str, Path], tmp_path: Path
) -> None:
    extent = "bbox = [-142.0, 59.9, -140.9, 60.5]\nstart = 2016-07-01\nend = 2016-08-31\n"
    meta = _record(tmp_path, "[extent]\n" + extent)
    publish(products["pair"], meta, tmp_path / "catalog")
    extent = _collection(tmp_path / "catalog")["extent"]
    boxes, spans = extent["spatial"]["bbox"], extent["temporal"]["interval"]
    assert boxes[0] == [-142.0, 59.9, -140.9, 60.5]  # the record's, first (STAC: the whole)
    with rasterio.open(products["pair_cog"]) as src:
        from rasterio.warp import transform_bounds

        data_box = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    assert boxes[1] == pytest.approx(list(data_box), abs=1e-9)  # the data's, second
    assert spans[0][0].startswith("2016-07-01T00:00:00") and spans[0][1].startswith("2016-08-31")
    assert spans[1][0].startswith("2016-07-18T20:37") and spans[1][1].startswith("2016-08-03T20:37")


@pytest.mark.parametrize(
    ("extent", "outside", "record_text"),
    [
        # right place, wrong years (calendar year 2016 would hold it; the dates do not)
        ("start = 2016-07-19\nend = 2016-12-31", "outside its time frame", "2016-07-19"),
        ("start = 2016-01-01\nend = 2016-08-02", "outside its time frame", "2016-08-02"),
        # right time, a box that misses the eastern edge of the grid by 0.01 degree
        ("bbox = [-142.0, 59.9, -141.19, 60.5]", "outside its bounding box", "141.1900° W"),
    ],
)
def test_a_record_that_misses_part_of_the_data_names_what(
    products: dict[str, Path], tmp_path: Path, extent: str, outside: str, record_text: str
) -> None:
    meta = _record(tmp_path, "[extent]\n" + extent + "\n")
    with pytest.raises(InputError) as err:
        publish(products["pair"], meta, tmp_path / "catalog")
    message = str(err.value)
    assert message.startswith(str(meta)) and f"({outside})" in message
    assert record_text in message and f"{REF_DAY} to {SEC_DAY}" in message


def test_without_extent_the_record_takes_the_data_box_and_acquisition_dates(
    products: dict[str, Path], tmp_path: Path
) -> None:
    publish(products["pair"], _record(tmp_path), tmp_path / "catalog")
    extent = _collection(tmp_path / "catalog")["extent"]
    assert len(extent["spatial"]["bbox"]) == 1 and len(extent["temporal"]["interval"]) == 1
    start, end = extent["temporal"]["interval"][0]
    assert start.startswith("2016-07-18T20:37:06") and end.startswith("2016-08-03T20:37:09")


def test_annual_composites_count_their_pairs_dates_not_the_calendar_year(
    products: dict[str, Path], tmp_path: Path
) -> None:
    cog = tmp_path / "v_2016.tif"
    pt.write_annual_standin(products["pair_cog"], cog, 2016, 1.0)
    facts = read_product_facts(cog)
    assert acquisition_span(facts)[0].date() == dt.date(2016, 1, 1)  # no pairs tag: the year
    with rasterio.open(cog, "r+") as dst:
        dst.update_tags(pairs=json.dumps([f"{REF_DAY}/{SEC_DAY}", "2016-08-03/2016-09-20"]))
    start, end = acquisition_span(read_product_facts(cog))
    assert (start.date(), end.date()) == (REF_DAY, dt.date(2016, 9, 20))


def test_dataset_toml_extent_and_landing_page_are_checked(tmp_path: Path) -> None:
    cases = {
        "[extent]\nbbox = [1, 2, 3]": "extent.bbox must be [west, south, east, north]",
        "[extent]\nbbox = [0, 50, 1, 40]": "south < north",
        "[extent]\nstart = 2003-01-01\nend = 1999-01-01": "before extent.start",
        '[extent]\nstart = "last year"': "extent.start must be a date",
        "[extent]\nwest = 3": "unknown extent field(s) west",
        'landing_page = "javascript:alert(1)"': "not a web address",
    }
    for extra, message in cases.items():
        path = tmp_path / "dataset.toml"
        body = BASE_TOML + extra if extra.startswith("[") else extra + "\n" + BASE_TOML
        path.write_text(body, encoding="utf-8")
        with pytest.raises(InputError, match=re.escape(message)):
            load_meta(path)
    meta = load_meta(EXAMPLE_TOML)
    assert meta.bbox == (75.5, 35.0, 77.5, 36.5)
    assert (meta.start, meta.end) == (dt.date(1999, 1, 1), dt.date(2003, 12, 31))


# ------------------------------------------------------------------------------ pages


@pytest.fixture(scope="module")
def cite_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three datasets: with a DOI, with a landing page, with neither (publisher set)."""
    made = pt.products(tmp_path_factory)
    base = tmp_path_factory.mktemp("cite")
    catalog = base / "catalog"
    records = {
        "with-doi": 'doi = "10.5281/zenodo.0000001"\n',
        "with-page": 'landing_page = "https://data.example.org/yahtse"\n',
        "bare": 'publisher = "Glacier Data Centre of the Test Suite"\n',
    }
    for dataset_id, extra in records.items():
        meta = base / f"{dataset_id}.toml"
        meta.write_text(extra + BASE_TOML.replace('"check"', f'"{dataset_id}"'), "utf-8")
        publish(made["pair"], meta, catalog)
    return catalog


@pytest.fixture(scope="module")
def servers(
    cite_catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[pt.PortalServer, pt.PortalServer]]:
    logs = tmp_path_factory.mktemp("cite-servers")
    plain = pt.PortalServer(cite_catalog, logs / "plain.log")
    public = pt.PortalServer(
        cite_catalog, logs / "public.log", {"public_url": "https://portal.example.org/"}
    )
    yield plain, public
    plain.stop()
    public.stop()


def _citation(server: pt.PortalServer, dataset_id: str) -> str:
    status, _, body = server.request("GET", f"/datasets/{dataset_id}")
    assert status == 200
    html = body.decode()
    start = html.index('id="citation-text">') + len('id="citation-text">')
    return html[start : html.index("</p>", start)]


def test_citations_never_show_a_loopback_address(
    servers: tuple[pt.PortalServer, pt.PortalServer],
) -> None:
    plain, public = servers
    for server in (plain, public):
        assert _citation(server, "with-doi").endswith("https://doi.org/10.5281/zenodo.0000001")
        page = _citation(server, "with-page")
        assert page.endswith("Available at https://data.example.org/yahtse")
        assert page.count("https://") == 1
    bare_plain = _citation(plain, "bare")
    assert "http" not in bare_plain and "127.0.0.1" not in bare_plain
    assert bare_plain.startswith("Glacierflow Test Suite (")
    bare_public = _citation(public, "bare")
    assert bare_public.endswith("Available at https://portal.example.org/datasets/bare")
    for server in (plain, public):
        for dataset_id in ("with-doi", "with-page", "bare"):
            assert "127.0.0.1" not in _citation(server, dataset_id)


def test_the_provider_box_shows_the_publisher(
    servers: tuple[pt.PortalServer, pt.PortalServer],
) -> None:
    status, _, body = servers[0].request("GET", "/datasets/bare")
    html = body.decode()
    box = html[html.index('id="providers"') : html.index('id="projects"')]
    assert "Glacier Data Centre of the Test Suite" in box and "publisher" in box
    assert "Not stated." not in box


def test_flow_arrows_point_down_the_tongue_as_the_demo_measures(
    products: dict[str, Path],
) -> None:
    import numpy as np
    from pyproj import Transformer

    from glacierflow.demo import TONGUE_BOX_M, demo_inputs, demo_statistics
    from glacierflow.portal.arrows import flow_arrows
    from glacierflow.products import read_product

    arrows = flow_arrows(products["pair_cog"])
    v = np.array([f["properties"]["v"] for f in arrows["features"]])
    bearing = np.array([f["properties"]["bearing"] for f in arrows["features"]])
    assert len(v) > 500 and np.all(v > 0)
    expected = demo_statistics(read_product(products["pair_cog"]), demo_inputs()[2])
    # the arrows on the demo's lower tongue (UTM 7N box) against its measured flow bearing
    lon, lat = np.array([f["geometry"]["coordinates"] for f in arrows["features"]]).T
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32607", always_xy=True).transform(lon, lat)
    x0, x1, y0, y1 = TONGUE_BOX_M
    tongue = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    assert tongue.sum() > 10
    assert np.median(bearing[tongue]) == pytest.approx(expected["tongue_direction_deg"], abs=5)
