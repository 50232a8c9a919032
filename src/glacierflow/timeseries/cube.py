"""Cubes in ITS_LIVE's layout: the pairs of a project, and the inverted series.

ITS_LIVE's Zarr cubes (and the notebooks and tools that read them) expect, on dimensions
``(mid_date, y, x)``: ``vx``, ``vy``, ``v`` (``meter/year``, CF ``standard_name``
``land_ice_surface_x_velocity`` ...), ``vx_error``, ``vy_error``, ``v_error``, per layer
``acquisition_date_img1``, ``acquisition_date_img2``, ``date_dt`` (days), ``satellite_img1``,
``satellite_img2``, and a ``mapping`` grid-mapping variable (written by
:func:`glacierflow.products.write_zarr_cube`). :func:`pairs_cube` puts a cube of pairs
(:func:`glacierflow.timeseries.network.combine_pairs`) in that layout.

:func:`series_cube` does the same for an inverted series
(:func:`glacierflow.timeseries.network.invert_cube`): each step is a layer whose "pair" is the
step itself (``acquisition_date_img1``/``_img2`` its start and end, ``mid_date`` its middle,
``date_dt`` its length, ``satellite_img1 = "inverted"``), so a step's value is what a pair
over exactly that span would measure, the mean velocity, and a reader of ITS_LIVE cubes reads
it as such. What the data cover rides along per pixel and step (``coverage_days``,
``pair_count``, ``first_date``, ``last_date``, ``resolution``, ``resolved_days``) and over the
whole cube in the attributes ``data_start_datetime``, ``data_end_datetime``.

Nothing here reads or writes files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = ["CF_VARIABLES", "pairs_cube", "series_cube"]

_MPY = "meter/year"

#: ITS_LIVE-like attributes of the layers, by name.
CF_VARIABLES: dict[str, dict[str, str]] = {
    "vx": {
        "standard_name": "land_ice_surface_x_velocity",
        "description": "velocity component in x direction (map east)",
        "units": _MPY,
    },
    "vy": {
        "standard_name": "land_ice_surface_y_velocity",
        "description": "velocity component in y direction (map north)",
        "units": _MPY,
    },
    "v": {
        "standard_name": "land_ice_surface_velocity",
        "description": "velocity magnitude",
        "units": _MPY,
    },
    "vx_error": {
        "standard_name": "vx_error",
        "description": "1-sigma error of vx",
        "units": _MPY,
    },
    "vy_error": {
        "standard_name": "vy_error",
        "description": "1-sigma error of vy",
        "units": _MPY,
    },
    "v_error": {
        "standard_name": "velocity_error",
        "description": "1-sigma error of each velocity component, rms of vx_error and vy_error",
        "units": _MPY,
    },
    "mid_date": {
        "standard_name": "image_pair_center_date",
        "description": "midpoint of the two acquisitions (of the step, for a series)",
    },
    "acquisition_date_img1": {
        "standard_name": "image1_acquition_date",
        "description": "acquisition time of the first image (start of the step, for a series)",
    },
    "acquisition_date_img2": {
        "standard_name": "image2_acquition_date",
        "description": "acquisition time of the second image (end of the step, for a series)",
    },
    "date_dt": {
        "standard_name": "image_pair_time_separation",
        "description": "time between the acquisitions (length of the step, for a series)",
    },
    "satellite_img1": {
        "standard_name": "image1_satellite",
        "description": "satellite of the first image ('inverted' for a step of a series)",
    },
    "satellite_img2": {
        "standard_name": "image2_satellite",
        "description": "satellite of the second image ('inverted' for a step of a series)",
    },
}


def _days(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind == "m":
        return arr / np.timedelta64(1, "D")
    return arr.astype(np.float64)


def _with_attrs(ds: xr.Dataset) -> xr.Dataset:
    for name, attrs in CF_VARIABLES.items():
        if name in ds.variables:
            keep = {k: v for k, v in ds[name].attrs.items() if k not in ("units",)}
            ds[name].attrs = {**keep, **attrs}
    return ds


def _span_attrs(t1: np.ndarray, t2: np.ndarray) -> dict[str, str]:
    ok = ~(np.isnat(t1) | np.isnat(t2))
    if not ok.any():
        return {}
    first = np.min(t1[ok]).astype("datetime64[s]")
    last = np.max(t2[ok]).astype("datetime64[s]")
    return {"data_start_datetime": f"{first}Z", "data_end_datetime": f"{last}Z"}


def pairs_cube(cube: xr.Dataset) -> xr.Dataset:
    """A cube of pairs in ITS_LIVE's layout (names, units, CF attributes, ``v``, ``v_error``).

    Parameters
    ----------
    cube : xarray.Dataset
        Cube convention (:mod:`glacierflow.timeseries.itslive`): ``vx``, ``vy``,
        ``vx_error``, ``vy_error`` (m/yr), ``acquisition_date_img1/2``, with ``crs_wkt`` and
        ``transform`` attributes.

    Returns
    -------
    xarray.Dataset
        ``date_dt`` in days as timedelta64 (ITS_LIVE's cubes decode it so), ``v`` the speed
        of each pair's vector, ``v_error`` the rms of the component errors, and the attributes
        ``data_start_datetime``/``data_end_datetime`` (first and last acquisition).
    """
    out = cube.copy()
    t1 = out["acquisition_date_img1"].values.astype("datetime64[ns]")
    t2 = out["acquisition_date_img2"].values.astype("datetime64[ns]")
    out["date_dt"] = ("mid_date", (t2 - t1).astype("timedelta64[ns]"))
    out["v"] = np.hypot(out["vx"], out["vy"]).astype(np.float32)
    err = np.sqrt((out["vx_error"].astype(np.float64) ** 2 + out["vy_error"] ** 2) / 2)
    out["v_error"] = err.astype(np.float32)
    for k in ("1", "2"):
        name = f"satellite_img{k}"
        if name not in out.variables:
            out[name] = ("mid_date", np.full(out.sizes["mid_date"], "", dtype=object))
        else:
            out[name] = ("mid_date", np.array([str(v) for v in out[name].values], dtype=object))
    order = ["vx", "vy", "v", "vx_error", "vy_error", "v_error", "acquisition_date_img1"]
    order += ["acquisition_date_img2", "date_dt", "satellite_img1", "satellite_img2"]
    out = out[[n for n in order if n in out.variables]]
    out.attrs = {
        "title": "Glacier surface velocity, image pairs (ITS_LIVE cube layout)",
        **_span_attrs(t1, t2),
        "pair_count": int(out.sizes["mid_date"]),
        **{k: cube.attrs[k] for k in ("crs_wkt", "transform") if k in cube.attrs},
    }
    return _with_attrs(out)


def series_cube(series: xr.Dataset, pairs: xr.Dataset | None = None) -> xr.Dataset:
    """An inverted series (:func:`~glacierflow.timeseries.network.invert_cube`) in ITS_LIVE's
    layout: one layer per step, the step as its "pair" (see the module docstring).

    Parameters
    ----------
    series : xarray.Dataset
        On ``(time, y, x)`` with ``time_bnds``; computed (not lazy).
    pairs : xarray.Dataset, optional
        The cube of pairs it was inverted from: its first and last acquisitions become the
        attributes ``data_start_datetime`` and ``data_end_datetime``.

    Returns
    -------
    xarray.Dataset
        On ``(mid_date, y, x)``.
    """
    bounds = series["time_bnds"].values.astype("datetime64[ns]")
    out = series.drop_vars("time_bnds").rename({"time": "mid_date"})
    out = out.assign_coords(mid_date=("mid_date", series["time"].values.astype("datetime64[ns]")))
    n = out.sizes["mid_date"]
    out["acquisition_date_img1"] = ("mid_date", bounds[:, 0])
    out["acquisition_date_img2"] = ("mid_date", bounds[:, 1])
    out["date_dt"] = ("mid_date", (bounds[:, 1] - bounds[:, 0]).astype("timedelta64[ns]"))
    for k in ("1", "2"):
        out[f"satellite_img{k}"] = ("mid_date", np.full(n, "inverted", dtype=object))
    steps_with_data = (out["coverage_days"] > 0).any(dim=("y", "x")).values
    out["step_coverage_days"] = (
        "mid_date",
        out["coverage_days"].max(dim=("y", "x")).values.astype(np.float64),
        {"units": "days", "long_name": "most days of the step covered by data at any pixel"},
    )
    out["step_pair_count"] = (
        "mid_date",
        out["pair_count"].max(dim=("y", "x")).values.astype(np.int32),
        {"units": "1", "long_name": "most valid pairs overlapping the step at any pixel"},
    )
    attrs = dict(series.attrs)
    if pairs is not None:
        attrs.update(
            _span_attrs(
                pairs["acquisition_date_img1"].values.astype("datetime64[ns]"),
                pairs["acquisition_date_img2"].values.astype("datetime64[ns]"),
            )
        )
    attrs["steps_with_data"] = int(steps_with_data.sum())
    attrs["steps_resolved"] = int(np.isfinite(out["v"]).any(dim=("y", "x")).values.sum())
    out.attrs = attrs
    return _with_attrs(out)
