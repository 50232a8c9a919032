"""Extents as a user can check them on a map: longitude/latitude bounds and the CRS's name.

Error messages about areas that do not overlap (two scenes, outlines and an image) give both
extents in degrees, whatever the projections, with each one's CRS named ("EPSG:32607, WGS 84 /
UTM zone 7N"), rather than metres of two different UTM zones that no one can compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import rasterio.warp
from rasterio.crs import CRS

__all__ = ["box_outline", "crs_name", "lonlat_text"]

_WGS84 = CRS.from_epsg(4326)


def crs_name(crs: Any) -> str:
    """``"EPSG:32607, WGS 84 / UTM zone 7N"``: the authority code (when there is one) and name.

    Parameters
    ----------
    crs : rasterio.crs.CRS, pyproj.CRS or str
        Any CRS rasterio understands.
    """
    import pyproj

    try:
        proj = pyproj.CRS.from_user_input(
            crs.to_wkt() if hasattr(crs, "to_wkt") and not isinstance(crs, pyproj.CRS) else crs
        )
    except pyproj.exceptions.CRSError:
        return str(crs)
    code = proj.to_authority(min_confidence=70)
    return f"{code[0]}:{code[1]}, {proj.name}" if code else proj.name


def box_outline(
    x0: float, y0: float, x1: float, y1: float, per_side: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Points along the edges of a box, corners included (densified: a straight edge in one
    projection is curved in another)."""
    t = np.linspace(0.0, 1.0, per_side + 1)
    xs = np.concatenate(
        [x0 + t * (x1 - x0), np.full_like(t, x1), x1 - t * (x1 - x0), np.full_like(t, x0)]
    )
    ys = np.concatenate(
        [np.full_like(t, y1), y1 - t * (y1 - y0), np.full_like(t, y0), y0 + t * (y1 - y0)]
    )
    return xs, ys


def lonlat_text(xs: np.ndarray, ys: np.ndarray, crs: Any) -> str:
    """Bounds of points as ``"lon -141.620..-141.160, lat 59.970..60.220"`` (degrees, WGS 84).

    Parameters
    ----------
    xs, ys : ndarray
        Points (an outline) in map coordinates of ``crs``.
    crs : rasterio.crs.CRS or str
        Their CRS.
    """
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if xs.size and crs is not None and CRS.from_user_input(crs) != _WGS84:
        xs, ys = (np.asarray(v, dtype=float) for v in rasterio.warp.transform(crs, _WGS84, xs, ys))
    keep = np.isfinite(xs) & np.isfinite(ys)
    if not keep.any():
        return "an area outside the domain of its CRS"
    lon, lat = xs[keep], ys[keep]
    return f"lon {lon.min():.3f}..{lon.max():.3f}, lat {lat.min():.3f}..{lat.max():.3f}"
