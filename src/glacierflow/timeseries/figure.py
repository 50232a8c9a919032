"""Time-series pictures: at a point, every pair as a bar over its span and the inverted steps
on top (:func:`series_figure`); along a centreline, speed by distance and time
(:func:`hovmoller_figure`).

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
from glacierflow.mapstyle import SPEED_CMAP, speed_floor, speed_norm, speed_ticks, speed_top

__all__ = ["hovmoller_figure", "series_figure", "write_series_csv"]

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
    # A speed is not negative: the 1-sigma bars and band stop at 0 (said in the legend).
    ax.errorbar(
        (a[ok] + b[ok]) / 2, v[ok], yerr=[np.minimum(ev[ok], v[ok]), ev[ok]], fmt="none",
        ecolor=PAIR_COLOUR, elinewidth=0.6, alpha=0.6, capsize=0, zorder=1,
        label="pair 1-sigma error (clipped at 0)",
    )  # fmt: skip
    edges = np.r_[_num(steps_df["start"]), _num(steps_df["end"].iloc[-1:])]
    u = steps_df["v"].to_numpy(float)
    eu = steps_df["v_error"].to_numpy(float)
    ax.stairs(
        u + eu, edges, baseline=np.maximum(u - eu, 0.0), fill=True, color=SERIES_COLOUR,
        alpha=0.25, linewidth=0, zorder=2, label="inverted series 1-sigma band (clipped at 0)",
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
    values = np.r_[v[ok] + ev[ok], u[~gaps] + eu[~gaps]]
    values = np.r_[values, np.maximum(v[ok] - ev[ok], 0), np.maximum(u[~gaps] - eu[~gaps], 0)]
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


def hovmoller_figure(profile_df: pd.DataFrame, title: str = "") -> Figure:
    """Speed along a line by distance and time: the diagram surge studies draw.

    Distance along the line (from its first vertex, the glacier head for OGGM centrelines) runs
    down the y axis, time along x; each step is a column over its span, coloured by speed on
    the logarithmic scale of the maps (:mod:`glacierflow.mapstyle`: viridis from the noise
    floor, the median ``v_error``, to a round number above the 99th percentile). Steps the
    network does not resolve, and points off the grid, have no colour.

    Parameters
    ----------
    profile_df : DataFrame
        One line's rows of :func:`glacierflow.timeseries.profiles.sample_series_profiles`:
        ``distance_m``, ``start``, ``end``, ``v``, ``v_error`` (m/yr).
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    import xarray as xr
    from matplotlib import colormaps
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    missing = [c for c in ("distance_m", "start", "end", "v", "v_error") if c not in profile_df]
    if missing:
        raise ValueError(f"profile_df: missing column(s) {', '.join(missing)}")
    dist = np.unique(profile_df["distance_m"].to_numpy(float))
    steps = profile_df[["start", "end"]].drop_duplicates().sort_values("start")
    grid = profile_df.pivot_table(
        index="distance_m", columns="start", values="v", aggfunc="first", dropna=False
    ).reindex(index=dist, columns=steps["start"])
    v = grid.to_numpy(float)
    half = (dist[1] - dist[0]) / 2 if dist.size > 1 else 50.0
    y_edges = np.r_[dist - half, dist[-1] + half] / 1000.0
    x0, x1 = _num(steps["start"]), _num(steps["end"])
    err = profile_df["v_error"].to_numpy(float)
    floor = speed_floor([xr.Dataset({"v_error": ("p", err)})])
    norm = speed_norm(floor, speed_top([xr.Dataset({"v": ("p", v.ravel())})], floor))
    cmap = colormaps[SPEED_CMAP].with_extremes(bad=(0, 0, 0, 0))
    height = float(np.clip(2.2 + 0.012 * dist.size, 3.6, 6.5))
    fig = Figure(figsize=(9.0, height), layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor("0.93")  # no colour: a gap, or off the grid
    mesh = None
    for j in range(x0.size):  # one column per step, over its own span (steps may be uneven)
        col = np.ma.masked_invalid(v[:, j : j + 1])
        mesh = ax.pcolormesh([x0[j], x1[j]], y_edges, col, cmap=cmap, norm=norm, shading="flat")
    ax.set_xlim(x0.min(), x1.max())
    ax.set_ylim(y_edges[-1], y_edges[0])  # distance grows downwards: head at the top
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("date (each column one step of the series; grey: gap, not resolved)")
    ax.set_ylabel("distance along the line (km)")
    if title:
        ax.set_title(title, fontsize=10)
    if mesh is not None:
        bar = fig.colorbar(mesh, ax=ax, extend="both", pad=0.01)
        bar.ax.yaxis.set_major_locator(FixedLocator(speed_ticks(norm)))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda t, _p: f"{t:g}"))
        bar.ax.yaxis.set_minor_locator(NullLocator())
        bar.set_label("speed (m/yr)", fontsize=9)
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
