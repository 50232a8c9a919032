"""Periods (years) and how much an image pair counts for each: the time side of composites.

A pair measures the mean velocity over its interval ``[ref_time, sec_time]``; the interval
usually straddles the boundary of a calendar year (the seed's 1999-07-16 / 2000-06-16). Three
documented rules say how much it counts for each period (``assign``):

``"overlap"`` (default)
    The pair counts for every period it overlaps, with the fraction ``f`` of its interval that
    lies inside the period (1999-07-16 / 2000-06-16: f = 169/336 for 1999, 167/336 for 2000).
``"majority"``
    The pair counts fully (``f = 1``) for the one period holding the largest part of its
    interval (ties go to the earlier period), and for no other.
``"midpoint"``
    The pair counts fully for the period containing the middle of its interval.

:func:`covered_span` says what of a period the pairs actually cover. :mod:`glacierflow.stack`
combines the pairs with these fractions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from glacierflow.dates import as_utc

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "ASSIGN_RULES",
    "Period",
    "calendar_periods",
    "covered_span",
    "pair_interval",
    "period_fractions",
]

#: Rules that say how much a pair counts for a period (see the module docstring).
ASSIGN_RULES = ("overlap", "majority", "midpoint")


@dataclass(frozen=True)
class Period:
    """A time span named by a year: ``[start, end)``, timezone-aware UTC.

    A calendar year is ``Period(1999, 1999-01-01, 2000-01-01)``; a glaciological year from
    July may be ``Period(1999, 1999-07-01, 2000-07-01)``. The year names the products
    (``v_1999.tif``).
    """

    year: int
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValueError(f"period {self.year}: end {self.end} is not after start {self.start}")

    @property
    def mid(self) -> datetime:
        """Middle of the period."""
        return self.start + (self.end - self.start) / 2

    @property
    def days(self) -> float:
        """Length, days."""
        return (self.end - self.start).total_seconds() / 86400.0


def calendar_periods(start: datetime, end: datetime) -> list[Period]:
    """Calendar years from the one holding ``start`` to the one holding ``end``, inclusive."""
    return [
        Period(y, datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC))
        for y in range(start.year, end.year + 1)
    ]


def pair_interval(ds: xr.Dataset) -> tuple[datetime, datetime]:
    """``(ref_time, sec_time)`` of a pair product, timezone-aware UTC."""
    return as_utc(ds.attrs["ref_time"]), as_utc(ds.attrs["sec_time"])


def _overlap_days(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> float:
    return max(0.0, (min(a1, b1) - max(a0, b0)).total_seconds() / 86400.0)


def period_fractions(
    start: datetime, end: datetime, periods: Iterable[Period], assign: str = "overlap"
) -> dict[int, float]:
    """How much a pair spanning ``[start, end]`` counts for each period (see module docstring).

    Parameters
    ----------
    start, end : datetime
        The pair's acquisition times (aware UTC), ``end > start``.
    periods : iterable of Period
    assign : {"overlap", "majority", "midpoint"}

    Returns
    -------
    dict of int to float
        Period year to fraction ``f`` in (0, 1]; periods the pair does not count for are absent.
    """
    if assign not in ASSIGN_RULES:
        raise ValueError(f"assign must be one of {', '.join(ASSIGN_RULES)}, got {assign!r}")
    if not end > start:
        raise ValueError(f"a pair must end after it starts: {start} .. {end}")
    periods = list(periods)
    total = (end - start).total_seconds() / 86400.0
    overlaps = {p.year: _overlap_days(start, end, p.start, p.end) for p in periods}
    if assign == "overlap":
        return {y: d / total for y, d in overlaps.items() if d > 0}
    if assign == "majority":
        best = max(overlaps.values(), default=0.0)
        if best <= 0:
            return {}
        return {next(y for y, d in overlaps.items() if d == best): 1.0}
    mid = start + (end - start) / 2
    return {p.year: 1.0 for p in periods if p.start <= mid < p.end}


def covered_span(
    intervals: Iterable[tuple[datetime, datetime]], period: Period
) -> tuple[datetime | None, datetime | None, float]:
    """What of a period the pairs' intervals actually cover: first and last covered instant
    and the days inside at least one interval.

    Parameters
    ----------
    intervals : iterable of (datetime, datetime)
        The pairs' ``(ref_time, sec_time)``, aware UTC.
    period : Period

    Returns
    -------
    first, last : datetime or None
        The covered span, clipped to the period (None when nothing is covered).
    covered_days : float
        Days of the period inside the union of the intervals (a 16-day pair in a calendar year:
        16.0 of 366).
    """
    clipped = sorted(
        (max(a, period.start), min(b, period.end))
        for a, b in intervals
        if min(b, period.end) > max(a, period.start)
    )
    if not clipped:
        return None, None, 0.0
    days, (cur0, cur1) = 0.0, clipped[0]
    for a, b in clipped[1:]:
        if a > cur1:
            days += (cur1 - cur0).total_seconds() / 86400.0
            cur0, cur1 = a, b
        else:
            cur1 = max(cur1, b)
    days += (cur1 - cur0).total_seconds() / 86400.0
    return clipped[0][0], max(b for _, b in clipped), days
