"""Step edges of a velocity time series: regular steps (:func:`time_steps`), cut to the data
(:func:`data_steps`), and how many steps an inversion solves for (:func:`step_count`).

Arrays in, arrays out; see :mod:`glacierflow.timeseries.inversion` for the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["data_steps", "monthly_refined", "step_count", "time_steps"]

_DAY = np.timedelta64(1, "D")


def _day(value: Any) -> np.datetime64:
    return np.datetime64(np.datetime64(value, "s").astype("datetime64[D]"), "D")


def _day_ceil(value: Any) -> np.datetime64:
    """The day of ``value``, or the next day when ``value`` is past midnight."""
    t = np.datetime64(value, "s")
    day = _day(t)
    return day if day == t else day + _DAY


def time_steps(start: Any, end: Any, freq: str | int | Sequence[Any]) -> np.ndarray:
    """Edges of the regular steps that cover ``[start, end]``.

    Parameters
    ----------
    start, end : datetime-like
        First and last acquisition time to cover.
    freq : str, int or sequence of datetime-like
        ``"monthly"`` (calendar months), ``"annual"`` (calendar years), ``"annual-MM-DD"``
        (years starting on that day, e.g. ``"annual-07-01"`` for glaciological years from
        1 July), an int N (steps of N days from ``start``'s day) or explicit edges.

    Returns
    -------
    ndarray of datetime64[D], shape (m + 1,)
        Increasing step edges; step j is ``[edges[j], edges[j + 1])``. The last edge is the
        first edge at or after ``end`` (rounded up to a whole day), so an ``end`` that falls
        exactly on an edge adds no empty trailing step.
    """
    t0, t1 = _day(start), _day_ceil(end)
    if t1 < t0:
        raise ValueError(f"the end {t1} is before the start {t0}")
    if not isinstance(freq, str | int | np.integer):
        edges = np.array([_day(v) for v in freq])
        if edges.size < 2 or np.any(np.diff(edges) <= _DAY * 0):
            raise ValueError("explicit step edges must be at least two increasing dates")
        return edges
    if isinstance(freq, int | np.integer):
        if freq < 1:
            raise ValueError(f"a step of N days needs N >= 1, got {freq}")
        n = max(1, int(np.ceil((t1 - t0) / _DAY / int(freq))))
        return t0 + np.arange(n + 1) * int(freq) * _DAY
    if freq == "monthly":
        m0 = t0.astype("datetime64[M]")
        m1 = t1.astype("datetime64[M]")
        m1 = m1 if m1.astype("datetime64[D]") == t1 and m1 > m0 else m1 + 1
        return np.arange(m0, m1 + 1).astype("datetime64[D]")
    if freq == "annual" or freq.startswith("annual-"):
        month_day = freq[len("annual-") :] if freq != "annual" else "01-01"
        try:
            anchor = np.datetime64(f"2001-{month_day}", "D")
        except ValueError:
            msg = f"freq {freq!r}: expected 'annual-MM-DD', e.g. 'annual-07-01'"
            raise ValueError(msg) from None
        del anchor  # only validated: the edges are that day of every year (leap years too)
        year0 = int(str(t0)[:4])
        first = year0 if t0 >= np.datetime64(f"{year0}-{month_day}", "D") else year0 - 1
        edges = [np.datetime64(f"{first}-{month_day}", "D")]
        while edges[-1] < t1 or len(edges) < 2:
            edges.append(np.datetime64(f"{int(str(edges[-1])[:4]) + 1}-{month_day}", "D"))
        return np.array(edges)
    raise ValueError(f"freq must be 'monthly', 'annual', 'annual-MM-DD', N days or edges: {freq!r}")


def data_steps(start: Any, end: Any, freq: str | int) -> np.ndarray:
    """The steps of ``freq`` (:func:`time_steps`) cut to the data: the first edge is the day of
    ``start`` (the first acquisition), the last the day at or after ``end`` (the last), so the
    first and last steps may be shorter than ``freq`` and no step lies outside the data.

    Returns
    -------
    ndarray of datetime64[D], shape (m + 1,)
    """
    edges = time_steps(start, end, freq).copy()
    edges[0] = max(edges[0], _day(start))
    edges[-1] = min(edges[-1], _day_ceil(end))
    return edges


def monthly_refined(union: np.ndarray) -> np.ndarray:
    """Step edges ``union`` (step edges) refined by the calendar months inside it."""
    months = np.arange(
        union[0].astype("datetime64[M]") + 1, union[-1].astype("datetime64[M]") + 1
    ).astype("datetime64[D]")
    return np.unique(np.concatenate([union, months[months < union[-1]]]))


def step_count(edges: np.ndarray) -> tuple[int, int]:
    """Steps of ``edges`` and, at most, base steps the inversion solves for (the steps refined
    by the calendar months where one is longer than a month), for bounds before the work."""
    edges = np.asarray(edges, "datetime64[D]")
    if np.all(np.diff(edges) <= 31 * _DAY):
        return edges.size - 1, edges.size - 1
    return edges.size - 1, monthly_refined(edges).size - 1
