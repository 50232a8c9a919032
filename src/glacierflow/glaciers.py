"""Glacier and stable-ground outlines on an image grid.

Outlines (RGI shapefiles, GeoPackages, any CRS) are read with geopandas, reprojected to the grid's
CRS and burnt into boolean masks with ``rasterio.features``. Stable ground comes either from
glacier outlines (:func:`ice_mask_from_outlines`: everything off the buffered ice is stable) or
from a file that marks stable ground directly (:func:`mask_from_file`: polygons such as the
Yahtse rock outlines, or a raster mask whose non-zero pixels are stable).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject

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
        raise InputError(
            "outlines have no coordinate reference system (a shapefile needs its .prj)", p
        )
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    polygons = gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    if not polygons.any():
        kinds = ", ".join(sorted(set(gdf.geometry.geom_type)))
        raise InputError(f"holds no polygons (found {kinds}); give outlines, not lines", p)
    gdf = gdf[polygons].copy()
    # RGI and hand-drawn outlines hold self-intersections now and then; repair, don't fail.
    gdf["geometry"] = gdf.geometry.make_valid()
    return gdf.to_crs(CRS.from_user_input(crs).to_wkt())


def _grid_bounds(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    corners = [transform @ (c, r) for c in (0, shape[1]) for r in (0, shape[0])]
    xs, ys = zip(*corners, strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _no_overlap(
    path: str | PathLike[str], gdf, transform: Affine, shape: tuple[int, int]
) -> InputError:
    """The error for outlines that mark no cell of the grid, saying which case it is."""
    from shapely.geometry import box

    gx0, gy0, gx1, gy1 = _grid_bounds(transform, shape)
    if gdf.geometry.intersects(box(gx0, gy0, gx1, gy1)).any():
        cell_m = float(np.hypot(transform.a, transform.d))
        return InputError(
            f"the outlines reach the image but contain no node centre of its {cell_m:g} m "
            "node grid (polygons smaller than a node); give larger polygons or a finer "
            "--step-px",
            path,
        )
    ox0, oy0, ox1, oy1 = gdf.total_bounds
    return InputError(
        f"outlines do not overlap the image grid: outlines cover x {ox0:.0f}..{ox1:.0f}, "
        f"y {oy0:.0f}..{oy1:.0f}, the image x {gx0:.0f}..{gx1:.0f}, y {gy0:.0f}..{gy1:.0f} "
        "(image CRS units); give outlines of this scene",
        path,
    )


def _burn(geoms, transform: Affine, shape: tuple[int, int], all_touched: bool) -> np.ndarray:
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(shape, dtype=bool)
    return rasterize(
        ((geom, 1) for geom in geoms),
        out_shape=shape,
        transform=transform,
        fill=0,
        all_touched=all_touched,
        dtype="uint8",
    ).astype(bool)


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
    mask = _burn(gdf.geometry, transform, shape, all_touched)
    if not mask.any():
        raise _no_overlap(path, gdf, transform, shape)
    return mask


def ice_mask_from_outlines(
    path: str | PathLike[str],
    *,
    crs: CRS | str,
    transform: Affine,
    shape: tuple[int, int],
    buffer_m: float = 0.0,
) -> np.ndarray:
    """Glacier outlines, grown by ``buffer_m``, on a grid: True on (or near) ice.

    Every grid cell the buffered outlines touch is marked (``all_touched``): ice must not leak
    into stable ground, while losing a little rock costs little.

    Parameters
    ----------
    path : str or PathLike
        Glacier outlines (e.g. RGI), any CRS.
    crs : rasterio.crs.CRS or str
        The grid's CRS (projected, metres).
    transform : affine.Affine
        The grid's geotransform.
    shape : tuple of int
        Grid shape ``(rows, cols)``.
    buffer_m : float
        Distance the outlines are grown by, in metres (outline errors, chips reaching over the
        margin). 0 for the outlines as they are.

    Raises
    ------
    InputError
        If the outlines do not overlap the grid, or the buffer is negative.
    """
    if not buffer_m >= 0:
        raise InputError(f"the ice buffer must be >= 0 m, got {buffer_m}", path)
    gdf = read_outlines(path, crs)
    geoms = gdf.geometry.buffer(buffer_m) if buffer_m > 0 else gdf.geometry
    # Overlap is judged on the outlines themselves: a buffer must not make far ice count.
    if not _burn(gdf.geometry, transform, shape, True).any():
        raise _no_overlap(path, gdf, transform, shape)
    return _burn(geoms, transform, shape, True)


#: File name endings read as raster masks by :func:`mask_from_file`; anything else is vector.
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".nc")


def mask_from_file(
    path: str | PathLike[str],
    *,
    crs: CRS | str,
    transform: Affine,
    shape: tuple[int, int],
) -> np.ndarray:
    """Stable ground from a file that marks it: polygons, or a raster whose non-zero cells are.

    A raster mask is resampled onto the grid by nearest neighbour (its nodata and zero cells are
    not stable); polygons are burnt by cell centre (:func:`outline_mask`).

    Raises
    ------
    InputError
        If the file is missing or unreadable, or marks no cell of the grid.
    """
    p = Path(path)
    if p.suffix.lower() not in RASTER_SUFFIXES:
        return outline_mask(p, crs=crs, transform=transform, shape=shape)
    if not p.exists():
        raise InputError("stable-ground mask not found", p)
    try:
        with rasterio.open(p) as src:
            if src.crs is None:
                raise InputError("the raster mask has no coordinate reference system", p)
            data = src.read(1, masked=True)
            out = np.zeros(shape, dtype=np.uint8)
            reproject(
                np.where(data.mask, 0, data.filled(0) != 0).astype(np.uint8),
                out,
                src_transform=src.transform,
                src_crs=src.crs,
                dst_transform=transform,
                dst_crs=CRS.from_user_input(crs),
                src_nodata=None,
                resampling=Resampling.nearest,
            )
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read the raster mask ({exc})", p) from exc
    mask = out.astype(bool)
    if not mask.any():
        raise InputError("the raster mask marks no stable cell on the image grid", p)
    return mask
