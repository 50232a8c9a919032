"""The HTML pages: the searchable list of datasets, a dataset's record page, the API reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from glacierflow import __version__
from glacierflow.portal import raster
from glacierflow.portal.api import ID_PATTERN, get_index, search_query
from glacierflow.portal.meta import is_placeholder
from glacierflow.portal.params import BadParameter
from glacierflow.portal.record import (
    citation_url,
    dataset_record,
    dataset_summary,
    human_size,
)

__all__ = ["pages", "templates"]

TEMPLATES_DIR = Path(__file__).with_name("templates")

#: Datasets per page of the list.
PAGE_SIZE = 20

pages = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.tests["placeholder"] = is_placeholder
templates.env.filters["human_size"] = human_size
templates.env.globals["version"] = __version__


def _coord(value: float | None, positive: str, negative: str) -> str:
    if value is None:
        return "–"
    return f"{abs(value):.4f}° {positive if value >= 0 else negative}"


templates.env.filters["lat"] = lambda v: _coord(v, "N", "S")
templates.env.filters["lon"] = lambda v: _coord(v, "E", "W")

_Text = Annotated[str | None, Query(max_length=200)]


@pages.get("/", response_class=HTMLResponse)
def home(
    request: Request,
    q: _Text = None,
    keyword: _Text = None,
    west: _Text = None,
    south: _Text = None,
    east: _Text = None,
    north: _Text = None,
    start: _Text = None,
    end: _Text = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    """The list of datasets, filtered by the search form."""
    index = get_index(request)
    form = dict(q=q, keyword=keyword, west=west, south=south, east=east, north=north)
    form.update(start=start, end=end)
    corners = [west, south, east, north]
    error, status = None, 200
    total, results = 0, []
    try:
        if any(corners) and not all(corners):
            raise BadParameter("bbox", "give all four of west, south, east and north, or none")
        bbox = ",".join(c.strip() for c in corners) if all(corners) else None  # type: ignore[union-attr]
        interval = f"{start or '..'}/{end or '..'}" if (start or end) else None
        query = search_query(q, keyword, bbox, interval, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        total, collections = index.search(query)
        results = [dataset_summary(c) for c in collections]
    except BadParameter as exc:
        error, status = str(exc), 400
    context = {
        "form": form,
        "results": results,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "error": error,
        "keywords": index.keywords(),
        "searched": any(v for v in form.values()),
        "counts": index.counts(),
    }
    return templates.TemplateResponse(request, "index.html", context, status_code=status)


@pages.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(
    request: Request, dataset_id: Annotated[str, PathParam(pattern=ID_PATTERN)]
) -> HTMLResponse:
    """A dataset's record page with map, year selector, time-series plot, files and citation."""
    index = get_index(request)
    coll = index.collection(dataset_id)
    if coll is None:
        raise HTTPException(404, f"no dataset {dataset_id!r}")
    record = dataset_record(coll, index.items(dataset_id))
    map_config: dict[str, Any] = {
        "dataset": dataset_id,
        "bbox": record["bbox"],
        "point_url": f"/api/datasets/{dataset_id}/point",
        "legend": raster.legend(record["speed_max_m_per_yr"], 6),
        "items": [
            {
                "id": it["id"],
                "label": it["label"],
                "kind": it["kind"],
                "year": it["year"],
                "start": it["start_date"],
                "end": it["end_date"],
                "available": it["available"],
                "problem": it["problem"],
                "tiles": it["tiles"],
                "arrows": it["api_url"] + "/arrows" if it["available"] else None,
                "geometry": it["geometry"],
            }
            for it in record["items"]
        ],
        "base_layers": [
            {
                "key": key,
                "title": title,
                "tiles": f"/api/datasets/{dataset_id}/base/{key}/tiles/{{z}}/{{x}}/{{y}}.png",
            }
            for key, title in (("reference_image", "Reference image"), ("hillshade", "Hillshade"))
            if key in (coll.get("assets") or {})
        ],
    }
    cite_url = citation_url(record, getattr(request.app.state, "public_url", None))
    context = {"d": record, "map_config": map_config, "cite_url": cite_url}
    return templates.TemplateResponse(request, "dataset.html", context)


@pages.get("/api", response_class=HTMLResponse)
def api_reference(request: Request) -> HTMLResponse:
    """A readable reference of the JSON API, generated from the OpenAPI document."""
    spec = request.app.openapi()
    endpoints = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            params = [
                {
                    "name": p.get("name"),
                    "in": p.get("in"),
                    "required": p.get("required", False),
                    "type": _schema_text(p.get("schema", {})),
                    "description": p.get("description") or p.get("schema", {}).get("description"),
                }
                for p in op.get("parameters", [])
            ]
            endpoints.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary"),
                    "description": op.get("description"),
                    "tag": (op.get("tags") or ["other"])[0],
                    "params": params,
                }
            )
    return templates.TemplateResponse(request, "api.html", {"endpoints": endpoints})


def _schema_text(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_schema_text(s) for s in schema["anyOf"] if s.get("type") != "null")
    text = str(schema.get("type", "string"))
    if "enum" in schema:
        text += " (" + ", ".join(map(str, schema["enum"])) + ")"
    bounds = [f"≥ {schema['minimum']}" if "minimum" in schema else None]
    bounds.append(f"≤ {schema['maximum']}" if "maximum" in schema else None)
    bounds.append(f"≤ {schema['maxLength']} chars" if "maxLength" in schema else None)
    extra = ", ".join(b for b in bounds if b)
    return f"{text}, {extra}" if extra else text
