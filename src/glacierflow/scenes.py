"""Read one scene: the image as float32, its valid-pixel mask, georeferencing, time and sensor.

This module (with ``products``) is the only place where glacierflow opens files. A scene must be
a single-band raster GDAL can read, in a projected CRS with metre units. Its acquisition time
comes, in this order, from an explicit argument, from a Landsat MTL metadata file beside it, or
from a Landsat or Sentinel-2 identifier in its file name.

Landsat identifiers understood in file names:

* Collection product IDs, ``LC08_L1TP_063018_20160718_20200906_02_T1`` (also ``LE07``, ``LT05``,
  ``LC09``, ...): the date is the fourth field; the time of day is unknown and set to 00:00 UTC.
* Pre-collection scene IDs, ``LE71480351999197SGS00``: ``L``, sensor letter, mission digit, WRS
  path and row (3 digits each), year, day of year, ground station (3 letters) and version (2
  digits); time of day unknown, 00:00 UTC.

Sentinel-2 names understood: product names ``S2A_MSIL1C_20200407T044659_N0209_R076_T45RVL_...``
and granule band files ``T45RVL_20200407T044659_B08.jp2``; both carry the sensing start time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from os import PathLike
from pathlib import Path

import affine
import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.windows
from rasterio.enums import MaskFlags

from glacierflow import remote
from glacierflow.errors import InputError, NoAcquisitionTimeError

__all__ = [
    "Scene",
    "acquisition_from_mtl",
    "acquisition_from_name",
    "find_mtl",
    "parse_datetime",
    "read_header",
    "read_preview",
    "read_raster_band",
    "read_scene",
]

_DATE_HELP = "expected an ISO date or date-time, e.g. 2016-07-18 or 2016-07-18T20:37:06Z"

_NO_TIME_HELP = (
    "cannot find the acquisition time (no MTL file beside it, no Landsat or Sentinel-2 ID in its "
    "name)"
)


@dataclass(frozen=True, eq=False)
class Scene:
    """One single-band image with its georeferencing, acquisition time and sensor.

    ``eq=False``: scenes hold arrays, so two scenes compare (and hash) by identity.

    Attributes
    ----------
    path : Path
        The file the scene was read from.
    data : ndarray of float32, shape (rows, cols)
        Pixel values; 0 wherever ``valid`` is False (never NaN).
    valid : ndarray of bool, shape (rows, cols)
        True where the pixel holds data.
    crs : rasterio.crs.CRS or None
        The map CRS (projected, metres for scenes from :func:`read_scene`).
    transform : affine.Affine
        Pixel (col, row) to map (x, y) in metres, GDAL pixel-corner convention.
    acquired : datetime
        Acquisition time, timezone-aware UTC.
    sensor : str
        E.g. ``"Landsat 8 OLI"``, ``"Landsat 7 ETM+"``, ``"Sentinel-2A MSI"`` or ``"unknown"``.
    scene_id : str or None
        Landsat scene or product ID, or Sentinel-2 product (or granule) name, when found.
    time_source : str
        Where ``acquired`` came from: ``"option"``, ``"MTL"`` or ``"filename"``.
    file_offset_px : (int, int)
        Row and column, in the file, of the scene's first pixel: (0, 0) unless the scene is a
        window of its file (see :func:`header_window`).
    """

    path: Path
    data: np.ndarray
    valid: np.ndarray
    crs: rasterio.crs.CRS | None
    transform: affine.Affine
    acquired: datetime
    sensor: str
    scene_id: str | None
    time_source: str
    file_offset_px: tuple[int, int] = (0, 0)

    @property
    def pixel_size_m(self) -> float:
        """Size of a pixel along a row, in map units (metres): ``hypot(a, d)`` of the transform."""
        return float(math.hypot(self.transform.a, self.transform.d))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the image."""
        return self.data.shape  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Times


