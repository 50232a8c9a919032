"""Glacier analysis of period composites: per-glacier statistics, trends, speed profiles.

On period composites (:mod:`glacierflow.stack`): per-glacier speed statistics with errors
(:func:`glacier_statistics`), their trends (:func:`speed_trends`) and speed along centrelines and
transects (:func:`sample_profiles`); candidate surges are in :mod:`glacierflow.surges`. These take
Datasets and GeoDataFrames and return pandas tables; they open no file (outlines and lines are
read by :mod:`glacierflow.outlines`).

The composites are Datasets on one north-up map grid (``vx``, ``vy``, ``v``, ``v_error`` in
m/yr, ``count``), with ``crs_wkt``, ``transform`` (GDAL order), ``year`` and ``mid_datetime``
attributes: see :mod:`glacierflow.stack`.
"""

from __future__ import annotations

import math

import numpy as np
from affine import Affine
from rasterio.features import rasterize

from glacierflow.errors import InputError

# TEMP re-export for the refactor merge: outline I/O moved to glacierflow.outlines.
from glacierflow.outlines import (  # noqa: F401
    GLACIER_ID_FIELDS,
    GLACIER_NAME_FIELDS,
    glacier_table,
    ice_mask_from_outlines,
    mask_from_file,
    outline_mask,
    read_lines,
    read_outlines,
)

__all__ = [
    "MAX_ERROR_FACTOR",
    "MEDIAN_ERROR_FACTOR",
    "composite_grid",
    "composite_year",
    "glacier_statistics",
    "label_glaciers",
    "sample_profiles",
    "speed_trends",
]


#: Ratio of the standard error of the median to that of the mean for normal errors
#: (sqrt(pi / 2)).
MEDIAN_ERROR_FACTOR = math.sqrt(math.pi / 2)


#: Cells whose v_error exceeds this multiple of the glacier's median v_error do not set its
#: maximum speed.
MAX_ERROR_FACTOR = 2.0


def composite_grid(ds) -> tuple[Affine, tuple[int, int]]:
    return Affine.from_gdal(*[float(c) for c in ds.attrs["transform"]]), tuple(ds["v"].shape)


