"""Prior velocity fields (e.g. an ITS_LIVE mosaic) as search centres for guided matching.

A prior velocity in m/yr, times the pair's time separation, predicts each node's offset; the
matcher then centres the node's search window there (``prior_dx_px``/``prior_dy_px`` of
:func:`glacierflow.matching.match`), so that an annual pair of a fast glacier (tens of pixels of
motion) needs no huge search window. The prior only has to be right to within the search radius.

Units and conventions: ``vx`` is the velocity along the prior raster's map x axis (east on
north-up grids), ``vy`` along its map y axis (north), both in metres per year of 365.25 days, as
in ITS_LIVE products. Offsets are returned in pixels of the pair's grid, right (columns) and down
(rows), from the earlier image to the later one.

When the prior and the pair are in different CRSs, each node's predicted displacement is carried
across as a vector: the node is transformed into the prior's CRS, moved there by the prior
displacement, and the end point is transformed back. Resampling the two components onto the
pair's grid (as ``rasterio.warp.reproject`` would) would keep the numbers of the other CRS's
axes and turn the flow by the angle between the two grids (several degrees between UTM zones or
from polar stereographic).
"""

from __future__ import annotations

import math
from os import PathLike

import numpy as np
import rasterio.crs
import rasterio.warp
from affine import Affine
from scipy import ndimage

from glacierflow.errors import InputError
from glacierflow.scenes import read_raster_band

__all__ = ["DAYS_PER_YEAR", "prior_offsets", "prior_offsets_from_grids", "velocity_to_offsets"]

#: Days in a year of the velocity units (m/yr): the Julian year, as everywhere in glacierflow.
DAYS_PER_YEAR = 365.25


