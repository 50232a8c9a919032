"""Publishing: dataset.toml, the STAC catalog computed from real products, the index, paths."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import portal_testing as pt
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from glacierflow.cli import cli
from glacierflow.errors import InputError
from glacierflow.portal.catalog import nice_ceiling, publish
from glacierflow.portal.discover import find_products
from glacierflow.portal.files import Refused, resolve_download
from glacierflow.portal.index import CatalogIndex, SearchQuery, bbox_intersects
from glacierflow.portal.meta import load_meta
from glacierflow.portal.params import BadParameter, parse_bbox, parse_interval

EXAMPLE_TOML = Path(__file__).resolve().parents[1] / "examples/karakoram_1999_2003_dataset.toml"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pt.catalog(tmp_path_factory)


@pytest.fixture(scope="module")
def products(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pt.products(tmp_path_factory)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ dataset.toml


def test_karakoram_record_has_the_seed_fields_and_no_invented_identifiers() -> None:
    meta = load_meta(EXAMPLE_TOML)
    assert meta.title == "Glacier velocity of the Central Karakoram, 1999–2003"
    assert {"theme", "discipline", "place", "time"} <= set(meta.keywords)
    assert {"glacier velocity", "ice flow"} <= set(meta.keywords["theme"])
    assert {"glaciology", "remote sensing"} <= set(meta.keywords["discipline"])
    assert {"Karakoram", "Central Karakoram", "Baltoro Glacier"} <= set(meta.keywords["place"])
    assert "1999–2003" in meta.keywords["time"]
    assert "Landsat 7 ETM+" in meta.description and "±7 m/yr" in meta.description
    assert [r.doi for r in meta.references] == ["10.3390/rs9101064"]
    assert "Remote Sensing 2017, 9(10), 1064" in meta.references[0].citation
    # The only DOI anywhere in the file is the paper's: no dataset DOI is made up.
    assert set(re.findall(r"10\.\d{4,9}/[^\s\"]+", EXAMPLE_TOML.read_text())) == {
        "10.3390/rs9101064"
    }
    assert meta.doi is None
    # Placeholders only where the sources say nothing: licence, host, publisher, projects.
    assert meta.placeholders
    assert all(
        p in ("license", "publisher") or p.startswith(("providers[1].", "projects[0]."))
        for p in meta.placeholders
    ), meta.placeholders
    assert [p.roles for p in meta.providers] == [("producer",), ("host",)]
    assert meta.speed_max_m_per_yr == 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('id = "a"\ntitle = "t"\ndescription = "d"\ntitel = "x"', "unknown field(s) titel"),
        ('id = "a"\ndescription = "d"', "title is missing"),
        ('id = "Bad Id"\ntitle = "t"\ndescription = "d"', "id 'Bad Id' is not allowed"),
        ('id = "a"\ntitle = "t"\ndescription = "d"\ndoi = "rs9101064"', "is not a DOI"),
        (
            'id = "a"\ntitle = "t"\ndescription = "d"\n[[providers]]\nname = "x"\nroles = ["boss"]',
            "roles ['boss'] unknown",
        ),
        (
            'id = "a"\ntitle = "t"\ndescription = "d"\n[display]\nspeed_max_m_per_yr = -1',
            "positive",
        ),
        ('id = "a"\ntitle = [', "not a valid TOML file"),
    ],
)
def test_dataset_toml_errors_name_the_file_and_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "dataset.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_meta(path)
    assert str(path) in str(err.value) and message in str(err.value)


# ------------------------------------------------------------------------------ the catalog


def test_collection_record_is_computed_from_the_files(
    catalog: Path, products: dict[str, Path]
) -> None:
    coll = _json(catalog / pt.PAIR_ID / "collection.json")
    with rasterio.open(products["pair_cog"]) as src:
        bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        tags = src.tags()
        epsg = src.crs.to_epsg()
        spacing = src.res[0]
    assert coll["extent"]["spatial"]["bbox"][0] == pytest.approx(bounds, abs=1e-9)
    start, end = coll["extent"]["temporal"]["interval"][0]
    assert dt.datetime.fromisoformat(start) == dt.datetime.fromisoformat(tags["ref_time"])
    assert dt.datetime.fromisoformat(end) == dt.datetime.fromisoformat(tags["sec_time"])
    assert coll["summaries"]["proj:code"] == [f"EPSG:{epsg}"]
    assert any("/projection/" in uri for uri in coll["stac_extensions"])
    assert coll["summaries"]["glacierflow:grid_spacing_m"] == [spacing]
    assert coll["summaries"]["platform"] == ["landsat-8"]
    files = list((catalog / pt.PAIR_ID).rglob("*"))
    data_bytes = sum(p.stat().st_size for p in files if p.is_file() and p.suffix != ".json")
    summary_json = sum(p.stat().st_size for p in files if p.name == "summary.json")
    assert coll["glacierflow:file_size"] == data_bytes + summary_json
    assert "GeoTIFF (Cloud-Optimized)" in coll["glacierflow:formats"]
    # Hand-written fields, through STAC core and the scientific extension.
    assert coll["license"] == "CC-BY-4.0" and coll["keywords"][0] == "glacier velocity"
    assert coll["glacierflow:keywords"]["place"] == ["Yahtse Glacier", "Alaska"]
    assert coll["providers"][0]["roles"] == ["producer", "host"]
    assert coll["sci:citation"].startswith("Glacierflow Test Suite (")
    annual = _json(catalog / pt.ANNUAL_ID / "collection.json")
    assert annual["sci:publications"] == [
        {"doi": "10.3390/rs9101064", "citation": "Sun, Y. et al. Remote Sensing 2017, 9(10), 1064."}
    ]
    assert {"rel": "cite-as", "href": "https://doi.org/10.3390/rs9101064"} in [
        {k: link[k] for k in ("rel", "href")} for link in annual["links"]
    ]
    assert annual["glacierflow:placeholders"] == ["projects[0].name"]
    assert annual["renders"]["speed"]["rescale"] == [[0.0, pt.SPEED_MAX_M_PER_YR]]
    root = _json(catalog / "catalog.json")
    children = sorted(link["href"] for link in root["links"] if link["rel"] == "child")
    assert children == [f"./{pt.ANNUAL_ID}/collection.json", f"./{pt.PAIR_ID}/collection.json"]


def test_items_carry_assets_checksums_statistics_and_projection(
    catalog: Path, products: dict[str, Path]
) -> None:
    (item_path,) = (catalog / pt.PAIR_ID).glob("pair_*/pair_*.json")
    item = _json(item_path)
    assert item["id"] == "pair_20160718_20160803"
    assert set(item["assets"]) == {"velocity", "netcdf", "quicklook", "summary"}
    for asset in item["assets"].values():
        published = item_path.parent / asset["href"]
        original = products["pair"] / "yahtse_20160718_20160803" / published.name
        digest = hashlib.sha256(published.read_bytes()).hexdigest()
        assert asset["file:checksum"] == "1220" + digest
        assert asset["file:size"] == published.stat().st_size
        assert published.read_bytes() == original.read_bytes()
    velocity = item["assets"]["velocity"]
    assert velocity["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    with rasterio.open(products["pair_cog"]) as src:
        v = src.read(3)
        assert [b["name"] for b in velocity["raster:bands"]] == list(src.descriptions)
        assert item["properties"]["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert item["properties"]["proj:shape"] == [src.height, src.width]
        assert item["properties"]["proj:transform"] == list(src.transform)[:6]
    stats = velocity["raster:bands"][2]["statistics"]
    finite = v[np.isfinite(v)].astype(np.float64)
    assert stats["maximum"] == pytest.approx(finite.max())
    assert stats["mean"] == pytest.approx(finite.mean())
    assert stats["valid_percent"] == pytest.approx(100 * finite.size / v.size, abs=1e-3)
    assert item["properties"]["start_datetime"].startswith("2016-07-18T20:37:06")
    assert item["properties"]["end_datetime"].startswith("2016-08-03T20:37:09")
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) > 40
    lons, lats = zip(*ring, strict=True)
    assert (min(lons), min(lats), max(lons), max(lats)) == pytest.approx(item["bbox"], abs=1e-6)


def test_annual_products_are_found_by_name_and_get_their_year(products: dict[str, Path]) -> None:
    found, skipped = find_products(products["annual"])
    assert [(p.kind, p.year) for p in found] == [("annual", 2016), ("annual", 2017)]
    assert found[1].start == dt.datetime(2017, 1, 1, tzinfo=dt.UTC)
    assert found[1].end == dt.datetime(2017, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert found[0].band_names == ["vx", "vy", "v", "v_error", "count"]
    assert found[1].band("v").maximum == pytest.approx(
        pt.ANNUAL_2017_SCALE * found[0].band("v").maximum, rel=1e-6
    )
    assert skipped == []


def test_republishing_replaces_one_dataset_and_keeps_the_others(
    tmp_path_factory: pytest.TempPathFactory, products: dict[str, Path], tmp_path: Path
) -> None:
    catalog = pt.copy_catalog(tmp_path_factory, "republish")
    meta = tmp_path / "dataset.toml"
    meta.write_text(pt.PAIR_TOML.replace("Surface velocity", "Revised velocity"), "utf-8")
    result = publish(products["pair"], meta, catalog)
    assert result.item_ids == ["pair_20160718_20160803"]
    assert _json(result.collection_path)["title"].startswith("Revised velocity")
    assert (catalog / pt.ANNUAL_ID / "collection.json").is_file()
    assert not [p for p in catalog.iterdir() if p.name.startswith(".")]  # no staging left


def test_publish_refuses_what_it_cannot_use(products: dict[str, Path], tmp_path: Path) -> None:
    meta = tmp_path / "dataset.toml"
    meta.write_text(pt.ANNUAL_TOML, "utf-8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no velocity products found"):
        publish(tmp_path / "empty", meta, tmp_path / "catalog")
    (tmp_path / "notacatalog").mkdir()
    (tmp_path / "notacatalog" / "thesis.pdf").write_bytes(b"%PDF")
    with pytest.raises(InputError, match="holds no catalog.json"):
        publish(products["annual"], meta, tmp_path / "notacatalog")
    with pytest.raises(InputError, match=r"TO BE FILLED: projects\[0\].name"):
        publish(products["annual"], meta, tmp_path / "catalog", strict=True)
    assert not (tmp_path / "catalog").exists()


def test_cli_publish_prints_items_and_warns_about_placeholders(
    products: dict[str, Path], tmp_path: Path
) -> None:
    meta = tmp_path / "dataset.toml"
    meta.write_text(pt.ANNUAL_TOML, "utf-8")
    args = ["publish", str(products["annual"]), "--meta", str(meta), "--catalog"]
    result = CliRunner().invoke(cli, [*args, str(tmp_path / "cat")])
    assert result.exit_code == 0, result.output
    assert "annual_2016" in result.output and "annual_2017" in result.output
    assert "TO BE FILLED: projects[0].name" in result.output
    result = CliRunner().invoke(cli, [*args, str(tmp_path / "cat2"), "--strict"])
    assert result.exit_code == 2 and "glacierflow: error:" in result.output


def test_cli_serve_refuses_a_folder_without_catalog(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--catalog", str(tmp_path)])
    assert result.exit_code == 2
    assert "no catalog.json here; make a catalog with glacierflow publish first" in result.output


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0.7, 3, 180, 250, 4174, 10)] == [1, 5, 200, 250, 5000, 10]


# ------------------------------------------------------------------------------ the index


def test_index_searches_by_text_keyword_bbox_and_time(catalog: Path) -> None:
    index = CatalogIndex(catalog)
    assert index.dataset_ids() == [pt.ANNUAL_ID, pt.PAIR_ID]

    def ids(**kw: object) -> list[str]:
        return sorted(c["id"] for c in index.search(SearchQuery(**kw))[1])

    yahtse = (-141.5, 60.1, -141.3, 60.2)
    assert ids(bbox=yahtse) == [pt.ANNUAL_ID, pt.PAIR_ID]
    assert ids(bbox=(75.5, 35.0, 77.5, 36.5)) == []
    assert ids(bbox=(170.0, 59.0, -141.5, 61.0)) == [pt.ANNUAL_ID, pt.PAIR_ID]  # antimeridian
    aug = dict(
        start=dt.datetime(2016, 8, 1, tzinfo=dt.UTC), end=dt.datetime(2016, 8, 2, tzinfo=dt.UTC)
    )
    assert ids(bbox=yahtse, **aug) == [pt.ANNUAL_ID, pt.PAIR_ID]
    assert ids(start=dt.datetime(2017, 3, 1, tzinfo=dt.UTC)) == [pt.ANNUAL_ID]
    assert ids(end=dt.datetime(2015, 12, 31, tzinfo=dt.UTC)) == []
    assert ids(keyword="icy bay") == [pt.ANNUAL_ID]
    assert ids(text="OLI pair") == [pt.PAIR_ID]
    assert ids(text="100%_") == []  # LIKE wildcards are literal
    total, page = index.search(SearchQuery(limit=1, offset=1))
    assert total == 2 and [c["id"] for c in page] == [pt.PAIR_ID]


def test_index_rebuilds_when_the_catalog_changes(tmp_path_factory: pytest.TempPathFactory) -> None:
    catalog = pt.copy_catalog(tmp_path_factory, "rebuild")
    index = CatalogIndex(catalog, check_interval_s=0.0)
    assert not index.refresh()
    (tif,) = (catalog / pt.ANNUAL_ID).glob("annual_2017/v_2017.tif")
    tif.write_bytes(tif.read_bytes()[:1000])
    assert index.refresh()
    rows = {r["id"]: r for r in index.items(pt.ANNUAL_ID)}
    assert rows["annual_2016"]["available"]
    assert not rows["annual_2017"]["available"]
    assert "size differs" in rows["annual_2017"]["problem"]


def test_bbox_intersects() -> None:
    assert bbox_intersects((0, 0, 1, 1), (1, 1, 2, 2))
    assert not bbox_intersects((0, 0, 1, 1), (1.1, 0, 2, 1))
    assert bbox_intersects((170, -10, -170, 10), (-175, 0, -174, 1))
    assert not bbox_intersects((170, -10, -170, 10), (0, 0, 1, 1))
    assert not bbox_intersects((0, 0, 1, 1), (None, 0, 1, 1))


# ------------------------------------------------------------------------------ parameters, paths


def test_parse_bbox_and_interval() -> None:
    assert parse_bbox("75.5,35,77.5,36.5") == (75.5, 35.0, 77.5, 36.5)
    for bad in ("1,2,3", "a,b,c,d", "nan,0,1,1", "0,10,1,5", "200,0,1,1", "0,-95,1,1"):
        with pytest.raises(BadParameter):
            parse_bbox(bad)
    start, end = parse_interval("2016")
    assert (start.isoformat(), end.year, end.month, end.day) == (
        "2016-01-01T00:00:00+00:00",
        2016,
        12,
        31,
    )
    assert parse_interval("../2016-07-20")[0] is None
    assert parse_interval("../2016-07-20")[1].hour == 23
    assert parse_interval("2016-07-20T10:00:00Z/..")[1] is None
    for bad in ("2017/2016", "yesterday", "2016/2017/2018"):
        with pytest.raises(BadParameter):
            parse_interval(bad)


def test_downloads_resolve_only_to_files_inside_the_catalog(tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    (root / "ds").mkdir(parents=True)
    (root / "ds" / "a.tif").write_bytes(b"data")
    (root / ".hidden").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "ds" / "link.txt")
    os.symlink(tmp_path, root / "outside")
    os.symlink(root / "ds" / "a.tif", root / "ds" / "inside.tif")
    assert resolve_download(root, "ds/a.tif") == (root / "ds" / "a.tif").resolve()
    assert resolve_download(root, "ds/inside.tif") == (root / "ds" / "a.tif").resolve()
    refused = {
        "../secret.txt": 400,
        "ds/../../secret.txt": 400,
        "/etc/passwd": 400,
        "%2e%2e/secret.txt": 400,
        "ds%2f..%2f..%2fsecret.txt": 400,
        "ds\\..\\..\\secret.txt": 400,
        ".hidden": 400,
        "ds//a.tif": 400,
        "ds/a.tif\x00.png": 400,
        "ds/link.txt": 404,
        "outside/secret.txt": 404,
        "ds": 404,
        "ds/missing.tif": 404,
        "x" * 2000: 400,
    }
    for path, status in refused.items():
        with pytest.raises(Refused) as err:
            resolve_download(root, path)
        assert err.value.status == status, path
