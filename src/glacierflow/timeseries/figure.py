"""The point time-series picture: every pair as a bar over its span, the inverted steps on top.

``pairs_df`` has one row per pair: ``date1``, ``date2`` (acquisition dates), ``v`` and
``v_error`` (speed and its 1-sigma error, m/yr). ``steps_df`` has one row per step: ``start``,
``end`` (step edges), ``v`` and ``v_error`` (m/yr, NaN where the network does not resolve the
step), and optionally ``coverage_days`` and ``pair_count``.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from glacierflow.atomic import atomic_write

__all__ = ["series_figure", "write_series_csv"]

PAIR_COLOUR = "0.55"
SERIES_COLOUR = "#1f5fa8"


def _num(values: pd.Series) -> np.ndarray:
    return mdates.date2num(pd.to_datetime(values).to_numpy())


def series_figure(pairs_df: pd.DataFrame, steps_df: pd.DataFrame, title: str = "") -> Figure:
    """Draw pairs (bars over their spans with error whiskers) and the inverted step series.

    Parameters
    ----------
    pairs_df : DataFrame
        ``date1``, ``date2``, ``v``, ``v_error`` (m/yr), one row per pair.
    steps_df : DataFrame
        ``start``, ``end``, ``v``, ``v_error`` (m/yr; NaN where unresolved), one row per step.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        One axes; unresolved steps are left blank (no line, no band).
    """
    for name, df, cols in (
        ("pairs_df", pairs_df, ("date1", "date2", "v", "v_error")),
        ("steps_df", steps_df, ("start", "end", "v", "v_error")),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    fig = Figure(figsize=(9.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    a, b = _num(pairs_df["date1"]), _num(pairs_df["date2"])
    v = pairs_df["v"].to_numpy(float)
    ev = pairs_df["v_error"].to_numpy(float)
    ok = np.isfinite(v)
    segs = np.stack([np.c_[a[ok], v[ok]], np.c_[b[ok], v[ok]]], axis=1)
    bars = LineCollection(segs, colors=PAIR_COLOUR, linewidths=1.0, alpha=0.7, zorder=1)
    bars.set_label(f"image pairs ({int(ok.sum())}), bar = time span")
    ax.add_collection(bars)
    ax.errorbar(
        (a[ok] + b[ok]) / 2, v[ok], yerr=ev[ok], fmt="none", ecolor=PAIR_COLOUR,
        elinewidth=0.6, alpha=0.6, capsize=0, zorder=1, label="pair 1-sigma error",
    )  # fmt: skip
    edges = np.r_[_num(steps_df["start"]), _num(steps_df["end"].iloc[-1:])]
    u = steps_df["v"].to_numpy(float)
    eu = steps_df["v_error"].to_numpy(float)
    ax.stairs(
        u + eu, edges, baseline=u - eu, fill=True, color=SERIES_COLOUR, alpha=0.25,
        linewidth=0, zorder=2, label="inverted series 1-sigma band",
    )  # fmt: skip
    ax.stairs(
        u, edges, baseline=None, color=SERIES_COLOUR, linewidth=2.0, zorder=3,
        label="inverted series",
    )  # fmt: skip
    gaps = ~np.isfinite(u)
    if gaps.any():
        ax.stairs(
            np.where(gaps, 1.0, np.nan), edges, baseline=0.0, fill=True, color="0.92",
            zorder=0, transform=ax.get_xaxis_transform(), label="not resolved (gap)",
        )  # fmt: skip
    values = np.r_[v[ok] + ev[ok], v[ok] - ev[ok], u[~gaps] + eu[~gaps], u[~gaps] - eu[~gaps]]
    values = values[np.isfinite(values)]
    if values.size:
        lo, hi = np.percentile(values, [1, 99])
        pad = 0.08 * max(hi - lo, 1.0)
        ax.set_ylim(min(0.0, lo - pad), hi + pad)
    ax.set_xlim(min(edges[0], a.min(initial=edges[0])), max(edges[-1], b.max(initial=edges[-1])))
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("date")
    ax.set_ylabel("speed (m/yr)")
    ax.grid(True, color="0.85", linewidth=0.5)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncol=2)
    return fig


def write_series_csv(path: str | os.PathLike[str], steps_df: pd.DataFrame) -> Path:
    """Write the step series as CSV (dates ISO 8601, speeds in m/yr), via a temporary file.

    Parameters
    ----------
    path : path-like
    steps_df : DataFrame
        As for :func:`series_figure`; every column is written.

    Returns
    -------
    Path
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        steps_df.to_csv(tmp, index=False, date_format="%Y-%m-%d", float_format="%.4g")
    return path
