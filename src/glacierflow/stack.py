"""Many pair products on one grid: annual (or per-period) composites and a time-series cube.

Everything here is arrays in, arrays out: pair products (``xarray.Dataset`` from
:func:`glacierflow.track.track_pair` or :func:`glacierflow.products.read_product`) are resampled
onto a common :class:`Grid` and combined per :class:`Period`. Nothing here reads or writes files;
:mod:`glacierflow.project` does.

How a pair counts for a period
------------------------------
A pair counts for each period with a fraction ``f`` in (0, 1], by one of the rules ``overlap``
(default), ``majority`` or ``midpoint`` (``assign``); :mod:`glacierflow.periods` defines them.

How pairs are combined
----------------------
Per pixel, the components are averaged with weights ``w = f / v_error**2`` (inverse variance,
scaled by the overlap fraction)::

    vx = sum(w * vx_i) / sum(w)          vy likewise        v = hypot(vx, vy)
    v_error = sqrt(sum(w**2 * v_error_i**2)) / sum(w)
    vx_error = sqrt(sum(w**2 * vx_error_i**2)) / sum(w)   vy_error likewise
    count = number of pairs with a finite vx, vy and v_error at the pixel and w > 0

``v_error`` is the propagated one-sigma error of each combined component for independent pair
errors; with ``f = 1`` for every pair it is ``1 / sqrt(sum(1 / v_error_i**2))``. It does not
include the error of representing a whole period by pairs that cover part of it. ``vx_error``
and ``vy_error`` propagate the pairs' per-component errors with the same weights (a pair
without them, from an older product, lends its ``v_error`` to both). Speeds are taken from the
combined components, never averaged (see :mod:`glacierflow.velocity`).

Resampling and vector rotation
------------------------------
Each pair product is resampled onto the grid with :func:`rasterio.warp.reproject`: bilinear
for ``vx``, ``vy`` and the errors (NaN is nodata and takes no part), nearest for ``quality``.
``vx`` and ``vy`` are map components: when the grid's CRS is the pair's, they are copied as they
are (exact); otherwise every vector is turned by the local angle between the two CRSs' grid
axes, computed with pyproj from the Jacobian of the transformation, and its length kept (the
component errors turn with it, as independent errors). For
conformal projections (UTM, transverse Mercator, Lambert conformal conic, polar
stereographic) that is the exact rotation; the projections' scale factors (below 0.1 % within
a UTM zone, about 1 % one zone away) are not applied to the speeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.crs import CRS as RioCRS
from rasterio.warp import Resampling, reproject, transform_bounds

from glacierflow.dates import as_utc
from glacierflow.periods import (
    ASSIGN_RULES,
    Period,
    calendar_periods,
    covered_span,
    pair_interval,
    period_fractions,
)
from glacierflow.velocity import DAYS_PER_YEAR

__all__ = [
    "ASSIGN_RULES",
    "COMPOSITE_VARIABLES",
    "Grid",
    "Period",
    "annual_composites",
    "calendar_periods",
    "composite",
    "covered_span",
    "cube_dataset",
    "pair_interval",
    "period_fractions",
    "regrid",
    "vector_rotation",
]

#: CF attributes of the composite layers, in band order of the annual GeoTIFFs.
COMPOSITE_VARIABLES: dict[str, dict[str, str]] = {
    "vx": {"units": "m/yr", "long_name": "velocity component towards map east (x)"},
    "vy": {"units": "m/yr", "long_name": "velocity component towards map north (y)"},
    "v": {"units": "m/yr", "long_name": "velocity magnitude of the combined components"},
    "v_error": {
        "units": "m/yr",
        "long_name": "1-sigma error of each combined velocity component vx and vy",
    },
    "vx_error": {"units": "m/yr", "long_name": "1-sigma error of the combined vx"},
    "vy_error": {"units": "m/yr", "long_name": "1-sigma error of the combined vy"},
    "count": {"units": "1", "long_name": "number of image pairs combined"},
}

#: Spacing, in output pixels, of the lattice on which the CRS rotation angle is computed
#: exactly; it is interpolated bilinearly in between (the angle varies over tens of km).
ROTATION_LATTICE_PX = 16


# --------------------------------------------------------------------------------------------
# The common grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A north-up output grid: CRS, geotransform (pixel corners) and shape.

    Attributes
    ----------
    crs_wkt : str
        The grid's projected CRS, as WKT.
    transform : affine.Affine
        Pixel (col, row) to map (x, y) metres, GDAL pixel-corner convention.
    shape : tuple of int
        ``(rows, cols)``.
    """

    crs_wkt: str
    transform: Affine
    shape: tuple[int, int]

    @classmethod
    def from_bounds(
        cls,
        crs: str | CRS,
        bounds: Sequence[float],
        resolution_m: float,
        *,
        bounds_crs: str | CRS | None = None,
    ) -> Grid:
        """The grid of ``resolution_m`` cells covering ``bounds``, snapped outwards.

        Parameters
        ----------
        crs : str or pyproj.CRS
            The grid's projected CRS (metres), e.g. ``"EPSG:32643"``.
        bounds : sequence of 4 float
            ``(xmin, ymin, xmax, ymax)`` in ``bounds_crs`` (west, south, east, north in degrees
            for ``"EPSG:4326"``).
        resolution_m : float
            Cell size, metres.
        bounds_crs : str or pyproj.CRS, optional
            CRS of ``bounds``; default the grid's. Geographic bounds are reprojected with
            densified edges, so the grid covers the whole lon/lat box.

        Returns
        -------
        Grid
            Cell edges on multiples of ``resolution_m`` in the grid CRS.
        """
        if not resolution_m > 0:
            raise ValueError(f"resolution_m must be positive, got {resolution_m}")
        x0, y0, x1, y1 = (float(b) for b in bounds)
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"bounds must be (xmin, ymin, xmax, ymax) with max > min: {bounds}")
        dst = CRS.from_user_input(crs)
        if bounds_crs is not None and not CRS.from_user_input(bounds_crs).equals(dst):
            x0, y0, x1, y1 = transform_bounds(
                RioCRS.from_wkt(CRS.from_user_input(bounds_crs).to_wkt()),
                RioCRS.from_wkt(dst.to_wkt()),
                x0,
                y0,
                x1,
                y1,
                densify_pts=101,
            )
        r = float(resolution_m)
        left, right = math.floor(x0 / r) * r, math.ceil(x1 / r) * r
        bottom, top = math.floor(y0 / r) * r, math.ceil(y1 / r) * r
        shape = (round((top - bottom) / r), round((right - left) / r))
        return cls(dst.to_wkt(), Affine(r, 0.0, left, 0.0, -r, top), shape)

    @property
    def resolution_m(self) -> float:
        """Cell size along x, metres."""
        return float(abs(self.transform.a))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the grid CRS, metres."""
        t, (ny, nx) = self.transform, self.shape
        return t.c, t.f + t.e * ny, t.c + t.a * nx, t.f

    @property
    def x(self) -> np.ndarray:
        """Map x of the pixel centres along a row, metres."""
        return self.transform.c + self.transform.a * (np.arange(self.shape[1]) + 0.5)

    @property
    def y(self) -> np.ndarray:
        """Map y of the pixel centres down a column, metres."""
        return self.transform.f + self.transform.e * (np.arange(self.shape[0]) + 0.5)

    def attrs(self) -> dict[str, Any]:
        """``crs_wkt`` and ``transform`` (GDAL order), as a product's attributes carry them."""
        return {"crs_wkt": self.crs_wkt, "transform": list(self.transform.to_gdal())}

    def coords(self) -> dict[str, Any]:
        """``x`` and ``y`` coordinates for a Dataset on this grid."""
        return {
            "x": ("x", self.x, {"units": "m", "standard_name": "projection_x_coordinate"}),
            "y": ("y", self.y, {"units": "m", "standard_name": "projection_y_coordinate"}),
        }


