"""The portal's web application: :func:`create_app` builds it, :func:`serve` runs it.

Read-only by construction: every route is ``GET`` (or ``HEAD`` for downloads), the index lives
in memory, and nothing is written under the catalog. Errors are JSON for ``/api`` and
``/files`` (``{"status", "error", "detail"}``, never a traceback) and HTML for pages; an
unexpected exception is logged and answered with 500, and the server keeps running.
"""

from __future__ import annotations

import logging
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
from glacierflow.portal.pages import pages, templates
from glacierflow.portal.params import BadParameter

__all__ = ["create_app", "serve"]

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

_REASONS = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    416: "range not satisfiable",
    422: "invalid parameter",
    500: "internal error",
}


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/files/", "/static/")) or path == "/openapi.json"


def _error(request: Request, status: int, detail: Any) -> Response:
    if _wants_json(request):
        body = {"status": status, "error": _REASONS.get(status, "error"), "detail": detail}
        return JSONResponse(body, status_code=status)
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "detail": detail}, status_code=status
    )


def create_app(catalog_dir: str | PathLike[str], check_interval_s: float = 1.0) -> FastAPI:
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
    app = FastAPI(
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
        return _error(request, exc.status_code, exc.detail)

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

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app


def serve(
    catalog_dir: str | PathLike[str], host: str = "127.0.0.1", port: int = 8000
) -> None:  # pragma: no cover - runs until stopped; tested through a real process
    """Run the portal with uvicorn until interrupted.

    Parameters
    ----------
    catalog_dir : str or PathLike
        A catalog written by ``glacierflow publish``.
    host : str
        Address to listen on; the default answers this machine only.
    port : int
        TCP port.
    """
    import uvicorn

    app = create_app(catalog_dir)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        limit_concurrency=64,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
