"""An on-disk cache of rendered map tiles, keyed by the content they are drawn from.

The key of a tile is a hash of the GeoTIFF's identity (its published checksum, size and
modification time: a file republished or replaced gets new keys, so a stale tile is never
served) and of the tile's parameters (band, z, x, y, colour scale, renderer version). The key
is also the tile's HTTP ``ETag``, so a client that has the tile gets ``304 Not Modified``
without the server reading the GeoTIFF at all.

The cache lives outside the catalog (the portal never writes there), entries are written to a
temporary file and renamed, and the oldest entries are removed when the cache grows past its
size limit. Several server processes may share one cache folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from os import PathLike
from pathlib import Path

__all__ = ["TileCache", "default_cache_dir", "tile_key"]

#: Changes whenever tiles are drawn differently (old cache entries are then never hit).
RENDERER_VERSION = "2"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/glacierflow/portal-tiles`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "glacierflow" / "portal-tiles"


def tile_key(
    path: str | PathLike[str],
    checksum: str | None,
    band: int,
    zxy: tuple[int, int, int],
    vmax_m_per_yr: float,
) -> str:
    """The content key (hex) of a tile of ``path``; it changes when the file does."""
    stat = os.stat(path)
    parts = (
        RENDERER_VERSION,
        checksum or "",
        str(stat.st_size),
        str(stat.st_mtime_ns),
        str(band),
        "/".join(map(str, zxy)),
        repr(float(vmax_m_per_yr)),
    )
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


class TileCache:
    """PNG tiles stored under ``folder`` by key.

    Parameters
    ----------
    folder : str or PathLike
        Where to keep the tiles (created when missing).
    max_mb : float
        Size limit, MB; past it the least recently written tiles are removed.
    """

    def __init__(self, folder: str | PathLike[str], max_mb: float = 512.0) -> None:
        self.folder = Path(folder)
        self.max_bytes = int(max_mb * 1e6)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._written = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.png"

    def get(self, key: str) -> bytes | None:
        """The cached tile, or None."""
        try:
            return self._path(key).read_bytes()
        except OSError:
            return None

    def put(self, key: str, png: bytes) -> None:
        """Store a tile (best effort: a full disk only means no caching)."""
        path = self._path(key)
        try:
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
            with os.fdopen(fd, "wb") as out:
                out.write(png)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
            return
        self._written += len(png)
        if self._written > self.max_bytes // 20:
            self._written = 0
            self.prune()

    def prune(self) -> None:
        """Remove the oldest tiles until the cache holds at most 80 % of its limit."""
        entries = []
        for path in self.folder.glob("*/*.png"):
            with contextlib.suppress(OSError):
                st = path.stat()
                entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return
        for _, size, path in sorted(entries):
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
            if total <= 0.8 * self.max_bytes:
                break
