"""Parse and check the query parameters of the portal; bad values raise :class:`BadParameter`.

The web application answers :class:`BadParameter` with HTTP 400 and a JSON body naming the
parameter and the expected form, so a mistyped request is corrected by reading the error.
"""

from __future__ import annotations

import datetime as dt
import math
import re

__all__ = ["BadParameter", "check_lon_lat", "lon_intervals", "parse_bbox", "parse_interval"]

_YEAR_RE = re.compile(r"^\d{4}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadParameter(ValueError):
    """A query parameter the portal cannot use."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def lon_intervals(west: float, east: float) -> list[tuple[float, float]]:
    """Longitude intervals of a box; two when it crosses the antimeridian (west > east)."""
    return [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]


def parse_bbox(text: str, name: str = "bbox") -> tuple[float, float, float, float]:
    """``'west,south,east,north'`` in degrees; west > east means crossing the antimeridian.

    Raises
    ------
    BadParameter
        Unless there are four finite numbers with longitudes in [-180, 180], latitudes in
        [-90, 90] and south <= north.
    """
    parts = text.split(",")
    if len(parts) != 4:
        raise BadParameter(name, "expected four numbers 'west,south,east,north' in degrees")
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise BadParameter(name, "expected four numbers 'west,south,east,north'") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise BadParameter(name, "values must be finite numbers")
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise BadParameter(name, "longitudes must lie in [-180, 180]")
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        raise BadParameter(name, "latitudes must lie in [-90, 90]")
    if south > north:
        raise BadParameter(name, "south is greater than north")
    return west, south, east, north


def _time(text: str, name: str, end: bool) -> dt.datetime | None:
    """One end of an interval: '..' or empty (open), YYYY, YYYY-MM-DD or ISO 8601."""
    text = text.strip()
    if text in ("", ".."):
        return None
    try:
        if _YEAR_RE.match(text):
            year = int(text)
            return (
                dt.datetime(year, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
                if end
                else dt.datetime(year, 1, 1, tzinfo=dt.UTC)
            )
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(
            name, f"{text[:40]!r} is not a time; use YYYY, YYYY-MM-DD or ISO 8601"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if end and _DATE_RE.match(text):
        when += dt.timedelta(days=1, microseconds=-1)  # a date as an end means the whole day
    return when.astimezone(dt.UTC)


def parse_interval(text: str, name: str = "datetime") -> tuple[dt.datetime | None, ...]:
    """``'start/end'`` (either may be ``..``), or one time meaning that whole year/day/instant.

    Returns
    -------
    (start, end) : datetime or None each (None is open)

    Raises
    ------
    BadParameter
        For unreadable times or an end before the start.
    """
    if text.count("/") > 1:
        raise BadParameter(name, "expected 'start/end', one time, or '..' for an open end")
    if "/" in text:
        first, second = text.split("/")
    else:
        first = second = text
    start, end = _time(first, name, end=False), _time(second, name, end=True)
    if start is not None and end is not None and end < start:
        raise BadParameter(name, "the end is before the start")
    return start, end


def check_lon_lat(lon: float, lat: float) -> None:
    """Raise :class:`BadParameter` unless lon in [-180, 180] and lat in [-90, 90], finite."""
    if not math.isfinite(lon) or not -180 <= lon <= 180:
        raise BadParameter("lon", "longitude must be a finite number in [-180, 180] degrees")
    if not math.isfinite(lat) or not -90 <= lat <= 90:
        raise BadParameter("lat", "latitude must be a finite number in [-90, 90] degrees")
