"""The data portal: publish velocity products as a STAC catalog and serve it on the web.

``meta``      the hand-written part of a dataset record (``dataset.toml``)
``discover``  find pair and annual products in a folder and read their facts from the files
``catalog``   build and write the STAC catalog (:func:`publish`)
``index``     an in-memory SQLite index over a catalog, rebuilt when the catalog changes
``record``    display-ready dataset records built from the STAC documents
``raster``    map tiles, legends and point time series read from the published COGs
``files``     safe resolution of download paths inside the catalog
``params``    parsing and checking of query parameters (bounding boxes, time ranges)
``api``       the JSON API and the downloads (FastAPI router)
``pages``     the HTML pages (Jinja templates in ``templates/``, assets in ``static/``)
``app``       the FastAPI application and its limits (:class:`~glacierflow.portal.app.PortalLimits`)
``middleware`` fair admission queue, ETags on JSON, security headers (plain ASGI)
``workers``   tile rendering in killable worker processes (time budget, client gone = stopped)
``tilecache`` the on-disk tile cache, keyed by content (the key is the tile's ETag)
``server``    :func:`glacierflow.portal.server.serve`: uvicorn with timeouts and a quick shutdown

Command line: ``glacierflow publish PRODUCTS_DIR --meta dataset.toml --catalog CATALOG_DIR`` and
``glacierflow serve --catalog CATALOG_DIR [--host 127.0.0.1 --port 8000]``.

Only this package (besides ``scenes`` and ``products``) touches files. The web application is
read-only: it never writes into the catalog, and its index lives in memory.
"""

from __future__ import annotations
