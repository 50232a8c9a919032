"""Display-ready dataset and item records, built from the STAC documents and the index rows.

The JSON API and the HTML pages show the same records, so both are built here: the seed's
fields (title, description, grouped keywords, scale, projection, file size, format, spatial
extent, time frame, references, supporting projects, providers) with URLs into this portal.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote, urlsplit

from pyproj import CRS
from pyproj.exceptions import CRSError

from glacierflow.portal.index import parse_time
from glacierflow.portal.meta import KEYWORD_GROUPS, is_placeholder

__all__ = [
    "dataset_record",
    "dataset_summary",
    "human_size",
    "item_record",
    "speed_max",
    "web_url",
]

#: Colour scale top used when a collection does not say (m/yr).
DEFAULT_SPEED_MAX_M_PER_YR = 1000.0


def human_size(n_bytes: int | None) -> str:
    """A file size for people: ``'607 kB'``, ``'2.6 MB'`` (powers of 1000)."""
    if n_bytes is None:
        return "unknown"
    size = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.3g} {unit}"
        size /= 1000
    return f"{n_bytes} B"


@functools.cache
def _crs_name(code: str) -> str:
    try:
        return CRS.from_user_input(code).name
    except CRSError:
        return code


def _date(value: Any) -> str | None:
    when = parse_time(value)
    return None if when is None else when.strftime("%Y-%m-%d")


def web_url(value: Any) -> str | None:
    """``value`` if it is an absolute http(s) URL, else None (never a ``javascript:`` link).

    URLs in a record come from a hand-written ``dataset.toml``; only web addresses become
    links on the pages.
    """
    if not isinstance(value, str) or any(c in value for c in "\x00\r\n\t\\ "):
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return value.strip()


def _with_web_url(entries: Any) -> list[dict[str, Any]]:
    return [{**e, "url": web_url(e.get("url"))} for e in (entries or []) if isinstance(e, dict)]


def _url(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


def speed_max(coll: dict[str, Any]) -> float:
    """Top of the dataset's speed colour scale, m/yr."""
    value = coll.get("glacierflow:speed_max_m_per_yr")
    if value is None:
        try:
            value = coll["renders"]["speed"]["rescale"][0][1]
        except (KeyError, IndexError, TypeError):
            value = DEFAULT_SPEED_MAX_M_PER_YR
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DEFAULT_SPEED_MAX_M_PER_YR
    return value if value > 0 else DEFAULT_SPEED_MAX_M_PER_YR


def _keywords(coll: dict[str, Any]) -> dict[str, list[str]]:
    groups = coll.get("glacierflow:keywords")
    if not isinstance(groups, dict) or not groups:
        return {"keywords": [str(k) for k in coll.get("keywords", [])]}
    order = [g for g in KEYWORD_GROUPS if g in groups] + sorted(set(groups) - set(KEYWORD_GROUPS))
    return {g: [str(k) for k in groups[g]] for g in order if groups[g]}


def dataset_summary(coll: dict[str, Any]) -> dict[str, Any]:
    """The short record of a dataset, for search results."""
    cid = str(coll["id"])
    extent = coll.get("extent", {})
    bbox = (extent.get("spatial", {}).get("bbox") or [[None] * 4])[0]
    interval = (extent.get("temporal", {}).get("interval") or [[None, None]])[0]
    return {
        "id": cid,
        "title": coll.get("title") or cid,
        "description": coll.get("description", ""),
        "keywords": _keywords(coll),
        "bbox": bbox,
        "extent": dict(zip(("west", "south", "east", "north"), bbox, strict=True)),
        "interval": interval,
        "time_frame": {"start": _date(interval[0]), "end": _date(interval[1])},
        "file_size": coll.get("glacierflow:file_size"),
        "file_size_text": human_size(coll.get("glacierflow:file_size")),
        "license": coll.get("glacierflow:license_text") or coll.get("license"),
        "providers": [p.get("name") for p in coll.get("providers") or [] if p.get("name")],
        "url": _url("datasets", cid),
        "api_url": _url("api", "datasets", cid),
    }


