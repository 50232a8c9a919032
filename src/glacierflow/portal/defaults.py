"""The options of the portal server, their defaults and help, importable without the web stack.

:func:`glacierflow.portal.server.serve` takes these options; ``glacierflow serve`` and
``python -m glacierflow.portal.server`` build their command-line options from them. This module
imports nothing beyond the standard library, so the command line can list the options (and
``--help`` works) without the ``portal`` extra installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "DEPRECATED", "HELP", "TYPES"]

#: The options of :func:`~glacierflow.portal.server.serve` and their defaults (seconds,
#: counts, MB).
DEFAULTS: dict[str, Any] = {
    "header_timeout_s": 10.0,
    "keep_alive_s": 5,
    "graceful_shutdown_s": 3,
    "max_active": 32,
    "max_queue": 1024,
    "queue_timeout_s": 30.0,
    "tile_workers": None,
    "tile_timeout_s": 20.0,
    "cache_dir": None,
    "cache_max_mb": 512.0,
    "server_processes": 1,
    "log_level": "info",
    "forwarded_allow_ips": "127.0.0.1",
    "public_url": None,
}

#: Old option names still taken, by the option they stand for (a one-line note says so).
DEPRECATED: dict[str, str] = {"workers": "server_processes"}

#: Types of the options whose default is None.
TYPES: dict[str, type] = {"tile_workers": int, "cache_dir": Path, "public_url": str}

#: One line of help per option.
HELP: dict[str, str] = {
    "header_timeout_s": "Seconds a client has to send a whole request head (slow or silent "
    "clients are cut off).",
    "keep_alive_s": "Seconds an idle keep-alive connection stays open.",
    "graceful_shutdown_s": "Seconds requests in flight may finish after SIGTERM/SIGINT.",
    "max_active": "Requests served at once; the others wait in a first come, first served queue.",
    "max_queue": "Requests that may wait; beyond it the portal answers 503.",
    "queue_timeout_s": "Seconds a request may wait in the queue before a 503.",
    "tile_workers": "Processes rendering map tiles [default: CPUs, at most 4].",
    "tile_timeout_s": "Seconds a map tile may take to render before it is stopped.",
    "cache_dir": "Folder of the on-disk tile cache [default: $XDG_CACHE_HOME/glacierflow/"
    "portal-tiles, ~/.cache/... without it].",
    "cache_max_mb": "Size of the tile cache, MB.",
    "server_processes": "Server processes sharing the port (uvicorn workers).",
    "log_level": "uvicorn's log level.",
    "forwarded_allow_ips": "Proxies whose X-Forwarded-* headers are trusted (comma-separated "
    "addresses, or *).",
    "public_url": "The portal's public address (https://data.example.org): citations of "
    "datasets without a DOI or landing page point to PUBLIC_URL/datasets/ID.",
}
