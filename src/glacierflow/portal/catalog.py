"""Publish velocity products as a STAC catalog: a Collection per dataset, an Item per product.

Layout of a catalog folder (relative links throughout, so it can be moved or copied whole)::

    CATALOG_DIR/catalog.json                     root catalog, one child link per dataset
    CATALOG_DIR/<dataset>/collection.json        the dataset record
    CATALOG_DIR/<dataset>/<item>/<item>.json     one product
    CATALOG_DIR/<dataset>/<item>/velocity.tif    its files, copied (COG, NetCDF, PNG, JSON)

The Collection carries the hand-written record of ``dataset.toml`` (title, description,
keywords, references, providers, projects, licence) through STAC core and the scientific
extension, and the computed record (extent, time frame, projection, resolution, file size,
formats) from the files through STAC core, the projection, raster, file and render extensions.
Fields STAC has no name for are namespaced ``glacierflow:``.

A dataset is written into a hidden staging folder inside the catalog and swapped in by renames,
so a failed publish leaves the previous version in place and a reader never sees a half-written
dataset.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import pystac
import rasterio
import rasterio.shutil
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension
from pystac.extensions.raster import Statistics as RasterStatistics
from pystac.extensions.render import Render, RenderExtension
from pystac.extensions.scientific import Publication, ScientificExtension

from glacierflow import __version__
from glacierflow.errors import InputError
from glacierflow.portal.discover import ProductFacts, find_products, sha256_multihash
from glacierflow.portal.meta import DatasetMeta, is_placeholder, load_meta
from glacierflow.products import atomic_write

__all__ = [
    "ASSET_INFO",
    "ROOT_CATALOG_ID",
    "PublishResult",
    "build_collection",
    "dataset_citation",
    "nice_ceiling",
    "publish",
    "write_root_catalog",
]

log = logging.getLogger(__name__)

#: Id of the root catalog that lists the datasets.
ROOT_CATALOG_ID = "glacierflow"

#: Media type, roles and title of each product file, by role (every velocity GeoTIFF is
#: published as a COG).
ASSET_INFO: dict[str, dict[str, Any]] = {
    "velocity": {
        "type": pystac.MediaType.COG,
        "roles": ["data"],
        "title": "Velocity (Cloud-Optimized GeoTIFF)",
        "format": "GeoTIFF (Cloud-Optimized)",
    },
    "netcdf": {
        "type": "application/x-netcdf",
        "roles": ["data"],
        "title": "Velocity (NetCDF-4, CF-1.8)",
        "format": "NetCDF-4 (CF-1.8)",
    },
    "quicklook": {
        "type": pystac.MediaType.PNG,
        "roles": ["overview", "visual"],
        "title": "Quick look",
        "format": "PNG",
    },
    "summary": {
        "type": pystac.MediaType.JSON,
        "roles": ["metadata"],
        "title": "Summary (JSON)",
        "format": "JSON",
    },
}


_SPDX_RE = re.compile(r"^[\w\-.+]+$")
_SAFE_RE = re.compile(r"[^a-z0-9_-]+")


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish` wrote.

    Attributes
    ----------
    collection_path : Path
        The dataset's ``collection.json``.
    item_ids : list of str
        Items written, in time order.
    skipped : list of (Path, str)
        GeoTIFFs found that are not products, with the reason.
    placeholders : list of str
        Fields of ``dataset.toml`` still marked ``TO BE FILLED``.
    """

    collection_path: Path
    item_ids: list[str]
    skipped: list[tuple[Path, str]]
    placeholders: list[str]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value`` (> 0)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * power >= value * (1 - 1e-12):
            return step * power
    return 10.0 * power


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _platform(sensor: Any) -> tuple[str | None, list[str]]:
    """STAC ``platform`` and ``instruments`` from a sensor name such as 'Landsat 8 OLI'."""
    text = str(sensor or "").strip()
    match = re.match(r"^landsat[\s_-]*(\d+)\s*(.*)$", text, re.IGNORECASE)
    if match:
        instrument = match.group(2).strip().lower().replace(" ", "")
        return f"landsat-{match.group(1)}", [instrument] if instrument else []
    match = re.match(r"^sentinel[\s_-]*(\d)([a-d]?)\s*(.*)$", text, re.IGNORECASE)
    if match:
        instrument = match.group(3).strip().lower()
        return f"sentinel-{match.group(1)}{match.group(2).lower()}", (
            [instrument] if instrument else []
        )
    return None, []


