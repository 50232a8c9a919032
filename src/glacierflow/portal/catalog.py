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
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.render import Render, RenderExtension
from pystac.extensions.scientific import Publication, ScientificExtension

from glacierflow import __version__
from glacierflow.atomic import atomic_write
from glacierflow.errors import InputError
from glacierflow.portal.basemap import add_base_layers
from glacierflow.portal.coverage import record_coverage
from glacierflow.portal.discover import ProductFacts, find_products
from glacierflow.portal.items import ASSET_INFO, add_assets, asset_info, iso_z, item_ids, stac_item
from glacierflow.portal.meta import DatasetMeta, is_placeholder, load_meta

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

_SPDX_RE = re.compile(r"^[\w\-.+]+$")


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


def dataset_citation(meta: DatasetMeta, year: int) -> str:
    """How to cite the dataset: ``meta.citation``, or one built from its fields.

    The built form is ``Creators (year). Title. Publisher. Version v. https://doi.org/DOI``
    (without a DOI: ``Available at LANDING_PAGE``), leaving out what is unknown or still a
    placeholder. It never holds the address the portal happens to be reached at.
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
    elif known(meta.landing_page):
        parts.append(f"Available at {meta.landing_page}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# The collection
# --------------------------------------------------------------------------------------------


def build_collection(
    meta: DatasetMeta,
    products: Sequence[ProductFacts],
    now: dt.datetime | None = None,
    products_dir: str | PathLike[str] | None = None,
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
    products_dir : path, optional
        Where the products were found (named in errors).

    Returns
    -------
    collection : pystac.Collection
    items : list of (pystac.Item, ProductFacts)

    Raises
    ------
    InputError
        When the record's ``[extent]`` does not contain the products' box and dates
        (:func:`glacierflow.portal.coverage.record_coverage`).
    """
    if not products:
        raise InputError("no products to publish", meta.source)
    now = now or dt.datetime.now(dt.UTC)
    collection = _collection(meta, products, now, products_dir)
    items = [(stac_item(p, i), p) for p, i in zip(products, item_ids(products), strict=True)]
    vmax = _add_speed_render(collection, meta, products)
    _add_summaries(collection, products, items)
    _add_glacierflow_fields(collection, meta, products, vmax, now)
    return collection, items


def _collection(
    meta: DatasetMeta,
    products: Sequence[ProductFacts],
    now: dt.datetime,
    products_dir: str | PathLike[str] | None,
) -> pystac.Collection:
    """The collection's core: identity, extent, licence, providers and citation."""
    record, data = record_coverage(meta, products, products_dir)
    # STAC: the first box/interval is the whole (the record's); a second, when it differs,
    # is the data's own
    boxes = [list(record.bbox)] + ([list(data.bbox)] if data.bbox != record.bbox else [])
    spans = [[record.start, record.end]]
    if (data.start, data.end) != (record.start, record.end):
        spans.append([data.start, data.end])

    providers = [
        pystac.Provider(name=p.name, roles=list(p.roles), url=p.url, description=p.description)
        for p in meta.providers
    ]
    collection = pystac.Collection(
        id=meta.id,
        title=meta.title,
        description=meta.description,
        extent=pystac.Extent(pystac.SpatialExtent(boxes), pystac.TemporalExtent(spans)),
        license=_spdx_license(meta),
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
    return collection


def _spdx_license(meta: DatasetMeta) -> str:
    """The record's licence when it is an SPDX identifier, else ``"other"``."""
    return meta.license if _SPDX_RE.match(meta.license) else "other"


def _add_speed_render(
    collection: pystac.Collection, meta: DatasetMeta, products: Sequence[ProductFacts]
) -> float:
    """Add the ``speed`` rendering (viridis from 0 to the top speed); return that top, m/yr.

    The top is the record's ``speed_max_m_per_yr`` or a round number above the products'
    largest 95th percentile of speed.
    """
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
    return vmax


def _add_summaries(
    collection: pystac.Collection,
    products: Sequence[ProductFacts],
    items: list[tuple[pystac.Item, ProductFacts]],
) -> None:
    """Summaries of the products: projections, grid spacings, kinds, platforms, instruments."""
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


def _add_glacierflow_fields(
    collection: pystac.Collection,
    meta: DatasetMeta,
    products: Sequence[ProductFacts],
    vmax: float,
    now: dt.datetime,
) -> None:
    """The record's own fields (``glacierflow:*``) and ``updated``; empty optional ones left out."""
    collection.extra_fields.update(
        {
            "glacierflow:keywords": {k: list(v) for k, v in meta.keywords.items()},
            "glacierflow:projects": [
                {k: v for k, v in vars(p).items() if v} for p in meta.projects
            ],
            "glacierflow:creators": list(meta.creators),
            "glacierflow:formats": sorted(
                {asset_info(p, role)["format"] for p in products for role in p.files}
            ),
            "glacierflow:speed_max_m_per_yr": float(vmax),
            "glacierflow:placeholders": meta.placeholders,
            "glacierflow:glacierflow_version": __version__,
            "updated": iso_z(now),
        }
    )
    optional = {
        "glacierflow:publisher": meta.publisher,
        "glacierflow:version": meta.version,
        "glacierflow:accuracy": meta.accuracy,
        "glacierflow:lineage": meta.lineage,
        "glacierflow:contact": meta.contact,
        "glacierflow:license_text": meta.license if _spdx_license(meta) != meta.license else None,
        "glacierflow:landing_page": meta.landing_page,
    }
    collection.extra_fields.update({k: v for k, v in optional.items() if v})


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
    reference_image: str | PathLike[str] | None = None,
    dem: str | PathLike[str] | None = None,
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
    reference_image : str or PathLike, optional
        Image drawn in grey under the speed on the portal's map; default the first pair's
        reference scene, found by its ``ref_file`` name beside the products or among the
        bundled scenes (:mod:`glacierflow.portal.basemap`).
    dem : str or PathLike, optional
        A DEM whose hillshade the map offers as a second base layer.

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
    collection, items = build_collection(meta, products, products_dir=products_dir)

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
            total += add_assets(item, product, item_dir)
        total += add_base_layers(
            collection,
            staged,
            products,
            reference_image=reference_image,
            dem=dem,
            search=[Path(products_dir)] if Path(products_dir).is_dir() else [],
        )
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
