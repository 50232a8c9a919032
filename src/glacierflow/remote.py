"""Scenes at URLs: ``https://``, ``http://`` and ``s3://`` COGs and STAC items, read by window.

A scene location is a local path or a URL. URLs stay strings (a :class:`SceneURL`, which has the
``name``, ``stem`` and ``stat`` that code written for :class:`pathlib.Path` asks of a scene's
path) and are opened through GDAL's virtual file systems: ``/vsicurl/`` for HTTP(S) and
``/vsis3/`` for S3 (unsigned when no AWS credentials are set). :func:`open_raster` opens any
location inside a :class:`rasterio.Env` that reads only the blocks a window needs, merges
consecutive ranges, caches blocks in memory and retries transient failures (HTTP 429, 500, 502,
503, 504). A failure to reach a URL becomes a one-line :class:`NetworkError` naming it.

Windows read from URLs are also kept on disk (:func:`cached_window`), keyed by the URL, the
file's size and ETag, the band and the window, so that a rerun does not download them again.
The cache lives in ``$GLACIERFLOW_CACHE_DIR`` (default ``~/.cache/glacierflow/windows``); set
that variable to ``off`` to switch it off.

A location that is a STAC item (a ``.json`` URL or file) stands for one of its assets
(:func:`resolve_stac`): by default the panchromatic band of Landsat Collection 2 items or the
10 m NIR band of Sentinel-2 items; ``item.json#B04`` picks another asset. The acquisition time
comes from the item's ``properties.datetime``, the scene ID from the item's ``id``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from glacierflow.dates import parse_datetime
from glacierflow.errors import InputError

if TYPE_CHECKING:  # rasterio and numpy load when a raster is opened, not on import
    import numpy as np
    import rasterio
    import rasterio.crs
    import rasterio.io
    import rasterio.windows

__all__ = [
    "NetworkError",
    "SceneURL",
    "StacAsset",
    "cached_window",
    "gdal_options",
    "gdal_path",
    "is_remote",
    "check_scheme",
    "location",
    "network_limits",
    "open_raster",
    "resolve_stac",
]

_SCHEMES = ("http://", "https://", "s3://")
_VSI_PREFIXES = ("/vsicurl/", "/vsis3/")

#: Network limits of every request (scenes, STAC items, searches), defaults of
#: :func:`network_limits`: seconds to connect (``$GLACIERFLOW_CONNECT_TIMEOUT_S``), seconds
#: without a byte received before a request counts as failed (``$GLACIERFLOW_READ_TIMEOUT_S``;
#: a server that accepts and never answers), and retries of a failed request (HTTP 429, 500,
#: 502, 503, 504, reset connections; ``$GLACIERFLOW_HTTP_RETRIES``). A silent server costs
#: about one read time-out (GDAL does not retry a stalled transfer) and the 10 s of the check
#: that says why; a server that fails each try costs at most (retries + 1) x (connect + read).
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
MAX_RETRY = 2
#: Longest whole request (one merged range of a COG), seconds, and the first delay between
#: retries in seconds (GDAL grows it for the next tries).
REQUEST_TIMEOUT_S = 60.0
RETRY_DELAY_S = 0.5
#: The environment variables of :func:`network_limits`.
NETWORK_ENV = {
    "connect_s": "GLACIERFLOW_CONNECT_TIMEOUT_S",
    "read_s": "GLACIERFLOW_READ_TIMEOUT_S",
    "retries": "GLACIERFLOW_HTTP_RETRIES",
}
#: Bytes of in-memory block caches: per open file (VSI_CACHE) and for all /vsicurl/ reads.
VSI_CACHE_BYTES = 64 * 1024 * 1024
CURL_CACHE_BYTES = 256 * 1024 * 1024

#: STAC asset keys tried in order when a location does not name one: Landsat C2 panchromatic,
#: Sentinel-2 10 m NIR (Earth Search v1 and v0 names), then red.
#: Largest window kept in the disk cache, pixels (whole scenes are not kept).
CACHE_MAX_PIXELS = 25_000_000

STAC_ASSETS = ("pan", "B8", "nir", "B08", "nir08", "B5", "red", "B04", "B4")


class NetworkError(InputError):
    """A scene URL cannot be reached or read (connection refused, HTTP error, time-out)."""


class NetworkLimits(NamedTuple):
    """Time-outs and retries of network requests (see :data:`CONNECT_TIMEOUT_S`)."""

    connect_s: float
    read_s: float
    retries: int


def network_limits() -> NetworkLimits:
    """The network limits in force: the defaults, or the values of :data:`NETWORK_ENV`.

    Raises
    ------
    InputError
        Naming the environment variable, for a value that is not a positive number (a whole
        number of 0 or more for the retries).
    """
    defaults = {"connect_s": CONNECT_TIMEOUT_S, "read_s": READ_TIMEOUT_S, "retries": MAX_RETRY}
    values: dict[str, Any] = {}
    for field, default in defaults.items():
        name = NETWORK_ENV[field]
        text = os.environ.get(name, "").strip()
        if not text:
            values[field] = default
            continue
        kind = int if field == "retries" else float
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value >= 0 if kind is int else 0 < value < float("inf")):
            want = "a whole number, 0 or more" if kind is int else "a positive number of seconds"
            raise InputError(f"${name} must be {want}, got {text!r}")
        values[field] = value
    return NetworkLimits(**values)


#: GDAL's line for each retry of an HTTP request (``CPLE_AppDefined in HTTP error code: 0 -
#: URL. Retrying again in 6.4 secs``), at WARNING through rasterio's logger.
_GDAL_RETRY = re.compile(r"HTTP error code: (\d+) - (\S+?)\.? Retrying again in ([\d.]+) secs")


class _RetryLines:
    """A logging filter for ``rasterio._env`` and ``urllib3``: retries are INFO, shown with
    ``-v`` only (a request that fails in the end is reported as an error). GDAL's retry lines
    become one short line (``URL: no answer (HTTP error code 0), retrying in 6.4 s``)."""

    def filter(self, record: Any) -> bool:
        message = str(record.getMessage())
        match = _GDAL_RETRY.search(message)
        if match:
            code, url, delay = match.groups()
            answer = "no answer" if code == "0" else "the server answered"
            record.msg = f"{url}: {answer} (HTTP error code {code}), retrying in {delay} s"
            record.args = ()
        if match or message.startswith("Retrying ("):  # urllib3's retry line
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


for _name in ("rasterio._env", "urllib3.connectionpool"):
    logging.getLogger(_name).addFilter(_RetryLines())


# --------------------------------------------------------------------------------------------
# Locations


def is_remote(loc: object) -> bool:
    """Whether a scene location is a URL (``http(s)://``, ``s3://``, ``/vsicurl/``, ``/vsis3/``)."""
    text = str(loc)
    return text.lower().startswith(_SCHEMES) or text.startswith(_VSI_PREFIXES)


class FileIdentity(NamedTuple):
    """What :meth:`SceneURL.stat` returns: the fields a cache key reads from ``os.stat``."""

    st_size: int
    st_mtime_ns: int
    etag: str


class SceneURL(str):
    """A scene URL as a string, with the parts of :class:`pathlib.Path` scenes use.

    ``name`` and ``stem`` come from the URL's path (query and fragment dropped); ``stat()``
    asks the server for the size and ETag (HEAD), so that caches keyed on a file's size and
    time notice a changed file; ``resolve()`` returns the URL itself.
    """

    __slots__ = ()

    @property
    def url(self) -> str:
        """The URL as given (``s3://`` or ``http(s)://``)."""
        return str(self)

    @property
    def name(self) -> str:
        """Last component of the URL's path."""
        return urllib.parse.urlsplit(_plain_url(self)).path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        """:attr:`name` without its last suffix."""
        name = self.name
        return name.rsplit(".", 1)[0] if "." in name[1:] else name

    @property
    def suffix(self) -> str:
        """The last suffix of :attr:`name`, with its dot (``".TIF"``), or ``""``."""
        name = self.name
        return "." + name.rsplit(".", 1)[-1] if "." in name[1:] else ""

    def resolve(self) -> SceneURL:
        """The URL itself (a URL is already absolute)."""
        return self

    def stat(self) -> FileIdentity:
        """Size and ETag of the file at the URL (HEAD request; zeros where unknown)."""
        return identity(str(self))


def check_scheme(loc: str | PathLike[str]) -> None:
    """Refuse a URL whose scheme glacierflow cannot read (``ftp://``, ``gs://``, ...).

    Raises
    ------
    InputError
        Naming the URL and its scheme, and the locations that can be read.
    """
    text = str(loc)
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if m and not is_remote(text):
        raise InputError(
            f"cannot read {m.group(1)}:// URLs; give a local file, an http(s):// or s3:// URL, "
            "or a STAC item",
            text,
        )


def location(path: str | PathLike[str]) -> Path | SceneURL:
    """A scene location: :class:`SceneURL` for a URL, :class:`pathlib.Path` otherwise."""
    if isinstance(path, SceneURL):
        return path
    if is_remote(path):
        return SceneURL(_plain_url(str(path)))
    return Path(path)


def _plain_url(text: str) -> str:
    """``/vsicurl/https://...`` as ``https://...`` and ``/vsis3/b/k`` as ``s3://b/k``."""
    if text.startswith("/vsicurl/"):
        return text[len("/vsicurl/") :]
    if text.startswith("/vsis3/"):
        return "s3://" + text[len("/vsis3/") :]
    return text


def gdal_path(loc: str | PathLike[str]) -> str:
    """The name GDAL opens a location by: ``/vsicurl/URL``, ``/vsis3/bucket/key`` or the path."""
    text = str(loc)
    if not is_remote(text):
        return text
    url = _plain_url(text)
    if url.lower().startswith("s3://"):
        return "/vsis3/" + url[len("s3://") :]
    return "/vsicurl/" + url


def _has_aws_credentials() -> bool:
    if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return True
    shared = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    return Path(shared).expanduser().is_file()


def gdal_options(loc: str | PathLike[str] | None = None) -> dict[str, Any]:
    """GDAL configuration for reading a COG at a URL block by block, with retries.

    Parameters
    ----------
    loc : str or PathLike, optional
        The location; for an ``s3://`` one without AWS credentials in the environment, requests
        are unsigned (``AWS_NO_SIGN_REQUEST``).

    Returns
    -------
    dict
        Options for :class:`rasterio.Env`. Options already set in the environment win, so a
        user can tune any of them (e.g. ``GDAL_HTTP_MAX_RETRY``); time-outs and retries come
        from :func:`network_limits`.
    """
    limits = network_limits()
    options: dict[str, Any] = {
        # Opening a file must not list its folder (one request per open, and S3 listings).
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff,.TIFF",
        "VSI_CACHE": "TRUE",
        "VSI_CACHE_SIZE": VSI_CACHE_BYTES,
        "CPL_VSIL_CURL_CACHE_SIZE": CURL_CACHE_BYTES,
        # Neighbouring ranges merged into one request. The ranges of a window are fetched
        # one after another (SERIAL), not in parallel (YES): GDAL keeps only serially fetched
        # ranges in its block cache, and tiled matching reads overlapping windows (measured on
        # a 300 x 300 px area of two COGs, tiled: 3.9 MB with SERIAL, 13.4 MB with YES).
        "GDAL_HTTP_MULTIRANGE": "SERIAL",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MAX_RETRY": limits.retries,
        "GDAL_HTTP_RETRY_DELAY": RETRY_DELAY_S,
        # GDAL reads these as whole seconds.
        "GDAL_HTTP_CONNECTTIMEOUT": math.ceil(limits.connect_s),
        # A transfer without a byte for read_s seconds fails (a server that never answers).
        "GDAL_HTTP_LOW_SPEED_TIME": math.ceil(limits.read_s),
        "GDAL_HTTP_LOW_SPEED_LIMIT": 1,
        "GDAL_HTTP_TIMEOUT": math.ceil(max(REQUEST_TIMEOUT_S, 2 * limits.read_s)),
    }
    if loc is not None and _plain_url(str(loc)).lower().startswith("s3://"):
        if not _has_aws_credentials():
            options["AWS_NO_SIGN_REQUEST"] = "YES"
    return {k: v for k, v in options.items() if k not in os.environ}


@contextlib.contextmanager
def open_raster(loc: str | PathLike[str]) -> Iterator[rasterio.io.DatasetReader]:
    """Open a local raster or a URL (inside :func:`gdal_options`) for reading.

    Local paths open as with :func:`rasterio.open`, errors unchanged. For a URL, a failure to
    reach or read it, while opening or inside the ``with`` block, becomes a
    :class:`NetworkError` naming the URL; a file that is reached but is no raster becomes an
    :class:`~glacierflow.errors.InputError`.
    """
    import rasterio
    import rasterio.errors

    if not is_remote(loc):
        with rasterio.open(str(loc)) as ds:
            yield ds
        return
    url = _plain_url(str(loc))
    with rasterio.Env(**gdal_options(url)):
        try:
            ds = rasterio.open(gdal_path(url))
        except rasterio.errors.RasterioIOError as exc:
            raise _remote_error(url, exc) from None
        with ds:
            try:
                yield ds
            except rasterio.errors.RasterioIOError as exc:
                raise _remote_error(url, exc) from None


def _remote_error(url: str, exc: Exception) -> InputError:
    """A one-line error for a URL GDAL could not open or read: a :class:`NetworkError` when
    the server cannot be reached or answers with an error, else "not a raster"."""
    problem = _probe(url)
    if problem is not None:
        return NetworkError(f"network failure: {problem}", url)
    reason = " ".join(str(exc).replace(gdal_path(url), "").split()).strip(" :'")
    return InputError(f"not a raster GDAL can read ({reason or type(exc).__name__})", url)


def _probe(url: str) -> str | None:
    """Why a URL cannot be fetched (one line), or None when a HEAD request succeeds.

    GDAL's own message for a failed /vsicurl/ open does not say why, so the server is asked
    directly. ``s3://`` URLs are asked at their public HTTPS address.
    """
    http_url = _http_url(url)
    if http_url is None:
        return None
    request = urllib.request.Request(http_url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=network_limits().connect_s):
            return None
    except urllib.error.HTTPError as exc:
        return f"the server answered HTTP {exc.code} ({exc.reason})"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return _no_answer()
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        return f"cannot reach the server ({reason})"
    except TimeoutError:
        return _no_answer()
    except (OSError, ValueError) as exc:
        return f"cannot reach the server ({exc})"


def _no_answer() -> str:
    limits = network_limits()
    return (
        f"the server did not answer within {limits.read_s:g} s (connecting: {limits.connect_s:g} "
        f"s; set ${NETWORK_ENV['read_s']} for a slow server)"
    )


@lru_cache(maxsize=256)
def identity(url: str) -> FileIdentity:
    """Size (bytes) and ETag (or Last-Modified) of the file at a URL, from a HEAD request.

    ``s3://`` URLs are asked at their public HTTPS address. Zeros and ``""`` when the server
    does not say (or cannot be asked); caches keyed on them then trust the URL alone.
    """
    http_url = _http_url(url)
    if http_url is None:
        return FileIdentity(0, 0, "")
    request = urllib.request.Request(http_url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=network_limits().connect_s) as response:
            size = int(response.headers.get("Content-Length") or 0)
            tag = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
    except (OSError, ValueError):
        return FileIdentity(0, 0, "")
    mtime = int(hashlib.sha256(tag.encode()).hexdigest()[:12], 16) if tag else 0
    return FileIdentity(size, mtime, tag)


def _http_url(url: str) -> str | None:
    url = _plain_url(url)
    if url.lower().startswith(("http://", "https://")):
        return url
    if url.lower().startswith("s3://"):
        bucket, _, key = url[len("s3://") :].partition("/")
        return f"https://{bucket}.s3.amazonaws.com/{key}"
    return None


# --------------------------------------------------------------------------------------------
# Disk cache of windows read from URLs


def cache_dir() -> Path | None:
    """Folder of the window cache, or None when ``GLACIERFLOW_CACHE_DIR=off``."""
    value = os.environ.get("GLACIERFLOW_CACHE_DIR", "").strip()
    if value.lower() in ("off", "0", "no", "false", "none"):
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "glacierflow" / "windows"


def cached_window(
    ds: rasterio.io.DatasetReader,
    loc: str | PathLike[str],
    band: int,
    window: rasterio.windows.Window | None,
    *,
    masks: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a window of one band (and its dataset mask), from the disk cache when it has it.

    Parameters
    ----------
    ds : rasterio dataset
        The open file.
    loc : str or PathLike
        Its location; only URLs are cached (a local file is read directly).
    band : int
        1-based band.
    window : Window or None
        Pixel window; None for the whole band. Only windows up to :data:`CACHE_MAX_PIXELS`
        are cached.
    masks : bool
        Also read the dataset mask (``read_masks``).

    Returns
    -------
    raw : ndarray
        The band's values in the file's dtype.
    mask : ndarray of uint8 or None
        The dataset mask (0 = masked), when ``masks``.
    """
    import numpy as np

    pixels = None if window is None else int(window.width) * int(window.height)
    cacheable = pixels is not None and 0 < pixels <= CACHE_MAX_PIXELS
    folder = cache_dir() if is_remote(loc) and cacheable else None
    ident = identity(_plain_url(str(loc))) if folder is not None else None
    if folder is None or ident is None or not ident.st_size:
        return _read_window(ds, band, window, masks)
    key = json.dumps(
        [_plain_url(str(loc)), ident.st_size, ident.etag, band, _window_key(window), masks]
    )
    path = folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"
    try:
        with np.load(path) as saved:
            return saved["raw"], (saved["mask"] if masks else None)
    except (OSError, KeyError, ValueError):
        pass
    raw, mask = _read_window(ds, band, window, masks)
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, raw=raw, mask=mask if mask is not None else np.zeros(0, np.uint8))
        os.replace(tmp, path)
    return raw, mask


def _read_window(
    ds: rasterio.io.DatasetReader,
    band: int,
    window: rasterio.windows.Window | None,
    masks: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    raw = ds.read(band, window=window)
    return raw, (ds.read_masks(band, window=window) if masks else None)


def _window_key(window: rasterio.windows.Window | None) -> list[int] | None:
    if window is None:
        return None
    return [int(window.col_off), int(window.row_off), int(window.width), int(window.height)]


# --------------------------------------------------------------------------------------------
# STAC items


@dataclasses.dataclass(frozen=True)
class StacAsset:
    """The asset of a STAC item a scene location stands for.

    Attributes
    ----------
    href : str
        The asset's location (URL or path) of the image.
    acquired : datetime or None
        ``properties.datetime`` of the item, timezone-aware UTC.
    sensor : str
        E.g. ``"Landsat 8 OLI"``, ``"Sentinel-2A MSI"``, or ``"unknown"``.
    scene_id : str or None
        The item's ``id``.
    """

    href: str
    acquired: datetime | None
    sensor: str
    scene_id: str | None


def is_stac(loc: object) -> bool:
    """Whether a location names a STAC item (a ``.json`` file or URL, optionally ``#asset``)."""
    text = str(loc)
    base = urllib.parse.urlsplit(text).path if is_remote(text) else text.split("#", 1)[0]
    return base.lower().endswith(".json")


def resolve_stac(loc: str | PathLike[str]) -> StacAsset:
    """The image asset, time, sensor and ID of a STAC item.

    Parameters
    ----------
    loc : str or PathLike
        The item's JSON, a URL or a file; ``#KEY`` after it picks the asset ``KEY``, otherwise
        the first of :data:`STAC_ASSETS` the item has.

    Raises
    ------
    NetworkError
        If the item's URL cannot be fetched.
    InputError
        If it is not a STAC item or has none of the assets.
    """
    text = str(loc)
    text, _, wanted = text.partition("#")
    item = _fetch_json(text)
    assets = item.get("assets") if isinstance(item, dict) else None
    if not isinstance(assets, dict) or item.get("type") != "Feature":
        raise InputError("is not a STAC item (a GeoJSON Feature with assets)", text)
    keys = [wanted] if wanted else [k for k in STAC_ASSETS if k in assets]
    if not assets:
        raise InputError("is a STAC item without assets: it names no image to read", text)
    if not keys or keys[0] not in assets:
        raise InputError(
            f"has no asset {wanted or ' or '.join(STAC_ASSETS)}; its assets are "
            f"{', '.join(sorted(assets))} (pick one with ITEM.json#KEY)",
            text,
        )
    href = str(assets[keys[0]].get("href", ""))
    if not href:
        raise InputError(f"asset {keys[0]} has no href", text)
    if not is_remote(href) and not Path(href).is_absolute():
        href = (
            urllib.parse.urljoin(text, href) if is_remote(text) else str(Path(text).parent / href)
        )
    props = item.get("properties") or {}
    acquired = None
    if props.get("datetime"):
        acquired = parse_datetime(props["datetime"])
    return StacAsset(href, acquired, _stac_sensor(props), item.get("id"))


def _fetch_json(text: str) -> Any:
    try:
        if is_remote(text):
            http_url = _http_url(text)
            if http_url is None:
                raise InputError("cannot fetch this STAC item", text)
            with urllib.request.urlopen(http_url, timeout=network_limits().read_s) as response:
                body = response.read()
        else:
            body = Path(text).read_bytes()
    except urllib.error.HTTPError as exc:
        raise NetworkError(f"network failure: HTTP {exc.code} ({exc.reason})", text) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise NetworkError(f"network failure: {_no_answer()}", text) from None
        raise NetworkError(f"network failure: {exc.reason}", text) from None
    except TimeoutError:
        raise NetworkError(f"network failure: {_no_answer()}", text) from None
    except OSError as exc:
        if is_remote(text):
            raise NetworkError(f"network failure: {exc}", text) from None
        raise InputError(f"cannot read the STAC item: {exc.strerror or exc}", text) from None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InputError(f"is not JSON: {exc}", text) from None


def _stac_sensor(props: dict[str, Any]) -> str:
    platform = str(props.get("platform") or "").lower()
    instruments = [str(i).lower() for i in props.get("instruments") or []]
    m = re.match(r"landsat[-_ ]?(\d+)", platform)
    if m:
        mission = int(m.group(1))
        inst = "OLI" if "oli" in instruments else "ETM+" if "etm" in instruments else ""
        inst = inst or ("TM" if "tm" in instruments else "")
        return f"Landsat {mission} {inst}".strip()
    m = re.match(r"sentinel[-_ ]?2([a-d])", platform)
    if m:
        return f"Sentinel-2{m.group(1).upper()} MSI"
    return "unknown"