def dataset_record(coll: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The full display record of a dataset (the seed's fields) with its items.

    Parameters
    ----------
    coll : dict
        The STAC Collection.
    items : list of dict
        Its index rows (:meth:`glacierflow.portal.index.CatalogIndex.items`).
    """
    record = dataset_summary(coll)
    summaries = coll.get("summaries") or {}
    codes = [str(c) for c in summaries.get("proj:code", [])]
    spacing = [float(s) for s in summaries.get("glacierflow:grid_spacing_m", [])]
    cid = record["id"]
    stac_href = f"{cid}/collection.json"
    sci_doi = coll.get("sci:doi")
    license_url = web_url(
        next((ln.get("href") for ln in coll.get("links", []) if ln.get("rel") == "license"), None)
    )
    record.update(
        {
            "description_paragraphs": [
                p.strip() for p in str(coll.get("description", "")).split("\n\n") if p.strip()
            ],
            "scale": {
                "grid_spacing_m": spacing,
                "text": ", ".join(f"{s:g} m grid" for s in spacing) or "unknown",
            },
            "projection": [{"code": c, "name": _crs_name(c)} for c in codes],
            "formats": list(coll.get("glacierflow:formats", [])),
            "platforms": summaries.get("platform", []),
            "instruments": summaries.get("instruments", []),
            "citation": coll.get("sci:citation"),
            "doi": sci_doi,
            "doi_url": f"https://doi.org/{sci_doi}" if sci_doi else None,
            "references": [
                {
                    "citation": p.get("citation"),
                    "doi": p.get("doi"),
                    "doi_url": f"https://doi.org/{p['doi']}" if p.get("doi") else None,
                }
                for p in coll.get("sci:publications", [])
            ],
            "creators": coll.get("glacierflow:creators", []),
            "publisher": coll.get("glacierflow:publisher"),
            "version": coll.get("glacierflow:version"),
            "accuracy": coll.get("glacierflow:accuracy"),
            "lineage": coll.get("glacierflow:lineage"),
            "contact": coll.get("glacierflow:contact"),
            "projects": _with_web_url(coll.get("glacierflow:projects")),
            "provider_details": _with_web_url(coll.get("providers")),
            "license_url": license_url,
            "placeholders": coll.get("glacierflow:placeholders", []),
            "updated": _date(coll.get("updated")),
            "speed_max_m_per_yr": speed_max(coll),
            "stac_url": "/files/" + quote(stac_href),
            "items": [item_record(cid, row) for row in items],
            "items_total": len(items),
            "items_available": sum(1 for row in items if row["available"]),
            "years": sorted({row["year"] for row in items if row.get("year")}),
        }
    )
    return record


def _item_label(row: dict[str, Any]) -> str:
    if row.get("kind") == "annual" and row.get("year"):
        return str(row["year"])
    start, end = _date(row.get("start")), _date(row.get("end"))
    return f"{start} → {end}" if start and end else str(row["id"])


def item_record(dataset_id: str, row: dict[str, Any]) -> dict[str, Any]:
    """The display record of one item: dates, availability, downloads, tiles."""
    doc = row.get("doc") or {}
    props = doc.get("properties") or {}
    assets = []
    for key, asset in (row.get("assets") or {}).items():
        path = asset.get("path")
        assets.append(
            {
                "key": key,
                "title": asset.get("title"),
                "type": asset.get("type"),
                "roles": asset.get("roles"),
                "name": path.rsplit("/", 1)[-1] if path else None,
                "size": asset.get("size"),
                "size_text": human_size(asset.get("size")),
                "checksum": asset.get("checksum"),
                "available": bool(asset.get("available")),
                "problem": asset.get("problem"),
                "url": "/files/" + quote(path) if path and asset.get("available") else None,
            }
        )
    iid = str(row["id"])
    base = _url("api", "datasets", dataset_id, "items", iid)
    return {
        "id": iid,
        "kind": row.get("kind"),
        "label": _item_label(row),
        "year": row.get("year"),
        "start": row.get("start"),
        "end": row.get("end"),
        "mid": row.get("mid"),
        "start_date": _date(row.get("start")),
        "end_date": _date(row.get("end")),
        "dt_days": props.get("glacierflow:dt_days"),
        "bbox": row.get("bbox"),
        "geometry": doc.get("geometry"),
        "sensor": props.get("glacierflow:sensor"),
        "speed_m_per_yr": props.get("glacierflow:speed_m_per_yr"),
        "available": bool(row.get("available")),
        "problem": row.get("problem"),
        "assets": assets,
        "tiles": base + "/tiles/{z}/{x}/{y}.png" if row.get("available") else None,
        "api_url": base,
        "stac_url": "/files/" + quote(row["href"]) if row.get("href") else None,
    }


def placeholder(value: Any) -> bool:
    """Jinja test: is ``value`` a ``TO BE FILLED`` placeholder."""
    return is_placeholder(value)