def _to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_datetime(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time into a timezone-aware UTC datetime.

    Parameters
    ----------
    text : str
        ``"2016-07-18"`` (midnight UTC), ``"2016-07-18T20:37:06Z"``,
        ``"2016-07-18T20:37:06.339158+00:00"``, ... A time without an offset is taken as UTC.
        Fractional seconds beyond microseconds are truncated.

    Returns
    -------
    datetime
        Timezone-aware, in UTC.

    Raises
    ------
    InputError
        If ``text`` is not an ISO date or date-time.
    """
    cleaned = str(text).strip()
    try:
        # Python 3.11's fromisoformat reads "Z", basic formats and any number of fractional
        # digits; a trailing lower-case "z" is the one common variant it rejects.
        value = datetime.fromisoformat(re.sub(r"z$", "Z", cleaned))
    except ValueError:
        raise InputError(f"cannot read the date {text!r}: {_DATE_HELP}") from None
    return _to_utc(value)


def _coerce_acquired(acquired: datetime | date | str) -> datetime:
    if isinstance(acquired, datetime):
        return _to_utc(acquired)
    if isinstance(acquired, date):
        return datetime(acquired.year, acquired.month, acquired.day, tzinfo=UTC)
    return parse_datetime(acquired)


# --------------------------------------------------------------------------------------------
# Landsat MTL metadata

_MTL_LINE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*(.*?)\s*$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*Z?$", re.IGNORECASE)


def _read_mtl_fields(mtl_path: Path) -> dict[str, str]:
    """``KEY = VALUE`` pairs of an MTL file, quotes stripped; the first occurrence of a key wins.

    The first occurrence matters for Collection 2 files, where PRODUCT_CONTENTS (the product
    itself) comes before the processing records that repeat some keys.
    """
    fields: dict[str, str] = {}
    text = mtl_path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        m = _MTL_LINE.match(line)
        if m is None:
            continue
        key, value = m.group(1).upper(), m.group(2).strip().strip('"').strip()
        if key in ("GROUP", "END_GROUP"):
            continue
        fields.setdefault(key, value)
    return fields


def _landsat_sensor(spacecraft: str | None, instrument: str | None) -> str:
    """Sensor name like ``"Landsat 8 OLI"`` from MTL SPACECRAFT_ID and SENSOR_ID values."""
    mission = re.search(r"(\d+)", spacecraft or "")
    name = f"Landsat {int(mission.group(1))}" if mission else "Landsat"
    inst = (instrument or "").upper().replace(" ", "")
    if inst.startswith("OLI"):  # "OLI_TIRS" and "OLI": the optical bands are OLI's
        return f"{name} OLI"
    if inst.startswith("ETM"):
        return f"{name} ETM+"
    if inst in ("TM", "MSS", "TIRS"):
        return f"{name} {inst}"
    return name


def acquisition_from_mtl(mtl_path: str | PathLike[str]) -> tuple[datetime, str, str | None]:
    """Acquisition time, sensor and scene ID from a Landsat MTL metadata file.

    Reads pre-collection and Collection 1 files (``DATE_ACQUIRED``, ``SCENE_CENTER_TIME``,
    ``SPACECRAFT_ID``, ``SENSOR_ID``, ``LANDSAT_SCENE_ID``, ``LANDSAT_PRODUCT_ID``), Collection
    2 files (the same keys in groups PRODUCT_CONTENTS and IMAGE_ATTRIBUTES) and the very old
    ``ACQUISITION_DATE`` / ``SCENE_CENTER_SCAN_TIME`` keys.

    Parameters
    ----------
    mtl_path : str or PathLike
        The ``*_MTL.txt`` file.

    Returns
    -------
    acquired : datetime
        Scene-centre time, timezone-aware UTC, fractional seconds truncated to microseconds;
        00:00 UTC when the file gives only the date.
    sensor : str
        E.g. ``"Landsat 8 OLI"``.
    scene_id : str or None
        ``LANDSAT_PRODUCT_ID`` if present, else ``LANDSAT_SCENE_ID``.

    Raises
    ------
    InputError
        If the file cannot be read or holds no acquisition date.
    """
    path = Path(mtl_path)
    try:
        fields = _read_mtl_fields(path)
    except OSError as exc:
        raise InputError(
            f"cannot read the MTL metadata file: {exc.strerror or exc}", path
        ) from None
    day_text = fields.get("DATE_ACQUIRED") or fields.get("ACQUISITION_DATE")
    if not day_text:
        raise InputError(
            "holds no DATE_ACQUIRED (or ACQUISITION_DATE); is it a Landsat MTL metadata file?",
            path,
        )
    try:
        day = date.fromisoformat(day_text[:10])
    except ValueError:
        raise InputError(f"cannot read DATE_ACQUIRED = {day_text!r}", path) from None
    acquired = datetime(day.year, day.month, day.day, tzinfo=UTC)
    clock_text = fields.get("SCENE_CENTER_TIME") or fields.get("SCENE_CENTER_SCAN_TIME")
    if clock_text:
        m = _CLOCK.match(clock_text.strip())
        if m is None:
            raise InputError(f"cannot read SCENE_CENTER_TIME = {clock_text!r}", path)
        hh, mm, ss, frac = m.groups()
        # USGS writes 7 fractional digits; datetime holds 6, so the rest is truncated.
        micro = int((frac or "0")[:6].ljust(6, "0"))
        acquired += timedelta(hours=int(hh), minutes=int(mm), seconds=int(ss), microseconds=micro)
    sensor = _landsat_sensor(fields.get("SPACECRAFT_ID"), fields.get("SENSOR_ID"))
    scene_id = fields.get("LANDSAT_PRODUCT_ID") or fields.get("LANDSAT_SCENE_ID") or None
    return acquired, sensor, scene_id


def _mtl_ids(mtl_path: Path) -> list[str]:
    try:
        fields = _read_mtl_fields(mtl_path)
    except OSError:
        return []
    return [fields[k] for k in ("LANDSAT_SCENE_ID", "LANDSAT_PRODUCT_ID") if fields.get(k)]


_BAND_SUFFIX = re.compile(r"^(.+?)_B(?:\d{1,2}|QA)(?![A-Za-z0-9])", re.IGNORECASE)


def find_mtl(image_path: str | PathLike[str]) -> Path | None:
    """Find the Landsat MTL metadata file that belongs to an image, in the image's folder.

    Tried in order: ``<prefix>_MTL.txt`` where ``<prefix>`` is the name before ``_B<N>``
    (``LC80630182016200LGN00_MTL.txt`` for ``LC80630182016200LGN00_B8_yahtse.TIF``);
    ``<ID>_MTL.txt`` for a Landsat scene or product ID in the name; ``<stem>_MTL.txt``; then
    the single ``*_MTL.txt`` in the folder whose LANDSAT_SCENE_ID or LANDSAT_PRODUCT_ID occurs
    in the image name. File names are compared case-insensitively.

    Parameters
    ----------
    image_path : str or PathLike
        The image file.

    Returns
    -------
    Path or None
        The MTL file, or None if there is none.
    """
    path = Path(image_path)
    folder = path.parent
    try:
        mtls = {p.name.lower(): p for p in folder.iterdir() if p.name.lower().endswith("_mtl.txt")}
    except OSError:
        return None
    if not mtls:
        return None
    prefixes: list[str] = []
    m = _BAND_SUFFIX.match(path.name)
    if m:
        prefixes.append(m.group(1))
    for found in (_find_landsat_product_id(path.name), _find_landsat_scene_id(path.name)):
        if found is not None:
            prefixes.append(found[0])
    prefixes.append(path.stem)
    for prefix in prefixes:
        candidate = mtls.get(f"{prefix}_mtl.txt".lower())
        if candidate is not None and candidate.is_file():
            return candidate
    name = path.name.upper()
    matches = [
        p
        for p in sorted(mtls.values())
        if p.is_file() and any(i.upper() in name for i in _mtl_ids(p))
    ]
    return matches[0] if len(matches) == 1 else None


# --------------------------------------------------------------------------------------------
# Identifiers in file names

_LANDSAT_PRODUCT_ID = re.compile(
    r"(?<![A-Z0-9])L([COTEM])(\d{2})_([A-Z0-9]{4})_(\d{6})_(\d{8})_(\d{8})_(\d{2})_([A-Z0-9]{2})",
    re.IGNORECASE,
)
_LANDSAT_SCENE_ID = re.compile(
    r"(?<![A-Z0-9])L([COTEM])(\d)(\d{3})(\d{3})(\d{4})(\d{3})([A-Z]{3})(\d{2})(?![0-9])",
    re.IGNORECASE,
)
_S2_PRODUCT = re.compile(
    r"(?<![A-Z0-9])S2([A-D])_MSIL[0-9A-Z]{2,3}_(\d{8}T\d{6})"
    r"(?:_N\d{4}_R\d{3}_T\d{2}[A-Z]{3}_\d{8}T\d{6})?",
    re.IGNORECASE,
)
_S2_GRANULE = re.compile(r"(?<![A-Z0-9])T(\d{2}[A-Z]{3})_(\d{8}T\d{6})(?![0-9])", re.IGNORECASE)


def _landsat_name_sensor(letter: str, mission: int) -> str:
    letter = letter.upper()
    if letter in ("C", "O"):
        instrument = "OLI"
    elif letter == "T":
        instrument = "TIRS" if mission >= 8 else "TM"
    elif letter == "E":
        instrument = "ETM+"
    else:
        instrument = "MSS"
    return f"Landsat {mission} {instrument}"


def _find_landsat_product_id(name: str) -> tuple[str, datetime, str] | None:
    for m in _LANDSAT_PRODUCT_ID.finditer(name):
        try:
            day = datetime.strptime(m.group(5), "%Y%m%d").replace(tzinfo=UTC)
        except ValueError:
            continue
        return m.group(0).upper(), day, _landsat_name_sensor(m.group(1), int(m.group(2)))
    return None


def _find_landsat_scene_id(name: str) -> tuple[str, datetime, str] | None:
    for m in _LANDSAT_SCENE_ID.finditer(name):
        year, doy = int(m.group(5)), int(m.group(6))
        if not 1972 <= year <= 2100 or not 1 <= doy <= (366 if _is_leap(year) else 365):
            continue
        day = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=doy - 1)
        return m.group(0).upper(), day, _landsat_name_sensor(m.group(1), int(m.group(2)))
    return None


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _s2_time(stamp: str) -> datetime | None:
    try:
        return datetime.strptime(stamp.upper(), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def acquisition_from_name(name: str) -> tuple[datetime, str, str | None] | None:
    """Acquisition time, sensor and ID from a Landsat or Sentinel-2 identifier in a file name.

    The identifier may sit anywhere in the name (prefixes and suffixes are allowed). Tried in
    order: Landsat collection product ID, Landsat scene ID, Sentinel-2 product name, Sentinel-2
    granule file name (see the module docstring for the formats).

    Parameters
    ----------
    name : str
        A file name (a full path works too; only identifiers matter).

    Returns
    -------
    (acquired, sensor, scene_id) or None
        ``acquired`` is timezone-aware UTC. Landsat IDs carry only the date, so their time is
        00:00 UTC (the time of day is unknown); Sentinel-2 names carry the sensing start time.
        ``scene_id`` is the Landsat ID, the Sentinel-2 product name, or ``T<tile>_<time>`` for
        a granule file. None if the name holds no identifier.
    """
    base = Path(name).name
    for finder in (_find_landsat_product_id, _find_landsat_scene_id):
        found = finder(base)
        if found is not None:
            scene_id, acquired, sensor = found
            return acquired, sensor, scene_id
    for m in _S2_PRODUCT.finditer(base):
        acquired = _s2_time(m.group(2))
        if acquired is not None:
            return acquired, f"Sentinel-2{m.group(1).upper()} MSI", m.group(0).upper()
    for m in _S2_GRANULE.finditer(base):
        acquired = _s2_time(m.group(2))
        if acquired is not None:
            return acquired, "Sentinel-2 MSI", m.group(0).upper()
    return None


def _acquisition(
    path: Path, acquired: datetime | date | str | None
) -> tuple[datetime, str, str | None, str]:
    """(time, sensor, scene_id, time_source) for an image; see :func:`read_scene`."""
    if acquired is not None:
        try:
            when = _coerce_acquired(acquired)
        except InputError as exc:
            raise InputError(
                f"the acquisition date given for this image ({acquired!r}) is not valid: "
                f"{_DATE_HELP}",
                path,
            ) from exc
    mtl = None if remote.is_remote(path) else find_mtl(path)
    mtl_problem = ""
    if mtl is not None:
        try:
            t, sensor, scene_id = acquisition_from_mtl(mtl)
        except InputError as exc:
            mtl_problem = f" ({exc})"
        else:
            if acquired is not None:
                return when, sensor, scene_id, "option"
            return t, sensor, scene_id, "MTL"
    from_name = acquisition_from_name(path.name)
    if from_name is not None:
        t, sensor, scene_id = from_name
        if acquired is not None:
            return when, sensor, scene_id, "option"
        return t, sensor, scene_id, "filename"
    if acquired is not None:
        return when, "unknown", None, "option"
    raise NoAcquisitionTimeError.missing(
        _NO_TIME_HELP + mtl_problem, path, ("ref_date", "sec_date")
    )


# --------------------------------------------------------------------------------------------
# Reading


def read_scene(
    path: str | PathLike[str],
    *,
    band: int | None = None,
    acquired: datetime | date | str | None = None,
    sensor: str | None = None,
    window: rasterio.windows.Window | None = None,
) -> Scene:
    """Read one band of a georeferenced image, with its valid mask, time and sensor.

    Parameters
    ----------
    path : str or PathLike
        A raster GDAL can read (GeoTIFF, JPEG 2000, ...), in a projected CRS with metre units.
    band : int, optional
        1-based band to read; required when the file has more than one band.
    acquired : datetime, date or str, optional
        Acquisition time; overrides metadata and file name (``time_source = "option"``). A
        string is parsed with :func:`parse_datetime`; naive times are UTC.
    sensor : str, optional
        Overrides the sensor found in metadata or name.
    window : rasterio.windows.Window, optional
        Read only this part of the image (pixel rows and columns); the scene's transform is the
        window's. A window may hold no valid pixel; a whole image may not.

    Returns
    -------
    Scene
        ``data`` as float32 with 0 at invalid pixels. Pixels are invalid at the declared nodata
        value, at NaN or infinity, where the dataset's own mask (e.g. an internal mask band)
        says so, and at DN 0 for Landsat scenes and for integer images without declared nodata
        (the Landsat fill value).

    Raises
    ------
    InputError
        If the file is missing, is not a raster, has several bands and no ``band`` was chosen,
        has no CRS or a geographic or non-metre one, holds no valid pixel, or ``acquired``
        cannot be parsed.
    NoAcquisitionTimeError
        If no acquisition time is given or found.
    """
    remote.check_scheme(path)
    stac = remote.resolve_stac(path) if remote.is_stac(path) else None
    if stac is not None:
        path = stac.href
        remote.check_scheme(path)
    name = str(path)
    file_path = remote.location(path)
    if not remote.is_remote(name) and not name.startswith("/vsi") and not file_path.exists():
        raise InputError("file not found", file_path)
    opened = contextlib.ExitStack()
    try:
        with warnings.catch_warnings():
            # An image without georeferencing gets its own InputError below.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            dataset = opened.enter_context(remote.open_raster(name))
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"not a raster GeoTIFF GDAL can read: {exc}", file_path) from None
    with opened:
        crs = dataset.crs
        _check_crs(crs, file_path)
        band = _choose_band(dataset.count, band, file_path)
        if stac is not None and stac.acquired is not None and acquired is None:
            when, found_sensor, scene_id, time_source = (
                stac.acquired,
                stac.sensor,
                stac.scene_id,
                "STAC",
            )
        else:
            when, found_sensor, scene_id, time_source = _acquisition(file_path, acquired)
        sensor_name = sensor if sensor is not None else found_sensor
        nodata = dataset.nodatavals[band - 1]
        flags = dataset.mask_flag_enums[band - 1]
        per_dataset = MaskFlags.per_dataset in flags or MaskFlags.alpha in flags
        raw, mask = remote.cached_window(dataset, name, band, window, masks=per_dataset)
        dataset_mask = mask > 0 if mask is not None else None
        transform = dataset.transform if window is None else dataset.window_transform(window)

    data = raw.astype(np.float32)
    valid = _valid_pixels(raw, data, nodata, sensor_name, dataset_mask)
    if window is None and not valid.any():
        raise InputError("holds no valid pixels (all nodata, NaN or Landsat fill 0)", file_path)
    data[~valid] = 0.0
    return Scene(
        path=file_path,
        data=data,
        valid=valid,
        crs=crs,
        transform=transform,
        acquired=when,
        sensor=sensor_name,
        scene_id=scene_id,
        time_source=time_source,
    )


def _choose_band(count: int, band: int | None, file_path: Path) -> int:
    """The 1-based band to read: the only one, or ``band`` if the file has it."""
    if band is None:
        if count != 1:
            raise InputError(
                f"has {count} bands; choose one with band (1-based)", file_path, key="band"
            )
        return 1
    if not 1 <= band <= count:
        # Not "has 1 band": the setting's name standing alone is renamed in messages (--band).
        has = f"has {count} bands" if count != 1 else "is a single-band image"
        raise InputError(
            f"{has}; band {band} is out of range (1 to {count})",
            file_path,
            key="band",
        )
    return band


def _valid_pixels(
    raw: np.ndarray,
    data: np.ndarray,
    nodata: float | None,
    sensor_name: str,
    dataset_mask: np.ndarray | None,
) -> np.ndarray:
    """Pixels with a value: finite, not nodata, not Landsat fill 0, not masked by the file."""
    valid = np.isfinite(data)
    if nodata is not None and not math.isnan(nodata):
        # Compare in the file's own dtype: a float32 nodata such as -3.4028235e38 matches
        # exactly there, and a value the dtype cannot hold matches no pixel.
        valid &= raw != float(nodata)
    integer = np.issubdtype(raw.dtype, np.integer)
    if sensor_name.startswith("Landsat") or (integer and nodata is None):
        valid &= raw != 0
    if dataset_mask is not None:
        valid &= dataset_mask
    return valid


def read_header(
    path: str | PathLike[str],
    *,
    band: int | None = None,
    acquired: datetime | date | str | None = None,
    sensor: str | None = None,
) -> Scene:
    """Read a scene's metadata without its pixels.

    The same checks, time and sensor as :func:`read_scene`, but ``data`` and ``valid`` are
    zero-cost broadcast views of the image's shape (all 0 and all True): for tiled processing,
    which reads the pixels window by window. Do not pickle them (that would materialise them).
    """
    head = read_scene(path, band=band, acquired=acquired, sensor=sensor, window=_NO_PIXEL)
    # The image itself: a STAC item's asset, not the item (local paths as given: /vsi... names).
    image = head.path if remote.is_remote(head.path) or remote.is_stac(path) else path
    with remote.open_raster(image) as ds:
        shape, transform = ds.shape, ds.transform
    return Scene(
        path=head.path,
        data=np.broadcast_to(np.float32(0.0), shape),
        valid=np.broadcast_to(True, shape),
        crs=head.crs,
        transform=transform,
        acquired=head.acquired,
        sensor=head.sensor,
        scene_id=head.scene_id,
        time_source=head.time_source,
    )


#: An empty window: read_header runs read_scene's checks without reading a block.
_NO_PIXEL = rasterio.windows.Window(0, 0, 0, 0)


def header_window(scene: Scene, row0: int, col0: int, rows: int, cols: int) -> Scene:
    """The header (from :func:`read_header`) of a window of a scene, in pixels of the scene.

    Its transform is the window's and ``file_offset_px`` says where it starts in the file, so
    that windowed reads of the new header read the right pixels.
    """
    r0, c0 = scene.file_offset_px
    return dataclasses.replace(
        scene,
        data=np.broadcast_to(np.float32(0.0), (rows, cols)),
        valid=np.broadcast_to(True, (rows, cols)),
        transform=scene.transform @ affine.Affine.translation(col0, row0),
        file_offset_px=(r0 + row0, c0 + col0),
    )


def read_preview(
    path: str | PathLike[str], *, band: int | None = None, max_side_px: int = 2048
) -> tuple[np.ndarray, affine.Affine]:
    """A decimated view of a scene for pictures, at most ``max_side_px`` on its longer side.

    Returns the float32 image (NaN at nodata) and its geotransform. Reads overviews when the
    file has them, so a full scene costs a fraction of a full read.
    """
    with remote.open_raster(path) as ds:
        b = band or 1
        factor = max(1, int(np.ceil(max(ds.shape) / max_side_px)))
        shape = (max(1, ds.height // factor), max(1, ds.width // factor))
        data = ds.read(b, out_shape=shape, masked=True).astype(np.float32).filled(np.nan)
        transform = ds.transform @ affine.Affine.scale(ds.width / shape[1], ds.height / shape[0])
    return data, transform


def read_raster_band(
    path: str | PathLike[str], *, band: int = 1, what: str = "raster"
) -> tuple[np.ndarray, affine.Affine, rasterio.crs.CRS]:
    """One band of a georeferenced raster as float64, NaN where it has no value.

    Parameters
    ----------
    path : str or PathLike
        Any raster GDAL reads (GeoTIFF, VRT, ...), local or a GDAL URL.
    band : int
        The band, 1-based.
    what : str
        What the raster is, for error messages ("prior vx raster").

    Returns
    -------
    data : ndarray of float64
        The band, NaN at nodata and masked cells.
    transform : affine.Affine
        Pixel (col, row) to map (x, y) transform.
    crs : rasterio.crs.CRS
        The raster's CRS.

    Raises
    ------
    InputError
        If the raster cannot be read or has no CRS.
    """
    try:
        opened = contextlib.ExitStack()
        ds = opened.enter_context(remote.open_raster(path))
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read the {what}: {exc}", path) from None
    with opened:
        if ds.crs is None or not ds.crs.to_wkt():
            raise InputError(f"the {what} has no CRS", path)
        data = ds.read(band, masked=True).astype(np.float64).filled(np.nan)
        return data, ds.transform, ds.crs


def _check_crs(crs: rasterio.crs.CRS | None, path: Path) -> None:
    if crs is None or not crs.to_wkt():
        raise InputError(
            "has no coordinate reference system; glacierflow needs georeferenced, map-projected "
            "images",
            path,
        )
    if crs.is_geographic:
        raise InputError(
            f"is in a geographic CRS ({crs.to_string()}, degrees); reproject it to a projected "
            "CRS in metres (e.g. UTM) first, for example with gdalwarp -t_srs EPSG:326NN",
            path,
        )
    try:
        units, factor = crs.linear_units_factor
    except rasterio.errors.CRSError:
        raise InputError(
            f"has a CRS without linear units ({crs.to_string()}); reproject it to a projected "
            "CRS in metres (e.g. UTM) first",
            path,
        ) from None
    if not math.isclose(factor, 1.0, rel_tol=1e-9):
        raise InputError(
            f"has map units of {units} ({factor} m); reproject it to a projected CRS in metres "
            "(e.g. UTM) first",
            path,
        )