def dataset_citation(meta: DatasetMeta, year: int) -> str:
    """How to cite the dataset: ``meta.citation``, or one built from its fields.

    The built form is ``Creators (year). Title. Publisher. Version v. https://doi.org/DOI``,
    leaving out what is unknown or still a placeholder.
    """
    if meta.citation and not is_placeholder(meta.citation):
        return meta.citation

    def known(value: str | None) -> str | None:
        return None if value is None or is_placeholder(value) else value

    creators = [c for c in meta.creators if known(c)]
    producers = [p.name for p in meta.providers if "producer" in p.roles and known(p.name)]
    who = "; ".join(creators or producers) or known(meta.publisher) or "Anonymous"
    parts = [f"{who} ({meta.year or year}).", f"{meta.title.rstrip('.')}."]
    if known(meta.publisher):
        parts.append(f"{meta.publisher}.")
    if known(meta.version):
        parts.append(f"Version {meta.version}.")
    if known(meta.doi):
        parts.append(f"https://doi.org/{meta.doi}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


def _item_ids(products: Sequence[ProductFacts]) -> list[str]:
    """Unique, URL-safe item ids: ``annual_YYYY`` or ``pair_YYYYMMDD_YYYYMMDD``."""
    ids: list[str] = []
    seen_years: dict[int, Path] = {}
    for product in products:
        if product.kind == "annual":
            assert product.year is not None
            if product.year in seen_years:
                raise InputError(
                    f"two annual products for {product.year}: {seen_years[product.year]} and "
                    "this one; keep one of them",
                    product.cog,
                )
            seen_years[product.year] = product.cog
            base = f"annual_{product.year}"
        else:
            base = f"pair_{product.start:%Y%m%d}_{product.end:%Y%m%d}"
        item_id, n = base, 1
        while item_id in ids:
            n += 1
            folder = _SAFE_RE.sub("-", product.cog.parent.name.lower()).strip("-")
            item_id = f"{base}_{folder}" if n == 2 and folder else f"{base}_{n}"
        ids.append(item_id)
    return ids


def _rasterio_order(gdal: Sequence[float]) -> list[float]:
    """Geotransform in rasterio/STAC ``proj:transform`` order (a, b, c, d, e, f)."""
    c, a, b, f, d, e = gdal
    return [a, b, c, d, e, f]


def _raster_bands(product: ProductFacts) -> list[RasterBand]:
    bands = []
    for facts in product.bands:
        stats = RasterStatistics.create(
            minimum=facts.minimum,
            maximum=facts.maximum,
            mean=facts.mean,
            stddev=facts.stddev,
            valid_percent=round(facts.valid_percent, 4),
        )
        band = RasterBand.create(
            nodata=NoDataStrings.NAN,
            data_type=DataType.FLOAT32,
            spatial_resolution=product.spacing_m,
            unit=facts.unit,
            statistics=stats,
        )
        band.properties["name"] = facts.name
        if facts.long_name:
            band.properties["description"] = facts.long_name
        bands.append(band)
    return bands


def _item(product: ProductFacts, item_id: str) -> pystac.Item:
    """A STAC Item for one product; assets are added when the files are copied."""
    tags = product.tags
    properties: dict[str, Any] = {
        "title": (
            f"Velocity {product.year}"
            if product.kind == "annual"
            else f"Velocity {product.start:%Y-%m-%d} to {product.end:%Y-%m-%d}"
        ),
        "glacierflow:kind": product.kind,
        "glacierflow:mid_datetime": _iso(product.mid),
        "glacierflow:dt_days": round((product.end - product.start).total_seconds() / 86400, 6),
        "glacierflow:bands": product.band_names,
    }
    if product.year is not None:
        properties["glacierflow:year"] = product.year
    v = product.band("v")
    if v is not None:
        properties["glacierflow:speed_m_per_yr"] = {
            **v.percentiles,
            "max": v.maximum,
            "mean": v.mean,
            "valid_percent": round(v.valid_percent, 4),
        }
    error = product.band("v_error")
    if error is not None and error.percentiles:
        properties["glacierflow:v_error_median_m_per_yr"] = error.percentiles.get("p50")
    sensor = tags.get("ref_sensor") or tags.get("sensor")
    platform, instruments = _platform(sensor)
    if sensor:
        properties["glacierflow:sensor"] = str(sensor)
    if platform:
        properties["platform"] = platform
        properties["instruments"] = instruments
    scenes = [tags[k] for k in ("ref_scene_id", "sec_scene_id") if tags.get(k)]
    if scenes:
        properties["glacierflow:scene_ids"] = scenes
    settings = {k: tags[k] for k in ("method", "chip_px", "search_px", "step_px") if k in tags}
    if settings:
        properties["glacierflow:settings"] = settings
    if tags.get("glacierflow_version"):
        properties["glacierflow:version"] = tags["glacierflow_version"]

    item = pystac.Item(
        id=item_id,
        geometry=product.footprint,
        bbox=list(product.bbox),
        datetime=None,
        start_datetime=product.start,
        end_datetime=product.end,
        properties=properties,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if product.epsg is not None:
        proj.code = f"EPSG:{product.epsg}"
    else:
        proj.wkt2 = product.crs_wkt
    proj.shape = list(product.shape)
    proj.transform = _rasterio_order(product.transform)
    proj.bbox = list(product.bounds)
    return item


def _asset_info(product: ProductFacts, role: str) -> dict[str, Any]:
    # every velocity GeoTIFF is published as a COG with overviews (_copy_velocity)
    return ASSET_INFO[role]


#: Block size of the published COGs and the size below which they need no overviews, pixels.
COG_BLOCK_PX = 256


def _copy_velocity(src: Path, dst: Path, is_cog: bool) -> None:
    """Copy a velocity GeoTIFF as a Cloud-Optimized GeoTIFF with overviews.

    A product that already is a COG with overviews down to one block (what ``track`` and
    ``run`` write) is copied byte for byte; any other is rewritten with GDAL's COG driver:
    the same full-resolution values, band descriptions and tags, tiled 256 x 256, DEFLATE,
    with averaged overviews (missing values ignored) halving down to one block, so that a map
    tile at any zoom reads a bounded number of pixels.
    """
    with rasterio.open(src) as ds:
        levels = ds.overviews(1)
        size = max(ds.width, ds.height)
        coarsest = size / (levels[-1] if levels else 1)
        if is_cog and coarsest <= COG_BLOCK_PX:
            shutil.copyfile(src, dst)
            return
        rasterio.shutil.copy(
            ds,
            dst,
            driver="COG",
            blocksize=COG_BLOCK_PX,
            compress="DEFLATE",
            predictor="FLOATING_POINT" if ds.dtypes[0].startswith("float") else "YES",
            overviews="IGNORE_EXISTING",
            overview_resampling="AVERAGE",
            bigtiff="IF_SAFER",
        )


def _add_assets(item: pystac.Item, product: ProductFacts, item_dir: Path) -> int:
    """Copy the product's files into ``item_dir`` and describe them as assets; total bytes."""
    total = 0
    RasterExtension.add_to(item)
    FileExtension.add_to(item)
    for role, src in product.files.items():
        dst = item_dir / src.name
        with atomic_write(dst) as tmp:
            if role == "velocity":
                _copy_velocity(src, tmp, product.is_cog)
            else:
                shutil.copyfile(src, tmp)
        info = _asset_info(product, role)
        asset = pystac.Asset(
            href=f"./{dst.name}", title=info["title"], media_type=info["type"], roles=info["roles"]
        )
        item.add_asset(role, asset)
        size = dst.stat().st_size
        total += size
        FileExtension.ext(asset).apply(size=size, checksum=sha256_multihash(dst))
        if role == "velocity":
            RasterExtension.ext(asset).apply(_raster_bands(product))
    return total


# --------------------------------------------------------------------------------------------
# The collection
# --------------------------------------------------------------------------------------------


def build_collection(
    meta: DatasetMeta, products: Sequence[ProductFacts], now: dt.datetime | None = None
) -> tuple[pystac.Collection, list[tuple[pystac.Item, ProductFacts]]]:
    """The STAC Collection of a dataset and its Items (without assets, which need the files).

    Parameters
    ----------
    meta : DatasetMeta
        The hand-written record.
    products : sequence of ProductFacts
        The products, in time order (at least one).
    now : datetime, optional
        Publication time (UTC); default the current time.

    Returns
    -------
    collection : pystac.Collection
    items : list of (pystac.Item, ProductFacts)
    """
    if not products:
        raise InputError("no products to publish", meta.source)
    now = now or dt.datetime.now(dt.UTC)
    west = min(p.bbox[0] for p in products)
    south = min(p.bbox[1] for p in products)
    east = max(p.bbox[2] for p in products)
    north = max(p.bbox[3] for p in products)
    start = min(p.start for p in products)
    end = max(p.end for p in products)

    license_ = meta.license if _SPDX_RE.match(meta.license) else "other"
    providers = [
        pystac.Provider(name=p.name, roles=list(p.roles), url=p.url, description=p.description)
        for p in meta.providers
    ]
    collection = pystac.Collection(
        id=meta.id,
        title=meta.title,
        description=meta.description,
        extent=pystac.Extent(
            pystac.SpatialExtent([[west, south, east, north]]),
            pystac.TemporalExtent([[start, end]]),
        ),
        license=license_,
        keywords=meta.all_keywords,
        providers=providers or None,
    )
    if meta.license_url and not is_placeholder(meta.license_url):
        collection.add_link(pystac.Link("license", meta.license_url, title="Licence"))

    sci = ScientificExtension.ext(collection, add_if_missing=True)
    sci.apply(
        doi=meta.doi if meta.doi and not is_placeholder(meta.doi) else None,
        citation=dataset_citation(meta, now.year),
        publications=[Publication(r.doi, r.citation) for r in meta.references] or None,
    )

    items = [(_item(p, i), p) for p, i in zip(products, _item_ids(products), strict=True)]
    speeds = [p.band("v").percentiles.get("p95") for p in products if p.band("v")]
    speeds = [s for s in speeds if s is not None]
    vmax = meta.speed_max_m_per_yr or nice_ceiling(max(speeds, default=1.0))
    RenderExtension.ext(collection, add_if_missing=True).apply(
        {
            "speed": Render.create(
                assets=["velocity"],
                title="Speed (m/yr)",
                rescale=[[0.0, float(vmax)]],
                nodata="nan",
                colormap_name="viridis",
                resampling="nearest",
            )
        }
    )
    proj_codes = sorted({f"EPSG:{p.epsg}" if p.epsg else "custom WKT" for p in products})
    summaries: dict[str, Any] = {
        "proj:code": proj_codes,
        "glacierflow:grid_spacing_m": sorted({round(p.spacing_m, 6) for p in products}),
        "glacierflow:kind": sorted({p.kind for p in products}),
    }
    platforms = sorted({i.properties["platform"] for i, _ in items if "platform" in i.properties})
    if platforms:
        summaries["platform"] = platforms
        summaries["instruments"] = sorted(
            {x for i, _ in items for x in i.properties.get("instruments", [])}
        )
    collection.summaries = pystac.Summaries(summaries)
    collection.stac_extensions.append(ProjectionExtension.get_schema_uri())  # proj:code above
    collection.extra_fields.update(
        {
            "glacierflow:keywords": {k: list(v) for k, v in meta.keywords.items()},
            "glacierflow:projects": [
                {k: v for k, v in vars(p).items() if v} for p in meta.projects
            ],
            "glacierflow:creators": list(meta.creators),
            "glacierflow:formats": sorted(
                {_asset_info(p, role)["format"] for p in products for role in p.files}
            ),
            "glacierflow:speed_max_m_per_yr": float(vmax),
            "glacierflow:placeholders": meta.placeholders,
            "glacierflow:glacierflow_version": __version__,
            "updated": _iso(now),
        }
    )
    optional = {
        "glacierflow:publisher": meta.publisher,
        "glacierflow:version": meta.version,
        "glacierflow:accuracy": meta.accuracy,
        "glacierflow:lineage": meta.lineage,
        "glacierflow:contact": meta.contact,
        "glacierflow:license_text": meta.license if license_ != meta.license else None,
    }
    collection.extra_fields.update({k: v for k, v in optional.items() if v})
    return collection, items


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _check_catalog_dir(catalog_dir: Path) -> None:
    if catalog_dir.exists() and not catalog_dir.is_dir():
        raise InputError("the catalog path is a file; choose a folder", catalog_dir)
    if catalog_dir.is_dir() and not (catalog_dir / "catalog.json").is_file():
        visible = [p for p in catalog_dir.iterdir() if not p.name.startswith(".")]
        if visible:
            raise InputError(
                "the folder is not empty and holds no catalog.json; publish into a new or "
                "empty folder, or into an existing glacierflow catalog",
                catalog_dir,
            )


def write_root_catalog(catalog_dir: str | PathLike[str]) -> Path:
    """(Re)write ``catalog.json`` with a child link to every ``*/collection.json`` in the folder.

    Parameters
    ----------
    catalog_dir : str or PathLike
        The catalog folder.

    Returns
    -------
    Path
        The root catalog file.
    """
    catalog_dir = Path(catalog_dir)
    root = pystac.Catalog(
        id=ROOT_CATALOG_ID,
        title="glacierflow velocity catalog",
        description="Glacier surface velocity datasets published with glacierflow.",
    )
    for path in sorted(catalog_dir.glob("*/collection.json")):
        if path.parent.name.startswith("."):
            continue
        try:
            title = json.loads(path.read_text(encoding="utf-8")).get("title")
        except (OSError, ValueError):
            log.warning("%s: unreadable collection, left out of catalog.json", path)
            continue
        root.add_link(
            pystac.Link(
                "child", f"./{path.parent.name}/collection.json", pystac.MediaType.JSON, title
            )
        )
    root.add_link(pystac.Link("root", "./catalog.json", pystac.MediaType.JSON))
    target = catalog_dir / "catalog.json"
    data = root.to_dict(include_self_link=False, transform_hrefs=False)
    with atomic_write(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return target


def _swap_in(staged: Path, final: Path) -> None:
    """Replace folder ``final`` by ``staged`` with two renames; remove the old version."""
    old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(staged, final)
    except BaseException:
        if old.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def publish(
    products_dir: str | PathLike[str],
    meta_path: str | PathLike[str],
    catalog_dir: str | PathLike[str],
    *,
    strict: bool = False,
) -> PublishResult:
    """Publish the products of ``products_dir`` as a dataset of the catalog in ``catalog_dir``.

    The dataset's record comes from ``meta_path`` (hand-written fields) and from the files
    (everything computable). The products' files are copied into the catalog, so the catalog is
    self-contained. A dataset of the same id is replaced; other datasets are kept.

    Parameters
    ----------
    products_dir : str or PathLike
        Folder with pair products (``velocity.tif`` + sidecars, in subfolders) and/or annual
        products (``v_YYYY.tif``), or a single product GeoTIFF.
    meta_path : str or PathLike
        The ``dataset.toml``.
    catalog_dir : str or PathLike
        The catalog folder (created if missing; must be empty or a glacierflow catalog).
    strict : bool
        Refuse fields still marked ``TO BE FILLED`` instead of warning about them.

    Returns
    -------
    PublishResult

    Raises
    ------
    InputError
        If the dataset file is invalid, no product is found, a product is unreadable, or the
        catalog folder is not usable.
    """
    meta = load_meta(meta_path)
    if strict and meta.placeholders:
        raise InputError(
            f"fields still marked TO BE FILLED: {', '.join(meta.placeholders)}; fill them in or "
            "publish without --strict",
            meta_path,
        )
    catalog_dir = Path(catalog_dir)
    _check_catalog_dir(catalog_dir)
    products, skipped = find_products(products_dir, exclude=[catalog_dir])
    if not products:
        others = f"; {len(skipped)} other GeoTIFF(s) skipped" if skipped else ""
        raise InputError(
            "no velocity products found: expected velocity.tif (from glacierflow track) or "
            f"v_YYYY.tif files{others}",
            products_dir,
        )
    collection, items = build_collection(meta, products)

    catalog_dir.mkdir(parents=True, exist_ok=True)
    staging_root = catalog_dir / f".staging-{meta.id}-{secrets.token_hex(4)}"
    staged = staging_root / meta.id
    try:
        root = pystac.Catalog(id=ROOT_CATALOG_ID, description="staging")
        root.add_child(collection)
        for item, _ in items:
            collection.add_item(item)
        root.normalize_hrefs(str(staging_root))
        total = 0
        for item, product in items:
            item_dir = Path(item.get_self_href()).parent
            item_dir.mkdir(parents=True, exist_ok=True)
            total += _add_assets(item, product, item_dir)
        collection.extra_fields["glacierflow:file_size"] = total
        collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        _swap_in(staged, catalog_dir / meta.id)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    write_root_catalog(catalog_dir)
    return PublishResult(
        collection_path=catalog_dir / meta.id / "collection.json",
        item_ids=[item.id for item, _ in items],
        skipped=skipped,
        placeholders=meta.placeholders,
    )
