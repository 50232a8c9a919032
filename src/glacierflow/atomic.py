"""Atomic file writes: a temporary name in the target folder, renamed into place when complete.

The lowest layer of glacierflow's output: every writer of products, figures, tables and reports
goes through :func:`atomic_write`, so a crash or an error never leaves a half-written file
behind, and a file that was already there survives a failed rewrite untouched. This module
imports nothing of glacierflow but its errors.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from glacierflow.errors import InputError, OutputError

__all__ = ["atomic_write", "fsync_file"]


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name is ``.<name>.tmp-<pid>-<random>`` in the same folder, so the final
    :func:`os.replace` is a rename within one file system and readers see either the old file or
    the complete new one, never a partial file. The temporary is not created: the block writes it.
    If the block raises, the temporary (and a GDAL ``.aux.xml`` sidecar, if any) is removed and
    the exception propagates; an existing file at ``path`` is left as it was.

    Parameters
    ----------
    path : str or PathLike
        The final file. Its folder must exist.

    Yields
    ------
    pathlib.Path
        Where the block must write the file.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        if not tmp.is_file():
            raise InputError("the writer produced no file; nothing was replaced", final)
        fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException as exc:
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
            leftover.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            # A full disk, a folder in the way, no permission: the user's problem to fix, said
            # in one line, not a traceback (HDF5 and GDAL explain over several lines).
            detail = " ".join(str(exc.strerror or exc).split())
            if exc.errno == errno.ENOSPC or "errno = 28" in detail:
                detail = os.strerror(errno.ENOSPC)
            raise OutputError(f"cannot write {final.name}: {detail[:300]}", final) from exc
        raise


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path`` to disk so that a rename cannot expose an empty file after a crash."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
