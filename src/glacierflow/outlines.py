"""Glacier and stable-ground outlines: read vector files and burn them into masks on a grid.

Outlines (RGI shapefiles, GeoPackages, any CRS) are read with geopandas, reprojected to the grid's
CRS and burnt into boolean masks with ``rasterio.features``. Stable ground comes either from
glacier outlines (:func:`ice_mask_from_outlines`: everything off the buffered ice is stable) or
from a file that marks stable ground directly (:func:`mask_from_file`: polygons such as the
Yahtse rock outlines, or a raster mask whose non-zero pixels are stable).

For the glacier analysis (:mod:`glacierflow.glaciers`): outlines as a table of glaciers with
identifiers and names (:func:`glacier_table`, :func:`read_glacier_table`) and centrelines or
transects (:func:`read_lines`). This is the I/O module of outlines: the analysis opens no file.
"""

from __future__ import annotations

import math
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

__all__ = [
    "GLACIER_ID_FIELDS",
    "GLACIER_NAME_FIELDS",
    "RASTER_SUFFIXES",
    "glacier_table",
    "ice_mask_from_outlines",
    "mask_from_file",
    "outline_mask",
    "read_glacier_table",
    "read_lines",
    "read_outlines",
]


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
    p = Path(path)
    gdf = _read_vector(p, "outline file")
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


def _read_vector(path: Path, what: str):
    """A vector file as a GeoDataFrame; a missing or unreadable file is an InputError."""
    import geopandas as gpd

    if not path.exists():
        raise InputError(f"{what} not found", path)
    try:
        return gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(f"not a vector file OGR can read ({exc})", path) from exc


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
            "node step (step_px)",
            path,
        )
    return InputError(
        f"outlines do not overlap the image grid: the outlines cover "
        f"{_where_outlines(path, gdf)}; the image covers "
        f"{_where_grid(gx0, gy0, gx1, gy1, gdf.crs)}; give outlines of this scene",
        path,
    )


def _where_outlines(path: str | PathLike[str], gdf) -> str:
    """The outlines' extent in degrees, and the CRS of their file."""
    from glacierflow.extent import crs_name, lonlat_text

    try:
        import pyogrio

        file_crs = pyogrio.read_info(path).get("crs") or gdf.crs
    except Exception:  # noqa: BLE001 - only for the message; the grid's CRS will do
        file_crs = gdf.crs
    ox0, oy0, ox1, oy1 = gdf.to_crs("EPSG:4326").total_bounds
    return f"{lonlat_text([ox0, ox1], [oy0, oy1], 'EPSG:4326')} (file CRS {crs_name(file_crs)})"


def _where_grid(x0: float, y0: float, x1: float, y1: float, crs) -> str:
    """A grid's extent in degrees, and its CRS."""
    from glacierflow.extent import box_outline, crs_name, lonlat_text

    return f"{lonlat_text(*box_outline(x0, y0, x1, y1), crs)} ({crs_name(crs)})"


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
            mask_crs, mask_bounds = src.crs, tuple(src.bounds)
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
        gx0, gy0, gx1, gy1 = _grid_bounds(transform, shape)
        raise InputError(
            f"the raster mask marks no stable cell on the image grid: the mask covers "
            f"{_where_grid(*mask_bounds, mask_crs)}; the image covers "
            f"{_where_grid(gx0, gy0, gx1, gy1, crs)}",
            p,
        )
    return mask


# --------------------------------------------------------------------------------------------
# Glacier tables and lines for the analysis
# --------------------------------------------------------------------------------------------

#: Attribute names tried, in order, for a glacier's identifier (RGI 6/7, GLIMS, generic).
GLACIER_ID_FIELDS = ("RGIId", "RGIID", "rgi_id", "GLIMSId", "GLIMSID", "glims_id", "ID", "id")
#: Attribute names tried, in order, for a glacier's name.
GLACIER_NAME_FIELDS = ("Name", "NAME", "name", "glac_name")


