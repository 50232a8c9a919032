"""Run the portal as a service: uvicorn with timeouts, a request queue and a quick shutdown.

What protects the server (numbers are the defaults of :func:`serve`):

- **Silent and slow clients.** uvicorn's own keep-alive timeout only starts after a first
  answer, so a socket that connects and sends nothing, or sends half a request head a byte at
  a time (slowloris), would otherwise stay open for ever. :class:`GuardedH11Protocol` gives
  every request head a deadline (``header_timeout_s`` = 10 s, counted from the connection or
  from the end of the previous answer, not reset by each byte): a head not complete by then
  closes the connection. Idle keep-alive connections close after ``keep_alive_s`` = 5 s, and a
  request head is at most 64 kB (h11's limit). Open sockets cost a file descriptor, not a
  slot: there is no connection limit that a few idle sockets could use up.
- **Bursts.** uvicorn's ``limit_concurrency`` refuses with 503 as soon as the limit is
  reached, counting idle connections. It is not used; instead at most ``max_active`` = 32
  requests are served at once and the others wait in a first come, first served queue
  (:class:`glacierflow.portal.middleware.Admission`); 503 only when ``max_queue`` = 1024
  requests already wait or one waited ``queue_timeout_s`` = 30 s.
- **Slow work.** Map tiles render in ``tile_workers`` processes with a time budget
  (``tile_timeout_s`` = 20 s); a render whose client disconnects or whose time is up is killed
  (:mod:`glacierflow.portal.workers`). Tiles are cached on disk (``cache_dir``).
- **Stopping.** SIGTERM or SIGINT closes the listening socket and idle connections at once,
  lets requests in flight finish for ``graceful_shutdown_s`` = 3 s, then cancels them and
  kills the tile workers: the process exits within about 4 s.

``python -m glacierflow.portal.server --help`` lists every option; ``glacierflow serve`` runs
:func:`serve` with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from glacierflow.portal.app import PortalLimits, create_app
from glacierflow.portal.defaults import DEFAULTS, DEPRECATED, HELP, TYPES

__all__ = ["DEFAULTS", "GuardedH11Protocol", "app_from_environment", "main", "serve"]

log = logging.getLogger(__name__)

#: Largest request head, bytes.
MAX_HEAD_BYTES = 64 * 1024

_ENV = "GLACIERFLOW_PORTAL_CONFIG"
_LIMIT_KEYS = (
    "max_active",
    "max_queue",
    "queue_timeout_s",
    "tile_workers",
    "tile_timeout_s",
    "cache_dir",
    "cache_max_mb",
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head.

    The deadline (``HEADER_TIMEOUT_S``, set by :func:`serve`) starts when the connection opens
    and again when an answer is complete; if by then no whole request head has arrived, the
    connection is closed. Bytes trickling in do not extend it.
    """

    HEADER_TIMEOUT_S: float = DEFAULTS["header_timeout_s"]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        if not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.HEADER_TIMEOUT_S, self._head_overdue)

    def _disarm_head_deadline(self) -> None:
        handle = getattr(self, "_head_deadline", None)
        if handle is not None:
            handle.cancel()
            self._head_deadline = None

    def _head_overdue(self) -> None:
        self._head_deadline = None
        waiting_for_head = self.conn.their_state is h11.IDLE and (
            self.cycle is None or self.cycle.response_complete
        )
        if waiting_for_head and not self.transport.is_closing():
            self.transport.close()


def _config(catalog_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Every option with its default filled in, as JSON values (paths as strings)."""
    options = dict(options)
    for old, new in DEPRECATED.items():
        if old in options:
            warnings.warn(f"serve option {old!r} is now {new!r}", DeprecationWarning, stacklevel=3)
            options.setdefault(new, options.pop(old))
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown serve options: {', '.join(sorted(unknown))}")
    config = {"catalog_dir": str(catalog_dir), **DEFAULTS, **options}
    # The configuration travels to the server processes as JSON: a folder is its path string.
    return {k: str(v) if isinstance(v, PathLike) else v for k, v in config.items()}


def _limits(config: dict[str, Any]) -> PortalLimits:
    return PortalLimits(**{key: config[key] for key in _LIMIT_KEYS})


def app_from_environment() -> Any:
    """The application described by ``$GLACIERFLOW_PORTAL_CONFIG`` (for worker processes)."""
    config = json.loads(os.environ[_ENV])
    GuardedH11Protocol.HEADER_TIMEOUT_S = float(config["header_timeout_s"])
    return create_app(
        config["catalog_dir"], limits=_limits(config), public_url=config["public_url"]
    )


def serve(catalog_dir: Path, host: str, port: int, **options: Any) -> None:
    """Run the portal over ``catalog_dir`` until SIGTERM or SIGINT.

    Parameters
    ----------
    catalog_dir : Path
        A catalog written by ``glacierflow publish``.
    host : str
        Address to listen on (``127.0.0.1``: this machine only, e.g. behind a reverse proxy).
    port : int
        TCP port.
    **options
        Any of :data:`DEFAULTS`: ``header_timeout_s`` (s), ``keep_alive_s`` (s),
        ``graceful_shutdown_s`` (s), ``max_active``, ``max_queue``, ``queue_timeout_s`` (s),
        ``tile_workers``, ``tile_timeout_s`` (s), ``cache_dir``, ``cache_max_mb`` (MB),
        ``server_processes`` (server processes sharing the port; ``workers`` is its old,
        deprecated name), ``log_level``,
        ``forwarded_allow_ips`` (proxies whose ``X-Forwarded-*`` headers are trusted),
        ``public_url`` (the portal's public address, e.g. ``https://data.example.org``: citations
        of datasets without a DOI or landing page point to ``PUBLIC_URL/datasets/ID``).

    Raises
    ------
    glacierflow.errors.GlacierflowError
        When ``catalog_dir`` holds no catalog.
    """
    import uvicorn

    config = _config(Path(catalog_dir), options)
    # Check the catalog here, so a bad folder is one error line before anything listens.
    create_app(
        catalog_dir,
        limits=_limits({**config, "tile_workers": 1}),
        public_url=config["public_url"],
    )
    GuardedH11Protocol.HEADER_TIMEOUT_S = float(config["header_timeout_s"])
    os.environ[_ENV] = json.dumps(config)
    uvicorn.run(
        "glacierflow.portal.server:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=int(config["server_processes"]),
        http=GuardedH11Protocol,
        log_level=config["log_level"],
        timeout_keep_alive=int(config["keep_alive_s"]),
        timeout_graceful_shutdown=int(config["graceful_shutdown_s"]),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        forwarded_allow_ips=config["forwarded_allow_ips"],
        lifespan="on",
    )


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - tested as a process
    """``python -m glacierflow.portal.server --catalog DIR [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m glacierflow.portal.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--catalog", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=8000, type=int)
    for key, default in DEFAULTS.items():
        kind = type(default) if default is not None else TYPES[key]
        parser.add_argument(
            "--" + key.replace("_", "-"), dest=key, type=kind, default=default, help=HELP[key]
        )
    for old, new in DEPRECATED.items():  # old names, hidden from --help
        parser.add_argument(
            "--" + old.replace("_", "-"), dest=new, type=int, help=argparse.SUPPRESS
        )
    args = vars(parser.parse_args(argv))
    catalog, host, port = args.pop("catalog"), args.pop("host"), args.pop("port")
    if args["tile_workers"] is not None:
        args["tile_workers"] = int(args["tile_workers"])
    from glacierflow.errors import GlacierflowError

    try:
        serve(catalog, host, port, **args)
    except GlacierflowError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":  # pragma: no cover
    main()
