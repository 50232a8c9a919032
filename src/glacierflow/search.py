"""Find scenes in a STAC API (pystac-client) and write a scene list a project file accepts.

:func:`search_scenes` asks a STAC API's item search for the scenes of a collection over a
longitude/latitude box and a time range, keeps those below a cloud cover, and returns one
:class:`FoundScene` per item with the WRS path/row and the links to its panchromatic band and
MTL metadata. :func:`write_scene_list` writes them as CSV (``scene_id`` first): name it in a
project file as ``[scenes] list = "scenes.csv"`` and put the downloaded files in the scene
folder; each listed scene is then found by its ID in the file names.

The default server is the USGS LandsatLook STAC API, whose Landsat Collection 2 Level-1
collection is ``landsat-c2l1``; ``landsat-c2-l1`` (the name other catalogues use) is
translated for it. Nothing is downloaded: the list holds links, and the USGS serves the files
to registered users (EarthExplorer, or the ``usgs-landsat`` requester-pays bucket).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any

from glacierflow.dates import parse_datetime
from glacierflow.errors import InputError
from glacierflow.remote import network_limits

__all__ = [
    "DEFAULT_STAC_URL",
    "FoundScene",
    "scene_list_csv",
    "search_scenes",
    "write_scene_list",
]

#: The USGS LandsatLook STAC API (Landsat Collection 2).
DEFAULT_STAC_URL = "https://landsatlook.usgs.gov/stac-server"
#: Collection names translated for a server: server URL -> {name given: name it uses}.
COLLECTION_ALIASES: dict[str, dict[str, str]] = {
    DEFAULT_STAC_URL: {"landsat-c2-l1": "landsat-c2l1", "landsat-c2-l2": "landsat-c2l2-sr"},
}
#: Asset keys that hold the panchromatic band, tried in order.
PAN_KEYS = ("pan", "B8", "b8", "B08")
#: Asset keys of the MTL metadata, tried in order.
MTL_KEYS = ("mtl.txt", "MTL.txt", "mtl", "MTL")


@dataclass(frozen=True)
class FoundScene:
    """One scene of a search, as a row of the scene list.

    Attributes
    ----------
    scene_id : str
        The item ID (Landsat product ID, e.g. ``LE07_L1TP_148035_19990716_20200918_02_T1``).
    datetime : str
        Acquisition time, ISO 8601 UTC.
    platform, instruments : str
        E.g. ``LANDSAT_7`` and ``ETM``.
    wrs_path, wrs_row : str
        WRS-2 path and row (3 digits each), empty when the item has none.
    cloud_cover : float or None
        Scene cloud cover, percent.
    pan_href, mtl_href : str
        Links to the panchromatic band and the MTL file (empty when absent).
    collection : str
        The collection searched.
    """

    scene_id: str
    datetime: str
    platform: str
    instruments: str
    wrs_path: str
    wrs_row: str
    cloud_cover: float | None
    pan_href: str
    mtl_href: str
    collection: str


def _parse_date(text: str, what: str) -> datetime:
    try:
        return parse_datetime(text)
    except InputError:
        raise InputError(
            f"{what} must be a date such as 2003-12-31, got {text!r}", key=what
        ) from None


def _host(url: str) -> tuple[str, int] | None:
    """Host and port of an http(s) URL (None for anything else, left to the STAC client)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError(f"the STAC API address has a bad port: {url!r}", key="url") from None


def _proxied(url: str) -> bool:
    """Whether requests would send ``url`` through a proxy (then the proxy resolves the host)."""
    import urllib.request

    from requests.utils import should_bypass_proxies

    return bool(urllib.request.getproxies()) and not should_bypass_proxies(url, None)


def _check_reachable(url: str) -> None:
    """Raise one clear line when the server's host cannot be resolved (no network, a typo).

    Checked before the search so that a machine without network fails at once, not after the
    HTTP client's retries; skipped behind a proxy, which resolves names itself.
    """
    import socket

    where = _host(url)
    if where is None or _proxied(url):
        return
    host, port = where
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(
            f"cannot search the STAC API at {url}: its host {host!r} could not be resolved "
            f"({getattr(exc, 'strerror', None) or exc}); check the network connection and "
            "the address",
            key="url",
        ) from None


