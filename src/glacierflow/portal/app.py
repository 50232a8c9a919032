"""The portal's web application: :func:`create_app` builds it (:mod:`.server` runs it).

Read-only by construction: every route is ``GET`` (or ``HEAD`` for downloads), the index lives
in memory, and nothing is written under the catalog. Errors are JSON for ``/api`` and
``/files`` (``{"status", "error", "detail"}``, never a traceback) and HTML for pages; an
unexpected exception is logged and answered with 500, and the server keeps running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from os import PathLike
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from glacierflow import __version__
from glacierflow.portal.api import api, downloads
from glacierflow.portal.index import CatalogIndex
from glacierflow.portal.middleware import Admission, JsonETag, SecurityHeaders
from glacierflow.portal.pages import pages, templates
from glacierflow.portal.params import BadParameter
from glacierflow.portal.tilecache import TileCache, default_cache_dir
from glacierflow.portal.workers import TilePool

__all__ = ["PortalLimits", "create_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")

#: Security headers on every answer. The pages load scripts, styles and images from this
#: server only (Leaflet is bundled), so the policy can forbid everything else.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
}


class PortalLimits:
    """How much work the application takes on at once, and for how long.

    Parameters
    ----------
    max_active : int
        Requests served at once; more wait in a fair queue.
    max_queue : int
        Requests allowed to wait; beyond, 503 at once.
    queue_timeout_s : float
        Longest wait in the queue, seconds (then 503).
    tile_workers : int or None
        Processes rendering map tiles (default: the CPUs, at most 4).
    tile_timeout_s : float
        Time budget of one tile, seconds; a render still running then is stopped (503).
    cache_dir : str or PathLike or None
        Folder of the tile cache (default :func:`.tilecache.default_cache_dir`).
    cache_max_mb : float
        Size limit of the tile cache, MB.
    """

    def __init__(
        self,
        max_active: int = 32,
        max_queue: int = 1024,
        queue_timeout_s: float = 30.0,
        tile_workers: int | None = None,
        tile_timeout_s: float = 20.0,
        cache_dir: str | PathLike[str] | None = None,
        cache_max_mb: float = 512.0,
    ) -> None:
        self.max_active = int(max_active)
        self.max_queue = int(max_queue)
        self.queue_timeout_s = float(queue_timeout_s)
        self.tile_workers = int(tile_workers or min(4, os.cpu_count() or 1))
        self.tile_timeout_s = float(tile_timeout_s)
        self.cache_dir = cache_dir
        self.cache_max_mb = float(cache_max_mb)


_REASONS = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    416: "range not satisfiable",
    422: "invalid parameter",
    500: "internal error",
    503: "service unavailable",
}


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/files/", "/static/")) or path == "/openapi.json"


def _error(
    request: Request, status: int, detail: Any, headers: dict[str, str] | None = None
) -> Response:
    if _wants_json(request):
        body = {"status": status, "error": _REASONS.get(status, "error"), "detail": detail}
        return JSONResponse(body, status_code=status, headers=headers)
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "detail": detail},
        status_code=status,
        headers=headers,
    )


def create_app(
    catalog_dir: str | PathLike[str],
    check_interval_s: float = 1.0,
    limits: PortalLimits | None = None,
) -> FastAPI:
    """The portal application over the catalog in ``catalog_dir``.

    Parameters
    ----------
    catalog_dir : str or PathLike
        A catalog written by ``glacierflow publish``.
    check_interval_s : float
        Least time between two looks at the catalog for changes (the index is rebuilt when
        the catalog's files change).

    Returns
    -------
    fastapi.FastAPI
    """
    limits = limits or PortalLimits()
    cache_dir = limits.cache_dir or default_cache_dir()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.tile_pool = TilePool(limits.tile_workers, limits.tile_timeout_s)
        await app.state.tile_pool.start()
        app.state.tile_cache = TileCache(cache_dir, limits.cache_max_mb)
        try:
            yield
        finally:
            app.state.tile_pool.close()

    app = FastAPI(
        lifespan=lifespan,
        title="glacierflow data portal",
        version=__version__,
        description=(
            "Search, inspect and download glacier surface velocity datasets published with "
            "glacierflow as a STAC catalog. All endpoints are read-only."
        ),
        docs_url=None,  # Swagger UI and ReDoc load from CDNs; /api is an offline reference
        redoc_url=None,
    )
    app.state.index = CatalogIndex(catalog_dir, check_interval_s=check_interval_s)
    app.include_router(api)
    app.include_router(downloads)
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        detail = [
            {
                "parameter": ".".join(str(p) for p in err.get("loc", ())[1:]) or "request",
                "problem": str(err.get("msg", "invalid value"))[:200],
            }
            for err in exc.errors()[:10]
        ]
        status = 404 if request.url.path.startswith("/datasets/") else 422
        return _error(request, status, detail)

    @app.exception_handler(BadParameter)
    async def bad_parameter(request: Request, exc: BadParameter) -> Response:
        return _error(request, 400, [{"parameter": exc.name, "problem": exc.problem}])

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return _error(request, 500, "internal error; the server log has the details")

    # The last added is the outermost: headers on every answer, then admission, then ETags.
    app.add_middleware(JsonETag)
    app.add_middleware(
        Admission,
        max_active=limits.max_active,
        max_queue=limits.max_queue,
        queue_timeout_s=limits.queue_timeout_s,
    )
    app.add_middleware(SecurityHeaders, headers=SECURITY_HEADERS)
    return app
