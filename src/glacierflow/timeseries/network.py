"""Pairs to a cube, the cube to an inverted time series (Dask-chunked), and series at a point.

The cube convention is described in :mod:`glacierflow.timeseries.itslive`; the inversion in
:mod:`glacierflow.timeseries.inversion`. Everything here is arrays in, arrays out: nothing
reads or writes files.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from pyproj import Transformer

from glacierflow.stack import Grid, regrid
from glacierflow.timeseries.inversion import (
    OUTPUTS,
    InversionSettings,
    data_steps,
    invert_pairs,
    time_steps,
)

__all__ = [
    "CHUNK_BYTES",
    "STEP_VARIABLES",
    "combine_pairs",
    "invert_cube",
    "pair_to_cube",
    "series_at",
]

#: Bytes of float64 inputs a Dask block of :func:`invert_cube` holds (default block size).
CHUNK_BYTES = 16 * 2**20

#: CF attributes of the inverted cube's variables.
STEP_VARIABLES: dict[str, dict[str, str]] = {
    "vx": {
        "units": "m/yr",
        "standard_name": "land_ice_surface_x_velocity",
        "long_name": "mean velocity towards map east (x) over the step",
    },
    "vy": {
        "units": "m/yr",
        "standard_name": "land_ice_surface_y_velocity",
        "long_name": "mean velocity towards map north (y) over the step",
    },
    "v": {
        "units": "m/yr",
        "standard_name": "land_ice_surface_velocity",
        "long_name": "speed of the mean velocity vector over the step",
    },
    "vx_error": {"units": "m/yr", "long_name": "1-sigma error of vx (posterior covariance)"},
    "vy_error": {"units": "m/yr", "long_name": "1-sigma error of vy (posterior covariance)"},
    "v_error": {"units": "m/yr", "long_name": "1-sigma error of each component, rms of both"},
    "coverage_days": {"units": "days", "long_name": "days of the step inside a valid pair"},
    "pair_count": {"units": "1", "long_name": "valid pairs overlapping the step"},
    "first_date": {"long_name": "first day of the step covered by data"},
    "last_date": {"long_name": "end of the last stretch of the step covered by data"},
    "resolution": {
        "units": "1",
        "long_name": "model resolution: share of the estimate that comes from the data",
    },
    "resolved_days": {
        "units": "days",
        "long_name": "days of the step in base steps the data resolve; the rest of the step "
        "is filled by the temporal regularisation",
    },
}


def _grid_of(ds: xr.Dataset) -> Grid:
    t = ds.attrs["transform"]
    t = [float(v) for v in (t.strip("[]").split(",") if isinstance(t, str) else t)]
    return Grid(str(ds.attrs["crs_wkt"]), Affine.from_gdal(*t), (ds.sizes["y"], ds.sizes["x"]))


def _utc64(text: Any) -> np.datetime64:
    when = text if isinstance(text, datetime) else datetime.fromisoformat(str(text))
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(when, "ns")


def pair_to_cube(ds: xr.Dataset) -> xr.Dataset:
    """A glacierflow pair product as a one-pair cube (cube convention, ``mid_date`` of size 1).

    Parameters
    ----------
    ds : xarray.Dataset
        A pair product: ``vx``, ``vy``, ``v_error`` (m/yr, per component) and the attributes
        ``ref_time``, ``sec_time``, ``crs_wkt``, ``transform``.

    Returns
    -------
    xarray.Dataset
        ``vx_error`` and ``vy_error`` per pixel are the product's (its ``v_error`` for both
        in products written before they existed).
    """
    for key in ("ref_time", "sec_time"):
        if key not in ds.attrs:
            raise ValueError(f"the pair product has no {key!r} attribute")
    t1, t2 = _utc64(ds.attrs["ref_time"]), _utc64(ds.attrs["sec_time"])
    g3 = ("mid_date", "y", "x")
    err = ds["v_error"].values.astype(np.float32)[None]
    data_vars = {
        "vx": (g3, ds["vx"].values.astype(np.float32)[None], {"units": "m/yr"}),
        "vy": (g3, ds["vy"].values.astype(np.float32)[None], {"units": "m/yr"}),
        "v_error": (g3, err, {"units": "m/yr"}),
        **{
            name: (g3, ds[name].values.astype(np.float32)[None], {"units": "m/yr"})
            if name in ds.data_vars
            else (g3, err, {"units": "m/yr"})
            for name in ("vx_error", "vy_error")
        },
        "acquisition_date_img1": (("mid_date",), np.array([t1])),
        "acquisition_date_img2": (("mid_date",), np.array([t2])),
        "date_dt": (
            ("mid_date",),
            np.array([(t2 - t1) / np.timedelta64(1, "D")]),
            {"units": "days"},
        ),
        "satellite_img1": (("mid_date",), np.array([str(ds.attrs.get("ref_sensor", ""))])),
        "satellite_img2": (("mid_date",), np.array([str(ds.attrs.get("sec_sensor", ""))])),
    }
    coords = {"mid_date": ("mid_date", np.array([t1 + (t2 - t1) / 2])), "x": ds["x"], "y": ds["y"]}
    attrs = {"crs_wkt": ds.attrs["crs_wkt"], "transform": list(_grid_of(ds).transform.to_gdal())}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _regrid_cube(cube: xr.Dataset, grid: Grid) -> xr.Dataset:
    """Every pair of a cube onto ``grid`` (bilinear; vectors turned when the CRS differs)."""
    same = (
        _grid_of(cube).transform == grid.transform
        and (cube.sizes["y"], cube.sizes["x"]) == grid.shape
        and _grid_of(cube).crs_wkt == grid.crs_wkt
    )
    if same:
        return cube
    pieces = []
    per_pixel_err = cube["vx_error"].ndim == 3
    for k in range(cube.sizes["mid_date"]):
        one = cube.isel(mid_date=k)
        ex = one["vx_error"].values
        ey = one["vy_error"].values
        err = np.sqrt((ex.astype(np.float64) ** 2 + ey.astype(np.float64) ** 2) / 2)
        pair = xr.Dataset(
            {
                "vx": (("y", "x"), one["vx"].values),
                "vy": (("y", "x"), one["vy"].values),
                "v_error": (("y", "x"), np.broadcast_to(err, one["vx"].shape).astype(np.float32)),
                **{
                    name: (("y", "x"), one[name].values.astype(np.float32))
                    for name in ("vx_error", "vy_error")
                    if per_pixel_err
                },
            },
            coords={"x": cube["x"], "y": cube["y"]},
            attrs=dict(cube.attrs),
        )
        on = regrid(pair, grid)
        pieces.append(on)
    g3 = ("mid_date", "y", "x")
    vx = np.stack([p["vx"].values for p in pieces])
    vy = np.stack([p["vy"].values for p in pieces])
    err = np.stack([p["v_error"].values for p in pieces])
    out = xr.Dataset(
        {"vx": (g3, vx, {"units": "m/yr"}), "vy": (g3, vy, {"units": "m/yr"})},
        coords={"mid_date": cube["mid_date"], **grid.coords()},
        attrs={**cube.attrs, **grid.attrs()},
    )
    if per_pixel_err:
        for name in ("vx_error", "vy_error"):
            out[name] = (g3, np.stack([p[name].values for p in pieces]), {"units": "m/yr"})
    else:
        out["vx_error"] = cube["vx_error"]
        out["vy_error"] = cube["vy_error"]
    for name in cube.data_vars:
        if cube[name].dims == ("mid_date",) and name not in out:
            out[name] = cube[name]
    return out


def combine_pairs(items: Sequence[xr.Dataset], grid: Grid | None = None) -> xr.Dataset:
    """Put pair products and cubes (own pairs, ITS_LIVE granules) on one grid, in one cube.

    Parameters
    ----------
    items : sequence of xarray.Dataset
        glacierflow pair products (:func:`pair_to_cube` is applied) and cubes in the cube
        convention (:func:`glacierflow.timeseries.itslive.read_itslive_granule`, ...).
    grid : Grid, optional
        The common grid; default the first item's.

    Returns
    -------
    xarray.Dataset
        One cube, ``mid_date`` sorted, errors per pixel where any item has them per pixel.
    """
    if not items:
        raise ValueError("no pair to combine")
    cubes = [it if "mid_date" in it.dims else pair_to_cube(it) for it in items]
    grid = grid or _grid_of(cubes[0])
    on_grid = [_regrid_cube(c, grid) for c in cubes]
    if any(c["vx_error"].ndim == 3 for c in on_grid):
        for i, c in enumerate(on_grid):
            if c["vx_error"].ndim == 1:
                c = c.copy()
                for comp in ("vx_error", "vy_error"):
                    full = c[comp].broadcast_like(c["vx"]).astype(np.float32)
                    c[comp] = full.where(np.isfinite(c["vx"]))
                on_grid[i] = c
    keep = ["vx", "vy", "vx_error", "vy_error", "acquisition_date_img1", "acquisition_date_img2"]
    keep += ["date_dt", "satellite_img1", "satellite_img2"]
    parts = [c[[k for k in keep if k in c.variables]] for c in on_grid]
    out = xr.concat(parts, dim="mid_date", join="override", combine_attrs="override")
    out = out.sortby("mid_date")
    out.attrs = {**grid.attrs()}
    return out


def _ufunc(vx, vy, ex, ey, *, t1, t2, edges, settings):  # noqa: ANN001, ANN202
    """Core of :func:`invert_cube` on one block: pairs last in, (outputs, steps) last out."""
    res = invert_pairs(vx, vy, ex, ey, t1, t2, edges, settings)
    layers = []
    origin = edges[0].astype("datetime64[s]")
    for name in OUTPUTS:
        arr = res[name]
        if name in ("first_date", "last_date"):
            nat = np.isnat(arr)
            arr = np.where(nat, np.nan, (arr - origin) / np.timedelta64(1, "s") / 86400.0)
        layers.append(np.asarray(arr, dtype=np.float64))
    return np.stack(layers, axis=-2)


def invert_cube(
    cube: xr.Dataset,
    freq: str | int | Sequence[Any] = "monthly",
    settings: InversionSettings | None = None,
    *,
    start: Any = None,
    end: Any = None,
    chunk_pixels: int | None = None,
) -> xr.Dataset:
    """Invert every pixel of a pair cube into a regular velocity time series.

    Parameters
    ----------
    cube : xarray.Dataset
        Cube convention (:mod:`glacierflow.timeseries.itslive`), in memory or Dask-backed.
    freq : str, int or sequence of dates
        Steps (:func:`glacierflow.timeseries.inversion.time_steps`).
    settings : InversionSettings, optional
    start, end : datetime-like, optional
        Range to cover; default the pairs' first and last acquisition, and then the first and
        last steps are cut to them (:func:`~glacierflow.timeseries.inversion.data_steps`).
    chunk_pixels : int, optional
        Pixels per Dask block when ``cube`` is Dask-backed; default as many as keep a block's
        inputs near :data:`CHUNK_BYTES` (``chunk_pixels * n_pairs * 32`` bytes as float64,
        at most 4096 pixels), so memory stays bounded however many pairs the cube holds.

    Returns
    -------
    xarray.Dataset
        On ``(time, y, x)``: ``vx``, ``vy``, ``v``, ``vx_error``, ``vy_error``, ``v_error``
        (m/yr), ``coverage_days``, ``pair_count``, ``first_date``, ``last_date``,
        ``resolution`` (see :data:`STEP_VARIABLES`); ``time`` is each step's middle and
        ``time_bnds`` its edges. Dask-backed when ``cube`` is; call ``.compute()``.
    """
    settings = settings or InversionSettings()
    for name in ("vx", "vy", "vx_error", "vy_error", "acquisition_date_img1"):
        if name not in cube.variables:
            raise ValueError(f"the cube has no {name!r} variable")
    t1 = cube["acquisition_date_img1"].values.astype("datetime64[s]")
    t2 = cube["acquisition_date_img2"].values.astype("datetime64[s]")
    if t1.size == 0:
        raise ValueError("the cube holds no pair")
    if isinstance(freq, str | int) and start is None and end is None:
        edges = data_steps(t1.min(), t2.max(), freq)  # no step outside the data
    else:
        edges = time_steps(
            start if start is not None else t1.min(), end if end is not None else t2.max(), freq
        )
    ex = cube["vx_error"]
    ey = cube["vy_error"]
    lazy = cube["vx"].chunks is not None
    vx, vy = cube["vx"], cube["vy"]
    if lazy:
        ny, nx = cube.sizes["y"], cube.sizes["x"]
        if chunk_pixels is None:
            chunk_pixels = min(4096, max(16, CHUNK_BYTES // (32 * t1.size)))
        side = max(1, int(np.sqrt(chunk_pixels)))
        chunks = {"mid_date": -1, "y": min(side, ny), "x": min(side, nx)}
        vx, vy = vx.chunk(chunks), vy.chunk(chunks)
        ex = ex.chunk({k: v for k, v in chunks.items() if k in ex.dims})
        ey = ey.chunk({k: v for k, v in chunks.items() if k in ey.dims})
    m = edges.size - 1
    stacked = xr.apply_ufunc(
        _ufunc,
        vx,
        vy,
        ex,
        ey,
        input_core_dims=[["mid_date"]] * 4,
        output_core_dims=[["output", "time"]],
        kwargs={"t1": t1, "t2": t2, "edges": edges, "settings": settings},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"output": len(OUTPUTS), "time": m}},
    )
    stacked = stacked.transpose("output", "time", "y", "x")
    return _step_dataset(stacked, edges, cube, settings, freq)


def _step_dataset(
    stacked: xr.DataArray,
    edges: np.ndarray,
    cube: xr.Dataset,
    settings: InversionSettings,
    freq: Any,
) -> xr.Dataset:
    data_vars: dict[str, Any] = {}
    origin = edges[0].astype("datetime64[ns]")
    for k, name in enumerate(OUTPUTS):
        layer = stacked.isel(output=k, drop=True)
        if name in ("first_date", "last_date"):
            ns = (layer * 86400e9).round()
            layer = xr.where(
                np.isfinite(layer),
                origin + ns.fillna(0).astype("timedelta64[ns]"),
                np.datetime64("NaT"),
            )
        elif name == "pair_count":
            layer = layer.astype(np.int32)
        elif name != "coverage_days":
            layer = layer.astype(np.float32)
        layer.attrs = {}  # not the attributes of the input's vx (its standard_name)
        data_vars[name] = layer.assign_attrs(STEP_VARIABLES[name])
    data_vars["v"] = np.hypot(data_vars["vx"], data_vars["vy"]).assign_attrs(STEP_VARIABLES["v"])
    v_err = np.sqrt((data_vars["vx_error"] ** 2 + data_vars["vy_error"] ** 2) / 2)
    data_vars["v_error"] = v_err.assign_attrs(STEP_VARIABLES["v_error"])
    start = edges[:-1].astype("datetime64[ns]")
    stop = edges[1:].astype("datetime64[ns]")
    out = xr.Dataset(data_vars)
    out = out.assign_coords(
        time=("time", start + (stop - start) / 2, {"standard_name": "time", "bounds": "time_bnds"})
    )
    out["time_bnds"] = (("time", "nv"), np.stack([start, stop], axis=1))
    order = ["vx", "vy", "v", "vx_error", "vy_error", "v_error", "coverage_days", "pair_count"]
    order += ["first_date", "last_date", "resolution", "resolved_days", "time_bnds"]
    out = out[order]
    out.attrs = {
        "title": "Glacier surface velocity time series, network inversion of image pairs",
        "freq": str(freq) if isinstance(freq, str | int) else "explicit edges",
        "inversion": "robust weighted least squares on temporal closure (glacierflow)",
        "inversion_regularisation": settings.regularisation,
        "inversion_lambda": str(settings.lam),
        "inversion_min_resolution": settings.min_resolution,
        "pair_count_total": int(cube.sizes["mid_date"]),
        **{k: cube.attrs[k] for k in ("crs_wkt", "transform") if k in cube.attrs},
    }
    return out


def series_at(
    cube: xr.Dataset,
    lon: float,
    lat: float,
    freq: str | int | Sequence[Any] = "monthly",
    settings: InversionSettings | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pairs and the inverted series at the cube pixel nearest to a longitude/latitude.

    Parameters
    ----------
    cube : xarray.Dataset
        Cube convention, with ``crs_wkt``.
    lon, lat : float
        Degrees (WGS 84).
    freq, settings
        As for :func:`invert_cube`.

    Returns
    -------
    pairs : pandas.DataFrame
        One row per pair with data at the pixel: ``date1``, ``date2``, ``dt_days``, ``vx``,
        ``vy``, ``v``, ``vx_error``, ``vy_error`` (m/yr), ``satellite_img1``.
    steps : pandas.DataFrame
        One row per step: ``start``, ``end``, ``vx``, ``vy``, ``v``, ``v_error`` (m/yr, NaN
        where unresolved), ``coverage_days``, ``pair_count``, ``first_date``, ``last_date``,
        ``resolution``, ``resolved_days``.

    Raises
    ------
    ValueError
        If the point lies outside the cube.
    """
    to_map = Transformer.from_crs("EPSG:4326", cube.attrs["crs_wkt"], always_xy=True)
    x, y = to_map.transform(lon, lat)
    xs, ys = cube["x"].values, cube["y"].values
    dx = abs(float(xs[1] - xs[0])) if xs.size > 1 else np.inf
    dy = abs(float(ys[1] - ys[0])) if ys.size > 1 else np.inf
    ix, iy = int(np.argmin(np.abs(xs - x))), int(np.argmin(np.abs(ys - y)))
    if abs(xs[ix] - x) > dx / 2 + 1e-6 or abs(ys[iy] - y) > dy / 2 + 1e-6:
        raise ValueError(f"the point {lon:.5f}, {lat:.5f} lies outside the cube")
    px = cube.isel(x=[ix], y=[iy]).load()
    result = invert_cube(px, freq, settings).isel(x=0, y=0)
    one = px.isel(x=0, y=0)
    ex = np.broadcast_to(one["vx_error"].values, one["vx"].shape)
    ey = np.broadcast_to(one["vy_error"].values, one["vx"].shape)
    pairs = pd.DataFrame(
        {
            "date1": one["acquisition_date_img1"].values.astype("datetime64[s]"),
            "date2": one["acquisition_date_img2"].values.astype("datetime64[s]"),
            "vx": one["vx"].values.astype(float),
            "vy": one["vy"].values.astype(float),
            "vx_error": ex.astype(float),
            "vy_error": ey.astype(float),
        }
    )
    pairs.insert(2, "dt_days", (pairs["date2"] - pairs["date1"]).dt.total_seconds() / 86400.0)
    pairs.insert(5, "v", np.hypot(pairs["vx"], pairs["vy"]))
    if "satellite_img1" in one.variables:
        pairs["satellite_img1"] = [str(v) for v in one["satellite_img1"].values]
    pairs = pairs[np.isfinite(pairs["vx"]) & np.isfinite(pairs["vy"])].reset_index(drop=True)
    bounds = result["time_bnds"].values
    steps = pd.DataFrame(
        {
            "start": bounds[:, 0],
            "end": bounds[:, 1],
            **{
                name: result[name].values
                for name in ("vx", "vy", "v", "v_error", "coverage_days", "pair_count")
            },
            "first_date": result["first_date"].values,
            "last_date": result["last_date"].values,
            "resolution": result["resolution"].values,
            "resolved_days": result["resolved_days"].values,
        }
    )
    steps.attrs = {"x_m": float(xs[ix]), "y_m": float(ys[iy]), "lon": lon, "lat": lat}
    return pairs, steps