def label_glaciers(glaciers, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Glacier number per grid cell: ``i + 1`` inside row ``i``'s polygon (by cell centre), 0 off.

    Where outlines overlap, the later row wins.
    """
    if len(glaciers) == 0:
        return np.zeros(shape, dtype=np.int32)
    return rasterize(
        ((geom, i + 1) for i, geom in enumerate(glaciers.geometry) if geom is not None),
        out_shape=shape,
        transform=transform,
        fill=0,
        dtype="int32",
    )


def composite_year(ds) -> int:
    return int(ds.attrs["year"])


def _decimal_year(iso: str) -> float:
    from datetime import datetime

    when = datetime.fromisoformat(str(iso))
    start = when.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1)
    return start.year + (when - start).total_seconds() / (end - start).total_seconds()


def glacier_statistics(composites, glaciers):
    """Speed statistics of every glacier in every period composite.

    Statistics are of the speed ``v`` over the cells of the glacier (cell centres inside the
    outline) that hold a value. Errors:

    * the mean's is ``sqrt(mean(v_error**2) / n_eff)``, where ``n_eff`` is the valid area over
      the area of one correlation chip (``attrs["chip_m"]`` squared), between 1 and the number
      of cells: errors of cells that share a chip are not independent. Without ``chip_m`` the
      errors are taken as fully correlated (``n_eff = 1``);
    * the median's is ``sqrt(pi / 2)`` times the mean's (normal errors);
    * the maximum is that of the well-measured cells, whose ``v_error`` is at most
      :data:`MAX_ERROR_FACTOR` times the glacier's median ``v_error`` (an isolated bad match
      must not set it); its error is ``v_error`` at that cell.

    Parameters
    ----------
    composites : sequence of xarray.Dataset
        Period composites on one grid (:func:`glacierflow.stack.annual_composites`).
    glaciers : geopandas.GeoDataFrame
        From :func:`glacierflow.outlines.glacier_table`, in the composites' CRS.

    Returns
    -------
    pandas.DataFrame
        One row per glacier and period: ``glacier_id``, ``name``, ``year``, ``decimal_year``
        (middle of the period), ``area_km2`` (outline), ``cells``, ``valid_cells``,
        ``valid_fraction`` (valid cells over cells), ``v_mean``, ``v_mean_error``,
        ``v_median``, ``v_median_error``, ``v_max``, ``v_max_error`` (m/yr; NaN without a
        valid cell), ``pairs_max`` (largest ``count`` on the glacier).
    """
    import pandas as pd

    rows = []
    if not len(composites):
        return pd.DataFrame(rows)
    transform, shape = composite_grid(composites[0])
    labels = label_glaciers(glaciers, transform, shape).ravel()
    n = len(glaciers)
    cells = np.bincount(labels, minlength=n + 1)[1:]
    cell_km2 = abs(transform.a * transform.e) / 1e6
    for ds in composites:
        v = np.asarray(ds["v"].values, dtype=np.float64).ravel()
        err = np.asarray(ds["v_error"].values, dtype=np.float64).ravel()
        cnt = np.asarray(ds["count"].values).ravel()
        ok = (labels > 0) & np.isfinite(v)
        lab, vv, ee, cc = (
            labels[ok],
            v[ok],
            np.where(np.isfinite(err[ok]), err[ok], np.nan),
            cnt[ok],
        )
        order = np.lexsort((vv, lab))
        lab, vv, ee, cc = lab[order], vv[order], ee[order], cc[order]
        edges = np.searchsorted(lab, np.arange(1, n + 2))
        chip_m = float(ds.attrs.get("chip_m", 0) or 0)
        year, decimal_year = composite_year(ds), _decimal_year(ds.attrs["mid_datetime"])
        for i in range(n):
            a, b = edges[i], edges[i + 1]
            k = b - a
            row = {
                "glacier_id": glaciers["glacier_id"].iloc[i],
                "name": glaciers["name"].iloc[i],
                "year": year,
                "decimal_year": decimal_year,
                "area_km2": float(glaciers["area_km2"].iloc[i]),
                "cells": int(cells[i]),
                "valid_cells": int(k),
                "valid_fraction": float(k / cells[i]) if cells[i] else 0.0,
            }
            row.update(_speed_statistics(vv[a:b], ee[a:b], cc[a:b], cell_km2, chip_m))
            rows.append(row)
    return pd.DataFrame(rows)


def _speed_statistics(
    v_sorted: np.ndarray, v_error: np.ndarray, count: np.ndarray, cell_km2: float, chip_m: float
) -> dict[str, float]:
    """Mean, median and maximum speed of one glacier's valid cells (sorted by speed), m/yr,
    with their errors (see :func:`glacier_statistics`); NaN without a cell."""
    k = len(v_sorted)
    if not k:
        return {
            "v_mean": np.nan,
            "v_mean_error": np.nan,
            "v_median": np.nan,
            "v_median_error": np.nan,
            "v_max": np.nan,
            "v_max_error": np.nan,
            "pairs_max": 0,
        }
    if chip_m > 0:
        n_eff = float(np.clip(k * cell_km2 * 1e6 / chip_m**2, 1.0, k))
    else:
        n_eff = 1.0
    mean_err = float(np.sqrt(np.nanmean(v_error**2) / n_eff))
    # The fastest well-measured cell: an isolated cell with a large error (a chip at a data
    # gap, a bad match) must not set the maximum.
    well = np.nonzero(v_error <= MAX_ERROR_FACTOR * np.nanmedian(v_error))[0]
    top = int(well[-1]) if well.size else k - 1
    return {
        "v_mean": float(v_sorted.mean()),
        "v_mean_error": mean_err,
        "v_median": float(np.median(v_sorted)),
        "v_median_error": MEDIAN_ERROR_FACTOR * mean_err,
        "v_max": float(v_sorted[top]),
        "v_max_error": float(v_error[top]),
        "pairs_max": int(count.max()),
    }


def speed_trends(stats, min_valid_fraction: float = 0.0):
    """Linear trend of each glacier's mean speed over the periods, weighted by its errors.

    Weighted least squares of ``v_mean`` against ``decimal_year`` with weights
    ``1 / v_mean_error**2``; the slope's error is the formal one, ``1 / sqrt(sum(w * (t -
    t_w)**2))``. Periods with a valid fraction below ``min_valid_fraction`` are left out.

    Parameters
    ----------
    stats : pandas.DataFrame
        From :func:`glacier_statistics`.
    min_valid_fraction : float
        Smallest valid-area fraction of a period that counts.

    Returns
    -------
    pandas.DataFrame
        One row per glacier: ``glacier_id``, ``name``, ``years`` (periods used), ``first_year``,
        ``last_year``, ``v_mean`` (weighted mean over the periods, m/yr), ``trend`` (m/yr per
        year), ``trend_error`` (1 sigma), ``trend_percent_per_yr`` (relative to ``v_mean``) and
        ``significant`` (``|trend| > 2 trend_error``); the trend is NaN with fewer than two
        periods.
    """
    import pandas as pd

    rows = []
    if stats.empty:
        return pd.DataFrame(rows)
    for (gid, name), grp in stats.groupby(["glacier_id", "name"], sort=False):
        use = grp[
            np.isfinite(grp["v_mean"])
            & np.isfinite(grp["v_mean_error"])
            & (grp["v_mean_error"] > 0)
            & (grp["valid_fraction"] >= min_valid_fraction)
        ]
        t = use["decimal_year"].to_numpy(float)
        y = use["v_mean"].to_numpy(float)
        w = 1.0 / use["v_mean_error"].to_numpy(float) ** 2
        row: dict[str, object] = {
            "glacier_id": gid,
            "name": name,
            "years": int(len(use)),
            "first_year": int(use["year"].min()) if len(use) else None,
            "last_year": int(use["year"].max()) if len(use) else None,
            "v_mean": float(np.sum(w * y) / np.sum(w)) if len(use) else np.nan,
            "trend": np.nan,
            "trend_error": np.nan,
            "trend_percent_per_yr": np.nan,
            "significant": False,
        }
        if len(use) >= 2:
            tw = np.sum(w * t) / np.sum(w)
            sxx = np.sum(w * (t - tw) ** 2)
            if sxx > 0:
                slope = float(np.sum(w * (t - tw) * (y - row["v_mean"])) / sxx)
                slope_err = float(1.0 / np.sqrt(sxx))
                row.update(
                    trend=slope,
                    trend_error=slope_err,
                    trend_percent_per_yr=100.0 * slope / row["v_mean"] if row["v_mean"] else np.nan,
                    significant=bool(abs(slope) > 2 * slope_err),
                )
        rows.append(row)
    return pd.DataFrame(rows)


def sample_profiles(composites, lines, spacing_m: float | None = None):
    """Speed along lines (centrelines, transects) in every period composite.

    Points are placed every ``spacing_m`` from each line's first vertex (OGGM centrelines run
    from the head down-glacier); values are interpolated bilinearly between cell centres and
    are NaN where a neighbouring cell has no value.

    Parameters
    ----------
    composites : sequence of xarray.Dataset
        Period composites on one grid.
    lines : geopandas.GeoDataFrame
        ``line_id``, ``name`` and LineString geometries in the composites' CRS
        (:func:`glacierflow.outlines.read_lines`).
    spacing_m : float, optional
        Distance between samples, metres; default the grid's cell size.

    Returns
    -------
    pandas.DataFrame
        One row per line, period and point: ``line_id``, ``name``, ``year``, ``distance_m``,
        ``x``, ``y`` (grid CRS, metres), ``lon``, ``lat`` (degrees), ``v``, ``vx``, ``vy``,
        ``v_error`` (m/yr) and ``count``.
    """
    import pandas as pd
    from pyproj import Transformer
    from scipy import ndimage

    if not len(composites) or not len(lines):
        return pd.DataFrame()
    transform, shape = composite_grid(composites[0])
    step = float(spacing_m) if spacing_m else abs(transform.a)
    if not step > 0:
        raise InputError(f"the profile spacing must be positive, got {spacing_m}")
    to_lonlat = Transformer.from_crs(composites[0].attrs["crs_wkt"], "EPSG:4326", always_xy=True)
    inv = ~transform
    frames = []
    for line_id, name, geom in zip(lines["line_id"], lines["name"], lines.geometry, strict=True):
        if geom is None or geom.is_empty or geom.geom_type != "LineString":
            continue
        dist = np.arange(0.0, geom.length + 1e-9, step)
        pts = [geom.interpolate(d) for d in dist]
        xs = np.array([p.x for p in pts])
        ys = np.array([p.y for p in pts])
        cols, rows = inv @ (xs, ys)
        coords = np.array([np.asarray(rows) - 0.5, np.asarray(cols) - 0.5])
        inside = (
            (coords[0] >= -0.5)
            & (coords[0] <= shape[0] - 0.5)
            & (coords[1] >= -0.5)
            & (coords[1] <= shape[1] - 0.5)
        )
        lon, lat = to_lonlat.transform(xs, ys)
        for ds in composites:
            values = {}
            for var in ("v", "vx", "vy", "v_error", "count"):
                arr = np.asarray(ds[var].values, dtype=np.float64)
                sampled = ndimage.map_coordinates(arr, coords, order=1, mode="nearest", cval=np.nan)
                values[var] = np.where(inside, sampled, np.nan)
            frames.append(
                pd.DataFrame(
                    {
                        "line_id": line_id,
                        "name": name,
                        "year": composite_year(ds),
                        "distance_m": dist,
                        "x": xs,
                        "y": ys,
                        "lon": lon,
                        "lat": lat,
                        **values,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def __getattr__(name: str):
    # TEMP re-export for the refactor merge: detect_surges moved to glacierflow.surges (a lazy
    # import, as surges imports this module).
    if name == "detect_surges":
        from glacierflow.surges import detect_surges

        return detect_surges
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
