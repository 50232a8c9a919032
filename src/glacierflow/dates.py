"""Times as glacierflow holds them: timezone-aware, in UTC.

Scene acquisition times, STAC item times, search windows and the periods of composites all pass
through here, so that a date is read one way everywhere: an ISO 8601 date or date-time, a time
without an offset taken as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from glacierflow.errors import InputError

__all__ = ["DATE_HELP", "as_utc", "parse_datetime", "to_utc"]

#: What a date must look like, for error messages.
DATE_HELP = "expected an ISO date or date-time, e.g. 2016-07-18 or 2016-07-18T20:37:06Z"


def to_utc(value: datetime) -> datetime:
    """A datetime in UTC: naive datetimes are taken as UTC; aware ones are converted to UTC."""
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
        raise InputError(f"cannot read the date {text!r}: {DATE_HELP}") from None
    return to_utc(value)


def as_utc(value: datetime | date | str) -> datetime:
    """A datetime, a date (midnight) or ISO text (:func:`parse_datetime`) as an aware UTC time.

    Raises
    ------
    InputError
        If ``value`` is text that is not an ISO date or date-time.
    """
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return parse_datetime(value)
