"""ASGI middleware of the portal: fair admission, ETags on JSON, security headers.

Plain ASGI (not Starlette's ``BaseHTTPMiddleware``), so a client's disconnect reaches the
route that serves it and a cancelled request stops its work.

Admission: at most ``max_active`` requests are served at once; the others wait in a first
come, first served queue. A request is refused with 503 (and ``Retry-After``) only when the
queue itself is full (``max_queue`` waiting) or it waited longer than ``queue_timeout_s``. So
a burst of a few hundred concurrent requests is served in turn, not refused, and memory stays
bounded. ``/api/health`` is never queued (monitors see a live server under load).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from typing import Any

__all__ = ["Admission", "JsonETag", "SecurityHeaders"]

Scope = dict[str, Any]
Receive = Any
Send = Any
ASGIApp = Any

#: Paths served without waiting in the admission queue.
UNQUEUED_PATHS = frozenset({"/api/health"})

#: JSON bodies up to this size get an ETag (larger ones are passed through as they are).
ETAG_MAX_BYTES = 8 * 1024 * 1024


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class Admission:
    """Serve at most ``max_active`` requests at once, queue up to ``max_queue`` fairly.

    Parameters
    ----------
    app : ASGI application
    max_active : int
        Requests served at once.
    max_queue : int
        Requests allowed to wait; one more is answered 503 at once.
    queue_timeout_s : float
        Longest wait in the queue, seconds; then 503.
    """

    def __init__(
        self, app: ASGIApp, max_active: int, max_queue: int, queue_timeout_s: float
    ) -> None:
        self.app = app
        self.max_active = int(max_active)
        self.max_queue = int(max_queue)
        self.queue_timeout_s = float(queue_timeout_s)
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def _refuse(self, send: Send, why: str) -> None:
        body = {"status": 503, "error": "service unavailable", "detail": why}
        await _send_json(send, 503, body, [(b"retry-after", b"2")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNQUEUED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_active or self._waiters:
            if len(self._waiters) >= self.max_queue:
                await self._refuse(send, "the server is busy; the request queue is full")
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
            except TimeoutError:
                if not waiter.done():
                    self._waiters.remove(waiter)
                    await self._refuse(send, "the server is busy; waited too long in the queue")
                    return
            except asyncio.CancelledError:
                if waiter.done():  # a slot was handed over: pass it on
                    self._wake_next()
                else:
                    self._waiters.remove(waiter)
                raise
            # the slot (self.active) was taken over from the request that woke us
        else:
            self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._wake_next()

    def _wake_next(self) -> None:
        """Hand this request's slot to the longest waiting one, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1


class JsonETag:
    """An ``ETag`` (hash of the body) on JSON answers, and 304 when the client has it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        wanted = {
            tag.strip()
            for name, value in scope.get("headers", [])
            if name == b"if-none-match"
            for tag in value.decode("latin-1").split(",")
        }
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []
        size = 0
        passing = False

        async def buffered_send(message: dict[str, Any]) -> None:
            nonlocal start, size, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                json_type = headers.get(b"content-type", b"").startswith(b"application/json")
                if message["status"] != 200 or not json_type or b"etag" in headers:
                    passing = True
                    await send(message)
                    return
                start = message
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > ETAG_MAX_BYTES:
                passing = True
                await send(start)
                for chunk in chunks[:-1]:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({**message, "body": chunks[-1]})
                return
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            assert start is not None
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"etag", etag.encode()))
            if etag in wanted or "*" in wanted:
                await send({**start, "status": 304, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffered_send)


class SecurityHeaders:
    """Adds the given headers to every answer that does not set them itself."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