def velocity_to_offsets(
    vx_m_per_yr: np.ndarray,
    vy_m_per_yr: np.ndarray,
    transform: Affine,
    dt_days: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Velocities in map units to pixel offsets on one grid.

    Parameters
    ----------
    vx_m_per_yr, vy_m_per_yr : ndarray
        Velocity along the map x (east) and y (north) axes, m/yr (365.25-day years).
    transform : affine.Affine
        Pixel (col, row) to map (x, y) transform of the grid the offsets are for.
    dt_days : float
        Time from the earlier to the later image, days.

    Returns
    -------
    dx_px, dy_px : ndarray of float64
        Offsets in pixels along the columns (right) and rows (down).
    """
    years = float(dt_days) / DAYS_PER_YEAR
    return _map_to_pixels(
        np.asarray(vx_m_per_yr, dtype=np.float64) * years,
        np.asarray(vy_m_per_yr, dtype=np.float64) * years,
        transform,
    )


def _map_to_pixels(mx: np.ndarray, my: np.ndarray, transform: Affine):
    """Map displacement (metres along x, y) to (columns, rows): the inverse linear part."""
    a, b, d, e = transform.a, transform.b, transform.d, transform.e
    det = a * e - b * d
    if det == 0 or not math.isfinite(det):
        raise ValueError(f"the transform is singular: {transform!r}")
    return (e * mx - b * my) / det, (-d * mx + a * my) / det


def _apply(t: Affine, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An affine transform applied to coordinate arrays."""
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    return t.a * u + t.b * v + t.c, t.d * u + t.e * v + t.f


def _read_component(path: str | PathLike[str], name: str):
    data, transform, crs = read_raster_band(path, what=f"prior {name} raster")
    if crs.is_geographic:
        raise InputError(
            f"the prior {name} raster is in a geographic CRS ({crs.to_string()}); its "
            "velocity components need map axes in metres: reproject it (and rotate the "
            "vectors) to a projected CRS first",
            path,
        )
    return data, transform, crs


def prior_offsets(
    vx_path: str | PathLike[str],
    vy_path: str | PathLike[str],
    *,
    crs: rasterio.crs.CRS,
    transform: Affine,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    dt_days: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Prior offsets on a node grid from velocity rasters in m/yr.

    Parameters
    ----------
    vx_path, vy_path : str or PathLike
        Single-band rasters of the velocity along the map x and y axes, m/yr (365.25-day years),
        in any projected CRS; nodata (or NaN) where unknown. E.g. ITS_LIVE ``vx``/``vy``.
    crs : rasterio.crs.CRS
        CRS of the pair's grid.
    transform : affine.Affine
        Pixel (col, row) to map transform of the pair's images.
    rows_px, cols_px : ndarray of int
        Image rows and columns of the node rows and columns
        (:meth:`~glacierflow.matching.NodeGrid.rows_px`, ``cols_px()``).
    dt_days : float
        Time from the earlier to the later image, days (positive).

    Returns
    -------
    prior_dx_px, prior_dy_px : ndarray of float64, shape (len(rows_px), len(cols_px))
        Expected offsets in pixels, right and down; NaN where the prior has no value (the
        matcher then searches around zero there).

    Raises
    ------
    InputError
        If a raster cannot be read, has no or a geographic CRS, the two differ in grid, or the
        prior does not cover the pair at all.
    """
    if not dt_days > 0:
        raise InputError(f"dt_days must be positive, got {dt_days}")
    vx, vx_transform, vx_crs = _read_component(vx_path, "vx")
    vy, vy_transform, vy_crs = _read_component(vy_path, "vy")
    if vx.shape != vy.shape or vx_transform != vy_transform or vx_crs != vy_crs:
        raise InputError(
            f"the prior vx and vy rasters are not on one grid ({vx.shape} and {vy.shape} px); "
            f"use the two components of one product (vy: {vy_path})",
            vx_path,
        )
    return prior_offsets_from_grids(
        vx,
        vy,
        prior_transform=vx_transform,
        prior_crs=vx_crs,
        crs=crs,
        transform=transform,
        rows_px=rows_px,
        cols_px=cols_px,
        dt_days=dt_days,
        source=vx_path,
    )


def prior_offsets_from_grids(
    vx_m_per_yr: np.ndarray,
    vy_m_per_yr: np.ndarray,
    *,
    prior_transform: Affine,
    prior_crs: rasterio.crs.CRS,
    crs: rasterio.crs.CRS,
    transform: Affine,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    dt_days: float,
    source: str | PathLike[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prior offsets on a node grid from prior velocity arrays in m/yr on their own grid.

    The computation of :func:`prior_offsets`, without reading files.

    Parameters
    ----------
    vx_m_per_yr, vy_m_per_yr : ndarray
        Velocity along the prior grid's map x and y axes, m/yr (365.25-day years); NaN where
        unknown. One grid for both.
    prior_transform : affine.Affine
        Pixel (col, row) to map transform of the prior grid.
    prior_crs : rasterio.crs.CRS
        The prior grid's (projected) CRS.
    crs, transform, rows_px, cols_px, dt_days
        The pair's grid and nodes, as in :func:`prior_offsets`.
    source : str or PathLike, optional
        Where the prior came from, for error messages.

    Returns
    -------
    prior_dx_px, prior_dy_px : ndarray of float64, shape (len(rows_px), len(cols_px))
        Expected offsets in pixels, right and down; NaN where the prior has no value.

    Raises
    ------
    InputError
        If ``dt_days`` is not positive or the prior does not cover the pair at all.
    """
    if not dt_days > 0:
        raise InputError(f"dt_days must be positive, got {dt_days}")
    vx = np.asarray(vx_m_per_yr, dtype=np.float64)
    vy = np.asarray(vy_m_per_yr, dtype=np.float64)
    rr, cc = np.meshgrid(np.asarray(rows_px), np.asarray(cols_px), indexing="ij")
    # Node positions (pixel centres) in the pair's CRS, then in the prior's.
    x, y = _apply(transform, cc.ravel() + 0.5, rr.ravel() + 0.5)
    same = prior_crs == crs
    px, py = (x, y) if same else map(np.asarray, rasterio.warp.transform(crs, prior_crs, x, y))
    # Bilinear samples of the prior at the nodes (NaN next to nodata, outside the raster).
    col, row = _apply(~prior_transform, px, py)
    coords = np.array([row - 0.5, col - 0.5])
    inside = (
        (coords[0] >= -0.5)
        & (coords[0] <= vx.shape[0] - 0.5)
        & (coords[1] >= -0.5)
        & (coords[1] <= vx.shape[1] - 0.5)
    )
    samples = []
    for comp in (vx, vy):
        v = ndimage.map_coordinates(comp, coords, order=1, mode="nearest", cval=np.nan)
        samples.append(np.where(inside, v, np.nan))
    if not np.isfinite(samples[0]).any():
        raise InputError(
            "the prior velocity does not cover the pair (no node falls on a valid prior "
            f"pixel; prior CRS {prior_crs.to_string()}, pair CRS {crs.to_string()})",
            source,
        )
    years = float(dt_days) / DAYS_PER_YEAR
    ex, ey = px + samples[0] * years, py + samples[1] * years  # end points, prior CRS
    if not same:
        ok = np.isfinite(ex) & np.isfinite(ey)
        bx, by = np.full_like(ex, np.nan), np.full_like(ey, np.nan)
        if ok.any():
            tx, ty = rasterio.warp.transform(prior_crs, crs, ex[ok], ey[ok])
            bx[ok], by[ok] = tx, ty
        ex, ey = bx, by
    # Map displacement in the pair's CRS to pixels of its grid.
    dx_px, dy_px = _map_to_pixels(ex - x, ey - y, transform)
    return dx_px.reshape(rr.shape), dy_px.reshape(rr.shape)
