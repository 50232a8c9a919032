"""The STAC Items of a dataset: one per product, with its files copied in as assets.

Each Item carries what the product's file says of itself (time span, footprint, projection,
sensor, speed statistics, the settings that made it) through STAC core and the projection,
raster and file extensions; fields STAC has no name for are namespaced ``glacierflow:``.
Velocity GeoTIFFs are published as Cloud-Optimized GeoTIFFs with overviews.
:mod:`glacierflow.portal.catalog` puts the Items into the dataset's Collection.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pystac
import rasterio
import rasterio.shutil
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension
from pystac.extensions.raster import Statistics as RasterStatistics

from glacierflow.atomic import atomic_write
from glacierflow.errors import InputError
from glacierflow.portal.discover import ProductFacts, sha256_multihash

__all__ = [
    "ASSET_INFO",
    "COG_BLOCK_PX",
    "add_assets",
    "asset_info",
    "iso_z",
    "item_ids",
    "stac_item",
]

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


_SAFE_RE = re.compile(r"[^a-z0-9_-]+")


def iso_z(when: dt.datetime) -> str:
    """An aware time as ISO 8601 in UTC with a ``Z`` (``2016-07-18T20:37:06Z``), as STAC has it."""
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


def item_ids(products: Sequence[ProductFacts]) -> list[str]:
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


def stac_item(product: ProductFacts, item_id: str) -> pystac.Item:
    """A STAC Item for one product; assets are added when the files are copied."""
    tags = product.tags
    properties: dict[str, Any] = {
        "title": (
            f"Velocity {product.year}"
            if product.kind == "annual"
            else f"Velocity {product.start:%Y-%m-%d} to {product.end:%Y-%m-%d}"
        ),
        "glacierflow:kind": product.kind,
        "glacierflow:mid_datetime": iso_z(product.mid),
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


def asset_info(product: ProductFacts, role: str) -> dict[str, Any]:
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


def add_assets(item: pystac.Item, product: ProductFacts, item_dir: Path) -> int:
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
        info = asset_info(product, role)
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
