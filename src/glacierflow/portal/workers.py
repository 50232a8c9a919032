"""Tile rendering in worker processes that can be stopped: client gone or time up = work stopped.

GDAL cannot be interrupted inside a read, and a thread cannot be killed, so a tile that reads
for a minute would keep a core busy for a minute after its client left. Here each render runs
in a worker process of a small pool; when the request is cancelled (the client disconnected,
the server shuts down) or exceeds its time budget, that worker is killed (SIGKILL), which frees
its CPU and memory at once; a fresh worker takes its place when the next tile needs one.

Workers die with the server: they set a parent-death signal (Linux) and exit when the pipe to
the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections import deque
from typing import Any

__all__ = ["RenderTimeout", "TilePool", "WorkerError"]

#: GDAL block cache of each worker, MB (bounds a worker's memory).
WORKER_GDAL_CACHE_MB = 64


class RenderTimeout(Exception):
    """A render exceeded its time budget (its worker was killed)."""


class WorkerError(Exception):
    """A render failed in its worker; the message is the worker's one-line error."""


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """Render jobs from ``conn`` until it closes."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops workers itself
    os.environ.setdefault("GDAL_CACHEMAX", str(WORKER_GDAL_CACHE_MB))
    from glacierflow.portal import raster

    try:
        conn.send(("ready", None))
    except (BrokenPipeError, OSError):
        return
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result: tuple[str, Any] = ("ok", raster.render_tile(*args))
        except Exception as exc:  # noqa: BLE001 - reported to the server as one line
            result = ("error", f"{type(exc).__name__}: {exc}"[:500])
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx: multiprocessing.context.BaseContext) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=2)


class TilePool:
    """A fixed number of render worker processes, handed out first come, first served.

    Parameters
    ----------
    size : int
        Number of worker processes (tiles rendered at once).
    timeout_s : float
        Time budget of one render, seconds; a render still running then is killed.
    """

    def __init__(self, size: int, timeout_s: float) -> None:
        if size < 1:
            raise ValueError(f"the tile pool needs at least one worker, not {size}")
        self.size = int(size)
        self.timeout_s = float(timeout_s)
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: deque[_Worker] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._all: set[_Worker] = set()
        self._closed = False

    async def start(self, timeout_s: float = 120.0) -> None:
        """Start the workers and wait until each has imported GDAL (so a first tile is quick)."""
        loop = asyncio.get_running_loop()
        workers = [_Worker(self._ctx) for _ in range(self.size)]
        self._all.update(workers)
        for worker in workers:
            ready = await asyncio.wait_for(loop.run_in_executor(None, worker.conn.recv), timeout_s)
            assert ready[0] == "ready", ready
            self._idle.append(worker)

    async def _acquire(self) -> _Worker:
        while not self._idle:
            if len(self._all) < self.size:  # one was killed: start its successor now
                worker = _Worker(self._ctx)
                self._all.add(worker)
                return worker
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return self._idle.popleft()

    def _release(self, worker: _Worker | None) -> None:
        if self._closed:
            if worker is not None:
                worker.kill()
            return
        if worker is not None:  # (a killed one is replaced when next needed, by _acquire)
            self._idle.append(worker)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def render(self, *args: Any) -> Any:
        """Run :func:`glacierflow.portal.raster.render_tile` (``*args``) in a worker.

        Raises
        ------
        RenderTimeout
            When the render runs past :attr:`timeout_s` (its worker is killed).
        WorkerError
            When the render raised (or its worker died).
        asyncio.CancelledError
            When the caller is cancelled; the worker is killed first.
        """
        if self._closed:
            raise WorkerError("the server is shutting down")
        worker = await self._acquire()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def readable() -> None:
            if done.done():
                return
            try:
                message = worker.conn.recv()
                if message[0] != "ready":  # a fresh worker says so first
                    done.set_result(message)
            except (EOFError, OSError) as exc:
                done.set_exception(WorkerError(f"the render worker died ({exc!r})"))

        healthy = False
        try:
            worker.conn.send(args)
            loop.add_reader(worker.conn.fileno(), readable)
            try:
                status, value = await asyncio.wait_for(done, self.timeout_s)
            except TimeoutError:
                raise RenderTimeout(f"the tile took longer than {self.timeout_s:g} s") from None
            finally:
                with contextlib.suppress(OSError, ValueError):
                    loop.remove_reader(worker.conn.fileno())
            healthy = True
        finally:
            if not healthy:
                worker.kill()
                self._all.discard(worker)
            self._release(worker if healthy else None)
        if status == "error":
            raise WorkerError(value)
        return value

    def close(self) -> None:
        """Kill every worker; later renders fail with :class:`WorkerError`."""
        self._closed = True
        for worker in list(self._all):
            worker.kill()
        self._all.clear()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(WorkerError("the server is shutting down"))
