"""One self-contained HTML page for a project: maps, tables, errors and settings.

:func:`render_report` turns what :func:`glacierflow.project.compose_products` computed (pair
products, period composites, glacier tables) and PNG pictures (as bytes) into a single HTML
string: pictures are embedded as base64 ``data:`` URLs and the style sheet is inline, so the
page opens anywhere, offline, as one file. Nothing here reads or writes files.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import xarray as xr

from glacierflow import __version__

__all__ = ["render_report"]

#: Glacier tables list at most this many glaciers (the largest); the CSV files have them all.
MAX_TABLE_GLACIERS = 40

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; }
td { white-space: nowrap; }
th { background: #f2f2f2; }
td.l, th.l { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; overflow-x: auto;
      font-size: 0.8em; }
.note { color: #555; font-size: 0.9em; }
.flag { color: #b00; font-weight: bold; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 1) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _e(value) if value is not None else "–"
    if not math.isfinite(x):
        return "–"
    return f"{x:.{digits}f}"


def _img(png: bytes, alt: str, caption: str | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">{cap}</figure>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned text (cells already HTML)."""
    head = "".join(
        f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pair_rows(pairs: Mapping[str, xr.Dataset]) -> list[list[str]]:
    rows = []
    for pid, ds in pairs.items():
        a = ds.attrs
        v = ds["v"].values
        rows.append(
            [
                _e(pid),
                _e(str(a.get("ref_time", ""))[:10]),
                _e(str(a.get("sec_time", ""))[:10]),
                _num(a.get("dt_days"), 0),
                _num(100 * float(np.isfinite(v).mean()) if v.size else float("nan"), 0),
                _e(a.get("stable_nodes", "–")),
                _num(a.get("stable_vx_nmad_m_per_yr")),
                _num(a.get("stable_vy_nmad_m_per_yr")),
                _num(a.get("stable_vx_rmse_m_per_yr")),
                _num(a.get("stable_vy_rmse_m_per_yr")),
                _num(a.get("stable_v_error_median_m_per_yr")),
                f"{_num(a.get('coreg_dx_px'), 2)} / {_num(a.get('coreg_dy_px'), 2)}",
            ]
        )
    return rows


def _year_rows(composites: Sequence[xr.Dataset]) -> list[list[str]]:
    rows = []
    for comp in composites:
        a = comp.attrs
        start, end = str(a.get("start_datetime", ""))[:10], str(a.get("end_datetime", ""))[:10]
        count = comp["count"].values
        err = comp["v_error"].values
        v = comp["v"].values
        has = count > 0
        members = ", ".join(
            f"{p} ({100 * f:.0f} %)"
            for p, f in zip(a.get("pairs", []), a.get("pair_fractions", []), strict=True)
        )
        period = f"{start} to {end}"
        if a.get("data_start_datetime"):
            period += (
                f"; data {str(a['data_start_datetime'])[:10]} to "
                f"{str(a['data_end_datetime'])[:10]}, {a.get('coverage_text', '')} covered"
            )
        rows.append(
            [
                _e(a.get("year")),
                _e(period),
                _e(members),
                _num(100 * has.mean() if has.size else float("nan"), 0),
                _num(np.nanmedian(err[has]) if has.any() else float("nan")),
                _num(np.nanpercentile(v[has], 95) if has.any() else float("nan"), 0),
            ]
        )
    return rows


def render_report(
    *,
    project_name: str,
    settings_text: str,
    pairs: Mapping[str, xr.Dataset],
    composites: Sequence[xr.Dataset],
    images: Mapping[str, bytes],
    stats: Any = None,
    trends: Any = None,
    surges: Any = None,
    grid_text: str = "",
) -> str:
    """The project report as one HTML page.

    Parameters
    ----------
    project_name : str
        Title.
    settings_text : str
        The project file as written, shown verbatim.
    pairs : mapping of str to xarray.Dataset
        Pair products by pair id (their attributes carry the stable-ground statistics).
    composites : sequence of xarray.Dataset
        Period composites (:mod:`glacierflow.stack`).
    images : mapping of str to bytes
        PNG pictures by key: ``map_YYYY`` (speed maps), ``change_YYYY_YYYY``,
        ``glacier_series``, ``profile_<line>``; others are appended at the end.
    stats, trends, surges : pandas.DataFrame, optional
        Glacier tables (:mod:`glacierflow.glaciers`).
    grid_text : str
        One line describing the output grid.

    Returns
    -------
    str
        A complete HTML document with every picture embedded.
    """
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    pictures = _Pictures(images)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(project_name)}: glacier velocity report</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(project_name)}</h1>",
        f'<p class="note">Glacier surface velocity from {len(pairs)} image pair(s), '
        f"{len(composites)} period composite(s). Written {now} by glacierflow "
        f"{_e(__version__)}.</p>",
    ]
    if grid_text:
        out.append(f"<p>Output grid: {_e(grid_text)}.</p>")
    out.extend(_pairs_section(pairs))
    out.extend(_composites_section(composites, pictures))
    series = pictures.take("series_")
    if series:
        out.append("<h2>Velocity time series at points</h2>")
        out.append(
            '<p class="note">Network inversion of every pair ([timeseries]): grey bars are the '
            "pairs, each over its time span at its mean speed, with its one-sigma error; the "
            "blue line is the inverted series on regular steps with its one-sigma band; grey "
            "columns are steps the pairs do not resolve (gaps, not interpolated). The cubes "
            "are in timeseries/ (ITS_LIVE layout, Zarr and NetCDF), the series as CSV in "
            "timeseries/points/.</p>"
        )
        out.append(series)
    changes = pictures.take("change_")
    if changes:
        out.append("<h2>Change between periods</h2>")
        out.append(
            '<p class="note">Later minus earlier speed; faded cells changed by less than twice '
            "the combined one-sigma error (pale); dark grey: no data in one of the periods.</p>"
        )
        out.append(changes)
    if stats is not None and not stats.empty:
        out.extend(_glaciers_section(stats, trends, surges, pictures))
    profiles = pictures.take("profile_")
    if profiles:
        out.append("<h2>Profiles</h2>")
        out.append(profiles)
    rest = pictures.unused()
    if rest:
        out.append("<h2>More figures</h2>")
        out.extend(_img(images[k], k, k) for k in rest)

    out.append("<h2>Project settings</h2>")
    out.append(f"<pre>{_e(settings_text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


class _Pictures:
    """The report's pictures, handed out by key prefix; remembers which were placed."""

    def __init__(self, images: Mapping[str, bytes]) -> None:
        self.images = images
        self.used: set[str] = set()

    def take(self, prefix: str) -> str:
        """The pictures whose key starts with ``prefix``, in key order, as HTML figures."""
        parts = []
        for key in sorted(k for k in self.images if k.startswith(prefix)):
            self.used.add(key)
            parts.append(_img(self.images[key], key))
        return "".join(parts)

    def unused(self) -> list[str]:
        return [k for k in self.images if k not in self.used]


def _pairs_section(pairs: Mapping[str, xr.Dataset]) -> list[str]:
    return [
        "<h2>Pairs and their error on stable ground</h2>",
        '<p class="note">The true velocity of stable (ice-free) ground is zero: the scatter of '
        "its measured components (normalized median absolute deviation, NMAD, and RMSE) is "
        "the pair's error. v_error is the median of the per-node one-sigma error on the same "
        "ground; co-registration is the misregistration removed (pixels).</p>",
        _table(
            [
                "pair",
                "reference",
                "secondary",
                "Δt (days)",
                "valid nodes (%)",
                "stable nodes",
                "NMAD vx (m/yr)",
                "NMAD vy (m/yr)",
                "RMSE vx (m/yr)",
                "RMSE vy (m/yr)",
                "v_error (m/yr)",
                "co-registration dx / dy (px)",
            ],
            _pair_rows(pairs),
            left=3,
        ),
    ]


def _composites_section(composites: Sequence[xr.Dataset], pictures: _Pictures) -> list[str]:
    assign = composites[0].attrs.get("composite_assign", "") if composites else ""
    return [
        "<h2>Period composites</h2>",
        f'<p class="note">Rule: <b>{_e(assign)}</b>. Each pixel combines the pairs that count for '
        "the period with weights f / v_error² (f: the pair's share in the period); v_error of "
        "the composite is sqrt(Σ w² v_error²) / Σ w per component; count is the number of "
        "pairs combined. All maps share one colour scale and arrow scale: speed on a logarithmic "
        "scale from the composites' noise floor (median v_error, rounded down) to a round "
        "number above the 99th percentile, so slow and fast ice read at once; arrows only on "
        "measured ice, an arrow one spacing long is the top of the scale.</p>",
        _table(
            [
                "year",
                "period",
                "pairs (share of the pair in the period)",
                "cells with data (%)",
                "median v_error (m/yr)",
                "95th pct speed (m/yr)",
            ],
            _year_rows(composites),
            left=3,
        ),
        pictures.take("map_"),
    ]


def _glaciers_section(stats: Any, trends: Any, surges: Any, pictures: _Pictures) -> list[str]:
    out = ["<h2>Glaciers</h2>", pictures.take("glacier_series")]
    largest = (
        stats.groupby("glacier_id")["area_km2"]
        .first()
        .sort_values(ascending=False)
        .index[:MAX_TABLE_GLACIERS]
    )
    out.extend(_statistics_table(stats, largest))
    if trends is not None and not trends.empty:
        out.extend(_trends_table(trends[trends["glacier_id"].isin(largest)]))
    out.append("<h3>Candidate surges</h3>")
    if surges is not None and not surges.empty:
        out.append(_surges_table(surges))
    else:
        out.append("<p>No glacier sped up by the surge factor over a contiguous reach.</p>")
    return out


def _statistics_table(stats: Any, largest: Any) -> list[str]:
    sub = stats[stats["glacier_id"].isin(largest)].copy()
    sub["_order"] = sub["glacier_id"].map({g: i for i, g in enumerate(largest)})
    sub = sub.sort_values(["_order", "year"])
    rows = [
        [
            _e(r.glacier_id),
            _e(r.name),
            _e(r.year),
            _num(r.area_km2),
            _num(100 * r.valid_fraction, 0),
            f"{_num(r.v_mean)} ± {_num(r.v_mean_error)}",
            f"{_num(r.v_median)} ± {_num(r.v_median_error)}",
            f"{_num(r.v_max)} ± {_num(r.v_max_error)}",
        ]
        for r in sub.itertuples()
    ]
    n_all = stats["glacier_id"].nunique()
    more = f" (the {len(largest)} largest of {n_all})" if n_all > len(largest) else ""
    return [
        f"<h3>Speed per glacier and period{_e(more)}</h3>",
        _table(
            [
                "glacier",
                "name",
                "year",
                "area (km²)",
                "valid area (%)",
                "mean (m/yr)",
                "median (m/yr)",
                "max (m/yr)",
            ],
            rows,
            left=2,
        ),
    ]


def _trends_table(trends: Any) -> list[str]:
    rows = [
        [
            _e(r.glacier_id),
            _e(r.name),
            _e(f"{r.first_year}–{r.last_year}" if r.years else "–"),
            _num(r.v_mean),
            f"{_num(r.trend, 2)} ± {_num(r.trend_error, 2)}",
            _num(r.trend_percent_per_yr),
            "yes" if r.significant else "no",
        ]
        for r in trends.itertuples()
    ]
    return [
        "<h3>Trends of the mean speed</h3>",
        _table(
            [
                "glacier",
                "name",
                "years",
                "mean speed (m/yr)",
                "trend (m/yr per yr)",
                "trend (%/yr)",
                "beyond 2σ",
            ],
            rows,
            left=3,
        ),
    ]


def _surges_table(surges: Any) -> str:
    rows = [
        [
            f'<span class="flag">{_e(r.glacier_id)}</span>',
            _e(r.name),
            _e(f"{r.year_from} → {r.year_to}"),
            _num(r.ratio_median, 2),
            f"{_num(r.v_from_median, 0)} → {_num(r.v_to_median, 0)}",
            _num(r.reach_area_km2, 2),
            _num(r.reach_length_km, 1),
            f"{_num(r.lat, 3)} N, {_num(r.lon, 3)} E",
        ]
        for r in surges.itertuples()
    ]
    return _table(
        [
            "glacier",
            "name",
            "years",
            "speed ratio (median)",
            "speed (m/yr)",
            "reach (km²)",
            "reach length (km)",
            "reach centre",
        ],
        rows,
        left=3,
    )
