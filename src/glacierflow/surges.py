"""Candidate surges: glaciers whose speed rises by a factor over a contiguous reach.

Works on period composites (:mod:`glacierflow.stack`) and a glacier table
(:func:`glacierflow.outlines.glacier_table`); returns a pandas table and opens no file.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from affine import Affine
from pyproj import Transformer
from scipy import ndimage

from glacierflow.errors import InputError
from glacierflow.glaciers import composite_grid, composite_year, label_glaciers

__all__ = ["SURGE_COLUMNS", "detect_surges"]

#: Columns of the table :func:`detect_surges` returns, in order.
SURGE_COLUMNS = [
    "glacier_id",
    "name",
    "year_from",
    "year_to",
    "reach_area_km2",
    "reach_length_km",
    "reach_fraction",
    "v_from_median",
    "v_to_median",
    "ratio_median",
    "lon",
    "lat",
]


def detect_surges(
    composites,
    glaciers,
    *,
    factor: float = 2.0,
    min_area_km2: float = 0.5,
    min_speed_m_per_yr: float = 10.0,
    n_sigma: float = 3.0,
):
    """Candidate surges: glaciers whose speed rises by ``factor`` or more over a reach.

    For every two consecutive composites (years ``a`` then ``b``) and every glacier, a cell is
    a surge cell where ``v_b >= factor * v_a``, the earlier speed is measurable (``v_a >=
    min_speed_m_per_yr`` and ``v_a >= n_sigma * v_error_a``) and the rise is significant
    (``v_b - v_a >= n_sigma * sqrt(v_error_a**2 + v_error_b**2)``). The glacier is flagged
    when its largest 8-connected patch of surge cells covers ``min_area_km2`` or more: a
    contiguous reach, not scattered noise.

    Parameters
    ----------
    composites : sequence of xarray.Dataset
        Period composites on one grid, in time order.
    glaciers : geopandas.GeoDataFrame
        From :func:`glacierflow.outlines.glacier_table`, in the composites' CRS.
    factor : float
        Speed-up factor (2 for a doubling).
    min_area_km2 : float
        Smallest reach, km^2.
    min_speed_m_per_yr : float
        Slowest earlier speed considered, m/yr.
    n_sigma : float
        Significance, in one-sigma errors.

    Returns
    -------
    pandas.DataFrame
        One row per flagged glacier and pair of years: ``glacier_id``, ``name``, ``year_from``,
        ``year_to``, ``reach_area_km2``, ``reach_length_km`` (longest side of the reach's
        bounding box), ``reach_fraction`` (of the glacier's cells), ``v_from_median``,
        ``v_to_median`` (m/yr, over the reach), ``ratio_median``, ``lon``, ``lat`` (reach
        centroid, degrees).
    """
    import pandas as pd

    if not factor > 1:
        raise InputError(f"the surge factor must be above 1, got {factor}")
    rows: list[dict[str, object]] = []
    if len(composites) < 2 or not len(glaciers):
        return pd.DataFrame(rows, columns=SURGE_COLUMNS)
    transform, shape = composite_grid(composites[0])
    labels = label_glaciers(glaciers, transform, shape)
    cells = np.bincount(labels.ravel(), minlength=len(glaciers) + 1)
    to_lonlat = Transformer.from_crs(composites[0].attrs["crs_wkt"], "EPSG:4326", always_xy=True)
    for before, after in zip(composites[:-1], composites[1:], strict=True):
        va = np.asarray(before["v"].values, dtype=np.float64)
        vb = np.asarray(after["v"].values, dtype=np.float64)
        ea = np.asarray(before["v_error"].values, dtype=np.float64)
        eb = np.asarray(after["v_error"].values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            cand = (
                (labels > 0)
                & np.isfinite(va)
                & np.isfinite(vb)
                & (va >= min_speed_m_per_yr)
                & (va >= n_sigma * ea)
                & (vb >= factor * va)
                & (vb - va >= n_sigma * np.hypot(ea, eb))
            )
        if not cand.any():
            continue
        for gl, reach in _largest_reaches(cand, labels, len(glaciers), transform, min_area_km2):
            i = int(gl) - 1
            rows.append(
                {
                    "glacier_id": glaciers["glacier_id"].iloc[i],
                    "name": glaciers["name"].iloc[i],
                    "year_from": composite_year(before),
                    "year_to": composite_year(after),
                    **_reach_row(reach, transform, to_lonlat),
                    "reach_fraction": float(reach.sum() / max(1, cells[gl])),
                    "v_from_median": float(np.median(va[reach])),
                    "v_to_median": float(np.median(vb[reach])),
                    "ratio_median": float(np.median(vb[reach] / va[reach])),
                }
            )
    return pd.DataFrame(rows, columns=SURGE_COLUMNS)


def _largest_reaches(
    cand: np.ndarray, labels: np.ndarray, n_glaciers: int, transform: Affine, min_area_km2: float
) -> Iterator[tuple[int, np.ndarray]]:
    """For each glacier, its largest 8-connected patch of surge cells if it covers
    ``min_area_km2``: (glacier number, boolean mask of the reach)."""
    cell_km2 = abs(transform.a * transform.e) / 1e6
    # Patches of surge cells, split where they cross from one glacier to another; one
    # labelling of the whole grid, not one per glacier (RGI regions hold thousands).
    patches, _ = ndimage.label(cand, structure=np.ones((3, 3), dtype=bool))
    key = patches[cand].astype(np.int64) * (n_glaciers + 1) + labels[cand]
    keys, sizes = np.unique(key, return_counts=True)
    patch_of, glacier_of = np.divmod(keys, n_glaciers + 1)
    boxes = ndimage.find_objects(patches)
    for gl in np.unique(glacier_of):
        best = int(np.argmax(np.where(glacier_of == gl, sizes, -1)))
        if float(sizes[best] * cell_km2) < min_area_km2:
            continue
        window = boxes[int(patch_of[best]) - 1]
        reach = np.zeros(cand.shape, dtype=bool)
        reach[window] = (patches[window] == patch_of[best]) & (labels[window] == gl)
        yield gl, reach


def _reach_row(reach: np.ndarray, transform: Affine, to_lonlat) -> dict[str, float]:
    """Area (km^2), length (km, longest side of the bounding box) and centroid (degrees)."""
    rr, cc = np.nonzero(reach)
    res_km = abs(transform.a) / 1000.0
    cx, cy = transform @ (cc.mean() + 0.5, rr.mean() + 0.5)
    lon, lat = to_lonlat.transform(cx, cy)
    return {
        "reach_area_km2": float(rr.size * abs(transform.a * transform.e) / 1e6),
        "reach_length_km": float(max(np.ptp(rr) + 1, np.ptp(cc) + 1) * res_km),
        "lon": float(lon),
        "lat": float(lat),
    }
