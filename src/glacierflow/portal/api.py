"""The JSON API and the file downloads of the portal (read-only, ``GET``/``HEAD`` only)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from rasterio.errors import RasterioIOError
from starlette.concurrency import run_in_threadpool

from glacierflow.portal import raster
from glacierflow.portal.arrows import flow_arrows
from glacierflow.portal.files import Refused, media_type, resolve_download
from glacierflow.portal.index import CatalogIndex, SearchQuery
from glacierflow.portal.params import BadParameter, check_lon_lat, parse_bbox, parse_interval
from glacierflow.portal.record import dataset_record, dataset_summary, item_record, speed_max
from glacierflow.portal.tilecache import TileCache, tile_key
from glacierflow.portal.workers import RenderTimeout, TilePool, WorkerError

__all__ = ["api", "downloads", "get_index"]

api = APIRouter(prefix="/api")
downloads = APIRouter()

#: Ids of datasets and items: what ``glacierflow publish`` writes, and a little more.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"

DatasetId = Annotated[str, PathParam(pattern=ID_PATTERN, description="Dataset id.")]
ItemId = Annotated[str, PathParam(pattern=ID_PATTERN, description="Item id.")]
TileZoom = Annotated[int, PathParam(ge=0, le=24)]
TileIndex = Annotated[int, PathParam(ge=0)]
#: What a PNG tile route answers (OpenAPI).
_TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}},
    304: {"description": "Not modified"},
}


def get_index(request: Request) -> CatalogIndex:
    """The application's catalog index, refreshed if the catalog changed."""
    index: CatalogIndex = request.app.state.index
    index.refresh()
    return index


def _collection(index: CatalogIndex, dataset_id: str) -> dict[str, Any]:
    coll = index.collection(dataset_id)
    if coll is None:
        raise HTTPException(404, f"no dataset {dataset_id!r}; GET /api/datasets lists them")
    return coll


def search_query(
    q: str | None,
    keyword: str | None,
    bbox: str | None,
    datetime: str | None,
    limit: int,
    offset: int,
) -> SearchQuery:
    """A :class:`SearchQuery` from request parameters (raises :class:`BadParameter`)."""
    start, end = parse_interval(datetime) if datetime else (None, None)
    return SearchQuery(
        text=q or None,
        keyword=keyword or None,
        bbox=parse_bbox(bbox) if bbox else None,
        start=start,
        end=end,
        limit=limit,
        offset=offset,
    )


