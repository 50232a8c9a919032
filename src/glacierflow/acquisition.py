"""Acquisition time, sensor and ID of a scene, from Landsat MTL metadata or a file name.

Landsat identifiers understood in file names:

* Collection product IDs, ``LC08_L1TP_063018_20160718_20200906_02_T1`` (also ``LE07``, ``LT05``,
  ``LC09``, ...): the date is the fourth field; the time of day is unknown and set to 00:00 UTC.
* Pre-collection scene IDs, ``LE71480351999197SGS00``: ``L``, sensor letter, mission digit, WRS
  path and row (3 digits each), year, day of year, ground station (3 letters) and version (2
  digits); time of day unknown, 00:00 UTC.

Sentinel-2 names understood: product names ``S2A_MSIL1C_20200407T044659_N0209_R076_T45RVL_...``
and granule band files ``T45RVL_20200407T044659_B08.jp2``; both carry the sensing start time.

:mod:`glacierflow.scenes` decides, for one image, which of these (or a time given by the caller)
holds.

Dates that disagree
-------------------
A date given for a scene (``ref_date``/``sec_date``, a project's ``[scenes.dates]``) that falls
on another UTC day than the scene's MTL file or the ID in its name stops the run
(:func:`check_given_date`, a :class:`~glacierflow.errors.DateConflictError` naming the file,
both dates and where the metadata's came from): a mistyped date scales the velocity, a swapped
one reverses it. The same UTC day passes, since an MTL file gives the time of day and a user
the date. Inside :func:`trusting_given_dates` (the ``trust_given_dates`` setting) the given date
wins, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, date, datetime, timedelta
from os import PathLike
from pathlib import Path

from glacierflow.errors import DateConflictError, InputError

__all__ = [
    "acquisition_from_mtl",
    "acquisition_from_name",
    "check_given_date",
    "find_mtl",
    "trusting_given_dates",
]

log = logging.getLogger("glacierflow")

# --------------------------------------------------------------------------------------------
# Given dates against the metadata

_TRUST_GIVEN_DATES: ContextVar[bool] = ContextVar("trust_given_dates", default=False)


@contextlib.contextmanager
def trusting_given_dates(trust: bool = True) -> Iterator[None]:
    """Inside, a given date that contradicts the metadata is used, with a warning, instead of
    stopping with a :class:`~glacierflow.errors.DateConflictError` (``trust=False``: the
    default rule again)."""
    token = _TRUST_GIVEN_DATES.set(bool(trust))
    try:
        yield
    finally:
        _TRUST_GIVEN_DATES.reset(token)


def check_given_date(
    path: str | PathLike[str], given: datetime, found: datetime, source: str
) -> None:
    """Stop when a date given for a scene falls on another UTC day than its metadata's.

    Parameters
    ----------
    path : str or PathLike
        The scene (it leads the message).
    given : datetime
        The date given by the user (aware; midnight when only a day was given).
    found : datetime
        The time in the metadata (aware UTC).
    source : str
        Where ``found`` comes from, for the message (``"the MTL file X_MTL.txt"``, ``"the
        scene ID LC08_... in the file name"``).

    Raises
    ------
    DateConflictError
        If the two fall on different UTC days, unless inside :func:`trusting_given_dates`
        (then a warning is logged).
    """
    g, f = given.astimezone(UTC), found.astimezone(UTC)
    if g.date() == f.date():
        return
    clock = f"{f:%Y-%m-%d %H:%M:%S} UTC" if f.time() != datetime.min.time() else f"{f:%Y-%m-%d}"
    found_text = f"{source}, which says {clock}"
    if _TRUST_GIVEN_DATES.get():
        log.warning(
            "%s: using the given date %s although %s (trust_given_dates)",
            Path(path).name,
            g.isoformat(),
            found_text,
        )
        return
    raise DateConflictError.between(path, g.isoformat(), found_text)


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
