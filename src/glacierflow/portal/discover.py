"""Find velocity products in a folder and read, from the files themselves, what a record needs.

Two kinds of products are recognised:

``pair``
    A folder holding ``velocity.tif`` (written by :func:`glacierflow.products.write_products`),
    usually with ``velocity.nc``, ``quicklook.png`` and ``summary.json`` beside it. Its time frame
    is from the GeoTIFF tags ``ref_time`` to ``sec_time``.
``annual``
    A GeoTIFF named ``v_YYYY.tif`` (bands ``vx``, ``vy``, ``v``, ``v_error``, ``count``), with
    optional sidecars of the same stem (``v_YYYY.nc``, ``.png``, ``.json``). Its time frame is
    what its pairs cover, the tags ``data_start_datetime``/``data_end_datetime`` (written by the
    composites since issue 14); else the tags ``start_datetime``/``end_datetime``; else the
    calendar year.

Other GeoTIFFs are recognised by their band descriptions and tags (a ``v`` band plus
``ref_time``/``sec_time`` is a pair; a ``v`` and a ``count`` band plus a ``year`` tag is annual);
anything else, such as the input scenes, is skipped and reported.

Everything here is computed: bounds and footprint (densified edges reprojected to WGS 84),
projection, grid shape and spacing, per-band statistics, file sizes and SHA-256 checksums.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import CRS
from rasterio.errors import RasterioIOError
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from glacierflow.dates import parse_datetime
from glacierflow.errors import InputError

__all__ = [
    "BandFacts",
    "ProductFacts",
    "find_products",
    "read_product_facts",
    "sha256_multihash",
]

#: Points per edge when reprojecting a grid's outline, so curved edges stay curved.
DENSIFY_PTS = 21

_ANNUAL_RE = re.compile(r"^v_(\d{4})\.tiff?$", re.IGNORECASE)
_SIDE_SUFFIXES = {"netcdf": ".nc", "quicklook": ".png", "summary": ".json"}
_PAIR_SIDECARS = {"netcdf": "velocity.nc", "quicklook": "quicklook.png", "summary": "summary.json"}


@dataclass(frozen=True)
class BandFacts:
    """One band of a product GeoTIFF, with statistics over its valid (finite) pixels."""

    index: int
    name: str
    unit: str | None
    long_name: str | None
    minimum: float | None
    maximum: float | None
    mean: float | None
    stddev: float | None
    valid_percent: float
    percentiles: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class ProductFacts:
    """What the files of one product say about it.

    Attributes
    ----------
    kind : {"pair", "annual"}
    cog : Path
        The velocity GeoTIFF.
    sidecars : dict of str to Path
        Other files of the product by role: ``netcdf``, ``quicklook``, ``summary``.
    start, end : datetime.datetime
        Time frame (UTC): acquisition times of a pair, or the calendar year.
    crs_wkt : str
        The grid's CRS; ``epsg`` is its EPSG code where it has one.
    transform : tuple of float
        Geotransform, GDAL order; ``shape`` is (rows, columns), ``spacing_m`` the pixel size.
    bounds : tuple of float
        (left, bottom, right, top) in the grid's CRS.
    bbox : tuple of float
        (west, south, east, north) in degrees; ``footprint`` is the GeoJSON outline.
    bands : tuple of BandFacts
    tags : dict
        Dataset tags of the GeoTIFF (JSON values decoded).
    year : int or None
        The year of an annual product.
    is_cog : bool
        Whether GDAL reports the GeoTIFF's layout as Cloud-Optimized.
    """

    kind: str
    cog: Path
    sidecars: dict[str, Path]
    start: dt.datetime
    end: dt.datetime
    crs_wkt: str
    epsg: int | None
    transform: tuple[float, ...]
    shape: tuple[int, int]
    spacing_m: float
    bounds: tuple[float, float, float, float]
    bbox: tuple[float, float, float, float]
    footprint: dict[str, Any]
    bands: tuple[BandFacts, ...]
    tags: dict[str, Any]
    year: int | None = None
    is_cog: bool = False

    @property
    def mid(self) -> dt.datetime:
        """Middle of the time frame."""
        return self.start + (self.end - self.start) / 2

    @property
    def band_names(self) -> list[str]:
        """Band descriptions in band order."""
        return [b.name for b in self.bands]

    def band(self, name: str) -> BandFacts | None:
        """The band described ``name``, or None."""
        return next((b for b in self.bands if b.name == name), None)

    @property
    def files(self) -> dict[str, Path]:
        """Every file of the product by role, the GeoTIFF first under ``velocity``."""
        return {"velocity": self.cog, **self.sidecars}


# --------------------------------------------------------------------------------------------
# Finding products
# --------------------------------------------------------------------------------------------


def find_products(
    root: str | PathLike[str], exclude: Iterable[str | PathLike[str]] = ()
) -> tuple[list[ProductFacts], list[tuple[Path, str]]]:
    """Find every pair and annual product under ``root`` and read its facts.

    Parameters
    ----------
    root : str or PathLike
        A folder (searched recursively, hidden entries skipped) or one product GeoTIFF.
    exclude : iterable of path
        Folders not to search (for example a catalog written inside ``root``).

    Returns
    -------
    products : list of ProductFacts
        Sorted by start time, then path.
    skipped : list of (Path, str)
        GeoTIFFs that are not products, with the reason.

    Raises
    ------
    InputError
        If ``root`` does not exist, or a product's file is unreadable or lacks its dates.
    """
    root = Path(root)
    if not root.exists():
        raise InputError("no such products folder; check the path", root)
    excluded = [Path(p).resolve() for p in exclude]
    if root.is_file():
        candidates = [root]
    else:
        candidates = sorted(
            p
            for p in root.rglob("*")
            if p.suffix.lower() in (".tif", ".tiff")
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
            and not any(p.resolve().is_relative_to(ex) for ex in excluded)
        )
    products, skipped = [], []
    for path in candidates:
        if not _in_current_plan(path):
            skipped.append((path, f"pair folder outside the project's plan ({PLAN_NAME})"))
            continue
        facts_or_reason = read_product_facts(path)
        if isinstance(facts_or_reason, str):
            skipped.append((path, facts_or_reason))
        else:
            products.append(facts_or_reason)
    products.sort(key=lambda p: (p.start, str(p.cog)))
    return products, skipped


#: The list of a project's current pairs, written by ``glacierflow run`` in its ``pairs/``
#: folder (:data:`glacierflow.project.PLAN_NAME`); pair folders it does not list are stale.
PLAN_NAME = "plan.json"


def _in_current_plan(cog: Path) -> bool:
    """False for a pair product in ``pairs/ID/`` of a project whose ``pairs/plan.json`` does not
    list ``ID`` (left by an earlier plan, e.g. before ``max_days`` changed)."""
    plan = cog.parent.parent / PLAN_NAME
    if cog.name != "velocity.tif" or not plan.is_file():
        return True
    try:
        listed = json.loads(plan.read_text(encoding="utf-8")).get("pairs")
    except (OSError, ValueError, AttributeError):
        return True
    return not isinstance(listed, list) or cog.parent.name in listed


def _sidecars(cog: Path, kind: str) -> dict[str, Path]:
    if kind == "pair" and cog.name == "velocity.tif":
        names = _PAIR_SIDECARS
    else:
        names = {role: cog.stem + suffix for role, suffix in _SIDE_SUFFIXES.items()}
    return {
        role: cog.with_name(name) for role, name in names.items() if cog.with_name(name).is_file()
    }


# --------------------------------------------------------------------------------------------
# Reading one product
# --------------------------------------------------------------------------------------------


def _tag_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_time(value: Any, what: str, path: Path) -> dt.datetime:
    """An ISO 8601 time as an aware UTC datetime (naive times are taken as UTC)."""
    try:
        return parse_datetime(str(value))
    except InputError as exc:
        raise InputError(f"tag {what}={value!r} is not an ISO 8601 time", path) from exc


def _classify(path: Path, names: list[str], tags: dict[str, Any]) -> tuple[str | None, int | None]:
    """('pair' or 'annual' or None, year) from the file name, band names and tags."""
    match = _ANNUAL_RE.match(path.name)
    if match:
        return "annual", int(match.group(1))
    if "v" not in names:
        return None, None
    if "ref_time" in tags and "sec_time" in tags:
        return "pair", None
    if "count" in names and str(tags.get("year", "")).isdigit():
        return "annual", int(tags["year"])
    return None, None


def read_product_facts(path: str | PathLike[str]) -> ProductFacts | str:
    """Read the facts of one product GeoTIFF, or say why it is not a product.

    Parameters
    ----------
    path : str or PathLike
        A GeoTIFF.

    Returns
    -------
    ProductFacts or str
        The facts, or the reason the file is not a velocity product (a string).

    Raises
    ------
    InputError
        If the file looks like a product but cannot be read, has no CRS, no ``v`` band, or
        lacks its acquisition times.
    """
    path = Path(path)
    try:
        with rasterio.open(path) as src:
            names = [d or f"band{i}" for i, d in enumerate(src.descriptions, start=1)]
            tags = {k: _tag_value(v) for k, v in src.tags().items() if k != "AREA_OR_POINT"}
            kind, year = _classify(path, names, tags)
            if kind is None:
                return "not a velocity product (no 'v' band with pair or annual dates)"
            if "v" not in names:
                raise InputError(
                    f"annual product without a band described 'v' (bands: {names}); write it "
                    "with glacierflow.products.write_cog",
                    path,
                )
            if src.crs is None:
                raise InputError("the product has no CRS; it cannot be placed on a map", path)
            bands = tuple(_band_facts(src, i, name) for i, name in enumerate(names, start=1))
            crs = CRS.from_wkt(src.crs.to_wkt())
            bounds = tuple(float(b) for b in src.bounds)
            transform = tuple(float(c) for c in src.transform.to_gdal())
            shape = (int(src.height), int(src.width))
            spacing = float(math.hypot(src.transform.a, src.transform.d))
            is_cog = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "").upper() == "COG"
    except RasterioIOError as exc:
        raise InputError(f"cannot read the GeoTIFF ({exc}); is it complete?", path) from exc

    if kind == "pair":
        start = _parse_time(tags["ref_time"], "ref_time", path)
        end = _parse_time(tags["sec_time"], "sec_time", path)
    else:
        assert year is not None
        start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
        end = dt.datetime(year, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
        if "start_datetime" in tags and "end_datetime" in tags:
            start = _parse_time(tags["start_datetime"], "start_datetime", path)
            end = _parse_time(tags["end_datetime"], "end_datetime", path)
        if tags.get("data_start_datetime") and tags.get("data_end_datetime"):
            # honest periods: the item's time frame is what its pairs cover, not the calendar
            start = _parse_time(tags["data_start_datetime"], "data_start_datetime", path)
            end = _parse_time(tags["data_end_datetime"], "data_end_datetime", path)
    if end < start:
        raise InputError(f"the product ends ({end}) before it starts ({start})", path)

    west, south, east, north = transform_bounds(
        crs.to_wkt(), "EPSG:4326", *bounds, densify_pts=DENSIFY_PTS
    )
    return ProductFacts(
        kind=kind,
        cog=path,
        sidecars=_sidecars(path, kind),
        start=start,
        end=end,
        crs_wkt=crs.to_wkt(),
        epsg=crs.to_epsg(),
        transform=transform,
        shape=shape,
        spacing_m=spacing,
        bounds=bounds,  # type: ignore[arg-type]
        bbox=(float(west), float(south), float(east), float(north)),
        footprint=_footprint(crs, bounds),  # type: ignore[arg-type]
        bands=bands,
        tags=tags,
        year=year if kind == "annual" else None,
        is_cog=is_cog,
    )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _band_facts(src: rasterio.io.DatasetReader, index: int, name: str) -> BandFacts:
    """Statistics of one band over its finite pixels (nodata and NaN excluded)."""
    data = src.read(index, masked=True).astype(np.float64)
    values = data.compressed()
    values = values[np.isfinite(values)]
    tags = src.tags(index)
    unit = tags.get("units") or src.units[index - 1] or None
    if values.size:
        pct = np.percentile(values, (5, 50, 95))
        stats = dict(
            minimum=_finite(values.min()),
            maximum=_finite(values.max()),
            mean=_finite(values.mean()),
            stddev=_finite(values.std()),
            percentiles={f"p{p}": _finite(q) for p, q in zip((5, 50, 95), pct, strict=True)},
        )
    else:
        stats = dict(minimum=None, maximum=None, mean=None, stddev=None, percentiles={})
    return BandFacts(
        index=index,
        name=name,
        unit=unit,
        long_name=tags.get("long_name"),
        valid_percent=float(100.0 * values.size / data.size) if data.size else 0.0,
        **stats,
    )


def _footprint(crs: CRS, bounds: tuple[float, float, float, float]) -> dict[str, Any]:
    """The grid's outline as a GeoJSON polygon in WGS 84, edges densified before reprojecting."""
    left, bottom, right, top = bounds
    t = np.linspace(0.0, 1.0, DENSIFY_PTS)
    xs = np.concatenate(
        [left + (right - left) * t, np.full_like(t, right), right - (right - left) * t]
        + [np.full_like(t, left)]
    )
    ys = np.concatenate(
        [np.full_like(t, top), top - (top - bottom) * t, np.full_like(t, bottom)]
        + [bottom + (top - bottom) * t]
    )
    lons, lats = warp_transform(crs.to_wkt(), "EPSG:4326", xs.tolist(), ys.tolist())
    ring: list[list[float]] = []
    for lon, lat in zip(lons, lats, strict=True):
        point = [round(float(lon), 7), round(float(lat), 7)]
        if not ring or ring[-1] != point:
            ring.append(point)
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    ring.reverse()  # the walk above is clockwise; GeoJSON wants exterior rings anticlockwise
    return {"type": "Polygon", "coordinates": [ring]}


def sha256_multihash(path: str | PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """The SHA-256 of a file as a hex multihash (``1220`` + digest), as STAC ``file:checksum``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return "1220" + digest.hexdigest()
