"""The inverted series along lines: speed by distance along a centreline and by step.

:func:`sample_series_profiles` places points every ``spacing_m`` along each line from its first
vertex (OGGM centrelines run from the head down-glacier), as
:func:`glacierflow.glaciers.sample_profiles` does for the composites, and reads every step of an
inverted series (:func:`glacierflow.timeseries.cube.series_cube`) there: bilinear between cell
centres for the speeds (NaN where a neighbouring cell has none, so a gap stays a gap), nearest
cell for the coverage. Only the window around each line is read, so a Dask-backed series (a
Zarr cube) is not loaded whole. Arrays in, a table out: nothing reads or writes files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from pyproj import Transformer
from scipy import ndimage

__all__ = ["PROFILE_COLUMNS", "sample_series_profiles"]

#: Columns of the table, in order.
PROFILE_COLUMNS = (
    "line_id",
    "name",
    "distance_m",
    "x",
    "y",
    "lon",
    "lat",
    "time",
    "start",
    "end",
    "v",
    "v_error",
    "coverage_days",
    "pair_count",
)


def _transform(series: xr.Dataset) -> Affine:
    x, y = series["x"].values, series["y"].values
    dx = float(x[1] - x[0]) if x.size > 1 else 1.0
    dy = float(y[1] - y[0]) if y.size > 1 else -1.0
    return Affine(dx, 0.0, float(x[0]) - dx / 2, 0.0, dy, float(y[0]) - dy / 2)


def _window(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice]:
    r0 = int(np.clip(np.floor(rows.min()) - 1, 0, shape[0]))
    r1 = int(np.clip(np.ceil(rows.max()) + 2, 0, shape[0]))
    c0 = int(np.clip(np.floor(cols.min()) - 1, 0, shape[1]))
    c1 = int(np.clip(np.ceil(cols.max()) + 2, 0, shape[1]))
    return slice(r0, max(r1, r0 + 1)), slice(c0, max(c1, c0 + 1))


def _sample(layers: np.ndarray, rows: np.ndarray, cols: np.ndarray, order: int) -> np.ndarray:
    """``layers`` (steps, h, w) at fractional cell indices; shape (steps, points)."""
    coords = np.array([rows, cols])
    return np.stack(
        [ndimage.map_coordinates(lay, coords, order=order, mode="nearest") for lay in layers]
    )


def sample_series_profiles(
    series: xr.Dataset, lines: Any, spacing_m: float | None = None
) -> pd.DataFrame:
    """Every step of an inverted series along each line.

    Parameters
    ----------
    series : xarray.Dataset
        An inverted series in ITS_LIVE's layout (:func:`glacierflow.timeseries.cube.series_cube`):
        ``v``, ``v_error`` (m/yr), ``coverage_days``, ``pair_count`` on ``(mid_date, y, x)``,
        ``acquisition_date_img1``/``_img2`` the steps' edges, a ``crs_wkt`` attribute; in
        memory or Dask-backed.
    lines : geopandas.GeoDataFrame
        ``line_id``, ``name`` and LineString geometries in the series' CRS
        (:func:`glacierflow.outlines.read_lines`).
    spacing_m : float, optional
        Distance between samples along a line, metres; default the cell size.

    Returns
    -------
    pandas.DataFrame
        One row per line, point and step, columns :data:`PROFILE_COLUMNS`: ``distance_m``
        from the line's first vertex, ``x``, ``y`` (metres, the series' CRS), ``lon``, ``lat``
        (degrees), ``time`` (the step's middle), ``start``, ``end``, ``v``, ``v_error`` (m/yr,
        NaN where the step is a gap or the point lies off the grid), ``coverage_days``,
        ``pair_count``. Empty when no line has a point on the grid.

    Raises
    ------
    ValueError
        If ``spacing_m`` is not positive.
    """
    transform = _transform(series)
    step = float(spacing_m) if spacing_m is not None else abs(transform.a)
    if not step > 0:
        raise ValueError(f"the profile spacing must be positive, got {spacing_m} m")
    shape = (series.sizes["y"], series.sizes["x"])
    to_lonlat = Transformer.from_crs(series.attrs["crs_wkt"], "EPSG:4326", always_xy=True)
    start = series["acquisition_date_img1"].values.astype("datetime64[ns]")
    end = series["acquisition_date_img2"].values.astype("datetime64[ns]")
    mid = series["mid_date"].values.astype("datetime64[ns]")
    frames = []
    for line_id, name, geom in zip(lines["line_id"], lines["name"], lines.geometry, strict=True):
        if geom is None or geom.is_empty or geom.geom_type != "LineString":
            continue
        dist = np.arange(0.0, geom.length + 1e-9, step)
        xy = np.array([(p.x, p.y) for p in (geom.interpolate(d) for d in dist)])
        cols, rows = ~transform @ (xy[:, 0], xy[:, 1])
        rows, cols = np.asarray(rows) - 0.5, np.asarray(cols) - 0.5
        inside = (rows >= -0.5) & (rows <= shape[0] - 0.5) & (cols >= -0.5)
        inside &= cols <= shape[1] - 0.5
        if not inside.any():
            continue
        wy, wx = _window(rows[inside], cols[inside], shape)
        part = series[["v", "v_error", "coverage_days", "pair_count"]].isel(y=wy, x=wx).load()
        r, c = rows - wy.start, cols - wx.start
        values = {}
        for var, order in (("v", 1), ("v_error", 1), ("coverage_days", 0), ("pair_count", 0)):
            layers = np.asarray(part[var].values, dtype=np.float64)
            values[var] = np.where(inside[None], _sample(layers, r, c, order), np.nan)
        lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
        n_t, n_d = mid.size, dist.size
        frames.append(
            pd.DataFrame(
                {
                    "line_id": line_id,
                    "name": name,
                    "distance_m": np.tile(dist, n_t),
                    "x": np.tile(xy[:, 0], n_t),
                    "y": np.tile(xy[:, 1], n_t),
                    "lon": np.tile(lon, n_t),
                    "lat": np.tile(lat, n_t),
                    "time": np.repeat(mid, n_d),
                    "start": np.repeat(start, n_d),
                    "end": np.repeat(end, n_d),
                    **{k: v.ravel() for k, v in values.items()},
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=list(PROFILE_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(PROFILE_COLUMNS)]