def _text(value: object) -> str:
    """An attribute value as text; empty for missing values (None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _first_field(columns, candidates: tuple[str, ...], chosen: str | None, path) -> str | None:
    if chosen is not None:
        if chosen not in columns:
            raise InputError(
                f"has no attribute {chosen!r}; its attributes are {sorted(map(str, columns))}",
                path,
            )
        return chosen
    return next((c for c in candidates if c in columns), None)


def glacier_table(
    outlines,
    *,
    id_field: str | None = None,
    name_field: str | None = None,
    source: str | PathLike[str] | None = None,
):
    """Outlines as a table of glaciers: ``glacier_id``, ``name``, ``area_km2``, ``geometry``.

    Parameters
    ----------
    outlines : geopandas.GeoDataFrame
        Polygons in a projected CRS (metres), e.g. from :func:`read_outlines`.
    id_field, name_field : str, optional
        Attributes holding the identifier and the name; default the first present of
        :data:`GLACIER_ID_FIELDS` and :data:`GLACIER_NAME_FIELDS` (RGI's ``RGIId`` and
        ``Name``). Without an identifier, glaciers are numbered ``G0001``, ``G0002``, ...
    source : path, optional
        The file the outlines came from, for error messages.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per polygon, in the outlines' CRS; ``name`` is empty where unknown.
    """
    import geopandas as gpd

    idf = _first_field(outlines.columns, GLACIER_ID_FIELDS, id_field, source)
    namef = _first_field(outlines.columns, GLACIER_NAME_FIELDS, name_field, source)
    n = len(outlines)
    ids = (
        [str(v) for v in outlines[idf]] if idf is not None else [f"G{i + 1:04d}" for i in range(n)]
    )
    names = [_text(v) for v in outlines[namef]] if namef is not None else [""] * n
    return gpd.GeoDataFrame(
        {
            "glacier_id": ids,
            "name": names,
            "area_km2": np.asarray(outlines.geometry.area, dtype=float) / 1e6,
        },
        geometry=list(outlines.geometry),
        crs=outlines.crs,
    )


def read_glacier_table(
    path: str | PathLike[str],
    crs: CRS | str,
    *,
    id_field: str | None = None,
    name_field: str | None = None,
):
    """Read glacier outlines as a table of glaciers in ``crs``.

    :func:`read_outlines` then :func:`glacier_table`.

    Parameters
    ----------
    path : str or PathLike
        Glacier outlines (e.g. RGI), any CRS.
    crs : rasterio.crs.CRS or str
        Target CRS (projected, metres: areas are computed in it).
    id_field, name_field : str, optional
        Attributes holding the identifier and the name (see :func:`glacier_table`).

    Returns
    -------
    geopandas.GeoDataFrame
        ``glacier_id``, ``name``, ``area_km2``, ``geometry``.
    """
    outlines = read_outlines(path, crs)
    return glacier_table(outlines, id_field=id_field, name_field=name_field, source=path)


def read_lines(
    path: str | PathLike[str],
    crs: CRS | str,
    *,
    where: dict[str, object] | None = None,
    id_field: str | None = None,
    name_field: str | None = None,
):
    """Read centrelines or transects (LineStrings) and reproject them to ``crs``.

    Parameters
    ----------
    path : str or PathLike
        A vector file of lines (e.g. OGGM centrelines).
    crs : rasterio.crs.CRS or str
        Target CRS.
    where : dict, optional
        Keep only lines whose attributes equal these values (``{"MAIN": 1}`` for the main
        trunk of OGGM centrelines).
    id_field, name_field : str, optional
        Attributes naming the lines; default the glacier id and name fields when present.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``line_id``, ``name``, ``geometry`` (LineStrings; MultiLineStrings are merged
        where they join), in ``crs``.
    """
    import geopandas as gpd
    from shapely.ops import linemerge

    p = Path(path)
    gdf = _read_vector(p, "line file")
    if gdf.crs is None:
        raise InputError(
            "lines have no coordinate reference system (a shapefile needs its .prj)", p
        )
    for key, value in (where or {}).items():
        if key not in gdf.columns:
            raise InputError(
                f"has no attribute {key!r} to select lines by; its attributes are "
                f"{sorted(map(str, gdf.columns.drop('geometry')))}",
                p,
            )
        gdf = gdf[gdf[key] == value]
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    lines = gdf.geometry.geom_type.isin(["LineString", "MultiLineString"])
    if not lines.any():
        raise InputError("holds no lines (after the selection); give centrelines or transects", p)
    gdf = gdf[lines]
    idf = _first_field(gdf.columns, GLACIER_ID_FIELDS, id_field, p)
    namef = _first_field(gdf.columns, GLACIER_NAME_FIELDS, name_field, p)
    geoms = [linemerge(g) if g.geom_type == "MultiLineString" else g for g in gdf.geometry]
    base = [str(v) for v in gdf[idf]] if idf is not None else [p.stem] * len(gdf)
    ids = [f"{b}-{i}" if base.count(b) > 1 else b for i, b in enumerate(base)]
    names = [_text(v) for v in gdf[namef]] if namef is not None else [""] * len(gdf)
    out = gpd.GeoDataFrame({"line_id": ids, "name": names}, geometry=geoms, crs=gdf.crs)
    return out.to_crs(CRS.from_user_input(crs).to_wkt())