@api.get("/datasets", summary="List and search datasets", tags=["datasets"])
def list_datasets(
    request: Request,
    q: Annotated[
        str | None, Query(max_length=200, description="Words in title, description, keywords.")
    ] = None,
    keyword: Annotated[str | None, Query(max_length=100, description="An exact keyword.")] = None,
    bbox: Annotated[
        str | None,
        Query(max_length=200, description="west,south,east,north in degrees (WGS 84)."),
    ] = None,
    datetime: Annotated[
        str | None,
        Query(max_length=100, description="start/end (ISO 8601, YYYY-MM-DD or YYYY; '..' open)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    """Datasets whose text, keyword, footprint and time frame match all given conditions."""
    index = get_index(request)
    query = search_query(q, keyword, bbox, datetime, limit, offset)
    total, collections = index.search(query)
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "datasets": [dataset_summary(c) for c in collections],
    }


@api.get("/datasets/{dataset_id}", summary="One dataset's full record", tags=["datasets"])
def get_dataset(request: Request, dataset_id: DatasetId) -> dict[str, Any]:
    """The dataset's display record (the seed's fields, items, URLs) and its STAC Collection."""
    index = get_index(request)
    coll = _collection(index, dataset_id)
    record = dataset_record(coll, index.items(dataset_id))
    return {**record, "stac": coll}


@api.get("/datasets/{dataset_id}/items", summary="A dataset's items", tags=["items"])
def get_items(request: Request, dataset_id: DatasetId) -> dict[str, Any]:
    """Every item (product) of the dataset in time order, with availability and downloads."""
    index = get_index(request)
    _collection(index, dataset_id)
    rows = index.items(dataset_id)
    return {"dataset": dataset_id, "items": [item_record(dataset_id, r) for r in rows]}


@api.get("/datasets/{dataset_id}/items/{item_id}", summary="One item", tags=["items"])
def get_item(request: Request, dataset_id: DatasetId, item_id: ItemId) -> dict[str, Any]:
    """One item's display record and its STAC Item."""
    index = get_index(request)
    _collection(index, dataset_id)
    rows = index.items(dataset_id, item_id)
    if not rows:
        raise HTTPException(404, f"dataset {dataset_id!r} has no item {item_id!r}")
    return {**item_record(dataset_id, rows[0]), "stac": rows[0]["doc"]}


@api.get(
    "/datasets/{dataset_id}/point",
    summary="Velocity time series at a point",
    tags=["items"],
    response_model=None,
)
def point_series(
    request: Request,
    dataset_id: DatasetId,
    lon: Annotated[float, Query(description="Longitude, degrees east (WGS 84).")],
    lat: Annotated[float, Query(description="Latitude, degrees north (WGS 84).")],
    format: Annotated[Literal["json", "csv"], Query(description="Answer format.")] = "json",
) -> dict[str, Any] | Response:
    """Speed ``v`` (and ``vx``, ``vy`` and the errors where present), m/yr, at a point.

    One entry per available item whose grid holds the point, sorted by mid-date; values are
    null where the product has no valid measurement. Items whose grid does not hold the point
    are left out.
    """
    check_lon_lat(lon, lat)
    index = get_index(request)
    _collection(index, dataset_id)
    series, unavailable = [], []
    for row in index.items(dataset_id):
        if not row["available"] or not row["velocity_path"]:
            unavailable.append(row["id"])
            continue
        try:
            values = raster.sample_point(index.root / row["velocity_path"], lon, lat)
        except Exception:  # noqa: BLE001 - a file broken since indexing: report, do not fail
            unavailable.append(row["id"])
            continue
        if values is None:
            continue
        record = item_record(dataset_id, row)
        series.append(
            {
                "item_id": row["id"],
                "label": record["label"],
                "kind": row["kind"],
                "start": row["start"],
                "end": row["end"],
                "mid": row["mid"],
                **{name: values.get(name) for name in raster.SAMPLED_BANDS},
            }
        )
    series.sort(key=lambda s: s["mid"] or "")
    if format == "csv":
        buf = io.StringIO()
        fields = ["item_id", "start", "end", "mid", *raster.SAMPLED_BANDS]
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(series)
        name = f"{dataset_id}_{lat:.5f}_{lon:.5f}.csv"
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return {
        "dataset": dataset_id,
        "lon": lon,
        "lat": lat,
        "units": "m/yr",
        "series": series,
        "unavailable_items": unavailable,
    }


@api.get(
    "/datasets/{dataset_id}/items/{item_id}/tiles/{z}/{x}/{y}.png",
    summary="Map tile of speed",
    tags=["map"],
    response_class=Response,
    responses=_TILE_RESPONSES,
)
async def tile(
    request: Request,
    dataset_id: DatasetId,
    item_id: ItemId,
    z: TileZoom,
    x: TileIndex,
    y: TileIndex,
) -> Response:
    """A 256 x 256 PNG tile (Web Mercator) of speed on the dataset's fixed viridis scale.

    Transparent where there is no data or outside the product's grid. Tiles carry an
    ``ETag`` (a hash of the product file's identity and the tile's address) and answer
    ``304`` to a matching ``If-None-Match``; rendered tiles are cached on the server's disk.
    A tile that takes longer than the server's time budget answers 503; a tile whose client
    has gone is not finished.
    """
    _check_tile_address(z, x, y)
    path, band, vmax, key = await run_in_threadpool(
        _tile_source, request, dataset_id, item_id, (z, x, y)
    )
    return await _tile_response(
        request, key, lambda: _render_or_stop(request, path, band, (z, x, y), vmax)
    )


def _check_tile_address(z: int, x: int, y: int) -> None:
    if x >= 2**z or y >= 2**z:
        raise BadParameter("x/y", f"tile column and row must be below 2**z = {2**z}")


async def _tile_response(
    request: Request, key: str, render: Callable[[], Awaitable[bytes | None]]
) -> Response:
    """A tile as PNG: ``304`` to a matching ``If-None-Match``, else from the tile cache, else
    rendered (transparent when ``render`` gives None) and cached under ``key``."""
    etag = f'"{key}"'
    headers = {"Cache-Control": "public, max-age=300", "ETag": etag}
    if etag in _if_none_match(request):
        return Response(status_code=304, headers=headers)
    cache: TileCache = request.app.state.tile_cache
    png = await run_in_threadpool(cache.get, key)
    if png is None:
        png = await render()
        png = png if png is not None else raster.transparent_tile()
        await run_in_threadpool(cache.put, key, png)
    return Response(png, media_type="image/png", headers=headers)


def _if_none_match(request: Request) -> set[str]:
    return {t.strip() for t in request.headers.get("if-none-match", "").split(",") if t.strip()}


def _tile_source(
    request: Request, dataset_id: str, item_id: str, zxy: tuple[int, int, int]
) -> tuple[Path, int, float, str]:
    """The GeoTIFF, its ``v`` band, the colour scale top and the cache key of a tile."""
    index = get_index(request)
    coll = _collection(index, dataset_id)
    rows = index.items(dataset_id, item_id)
    if not rows:
        raise HTTPException(404, f"dataset {dataset_id!r} has no item {item_id!r}")
    row = rows[0]
    if not row["available"] or not row["velocity_path"]:
        raise HTTPException(404, f"item {item_id!r} is unavailable: {row['problem']}")
    band = row["bands"].index("v") + 1
    path = index.root / row["velocity_path"]
    vmax = speed_max(coll)
    checksum = (row.get("assets") or {}).get("velocity", {}).get("checksum")
    try:
        key = tile_key(path, checksum, band, zxy, vmax)
    except OSError:
        raise HTTPException(404, f"item {item_id!r}: the GeoTIFF is gone") from None
    return path, band, vmax, key


async def _render_or_stop(
    request: Request,
    path: Path,
    band: int,
    zxy: tuple[int, int, int],
    vmax: float,
    kind: str = "speed",
) -> bytes | None:
    """Render in a worker process; stop it when the client disconnects (or time runs out)."""
    pool: TilePool = request.app.state.tile_pool
    z, x, y = zxy
    args = (str(path), band, z, x, y, vmax) if kind == "speed" else (str(path), z, x, y)
    render = asyncio.create_task(pool.render(*args, kind=kind))
    gone = asyncio.create_task(_disconnected(request))
    try:
        await asyncio.wait({render, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (render, gone):
            if not task.done():
                task.cancel()
        await asyncio.gather(render, gone, return_exceptions=True)
    if not render.done() or render.cancelled():
        # the client left: nothing to answer (the worker was killed)
        raise HTTPException(499, "client closed the request")
    try:
        return render.result()
    except RenderTimeout as exc:
        raise HTTPException(
            503, f"{exc}; try a closer zoom", headers={"Retry-After": "5"}
        ) from None
    except WorkerError as exc:
        raise HTTPException(404, f"tile cannot be read ({exc})") from None


async def _disconnected(request: Request) -> None:
    """Returns when the client has closed the connection."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@api.get(
    "/datasets/{dataset_id}/items/{item_id}/arrows",
    summary="Flow direction (GeoJSON)",
    tags=["map"],
    response_model=None,
)
def get_arrows(request: Request, dataset_id: DatasetId, item_id: ItemId) -> Response:
    """Flow vectors on valid nodes of the item, as GeoJSON points (``v`` m/yr, ``bearing``).

    The grid is read coarsened to at most 160 nodes on a side; only nodes whose speed exceeds
    twice its error are kept. ``bearing`` is the direction of flow, degrees clockwise from
    true north.
    """
    index = get_index(request)
    _collection(index, dataset_id)
    rows = index.items(dataset_id, item_id)
    if not rows:
        raise HTTPException(404, f"dataset {dataset_id!r} has no item {item_id!r}")
    if not rows[0]["available"] or not rows[0]["velocity_path"]:
        raise HTTPException(404, f"item {item_id!r} is unavailable: {rows[0]['problem']}")
    try:
        body = flow_arrows(index.root / rows[0]["velocity_path"])
    except (OSError, RasterioIOError) as exc:
        raise HTTPException(404, f"item {item_id!r}: the GeoTIFF cannot be read ({exc})") from None
    return JSONResponse(body, media_type="application/geo+json")


BaseLayer = Annotated[Literal["reference_image", "hillshade"], PathParam(description="Base layer.")]


@api.get(
    "/datasets/{dataset_id}/base/{layer}/tiles/{z}/{x}/{y}.png",
    summary="Map tile of a base layer",
    tags=["map"],
    response_class=Response,
    responses=_TILE_RESPONSES,
)
async def base_tile(
    request: Request,
    dataset_id: DatasetId,
    layer: BaseLayer,
    z: TileZoom,
    x: TileIndex,
    y: TileIndex,
) -> Response:
    """A 256 x 256 greyscale PNG tile of the dataset's reference image or hillshade.

    Transparent outside the layer; 404 when the dataset was published without that layer.
    Cached and answered with ``ETag``/``304`` like the speed tiles.
    """
    _check_tile_address(z, x, y)
    index = await run_in_threadpool(get_index, request)
    _collection(index, dataset_id)
    found = await run_in_threadpool(index.collection_asset, dataset_id, layer)
    if found is None:
        raise HTTPException(404, f"dataset {dataset_id!r} has no {layer} layer")
    path, checksum = found
    key = tile_key(path, checksum, 1, (z, x, y), 0.0)
    return await _tile_response(
        request, key, lambda: _render_or_stop(request, path, 0, (z, x, y), 0.0, kind="grey")
    )


@api.get("/datasets/{dataset_id}/legend", summary="Speed colour scale", tags=["map"])
def get_legend(
    request: Request, dataset_id: DatasetId, stops: Annotated[int, Query(ge=2, le=256)] = 11
) -> dict[str, Any]:
    """The dataset's fixed speed scale as (value, colour) stops, plus the colour bar's URL."""
    coll = _collection(get_index(request), dataset_id)
    return {**raster.legend(speed_max(coll), stops), "image": "/api/legend.png"}


@api.get(
    "/legend.png",
    summary="Colour bar",
    tags=["map"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_legend_png() -> Response:
    """The viridis colour bar, 0 on the left to the scale's maximum on the right."""
    return Response(raster.legend_png(), media_type="image/png")


@api.get("/keywords", summary="All keywords", tags=["datasets"])
def get_keywords(request: Request) -> dict[str, Any]:
    """Every keyword with its group and the number of datasets that have it."""
    return {"keywords": get_index(request).keywords()}


@api.get("/health", summary="Service status", tags=["service"])
def health(request: Request) -> dict[str, Any]:
    """Counts of datasets and items, problems found in the catalog, and when it was indexed."""
    index = get_index(request)
    return {
        "status": "ok",
        **index.counts(),
        "indexed_at": index.built_at.isoformat() if index.built_at else None,
        "problems": index.problems,
    }


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------

#: Longest number accepted in a Range header (10**18 bytes is an exabyte).
MAX_RANGE_DIGITS = 18

_RANGE_RE = re.compile(r"^bytes=\s*(\d*-\d*)(\s*,\s*\d*-\d*){0,15}\s*$")


def _check_range(header: str, size: int) -> JSONResponse | None:
    """A JSON 400/416 answer for a malformed or unsatisfiable Range header, else None."""
    if not _RANGE_RE.match(header):
        return JSONResponse(
            {"status": 400, "error": "bad request", "detail": "malformed Range header"}, 400
        )
    satisfiable = False
    for spec in header.split("=", 1)[1].split(","):
        first, last = (s.strip() for s in spec.split("-"))
        if len(first) > MAX_RANGE_DIGITS or len(last) > MAX_RANGE_DIGITS:
            # beyond any file (and beyond what int() parses quickly): not satisfiable
            return JSONResponse(
                {"status": 416, "error": "range not satisfiable", "detail": "range too large"},
                416,
                headers={"Content-Range": f"bytes */{size}"},
            )
        if not first and not last:
            return JSONResponse(
                {"status": 400, "error": "bad request", "detail": "malformed Range header"}, 400
            )
        if first and last and int(last) < int(first):
            return JSONResponse(
                {"status": 400, "error": "bad request", "detail": "range end before its start"},
                400,
            )
        if (first and int(first) < size) or (not first and int(last) > 0 and size > 0):
            satisfiable = True
    if not satisfiable:
        return JSONResponse(
            {"status": 416, "error": "range not satisfiable", "detail": f"file has {size} bytes"},
            416,
            headers={"Content-Range": f"bytes */{size}"},
        )
    return None


@downloads.api_route(
    "/files/{path:path}",
    methods=["GET", "HEAD"],
    summary="Download a file of the catalog",
    tags=["downloads"],
    response_class=FileResponse,
)
def download(request: Request, path: str) -> Response:
    """Any file inside the catalog (STAC JSON, GeoTIFF, NetCDF, PNG), with HTTP range support.

    Paths leaving the catalog (``..``, absolute, encoded, hidden, or through symbolic links)
    are refused.
    """
    index: CatalogIndex = request.app.state.index
    try:
        real = resolve_download(index.root, path)
    except Refused as exc:
        raise HTTPException(exc.status, exc.reason) from None
    range_header = request.headers.get("range")
    if range_header is not None:
        refusal = _check_range(range_header, real.stat().st_size)
        if refusal is not None:
            return refusal
    rel = real.relative_to(index.root).as_posix()
    kind = index.media_types.get(rel) or media_type(real)  # as the STAC record says, if it does
    inline = kind.startswith(("application/json", "image/png", "text/", "application/geo+json"))
    return FileResponse(
        real,
        media_type=kind,
        filename=real.name,
        content_disposition_type="inline" if inline else "attachment",
    )