def _retry(retries: int):
    """Retries for answers that may succeed later (429, 502-504), none for a refused
    connection, one at most for a server that did not answer in time."""
    from urllib3.util.retry import Retry

    return Retry(
        total=retries,
        connect=0,
        read=min(retries, 1),
        status=retries,
        backoff_factor=0.5,
        status_forcelist=(429, 502, 503, 504),
        allowed_methods=None,
        raise_on_status=False,
    )


def _open_client(client_cls: Any, io_cls: Any, url: str) -> Any:
    """``pystac_client.Client`` of ``url`` with the time-outs and retries of
    :func:`~glacierflow.remote.network_limits` (the time-out goes to ``Client.open``, which
    sets it on the ``StacApiIO`` it is given, replacing that object's own)."""
    limits = network_limits()
    return client_cls.open(
        url,
        stac_io=io_cls(max_retries=_retry(limits.retries)),
        timeout=(limits.connect_s, limits.read_s),
    )


def _connection_problem(exc: BaseException, url: str) -> str | None:
    """Why the server could not be reached, when ``exc`` says so (None: it answered)."""
    text = str(exc)
    host, port = _host(url) or (url, "?")
    if "NameResolutionError" in text or "Failed to resolve" in text:
        return f"its host {host!r} could not be resolved; check the network and the address"
    if "Connection refused" in text or "NewConnectionError" in text:
        return f"the connection to {host} port {port} was refused (no server listening there)"
    if "timed out" in text or "Timeout" in text:
        limits = network_limits()
        return (
            f"{host} port {port} did not answer within {limits.read_s:g} s (connecting: "
            f"{limits.connect_s:g} s; set $GLACIERFLOW_READ_TIMEOUT_S for a slow server)"
        )
    if "ConnectionError" in text or "Max retries exceeded" in text:
        return f"{host} port {port} could not be reached ({text.split('(Caused by ')[-1][:200]})"
    return None


def _asset_href(assets: dict[str, Any], keys: Sequence[str], common_name: str | None) -> str:
    for key in keys:
        if key in assets:
            return str(assets[key].get("href", ""))
    if common_name:
        for asset in assets.values():
            bands = asset.get("eo:bands") or []
            if any(b.get("common_name") == common_name for b in bands):
                return str(asset.get("href", ""))
    return ""


def _three(value: Any) -> str:
    """A WRS path or row as three digits, or empty."""
    return str(value).zfill(3) if value not in (None, "") else ""


def _found(item: dict[str, Any], collection: str) -> FoundScene:
    props = item.get("properties", {})
    assets = item.get("assets", {})
    pan = _asset_href(assets, PAN_KEYS, "pan")
    if not pan:
        pan = next(
            (str(a.get("href", "")) for a in assets.values() if "_B8." in str(a.get("href", ""))),
            "",
        )
    cloud = props.get("eo:cloud_cover")
    instruments = props.get("instruments") or []
    return FoundScene(
        scene_id=str(item.get("id", "")),
        datetime=str(props.get("datetime", "")),
        platform=str(props.get("platform", "")),
        instruments=" ".join(map(str, instruments)) if isinstance(instruments, list) else "",
        wrs_path=_three(props.get("landsat:wrs_path")),
        wrs_row=_three(props.get("landsat:wrs_row")),
        cloud_cover=float(cloud) if cloud is not None else None,
        pan_href=pan,
        mtl_href=_asset_href(assets, MTL_KEYS, None),
        collection=collection,
    )


