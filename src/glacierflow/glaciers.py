"""Glacier and stable-ground outlines on an image grid.

Outlines (RGI shapefiles, GeoPackages, any CRS) are read with geopandas, reprojected to the grid's
CRS and burnt into boolean masks with ``rasterio.features``.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize

from glacierflow.errors import InputError


def read_outlines(path: str | PathLike[str], crs: CRS | str):
    """Read polygon outlines and reproject them to ``crs``.

    Parameters
    ----------
    path : str or PathLike
        A vector file GDAL/OGR can read (Shapefile, GeoPackage, GeoJSON, ...).
    crs : rasterio.crs.CRS or str
        Target CRS (the image grid's).

    Returns
    -------
    geopandas.GeoDataFrame
        Polygons in ``crs``.
    """
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise InputError("outline file not found", p)
    try:
        gdf = gpd.read_file(p)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(f"not a vector file OGR can read ({exc})", p) from exc
    if gdf.empty:
        raise InputError("holds no outlines", p)
    if gdf.crs is None:
        raise InputError("outlines have no coordinate reference system", p)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    return gdf.to_crs(CRS.from_user_input(crs).to_wkt())


def outline_mask(
    path: str | PathLike[str],
    *,
    crs: CRS | str,
    transform: Affine,
    shape: tuple[int, int],
    all_touched: bool = False,
) -> np.ndarray:
    """Rasterise outlines onto a grid: True inside any polygon.

    Parameters
    ----------
    path : str or PathLike
        Outline file.
    crs : rasterio.crs.CRS or str
        The grid's CRS.
    transform : affine.Affine
        The grid's geotransform (pixel corners).
    shape : tuple of int
        Grid shape ``(rows, cols)``.
    all_touched : bool
        Burn every pixel a polygon touches, not only those whose centre it covers.

    Raises
    ------
    InputError
        If the outlines do not overlap the grid.
    """
    gdf = read_outlines(path, crs)
    mask = rasterize(
        ((geom, 1) for geom in gdf.geometry),
        out_shape=shape,
        transform=transform,
        fill=0,
        all_touched=all_touched,
        dtype="uint8",
    ).astype(bool)
    if not mask.any():
        raise InputError("outlines do not overlap the image grid", path)
    return mask
