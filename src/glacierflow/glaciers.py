"""Glacier and stable-ground outlines on an image grid, and glacier analysis of velocity maps.

Outlines (RGI shapefiles, GeoPackages, any CRS) are read with geopandas, reprojected to the grid's
CRS and burnt into boolean masks with ``rasterio.features``. Stable ground comes either from
glacier outlines (:func:`ice_mask_from_outlines`: everything off the buffered ice is stable) or
from a file that marks stable ground directly (:func:`mask_from_file`: polygons such as the
Yahtse rock outlines, or a raster mask whose non-zero pixels are stable).

On period composites (:mod:`glacierflow.stack`): per-glacier speed statistics with errors
(:func:`glacier_statistics`), their trends (:func:`speed_trends`), speed along centrelines and
transects (:func:`read_lines`, :func:`sample_profiles`) and candidate surges
(:func:`detect_surges`). These take Datasets and GeoDataFrames and return pandas tables; they
write nothing.
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


# --------------------------------------------------------------------------------------------
# Glacier analysis on period composites: statistics, trends, profiles, surges
#
# The composites are Datasets on one north-up map grid (``vx``, ``vy``, ``v``, ``v_error`` in
# m/yr, ``count``), with ``crs_wkt``, ``transform`` (GDAL order), ``year`` and
# ``mid_datetime`` attributes: see :mod:`glacierflow.stack`. Nothing below writes files.
# --------------------------------------------------------------------------------------------

#: Attribute names tried, in order, for a glacier's identifier (RGI 6/7, GLIMS, generic).
GLACIER_ID_FIELDS = ("RGIId", "RGIID", "rgi_id", "GLIMSId", "GLIMSID", "glims_id", "ID", "id")
#: Attribute names tried, in order, for a glacier's name.
GLACIER_NAME_FIELDS = ("Name", "NAME", "name", "glac_name")

#: Ratio of the standard error of the median to that of the mean for normal errors
#: (sqrt(pi / 2)).
MEDIAN_ERROR_FACTOR = math.sqrt(math.pi / 2)


#: Cells whose v_error exceeds this multiple of the glacier's median v_error do not set its
#: maximum speed.
MAX_ERROR_FACTOR = 2.0


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
    names = (
        [
            "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
            for v in outlines[namef]
        ]
        if namef is not None
        else [""] * n
    )
    return gpd.GeoDataFrame(
        {
            "glacier_id": ids,
            "name": names,
            "area_km2": np.asarray(outlines.geometry.area, dtype=float) / 1e6,
        },
        geometry=list(outlines.geometry),
        crs=outlines.crs,
    )


def _grid_of(ds) -> tuple[Affine, tuple[int, int]]:
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


def _year_of(ds) -> int:
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
        From :func:`glacier_table`, in the composites' CRS.

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
    transform, shape = _grid_of(composites[0])
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
        for i in range(n):
            a, b = edges[i], edges[i + 1]
            k = b - a
            row = {
                "glacier_id": glaciers["glacier_id"].iloc[i],
                "name": glaciers["name"].iloc[i],
                "year": _year_of(ds),
                "decimal_year": _decimal_year(ds.attrs["mid_datetime"]),
                "area_km2": float(glaciers["area_km2"].iloc[i]),
                "cells": int(cells[i]),
                "valid_cells": int(k),
                "valid_fraction": float(k / cells[i]) if cells[i] else 0.0,
            }
            if k:
                seg_v, seg_e = vv[a:b], ee[a:b]
                if chip_m > 0:
                    n_eff = float(np.clip(k * cell_km2 * 1e6 / chip_m**2, 1.0, k))
                else:
                    n_eff = 1.0
                mean_err = float(np.sqrt(np.nanmean(seg_e**2) / n_eff))
                # The fastest well-measured cell: an isolated cell with a large error (a chip
                # at a data gap, a bad match) must not set the maximum.
                well = np.nonzero(seg_e <= MAX_ERROR_FACTOR * np.nanmedian(seg_e))[0]
                top = int(well[-1]) if well.size else k - 1
                row.update(
                    v_mean=float(seg_v.mean()),
                    v_mean_error=mean_err,
                    v_median=float(np.median(seg_v)),
                    v_median_error=MEDIAN_ERROR_FACTOR * mean_err,
                    v_max=float(seg_v[top]),
                    v_max_error=float(seg_e[top]),
                    pairs_max=int(cc[a:b].max()),
                )
            else:
                row.update(
                    v_mean=np.nan,
                    v_mean_error=np.nan,
                    v_median=np.nan,
                    v_median_error=np.nan,
                    v_max=np.nan,
                    v_max_error=np.nan,
                    pairs_max=0,
                )
            rows.append(row)
    return pd.DataFrame(rows)


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
    if not p.exists():
        raise InputError("line file not found", p)
    try:
        gdf = gpd.read_file(p)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(f"not a vector file OGR can read ({exc})", p) from exc
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
    names = (
        [
            "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
            for v in gdf[namef]
        ]
        if namef is not None
        else [""] * len(gdf)
    )
    out = gpd.GeoDataFrame({"line_id": ids, "name": names}, geometry=geoms, crs=gdf.crs)
    return out.to_crs(CRS.from_user_input(crs).to_wkt())


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
        (:func:`read_lines`).
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
    transform, shape = _grid_of(composites[0])
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
                        "year": _year_of(ds),
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
        From :func:`glacier_table`, in the composites' CRS.
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
    from pyproj import Transformer
    from scipy import ndimage

    columns = [
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
    if not factor > 1:
        raise InputError(f"the surge factor must be above 1, got {factor}")
    rows: list[dict[str, object]] = []
    if len(composites) < 2 or not len(glaciers):
        return pd.DataFrame(rows, columns=columns)
    transform, shape = _grid_of(composites[0])
    labels = label_glaciers(glaciers, transform, shape)
    cells = np.bincount(labels.ravel(), minlength=len(glaciers) + 1)
    cell_km2 = abs(transform.a * transform.e) / 1e6
    res_km = abs(transform.a) / 1000.0
    to_lonlat = Transformer.from_crs(composites[0].attrs["crs_wkt"], "EPSG:4326", always_xy=True)
    eight = np.ones((3, 3), dtype=bool)
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
        # Patches of surge cells, split where they cross from one glacier to another; one
        # labelling of the whole grid, not one per glacier (RGI regions hold thousands).
        patches, _ = ndimage.label(cand, structure=eight)
        key = patches[cand].astype(np.int64) * (len(glaciers) + 1) + labels[cand]
        keys, sizes = np.unique(key, return_counts=True)
        patch_of, glacier_of = np.divmod(keys, len(glaciers) + 1)
        boxes = ndimage.find_objects(patches)
        for gl in np.unique(glacier_of):
            best = int(np.argmax(np.where(glacier_of == gl, sizes, -1)))
            area = float(sizes[best] * cell_km2)
            if area < min_area_km2:
                continue
            window = boxes[int(patch_of[best]) - 1]
            reach = np.zeros(cand.shape, dtype=bool)
            reach[window] = (patches[window] == patch_of[best]) & (labels[window] == gl)
            rr, cc = np.nonzero(reach)
            length = float(max(np.ptp(rr) + 1, np.ptp(cc) + 1) * res_km)
            cx, cy = transform @ (cc.mean() + 0.5, rr.mean() + 0.5)
            lon, lat = to_lonlat.transform(cx, cy)
            i = int(gl) - 1
            rows.append(
                {
                    "glacier_id": glaciers["glacier_id"].iloc[i],
                    "name": glaciers["name"].iloc[i],
                    "year_from": _year_of(before),
                    "year_to": _year_of(after),
                    "reach_area_km2": area,
                    "reach_length_km": length,
                    "reach_fraction": float(reach.sum() / max(1, cells[gl])),
                    "v_from_median": float(np.median(va[reach])),
                    "v_to_median": float(np.median(vb[reach])),
                    "ratio_median": float(np.median(vb[reach] / va[reach])),
                    "lon": float(lon),
                    "lat": float(lat),
                }
            )
    return pd.DataFrame(rows, columns=columns)