def search_scenes(
    bbox: Sequence[float],
    start: str | datetime,
    end: str | datetime,
    *,
    collection: str = "landsat-c2-l1",
    max_cloud: float | None = None,
    url: str = DEFAULT_STAC_URL,
    max_items: int | None = 1000,
    platform: str | None = None,
) -> list[FoundScene]:
    """Search a STAC API for scenes over a box and a time range.

    Parameters
    ----------
    bbox : sequence of 4 float
        West, south, east, north, degrees.
    start, end : str or datetime
        First and last day (ISO dates; ``end`` is inclusive to its last second).
    collection : str
        STAC collection (``landsat-c2-l1``: Landsat Collection 2 Level-1).
    max_cloud : float, optional
        Keep scenes with ``eo:cloud_cover`` at most this (percent); scenes without a cloud
        cover are kept. Sent to the server as a ``query`` when it conforms to the Query
        extension, and always checked here.
    url : str
        Root of the STAC API; requests have the time-outs and retries of
        :func:`glacierflow.remote.network_limits`.
    max_items : int, optional
        Stop after this many items.
    platform : str, optional
        Keep only this platform (``LANDSAT_7``, case-insensitive, ``-``/``_`` alike).

    Returns
    -------
    list of FoundScene
        In time order.

    Raises
    ------
    InputError
        For a bad box or dates, or a server that cannot be reached or does not search.
    """
    from glacierflow._extras import needs

    with needs("search", "searching a STAC API (glacierflow search)"):
        from pystac_client import Client
        from pystac_client.errors import ClientTypeError
        from pystac_client.exceptions import APIError
        from pystac_client.stac_api_io import StacApiIO
        from pystac_client.warnings import DoesNotConformTo

    if len(bbox) != 4:
        raise InputError(f"bbox needs 4 numbers W S E N, got {list(bbox)}", key="bbox")
    west, south, east, north = (float(b) for b in bbox)
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise InputError(
            f"bbox must be west south east north in degrees with west < east and south < "
            f"north, got {list(bbox)}",
            key="bbox",
        )
    t0 = start if isinstance(start, datetime) else _parse_date(start, "start")
    t1 = end if isinstance(end, datetime) else _parse_date(end, "end")
    if isinstance(end, str) and len(end.strip()) == 10:
        t1 = t1.replace(hour=23, minute=59, second=59)
    if not t1 > t0:
        raise InputError(
            f"end ({t1:%Y-%m-%d}) must be after start ({t0:%Y-%m-%d})", key=("end", "start")
        )
    name = COLLECTION_ALIASES.get(url.rstrip("/"), {}).get(collection, collection)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    window = f"{t0.astimezone(UTC):{stamp}}/{t1.astimezone(UTC):{stamp}}"
    _check_reachable(url)
    try:
        client = _open_client(Client, StacApiIO, url)
        query = None
        if max_cloud is not None and client.conforms_to("QUERY"):
            query = {"eo:cloud_cover": {"lte": float(max_cloud)}}
        search = client.search(
            collections=[name],
            bbox=[west, south, east, north],
            datetime=window,
            query=query,
            max_items=max_items,
        )
        items = [item.to_dict() for item in search.items()]
    except APIError as exc:
        if (problem := _connection_problem(exc, url)) is not None:
            raise InputError(f"cannot search the STAC API at {url}: {problem}") from None
        raise InputError(f"the STAC API at {url} refused the search: {exc}") from None
    except (OSError, ValueError) as exc:  # connection errors, bad JSON
        raise InputError(f"cannot search the STAC API at {url}: {exc}") from None
    except (DoesNotConformTo, ClientTypeError, NotImplementedError) as exc:
        raise InputError(f"{url} is not a STAC API with item search ({exc})") from None
    return _kept([_found(item, name) for item in items], max_cloud, platform)


def _kept(
    found: list[FoundScene], max_cloud: float | None, platform: str | None
) -> list[FoundScene]:
    """The scenes within the cloud cover and of the platform asked for, by time."""
    if max_cloud is not None:
        found = [s for s in found if s.cloud_cover is None or s.cloud_cover <= max_cloud]
    if platform is not None:
        want = platform.upper().replace("-", "_")
        found = [s for s in found if s.platform.upper().replace("-", "_") == want]
    return sorted(found, key=lambda s: (s.datetime, s.scene_id))


def scene_list_csv(scenes: Sequence[FoundScene]) -> str:
    """The scene list as CSV text: a header of :class:`FoundScene` field names, one row each."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=[f.name for f in fields(FoundScene)], lineterminator="\n"
    )
    writer.writeheader()
    for scene in scenes:
        row = asdict(scene)
        row["cloud_cover"] = "" if scene.cloud_cover is None else f"{scene.cloud_cover:g}"
        writer.writerow(row)
    return buffer.getvalue()


def write_scene_list(scenes: Sequence[FoundScene], path: str | PathLike[str]) -> Path:
    """Write :func:`scene_list_csv` to ``path``, atomically."""
    from glacierflow.atomic import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(scene_list_csv(scenes), encoding="utf-8")
    return path
