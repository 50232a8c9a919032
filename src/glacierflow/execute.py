"""The one executor: tasks in this process, on local worker processes, or on a Dask cluster.

Matching (:func:`glacierflow.matching.match`), tiled matching (:mod:`glacierflow.tiling`) and
projects run their tasks through :class:`Executor`, so that limits, start-up and shutdown are
written once:

* ``Executor()`` (one worker, no scheduler) runs every task here, in order, when it is asked
  for: no process is started.
* ``Executor(workers=N)`` runs tasks on ``N`` local worker processes, started through a
  ``forkserver`` (``spawn`` where there is none) so that no worker inherits the parent's
  threads or open files. ``N`` is capped by the CPUs this process may use, with a warning:
  a mistyped ``workers = 100000`` does not start a hundred thousand processes.
* ``Executor(scheduler="tcp://host:8786")`` runs tasks on an existing ``dask.distributed``
  cluster. The address is always explicit: the library never reads ``DASK_SCHEDULER_ADDRESS``
  (the command line does, as the default of ``--scheduler``). An address that does not answer
  within ``connect_timeout_s`` is an :class:`~glacierflow.errors.InputError` naming it.

The parent is idle while its workers run tasks: :meth:`Executor.meanwhile` gives it work for
that time (importing what it needs afterwards), and :func:`start_worker_server` starts the
server the workers are forked from before the executor exists (as the command line starts), so
that the modules the workers need are imported while the parent imports its own.

Worker processes die with their parent. Each one asks the kernel for ``SIGKILL`` when the
process that forked it dies (``PR_SET_PDEATHSIG``, Linux) and watches the main process itself
(a pidfd, or polling its pid where there is no pidfd): a killed ``glacierflow`` leaves no worker,
forkserver or resource tracker behind. Leaving the ``with`` block on an error or a
``KeyboardInterrupt`` cancels the tasks not yet started and stops the workers at once.

Examples
--------
>>> with Executor(workers=2) as ex:  # doctest: +SKIP
...     squares = sorted(ex.map_unordered(pow2, range(10)))
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from glacierflow.errors import InputError

__all__ = ["Executor", "available_cpus", "capped_workers", "start_worker_server"]

log = logging.getLogger("glacierflow")

#: Seconds to wait for a Dask scheduler to answer before the address counts as wrong.
CONNECT_TIMEOUT_S = 5.0

#: Tasks in flight per local worker in :meth:`Executor.map_unordered`: enough to keep every
#: worker busy while results come back, few enough that inputs are not all held at once.
IN_FLIGHT_PER_WORKER = 4


#: Seconds between checks, while local tasks wait, that no worker has died unnoticed.
WORKER_CHECK_S = 1.0
#: Seconds :meth:`Executor.shutdown` waits for the work given to :meth:`Executor.meanwhile`.
MEANWHILE_JOIN_S = 60.0


def _start_method() -> str:
    """How local workers are started: ``forkserver`` where the platform has it, else ``spawn``."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def start_worker_server(preload: Iterable[str] = ()) -> bool:
    """Start the server that local worker processes are forked from, now, in the background.

    The server imports ``preload`` before it forks the first worker, while this process goes
    on (parsing options, importing its own modules, reading scenes): an :class:`Executor`
    made later forks its workers from it at once, with those modules loaded. Modules that
    fail to import are skipped (the worker meets the error when it needs the module). One
    server serves every executor of this process; it exits with this process.

    Parameters
    ----------
    preload : iterable of str
        Modules to import in the server (every worker forked from it has them).

    Returns
    -------
    bool
        Whether a server was started (False without ``forkserver``, or when one already runs).
    """
    if _start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    if getattr(forkserver._forkserver, "_forkserver_pid", None) is not None:
        return False  # already running (with the modules it was started with)
    mp.get_context("forkserver").set_forkserver_preload(list(preload))
    forkserver.ensure_running()
    return True


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def capped_workers(workers: int) -> int:
    """``workers``, checked and capped by :func:`available_cpus` (with a logged warning).

    Raises
    ------
    ValueError
        If ``workers`` is not a positive whole number.
    """
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive whole number, got {workers!r}")
    cpus = available_cpus()
    if workers > cpus:
        log.warning(
            "workers=%d is more than the %d CPUs this process may use: using %d",
            workers,
            cpus,
            cpus,
        )
        return cpus
    return int(workers)


