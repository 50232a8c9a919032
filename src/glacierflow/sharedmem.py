"""Arrays in shared memory that travel to local worker processes as their name, not their bytes.

A task that reads a window of a large image carries the window: pickled by the parent, sent
down a pipe and unpickled by the worker (on the Yahtse pair at step 4, 416 tasks carried 99 MB).
:func:`shared_arrays` copies the arrays once into one POSIX shared-memory segment
(``/dev/shm/glacierflow-*`` on Linux) and returns views of it: a view, or any slice of one,
pickles as the segment's name and the slice's place in it, and unpickles in a worker as a
copy of those pixels read from the segment, which the worker maps read-only (the same values,
layout and writability a pickled copy had: the tasks compute the same results, bit for bit).
Arrays computed from the views in this process are ordinary arrays, pickled as before.

The segment is removed when the ``with`` block ends, however it ends (an error, a
``KeyboardInterrupt``, a killed worker). Should this process be killed outright, the
multiprocessing resource tracker (a process of its own, which outlives its workers) removes
it: the segment is registered with the tracker as :mod:`multiprocessing.shared_memory` does.
Where POSIX shared memory is missing (Windows), the arrays are returned as they are.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
from collections.abc import Iterator, Sequence

import numpy as np

try:
    import _posixshmem
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

__all__ = ["AVAILABLE", "shared_arrays"]

#: Whether this platform has POSIX shared memory.
AVAILABLE = _posixshmem is not None
#: Segment names begin with this (a file of that name in ``/dev/shm`` on Linux).
NAME_PREFIX = "/glacierflow-"
#: Bytes between arrays of one segment (each starts aligned to a cache line).
ALIGN_BYTES = 64

#: The segments this (worker) process has mapped: name -> mapping. Only the latest is kept
#: here; an older mapping is released once its last array is gone.
_MAPPED: dict[str, mmap.mmap] = {}


class _Segment:
    """One segment as its views know it: name, address of its first byte here, size in
    bytes, and whether it still exists."""

    def __init__(self, name: str, start: int, size: int) -> None:
        self.name, self.start, self.size, self.open = name, start, size, True


class SharedArray(np.ndarray):
    """A view of a shared-memory segment; it (and any slice of it) pickles as a reference
    while the segment exists, as its bytes afterwards."""

    _segment: _Segment | None

    def __array_finalize__(self, obj: object) -> None:
        self._segment = getattr(obj, "_segment", None)

    def __array_wrap__(self, out_arr, context=None, return_scalar=False):  # noqa: ANN001
        # What numpy computes from a view is an ordinary array (its memory is not shared).
        out = np.asarray(out_arr).view(np.ndarray)
        return out[()] if return_scalar else out

    def __reduce__(self):  # noqa: ANN204
        where = self._place()
        if where is None:  # not inside the segment (or the segment is gone): its bytes
            return np.array(self).__reduce__()
        return _read_shared, where

    def _place(self) -> tuple | None:
        seg = self._segment
        if seg is None or not seg.open:
            return None
        lo, hi = _extent(self)
        if lo < seg.start or hi > seg.start + seg.size:
            return None
        first = self.__array_interface__["data"][0] - seg.start
        return (seg.name, seg.size, first, self.shape, self.strides, self.dtype.str)


def _extent(a: np.ndarray) -> tuple[int, int]:
    """First and one-past-last byte addresses that the array's elements occupy."""
    lo = hi = a.__array_interface__["data"][0]
    for n, stride in zip(a.shape, a.strides, strict=True):
        if n == 0:
            return lo, lo
        if stride >= 0:
            hi += (n - 1) * stride
        else:
            lo += (n - 1) * stride
    return lo, hi + a.itemsize


def _read_shared(
    name: str, size: int, offset: int, shape: tuple, strides: tuple, dtype: str
) -> np.ndarray:
    """A copy of the array at ``offset`` of the segment ``name`` (unpickling in a worker)."""
    mapped = _MAPPED.get(name)
    if mapped is None:
        fd = _posixshmem.shm_open(name, os.O_RDONLY, mode=0)
        try:
            mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        _MAPPED.clear()  # earlier segments are gone or done with
        _MAPPED[name] = mapped
    view = np.ndarray(shape, np.dtype(dtype), buffer=mapped, offset=offset, strides=strides)
    return np.array(view)


@contextlib.contextmanager
def shared_arrays(arrays: Sequence[np.ndarray]) -> Iterator[list[np.ndarray]]:
    """Copies of ``arrays`` in one shared-memory segment, for the ``with`` block.

    Yields views (:class:`SharedArray`) that pickle as references; the segment is removed
    when the block ends. Without POSIX shared memory, or for arrays of no bytes, yields the
    arrays as they are.
    """
    arrays = [np.asarray(a) for a in arrays]
    offsets, size = [], 0
    for a in arrays:
        offsets.append(size)
        size += -(-a.nbytes // ALIGN_BYTES) * ALIGN_BYTES
    if not AVAILABLE or size == 0 or any(a.dtype.hasobject for a in arrays):
        yield arrays
        return
    from multiprocessing import resource_tracker

    name = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
    fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    segment = None
    try:
        # Registered first: a kill from here on leaves the tracker to remove it.
        resource_tracker.register(name, "shared_memory")
        try:
            os.ftruncate(fd, size)
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        start = np.frombuffer(mapped, np.uint8).__array_interface__["data"][0]
        segment = _Segment(name, start, size)
        views = []
        for a, offset in zip(arrays, offsets, strict=True):
            view = np.ndarray(a.shape, a.dtype, buffer=mapped, offset=offset).view(SharedArray)
            view[...] = a
            view._segment = segment
            views.append(view)
        yield views
    finally:
        if segment is not None:
            segment.open = False  # views left over pickle as bytes
        with contextlib.suppress(FileNotFoundError):
            _posixshmem.shm_unlink(name)
        resource_tracker.unregister(name, "shared_memory")