# --------------------------------------------------------------------------------------------
# Resampling onto the grid
# --------------------------------------------------------------------------------------------


def _same_crs(a_wkt: str, b_wkt: str) -> bool:
    return CRS.from_wkt(a_wkt).equals(CRS.from_wkt(b_wkt), ignore_axis_order=True)


def vector_rotation(src_crs_wkt: str, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and sine of the angle that turns ``src`` map vectors into ``grid`` map vectors.

    At every grid pixel centre, the images of a step east and a step north in the source CRS
    are measured in the grid CRS (finite differences of the pyproj transformation); the angle
    is that of the mean of the east step and the north step turned by -90 degrees, which for a
    conformal projection is the rotation exactly. It is computed on a lattice every
    :data:`ROTATION_LATTICE_PX` pixels and interpolated bilinearly.

    Parameters
    ----------
    src_crs_wkt : str
        CRS of the vectors' components.
    grid : Grid
        The destination grid.

    Returns
    -------
    cos, sin : ndarray, shape ``grid.shape``
        A source vector ``(vx, vy)`` becomes ``(cos*vx - sin*vy, sin*vx + cos*vy)``.
    """
    from scipy import ndimage

    ny, nx = grid.shape
    step = ROTATION_LATTICE_PX
    rows = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(np.float64)
    cols = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(np.float64)
    cc, rr = np.meshgrid(cols + 0.5, rows + 0.5)
    gx, gy = grid.transform @ (cc, rr)
    to_src = Transformer.from_crs(
        CRS.from_wkt(grid.crs_wkt), CRS.from_wkt(src_crs_wkt), always_xy=True
    )
    to_dst = Transformer.from_crs(
        CRS.from_wkt(src_crs_wkt), CRS.from_wkt(grid.crs_wkt), always_xy=True
    )
    sx, sy = to_src.transform(gx, gy)
    h = 10.0  # metres: small against the curvature of any projection, large against rounding
    ex, ey = to_dst.transform(sx + h, sy)
    nx_, ny_ = to_dst.transform(sx, sy + h)
    x0, y0 = to_dst.transform(sx, sy)
    east = np.stack([ex - x0, ey - y0])
    north = np.stack([nx_ - x0, ny_ - y0])
    # A north step turned by -90 degrees points east: average both estimates of the rotation.
    ux = east[0] + north[1]
    uy = east[1] - north[0]
    angle = np.arctan2(uy, ux)
    # Interpolate cos and sin (not the angle, which could wrap) onto every pixel.
    fr = np.interp(np.arange(ny), rows, np.arange(rows.size))
    fc = np.interp(np.arange(nx), cols, np.arange(cols.size))
    coords = np.meshgrid(fr, fc, indexing="ij")
    c = ndimage.map_coordinates(np.cos(angle), coords, order=1, mode="nearest")
    s = ndimage.map_coordinates(np.sin(angle), coords, order=1, mode="nearest")
    norm = np.hypot(c, s)
    return c / norm, s / norm


def _reproject_band(
    data: np.ndarray,
    src_transform: Affine,
    src_crs_wkt: str,
    grid: Grid,
    resampling: Resampling,
) -> np.ndarray:
    out = np.full(grid.shape, np.nan, dtype=np.float32)
    reproject(
        np.asarray(data, dtype=np.float32),
        out,
        src_transform=src_transform,
        src_crs=RioCRS.from_wkt(src_crs_wkt),
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=RioCRS.from_wkt(grid.crs_wkt),
        dst_nodata=np.nan,
        resampling=resampling,
    )
    return out


def regrid(ds: xr.Dataset, grid: Grid) -> xr.Dataset:
    """Resample a pair product onto ``grid``: ``vx``, ``vy``, ``v``, the errors (and ``quality``).

    Bilinear for the components and the error, nearest for ``quality``; vectors are turned
    into the grid CRS's axes when the CRSs differ (see the module docstring), and ``v`` is the
    length of the resampled vector. Pixels without data are NaN.

    Parameters
    ----------
    ds : xarray.Dataset
        A pair product with ``vx``, ``vy`` (m/yr), ``v_error`` (m/yr; ``vx_error`` and
        ``vy_error`` too where it has them, else both are its ``v_error``) and attributes
        ``crs_wkt`` and ``transform`` (node grid, GDAL order).
    grid : Grid

    Returns
    -------
    xarray.Dataset
        On ``grid``, with the pair's attributes and the grid's ``crs_wkt`` and ``transform``.
    """
    for name in ("vx", "vy", "v_error"):
        if name not in ds.data_vars:
            raise ValueError(f"the pair product has no {name!r} layer")
    src_wkt = str(ds.attrs.get("crs_wkt") or "")
    if not src_wkt:
        raise ValueError("the pair product has no CRS (crs_wkt); it cannot be put on a map grid")
    src_t = Affine.from_gdal(*[float(c) for c in ds.attrs["transform"]])
    bands = {
        name: _reproject_band(
            ds[name if name in ds.data_vars else "v_error"].values,
            src_t,
            src_wkt,
            grid,
            Resampling.bilinear,
        )
        for name in ("vx", "vy", "v_error", "vx_error", "vy_error")
    }
    if not _same_crs(src_wkt, grid.crs_wkt):
        cos, sin = vector_rotation(src_wkt, grid)
        vx, vy = bands["vx"], bands["vy"]
        bands["vx"] = (cos * vx - sin * vy).astype(np.float32)
        bands["vy"] = (sin * vx + cos * vy).astype(np.float32)
        ex, ey = bands["vx_error"], bands["vy_error"]
        bands["vx_error"] = np.hypot(cos * ex, sin * ey).astype(np.float32)
        bands["vy_error"] = np.hypot(sin * ex, cos * ey).astype(np.float32)
    bands["v"] = np.hypot(bands["vx"], bands["vy"]).astype(np.float32)
    if "quality" in ds.data_vars:
        q = np.asarray(ds["quality"].values, dtype=np.float32)
        bands["quality"] = _reproject_band(q, src_t, src_wkt, grid, Resampling.nearest)
    data_vars = {
        name: (("y", "x"), arr, dict(COMPOSITE_VARIABLES.get(name, {})))
        for name, arr in bands.items()
    }
    out = xr.Dataset(data_vars, coords=grid.coords(), attrs=dict(ds.attrs))
    out.attrs.update(grid.attrs())
    return out


# --------------------------------------------------------------------------------------------
# Composites
# --------------------------------------------------------------------------------------------


def _pair_label(ds: xr.Dataset) -> str:
    start, end = pair_interval(ds)
    return f"{start:%Y-%m-%d}/{end:%Y-%m-%d}"


def composite(
    pairs: Sequence[xr.Dataset],
    fractions: Sequence[float],
    grid: Grid,
    period: Period,
) -> xr.Dataset:
    """Combine pair products already on ``grid`` into one period's map.

    Parameters
    ----------
    pairs : sequence of xarray.Dataset
        Products on ``grid`` (from :func:`regrid`).
    fractions : sequence of float
        How much each pair counts for the period, in (0, 1] (:func:`period_fractions`).
    grid : Grid
    period : Period

    Returns
    -------
    xarray.Dataset
        ``vx``, ``vy``, ``v``, ``v_error``, ``vx_error``, ``vy_error`` (m/yr) and ``count`` on
        ``grid`` (see the module
        docstring for the formulas); NaN (count 0) where no pair has data. Attributes: the
        grid, ``year``, ``start_datetime``, ``end_datetime``, ``mid_datetime``,
        ``pairs`` (labels), ``pair_fractions``,
        ``chip_m`` (largest chip footprint of the pairs, metres) and the formulas; and what the
        data cover (honest periods, :func:`covered_span`): ``data_start_datetime`` and
        ``data_end_datetime`` (the pairs' span clipped to the period), ``coverage_days`` (days
        of the period inside a pair), ``period_days`` and ``coverage_text`` ("16 of 366 days").
    """
    if len(pairs) != len(fractions):
        raise ValueError(f"{len(pairs)} pairs but {len(fractions)} fractions")
    sw = np.zeros(grid.shape)
    swx = np.zeros(grid.shape)
    swy = np.zeros(grid.shape)
    sw2s2 = np.zeros((3, *grid.shape))
    count = np.zeros(grid.shape, dtype=np.int32)
    chip_m = 0.0
    for ds, f in zip(pairs, fractions, strict=True):
        if not 0 < f <= 1:
            raise ValueError(f"fractions must lie in (0, 1], got {f}")
        vx = ds["vx"].values.astype(np.float64)
        vy = ds["vy"].values.astype(np.float64)
        err = ds["v_error"].values.astype(np.float64)
        ok = np.isfinite(vx) & np.isfinite(vy) & np.isfinite(err) & (err > 0)
        w = np.where(ok, f / np.where(ok, err, 1.0) ** 2, 0.0)
        sw += w
        swx += np.where(ok, w * vx, 0.0)
        swy += np.where(ok, w * vy, 0.0)
        for k, name in enumerate(("v_error", "vx_error", "vy_error")):
            e = ds[name].values.astype(np.float64) if name in ds.data_vars else err
            sw2s2[k] += np.where(ok, (w * e) ** 2, 0.0)
        count += ok
        chip = float(ds.attrs.get("chip_px", 0) or 0) * float(ds.attrs.get("pixel_size_m", 0) or 0)
        chip_m = max(chip_m, chip)
    has = sw > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        vx_c = np.where(has, swx / sw, np.nan)
        vy_c = np.where(has, swy / sw, np.nan)
        err_c = np.where(has, np.sqrt(sw2s2) / sw, np.nan)
    layers = {
        "vx": vx_c,
        "vy": vy_c,
        "v": np.hypot(vx_c, vy_c),
        "v_error": err_c[0],
        "vx_error": err_c[1],
        "vy_error": err_c[2],
        "count": count,
    }
    data_vars = {
        name: (
            ("y", "x"),
            arr.astype(np.int16 if name == "count" else np.float32),
            dict(COMPOSITE_VARIABLES[name]),
        )
        for name, arr in layers.items()
    }
    attrs: dict[str, Any] = {
        "title": f"Glacier surface velocity, composite for {period.year}",
        "year": int(period.year),
        "start_datetime": period.start.isoformat(),
        "end_datetime": (period.end - timedelta(seconds=1)).isoformat(),
        "mid_datetime": period.mid.isoformat(),
        "pairs": [_pair_label(ds) for ds in pairs],
        "pair_fractions": [float(f) for f in fractions],
        "pair_count": len(pairs),
        "chip_m": chip_m,
        "composite_weights": "w = f / v_error^2 per pixel, f = share of the pair in the period",
        "composite_v_error": (
            "sqrt(sum(w^2 v_error_i^2)) / sum(w), per component; vx_error, vy_error likewise"
        ),
        "days_per_year": DAYS_PER_YEAR,
        **_coverage_attrs([pair_interval(ds) for ds in pairs], period),
        **grid.attrs(),
    }
    return xr.Dataset(data_vars, coords=grid.coords(), attrs=attrs)


def _coverage_attrs(intervals: list[tuple[datetime, datetime]], period: Period) -> dict[str, Any]:
    first, last, days = covered_span(intervals, period)
    return {
        "data_start_datetime": first.isoformat() if first else "",
        "data_end_datetime": last.isoformat() if last else "",
        "coverage_days": float(days),
        "period_days": float(period.days),
        "coverage_text": f"{days:.0f} of {period.days:.0f} days",
    }


def annual_composites(
    pairs: Sequence[xr.Dataset] | Mapping[str, Callable[[], xr.Dataset]],
    grid: Grid,
    periods: Sequence[Period] | None = None,
    assign: str = "overlap",
) -> list[xr.Dataset]:
    """One composite per period that at least one pair counts for.

    Parameters
    ----------
    pairs : sequence of xarray.Dataset, or mapping of name to a loader returning one
        Pair products at their own resolution and CRS. With loaders, each product is read
        only while the periods it counts for are composed, so memory holds one period's sums
        and one resampled pair at a time.
    grid : Grid
        The common output grid.
    periods : sequence of Period, optional
        Default: the calendar years from the earliest to the latest acquisition.
    assign : {"overlap", "majority", "midpoint"}
        How a pair counts for a period (module docstring).

    Returns
    -------
    list of xarray.Dataset
        Composites (:func:`composite`) in period order; periods no pair counts for are left
        out. ``attrs["composite_assign"]`` records ``assign``.
    """
    loaders: list[Callable[[], xr.Dataset]]
    if isinstance(pairs, Mapping):
        loaders = list(pairs.values())
    else:
        loaders = [(lambda ds=ds: ds) for ds in pairs]
    intervals = []
    for load in loaders:
        intervals.append(pair_interval(load()))
    if not intervals:
        return []
    if periods is None:
        periods = calendar_periods(min(s for s, _ in intervals), max(e for _, e in intervals))
    periods = sorted(periods, key=lambda p: p.start)
    shares = [period_fractions(s, e, periods, assign) for s, e in intervals]
    out = []
    for period in periods:
        members = [(i, sh[period.year]) for i, sh in enumerate(shares) if period.year in sh]
        if not members:
            continue
        on_grid = [regrid(loaders[i](), grid) for i, _ in members]
        comp = composite(on_grid, [f for _, f in members], grid, period)
        comp.attrs["composite_assign"] = assign
        out.append(comp)
    return out


# --------------------------------------------------------------------------------------------
# The time-series cube
# --------------------------------------------------------------------------------------------


def _datetime64(value: datetime | str) -> np.datetime64:
    """A time as numpy datetime64[ns], in UTC without a zone (as CF time coordinates hold it)."""
    return np.datetime64(as_utc(value).replace(tzinfo=None), "ns")


def cube_dataset(composites: Sequence[xr.Dataset]) -> xr.Dataset:
    """Stack period composites on one grid into a cube with a ``time`` axis.

    ``time`` is the middle of each period (``time_bnds`` its start and end), like ITS_LIVE's
    annual mosaics; what the data cover is beside it, per period (``data_start``, ``data_end``,
    ``coverage_days``, ``period_days``, ``pair_count``) and over all (attributes
    ``data_start_datetime``, ``data_end_datetime``); variables ``v``, ``vx``, ``vy``,
    ``v_error``, ``vx_error``, ``vy_error`` (m/yr, float32; where the composites have them) and
    ``count`` (int16) on ``(time, y, x)``. The grid
    (``crs_wkt``, ``transform``) is in the attributes.

    Raises
    ------
    ValueError
        If there is no composite or the composites are on different grids.
    """
    if not composites:
        raise ValueError("no composite to stack")
    first = composites[0]
    for comp in composites[1:]:
        if comp.attrs["transform"] != first.attrs["transform"] or comp.sizes != first.sizes:
            raise ValueError("composites on different grids cannot be stacked")
    times = np.array(
        [
            np.datetime64(as_utc(c.attrs["mid_datetime"]).replace(tzinfo=None), "ns")
            for c in composites
        ]
    )
    bounds = np.array(
        [
            [
                np.datetime64(as_utc(c.attrs["start_datetime"]).replace(tzinfo=None), "ns"),
                np.datetime64(
                    (as_utc(c.attrs["end_datetime"]) + timedelta(seconds=1)).replace(tzinfo=None),
                    "ns",
                ),
            ]
            for c in composites
        ]
    )
    data_vars: dict[str, Any] = {}
    for name in ("v", "vx", "vy", "v_error", "vx_error", "vy_error", "count"):
        if name not in first.data_vars:
            continue
        stacked = np.stack([c[name].values for c in composites])
        data_vars[name] = (("time", "y", "x"), stacked, dict(COMPOSITE_VARIABLES[name]))
    data_vars["time_bnds"] = (("time", "nv"), bounds)
    data_vars.update(_coverage_variables(composites))
    coords = {
        "time": ("time", times, {"standard_name": "time", "bounds": "time_bnds"}),
        "x": ("x", first["x"].values, dict(first["x"].attrs)),
        "y": ("y", first["y"].values, dict(first["y"].attrs)),
    }
    attrs = {
        "title": "Glacier surface velocity, period composites",
        "years": [int(c.attrs["year"]) for c in composites],
        "composite_assign": first.attrs.get("composite_assign", ""),
        "composite_weights": first.attrs.get("composite_weights", ""),
        "composite_v_error": first.attrs.get("composite_v_error", ""),
        "crs_wkt": first.attrs["crs_wkt"],
        "transform": list(first.attrs["transform"]),
    }
    starts = [c.attrs.get("data_start_datetime") for c in composites]
    ends = [c.attrs.get("data_end_datetime") for c in composites]
    if all(starts) and all(ends):
        attrs["data_start_datetime"] = min(as_utc(s) for s in starts).isoformat()
        attrs["data_end_datetime"] = max(as_utc(e) for e in ends).isoformat()
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _coverage_variables(composites: Sequence[xr.Dataset]) -> dict[str, Any]:
    """Per period: what the data cover (``data_start``, ``data_end``, ``coverage_days``,
    ``period_days``, ``pair_count``), from the composites' attributes."""
    if not all(c.attrs.get("data_start_datetime") for c in composites):
        return {}

    def when(key: str) -> np.ndarray:
        return np.array([_datetime64(c.attrs[key]) for c in composites])

    def per(key: str, dtype: Any) -> np.ndarray:
        return np.array([c.attrs[key] for c in composites], dtype=dtype)

    return {
        "data_start": (("time",), when("data_start_datetime"), {"long_name": COVER["start"]}),
        "data_end": (("time",), when("data_end_datetime"), {"long_name": COVER["end"]}),
        "coverage_days": (
            ("time",),
            per("coverage_days", np.float64),
            {"units": "days", "long_name": COVER["days"]},
        ),
        "period_days": (
            ("time",),
            per("period_days", np.float64),
            {"units": "days", "long_name": "length of the period"},
        ),
        "pair_count": (
            ("time",),
            per("pair_count", np.int32),
            {"units": "1", "long_name": "image pairs combined in the period"},
        ),
    }


#: Long names of the coverage variables of the cube.
COVER = {
    "start": "first instant of the period covered by an image pair",
    "end": "last instant of the period covered by an image pair",
    "days": "days of the period inside at least one image pair",
}
