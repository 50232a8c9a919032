"""Which files the portal may serve: only regular, visible files inside the catalog folder.

A requested path is refused (:class:`Refused`, with an HTTP status) when it is absolute, has an
empty, ``.`` or ``..`` component, names a hidden file or folder, holds a backslash, a NUL or a
still-encoded ``%2e``/``%2f``/``%5c`` (a double-encoded traversal), or when its real path
(symbolic links followed) is not inside the real path of the catalog.
"""

from __future__ import annotations

import mimetypes
import os
import re
from os import PathLike
from pathlib import Path

__all__ = ["MEDIA_TYPES", "Refused", "inside", "media_type", "resolve_download"]

#: Media types of the files a catalog holds (others fall back to :mod:`mimetypes`).
MEDIA_TYPES = {
    ".tif": "image/tiff; application=geotiff",
    ".tiff": "image/tiff; application=geotiff",
    ".nc": "application/x-netcdf",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".png": "image/png",
    ".toml": "application/toml",
    ".txt": "text/plain; charset=utf-8",
}

#: Longest download path accepted, in characters.
MAX_PATH_CHARS = 1024

_ENCODED = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


class Refused(Exception):
    """A download path that is not served; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def inside(root: str | PathLike[str], path: str | PathLike[str]) -> Path | None:
    """The real path of ``path`` if it lies inside the real path of ``root``, else None.

    Symbolic links are followed in both, so a link inside ``root`` that points out of it is
    outside.
    """
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    return real if real == real_root or real.is_relative_to(real_root) else None


def media_type(path: str | PathLike[str]) -> str:
    """The media type to serve ``path`` with."""
    suffix = Path(path).suffix.lower()
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(str(path))
    return guessed or "application/octet-stream"


def resolve_download(root: str | PathLike[str], rel: str) -> Path:
    """The file to serve for the URL path ``rel`` (relative to the catalog root).

    Parameters
    ----------
    root : str or PathLike
        The catalog folder.
    rel : str
        The path after ``/files/``, already percent-decoded once by the server.

    Returns
    -------
    Path
        The real path of a regular file inside ``root``.

    Raises
    ------
    Refused
        400 for a malformed or forbidden path, 404 when no such file is inside the catalog.
    """
    if not rel or len(rel) > MAX_PATH_CHARS:
        raise Refused(400, "empty or overlong file path")
    if "\\" in rel or "\x00" in rel or _ENCODED.search(rel) or rel.startswith("/"):
        raise Refused(400, "forbidden characters in the file path")
    parts = rel.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise Refused(400, "the file path must not contain empty, '.', '..' or hidden parts")
    real = inside(root, Path(root, *parts))
    if real is None:
        raise Refused(404, "no such file in the catalog")
    if not real.is_file():
        raise Refused(404, "no such file in the catalog")
    return real