class Executor:
    """Runs tasks here, on local worker processes, or on a ``dask.distributed`` scheduler.

    Use it as a context manager; everything it started is stopped when the block ends.

    Parameters
    ----------
    workers : int
        Local worker processes; 1 runs tasks in this process. Capped by the CPUs available
        (:func:`available_cpus`). Ignored when a scheduler is given.
    scheduler : str, optional
        Address of a running ``dask.distributed`` scheduler (``"tcp://host:8786"``).
    connect_timeout_s : float
        Seconds to wait for the scheduler to answer.
    preload : iterable of str
        Modules the local workers import before their first task. Under ``forkserver`` the
        server imports them once and every worker is forked with them loaded (what each worker
        would otherwise import on its own, one after the other on a busy machine).

    Raises
    ------
    InputError
        The scheduler cannot be reached (the message names the address).
    ValueError
        ``workers`` is not a positive whole number.
    """

    def __init__(
        self,
        workers: int = 1,
        scheduler: str | None = None,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        preload: Iterable[str] = (),
    ) -> None:
        self.scheduler = scheduler or None
        self._preload = list(preload)
        self._starter: threading.Thread | None = None
        self.workers = 1 if self.scheduler else capped_workers(workers)
        self._timeout_s = connect_timeout_s
        self._pool: cf.ProcessPoolExecutor | None = None
        self._meanwhile: list[Callable[[], Any]] = []
        self._threads: list[threading.Thread] = []
        self._client: Any = None
        self._closed = False
        if self.scheduler:
            self._client = _connect(self.scheduler, connect_timeout_s)

    # -- what runs where ---------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``"inline"`` (this process), ``"processes"`` (local workers) or ``"dask"``."""
        if self._client is not None:
            return "dask"
        return "processes" if self.workers > 1 else "inline"

    @property
    def parallel(self) -> bool:
        """Whether tasks run elsewhere than in this process."""
        return self.kind != "inline"

    def __repr__(self) -> str:
        where = self.scheduler if self.kind == "dask" else f"{self.workers} worker(s)"
        return f"Executor({self.kind}, {where})"

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.shutdown(cancel=exc_type is not None)

    def __getstate__(self) -> dict:
        raise TypeError("an Executor stays in the process that made it; send tasks, not it")

    # -- running tasks -----------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Start ``fn(*args, **kwargs)``; returns a future (``result()``, ``cancel()``, ...).

        Inline, the call runs now and the future returned is already done (holding the result
        or the exception). On Dask, tasks are never taken as pure (each call runs).
        """
        self._check_open()
        if self._client is not None:
            return self._client.submit(fn, *args, pure=False, **kwargs)
        if self.workers > 1:
            return self._local_pool().submit(fn, *args, **kwargs)
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(err)
        return fut

    def as_completed(self, futures: Iterable[Any], timeout_s: float | None = None) -> Iterator:
        """The futures from :meth:`submit` as they finish."""
        if self._client is not None:
            from distributed import as_completed

            return iter(as_completed(list(futures), loop=self._client.loop, timeout=timeout_s))
        return cf.as_completed(list(futures), timeout=timeout_s)

    def wait(self, futures: Iterable[Any], timeout_s: float | None = None) -> tuple[set, set]:
        """Wait until one of ``futures`` finishes or ``timeout_s`` passes: ``(done, pending)``."""
        futures = list(futures)
        if self._client is not None:
            from distributed import wait

            try:
                done, pending = wait(futures, timeout=timeout_s, return_when="FIRST_COMPLETED")
            except TimeoutError:
                return {f for f in futures if f.done()}, {f for f in futures if not f.done()}
            return set(done), set(pending)
        done, pending = cf.wait(futures, timeout=timeout_s, return_when=cf.FIRST_COMPLETED)
        return set(done), set(pending)

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn(item)`` for every item, yielded as each finishes (in any order).

        Results should say which item they belong to. The first task to fail cancels those not
        started and its exception is raised here; so does closing the iterator early (or a
        ``KeyboardInterrupt`` while waiting). Inline, and for a single item on local workers,
        the tasks run here, in order, each when its result is asked for.
        """
        self._check_open()
        if self._client is None and self.workers > 1:
            items = list(items)
            if len(items) < 2:
                yield from map(fn, items)
                return
            yield from self._map_local(fn, items)
            return
        if self._client is None:
            yield from map(fn, items)
            return
        futures = [self._client.submit(fn, item, pure=False) for item in items]
        self._run_meanwhile()
        try:
            for fut in self.as_completed(futures):
                yield fut.result()
        finally:
            self._client.cancel([f for f in futures if not f.done()])

    def _map_local(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
        pool = self._local_pool()
        todo = iter(items)
        pending: set[cf.Future] = set()
        limit = IN_FLIGHT_PER_WORKER * self.workers
        try:
            while True:
                for item in todo:
                    pending.add(pool.submit(fn, item))
                    if len(pending) >= limit:
                        break
                self._run_meanwhile()
                if not pending:
                    return
                done, pending = cf.wait(
                    pending, timeout=WORKER_CHECK_S, return_when=cf.FIRST_COMPLETED
                )
                if not done:
                    _raise_if_a_worker_died(pool)
                for fut in done:
                    yield fut.result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise

    def rowwise(
        self, fn: Callable[..., Any], arrays: Sequence[Any], halo: int, /, **kwargs: Any
    ) -> Any:
        """``fn(*arrays, **kwargs)``, computed in bands of rows on the local workers.

        For functions of 2-D grids whose value at a node depends only on the nodes within
        ``halo`` rows of it (local filters, windowed fits) and that return an array of the
        grids' shape: each worker gets a band of rows with ``halo`` rows more on either side
        (none beyond the grid, where ``fn`` sees the grid's edge as in one call), and the
        bands of the results are stitched. The result is the one call's, bit for bit.
        Inline, on Dask, or for grids of few rows, it is the one call.

        Parameters
        ----------
        fn : callable
            A module-level function (it is sent to the workers).
        arrays : sequence of ndarray
            The grids, of one shape ``(ny, nx)``.
        halo : int
            Rows of context a node's value needs on either side.
        **kwargs
            Passed to ``fn``.
        """
        self._check_open()
        ny = len(arrays[0])
        bands = min(self.workers, ny // max(4 * halo, 16))
        if self.kind != "processes" or bands < 2:
            return fn(*arrays, **kwargs)
        edges = [round(i * ny / bands) for i in range(bands + 1)]
        tasks = []
        for r0, r1 in zip(edges, edges[1:], strict=False):
            lo, hi = max(r0 - halo, 0), min(r1 + halo, ny)
            tasks.append((fn, [a[lo:hi] for a in arrays], kwargs, r0 - lo, r1 - lo))
        import numpy as np

        parts = [self.submit(_rows_task, *task) for task in tasks]
        try:
            return np.concatenate([part.result() for part in parts])
        finally:
            for part in parts:
                part.cancel()

    def shared(self, arrays: Sequence[Any]) -> contextlib.AbstractContextManager[list[Any]]:
        """Copies of ``arrays`` that local workers read from shared memory, for a ``with`` block.

        Tasks whose arguments hold these copies, or slices of them, carry only their place
        (:mod:`glacierflow.sharedmem`): a worker reads the pixels from the segment, read-only,
        and gets the same array a pickled copy would be. The segment is removed when the
        block ends, however it ends (and by the resource tracker if this process is killed).
        Inline, on Dask, or where the platform has no POSIX shared memory, the block gets the
        arrays as they are.
        """
        self._check_open()
        if self.kind != "processes":
            return contextlib.nullcontext(list(arrays))
        from glacierflow.sharedmem import shared_arrays

        return shared_arrays(arrays)

    def meanwhile(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` in a thread of this process while the workers run the next tasks.

        For work this process needs later and can do early: importing the modules it uses
        once the tasks are done (writers, plotting), while it would otherwise only wait for
        results. It starts when the next :meth:`map_unordered` has handed tasks to the
        workers, or at once after :meth:`start` has started the workers (the worker server
        imports their modules for a second or two, longer than this process takes to read
        and filter the scenes: it would wait for them); inline nothing is
        idle, so nothing runs (the work is done where it is needed). Its result and
        exceptions are dropped: it must change nothing but speed. :meth:`shutdown` waits
        for it.
        """
        self._check_open()
        if self.kind == "inline":
            return
        self._meanwhile.append(fn)
        if self._starter is not None:
            self._run_meanwhile()

    def alongside(self, fn: Callable[..., Any], /, *args: Any) -> Callable[[], Any]:
        """Start ``fn(*args)`` in a thread of this process, for the time it waits for the
        workers' next tasks; inline (nothing waits), call it now. Returns the function that
        gives its result (or raises its exception), waiting for it if need be."""
        self._check_open()
        if self.kind == "inline":
            value = fn(*args)
            return lambda: value
        pool = cf.ThreadPoolExecutor(1, thread_name_prefix="glacierflow-alongside")
        future = pool.submit(fn, *args)
        pool.shutdown(wait=False)
        return future.result

    def _run_meanwhile(self) -> None:
        while self._meanwhile:
            fn = self._meanwhile.pop(0)
            thread = threading.Thread(
                target=_quietly, args=(fn,), name="glacierflow-meanwhile", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    # -- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the local workers now, in the background, and return at once.

        They otherwise start with the first task; started early, their start-up (a process
        each, and the ``preload`` imports) overlaps whatever this process does meanwhile
        (reading and filtering the scenes). Nothing to do inline or on Dask.
        """
        self._check_open()
        if self.kind != "processes" or self._starter is not None:
            return
        pool = self._local_pool()

        def warm() -> None:
            try:
                for fut in [pool.submit(_ready) for _ in range(self.workers)]:
                    fut.result()
            except Exception:  # noqa: BLE001 - a real task meets the same problem and says so
                pass

        self._starter = threading.Thread(target=warm, name="glacierflow-workers", daemon=True)
        self._starter.start()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Executor has been shut down")

    def _local_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            ctx = mp.get_context(_start_method())
            if self._preload and ctx.get_start_method() == "forkserver":
                ctx.set_forkserver_preload(self._preload)
            self._pool = cf.ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
            )
        return self._pool

    def shutdown(self, cancel: bool = False) -> None:
        """Stop what this executor started.

        Parameters
        ----------
        cancel : bool
            Cancel the tasks not started and stop the local workers now, without waiting for
            running tasks (after an error or an interrupt); otherwise wait for them.
        """
        if self._closed:
            return
        self._closed = True
        if self._starter is not None:
            # Let the early start finish first: a worker still being started when the others
            # are stopped is missed by the kill below and keeps the pool (and the exit) waiting.
            self._starter.join(timeout=60)
        self._meanwhile.clear()
        for thread in self._threads:
            thread.join(timeout=MEANWHILE_JOIN_S)
        pool, self._pool = self._pool, None
        if pool is not None:
            if cancel:
                # Running tasks are not waited for: their workers are stopped.
                processes = list(getattr(pool, "_processes", {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in processes:
                    if proc.is_alive():
                        proc.kill()
                for proc in processes:
                    proc.join(timeout=5)
                # The pool's manager thread sees its workers gone and closes its queues (and
                # their semaphores) before this process exits.
                manager = getattr(pool, "_executor_manager_thread", None)
                if manager is not None:
                    manager.join(timeout=5)
            else:
                pool.shutdown(wait=True)
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _raise_if_a_worker_died(pool: cf.ProcessPoolExecutor) -> None:
    """Raise ``BrokenProcessPool`` where a worker of ``pool`` has ended while tasks wait.

    The pool notices a dead worker itself, almost always; a worker killed at the wrong moment
    (seen once in CI: a SIGKILL while the pool was starting another worker) can leave its
    tasks waiting forever instead. Checked every :data:`WORKER_CHECK_S` seconds of waiting.
    """
    for proc in list(getattr(pool, "_processes", {}).values()):
        if proc.exitcode is not None:
            raise BrokenProcessPool(
                f"a worker process (pid {proc.pid}) ended with exit code {proc.exitcode} "
                "while its tasks were waiting"
            )


def _ready() -> None:
    """A task that does nothing: sent to start a worker."""


def _rows_task(
    fn: Callable[..., Any], arrays: list[Any], kwargs: dict[str, Any], start: int, stop: int
) -> Any:
    """Rows ``start:stop`` of ``fn(*arrays, **kwargs)`` (a band of :meth:`Executor.rowwise`)."""
    return fn(*arrays, **kwargs)[start:stop]


def _quietly(fn: Callable[[], Any]) -> None:
    """Call ``fn()`` for its side effects; what it raises is logged, never raised."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - work done early; done again where it is needed
        log.debug("work done meanwhile failed: %s", exc)


def _connect(address: str, timeout_s: float) -> Any:
    """A client of the scheduler at ``address``, or an InputError naming it."""
    problem = _probe(address, timeout_s)
    if problem is None:
        from glacierflow._extras import needs

        with needs("dask", f"a dask scheduler ({address})"):
            from distributed import Client

        try:
            return Client(address, timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - whatever answers there is not a scheduler
            problem = f"{type(exc).__name__}: {exc}"
    raise InputError(
        f"cannot reach the dask scheduler at {address!r} within {timeout_s:g} s ({problem}); "
        "start it, fix the address, or run without a scheduler"
    )


def _probe(address: str, timeout_s: float) -> str | None:
    """Why a TCP scheduler address cannot be connected to (None: it can, or is not TCP)."""
    import socket
    from urllib.parse import urlsplit

    if "://" not in address:
        address = "tcp://" + address
    parts = urlsplit(address)
    if parts.scheme not in ("tcp", "tls"):
        return None  # inproc://, ucx://: left to dask
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return str(exc)
    if not host or port is None:
        return "no host:port in the address"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Worker processes die with their parent

_PR_SET_PDEATHSIG = 1

#: glibc's ``mallopt`` parameters (``malloc.h``) and the values workers set.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap and are reused, not mapped and unmapped (glibc's
#: largest allowed value on 64-bit systems).
WORKER_MMAP_THRESHOLD_BYTES = 32 * 2**20
#: Free memory at the top of the heap kept for the next task rather than given back.
WORKER_TRIM_THRESHOLD_BYTES = 256 * 2**20


def _keep_freed_memory() -> None:
    """Have glibc's malloc reuse the memory of freed arrays in this process.

    A task allocates and frees the same large temporaries over and over. By default glibc
    serves blocks above a threshold (128 KiB, raised only as large blocks are freed) with
    fresh mappings and unmaps them when freed, so that every task faults its memory in
    again: matching on two workers spent 40 % more CPU time than in one process (a third of
    it in the kernel). A fixed high threshold keeps that memory in the heap, at most a task's
    peak per worker. Elsewhere than glibc this does nothing.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD_BYTES)
    mallopt(_M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD_BYTES)


def _worker_init(main_pid: int) -> None:
    """Make this worker process exit when the main process (``main_pid``) dies, and reuse the
    memory its tasks free (:func:`_keep_freed_memory`)."""
    _keep_freed_memory()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            # SIGKILL when the process that forked us (the forkserver, or the main process
            # under spawn) dies.
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(main_pid,), daemon=True).start()


def _watch_parent(main_pid: int) -> None:
    """Wait for the main process to end, then end this one."""
    try:
        fd = os.pidfd_open(main_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        import select

        select.select([fd], [], [])  # readable once the process has exited
        os._exit(1)
    import time

    while True:  # no pidfd: poll
        try:
            os.kill(main_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass
        time.sleep(1.0)
