"""ITS_LIVE exchange: version 2 image-pair granules (NetCDF) and Zarr cube subsets.

Granule layout (ITS_LIVE v2, as written by autoRIFT for NSIDC)
--------------------------------------------------------------
One pair per NetCDF file, on coordinates ``x``, ``y`` (map metres, pixel centres):

``vx``, ``vy``, ``v``
    velocity components towards map x (east) and y (north), and speed, ``meter/year``,
    ``_FillValue = -32767``, ``grid_mapping = "mapping"``. ``vx`` and ``vy`` carry the
    granule's error estimates as *attributes*: ``error`` (best estimate, m/yr),
    ``error_mask``/``error_slow``/``error_modeled`` and the bias correction applied
    (``stable_shift``, ``stable_shift_flag``, ``stable_count_mask``).
``v_error``
    1-sigma error per pixel, ``meter/year``.
``img_pair_info``
    a scalar variable whose attributes describe the pair: ``acquisition_date_img1``,
    ``acquisition_date_img2`` (``YYYYmmddTHH:MM:SS.ffffff``, UTC), ``date_center``,
    ``date_dt`` (days), ``mission_img1``, ``satellite_img1``, ``sensor_img1`` (and ``_img2``).
``mapping``
    the CF grid mapping: ``grid_mapping_name``, ``spatial_epsg``, ``crs_wkt``,
    ``spatial_ref`` and ``GeoTransform`` (GDAL order, pixel corners, as a string).

Cube convention (what the readers return, :mod:`glacierflow.timeseries.network` inverts)
------------------------------------------------------------------------------------------
An ``xarray.Dataset`` with dimensions ``(mid_date, y, x)``: ``vx``, ``vy`` (m/yr, float32,
NaN for no data), ``vx_error``, ``vy_error`` (m/yr; per pair ``(mid_date,)`` as ITS_LIVE cubes
hold them, or per pixel ``(mid_date, y, x)``), ``v_error`` where known, and per pair
``acquisition_date_img1``, ``acquisition_date_img2`` (datetime64), ``date_dt`` (days),
``satellite_img1``, ``satellite_img2``. ``mid_date`` is the middle of each pair. The grid is
in the attributes ``crs_wkt`` and ``transform`` (GDAL order, pixel corners), as glacierflow's
pair products carry it.
"""

from __future__ import annotations

import os
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine
from pyproj import CRS

from glacierflow.errors import InputError
from glacierflow.products import atomic_write
from glacierflow.velocity import DAYS_PER_YEAR

__all__ = [
    "FILL_VALUE",
    "granule_name",
    "read_itslive_cube",
    "read_itslive_granule",
    "write_itslive_granule",
]

#: ``_FillValue`` of ITS_LIVE v2 velocity layers.
FILL_VALUE = -32767.0

_DATE_FORMATS = ("%Y%m%dT%H:%M:%S.%f", "%Y%m%dT%H:%M:%S", "%Y%m%d")
_CUBE_VARIABLES = ("vx", "vy", "vx_error", "vy_error", "v_error")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _parse_date(text: Any, what: str, path: Path | str) -> np.datetime64:
    """An ITS_LIVE date string (or an ISO one) as datetime64[us], UTC without a zone."""
    value = str(text).strip()
    parts = value.split("T")
    if len(parts) == 3:  # Sentinel-2 granules: "20190215T205541T00:00:00"
        value = f"{parts[0]}T{parts[1][0:2]}:{parts[1][2:4]}:{parts[1][4:6]}"
    for fmt in _DATE_FORMATS:
        try:
            return np.datetime64(datetime.strptime(value, fmt), "us")
        except ValueError:
            continue
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"img_pair_info {what} = {text!r} is not a date", path) from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(when, "us")


def _itslive_date(value: Any) -> str:
    when = np.datetime64(value, "us").astype(datetime)
    return when.strftime("%Y%m%dT%H:%M:%S.%f")


def _utc64(text: Any) -> np.datetime64:
    when = datetime.fromisoformat(str(text))
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(when, "us")


def _float_attr(attrs: dict[str, Any], key: str) -> float:
    try:
        return float(attrs.get(key, np.nan))
    except (TypeError, ValueError):
        return float("nan")


def _mission(sensor: str) -> tuple[str, str, str]:
    """(mission, satellite, sensor) codes from a sensor name like 'Landsat 8 OLI'."""
    text = str(sensor or "")
    low = text.lower()
    number = re.search(r"(\d+)", text)
    if "landsat" in low:
        sat = number.group(1) if number else ""
        return "L", sat, (text.split()[-1] if len(text.split()) > 2 else "")
    if "sentinel" in low:
        m = re.search(r"sentinel[- ]?(\d)([ab]?)", low)
        sat = (m.group(1) + m.group(2).upper()) if m else ""
        return "S", sat, "MSI" if sat.startswith("2") else "C"
    return text[:1].upper(), number.group(1) if number else "", text


def granule_name(ds: xr.Dataset) -> str:
    """A file name for the pair in ITS_LIVE's spirit: ``<ref scene>_X_<sec scene>_G<m>V02.nc``."""
    ref = str(ds.attrs.get("ref_scene_id") or "REF")
    sec = str(ds.attrs.get("sec_scene_id") or "SEC")
    t = [float(v) for v in _as_list(ds.attrs.get("transform", [0, 0]))]
    return f"{ref}_X_{sec}_G{round(abs(t[1])):04d}V02_glacierflow.nc"


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [float(v) for v in value.strip("[]").replace(",", " ").split()]
    return list(np.atleast_1d(value))


# --------------------------------------------------------------------------------------------
# Writing a granule
# --------------------------------------------------------------------------------------------


def _mapping_attrs(crs_wkt: str, transform: Affine) -> dict[str, Any]:
    crs = CRS.from_wkt(crs_wkt)
    attrs: dict[str, Any] = {}
    try:
        attrs.update({k: v for k, v in crs.to_cf().items() if k != "crs_wkt"})
    except Exception:  # a CRS without a CF mapping still gets its WKT
        pass
    if crs.utm_zone:
        attrs["grid_mapping_name"] = "universal_transverse_mercator"
        attrs["utm_zone_number"] = float(re.sub(r"\D", "", crs.utm_zone))
    epsg = crs.to_epsg()
    attrs["spatial_epsg"] = int(epsg) if epsg else 0
    attrs["crs_wkt"] = crs.to_wkt()
    attrs["spatial_ref"] = crs.to_wkt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PROJ strings are lossy; WKT is above
        attrs["proj4text"] = crs.to_proj4()
    attrs["GeoTransform"] = " ".join(repr(float(v)) for v in transform.to_gdal())
    return attrs


def _error_attrs(ds: xr.Dataset, comp: str) -> dict[str, Any]:
    """ITS_LIVE's error attributes of ``vx``/``vy`` from glacierflow's stable-ground stats."""
    a = ds.attrs
    rmse = _float_attr(a, f"stable_{comp}_rmse_m_per_yr")
    dt = _float_attr(a, "dt_days")
    pixel = _float_attr(a, "pixel_size_m")
    shift_px = _float_attr(a, f"coreg_d{comp[-1]}_px")
    # coreg_dy_px is along rows (down); the map y component is north, opposite in sign.
    sign = 1.0 if comp == "vx" else -1.0
    shift = sign * shift_px * pixel / (dt / DAYS_PER_YEAR) if dt > 0 else float("nan")
    nodes = (
        int(_float_attr(a, "stable_nodes")) if np.isfinite(_float_attr(a, "stable_nodes")) else 0
    )
    return {
        "error": rmse,
        "error_description": "best estimate of the component's error: RMSE on stable ground",
        "error_mask": rmse,
        "stable_shift": shift,
        "stable_shift_flag": 1 if np.isfinite(shift) else 0,
        "stable_count_mask": nodes,
    }


def write_itslive_granule(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write a glacierflow pair product in the ITS_LIVE version 2 granule layout (NetCDF).

    Parameters
    ----------
    ds : xarray.Dataset
        A pair product (:func:`glacierflow.track.track` or
        :func:`glacierflow.products.read_product`): ``vx``, ``vy``, ``v``, ``v_error`` in m/yr
        and the attributes ``ref_time``, ``sec_time``, ``ref_sensor``, ``sec_sensor``,
        ``crs_wkt`` and ``transform`` (GDAL order, pixel corners).
    path : str or PathLike
        The ``.nc`` file; written to a temporary name and renamed.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    InputError
        If a layer or attribute the granule needs is missing.
    """
    path = Path(path)
    for name in ("vx", "vy", "v_error"):
        if name not in ds.data_vars:
            raise InputError(f"the pair product has no {name!r} layer; cannot write a granule")
    for key in ("ref_time", "sec_time", "crs_wkt", "transform"):
        if not ds.attrs.get(key):
            raise InputError(f"the pair product has no {key!r} attribute; cannot write a granule")
    t1, t2 = _utc64(ds.attrs["ref_time"]), _utc64(ds.attrs["sec_time"])
    transform = Affine.from_gdal(*[float(v) for v in _as_list(ds.attrs["transform"])])
    dt_days = float((t2 - t1) / np.timedelta64(1, "s")) / 86400.0
    pair: dict[str, Any] = {
        "acquisition_date_img1": _itslive_date(t1),
        "acquisition_date_img2": _itslive_date(t2),
        "date_center": _itslive_date(t1 + (t2 - t1) / 2),
        "date_dt": dt_days,
        "time_standard_img1": "UTC",
        "time_standard_img2": "UTC",
    }
    for k, sensor in (("1", ds.attrs.get("ref_sensor", "")), ("2", ds.attrs.get("sec_sensor", ""))):
        mission, sat, code = _mission(str(sensor))
        pair.update({f"mission_img{k}": mission, f"satellite_img{k}": sat, f"sensor_img{k}": code})
    for k, key in (("1", "ref_scene_id"), ("2", "sec_scene_id")):
        if ds.attrs.get(key):
            pair[f"id_img{k}"] = str(ds.attrs[key])
    v = ds["v"].values if "v" in ds.data_vars else np.hypot(ds["vx"].values, ds["vy"].values)
    layers = {
        "vx": (ds["vx"].values, "land_ice_surface_x_velocity", "velocity component in x direction"),
        "vy": (ds["vy"].values, "land_ice_surface_y_velocity", "velocity component in y direction"),
        "v": (v, "land_ice_surface_velocity", "velocity magnitude"),
        "v_error": (ds["v_error"].values, "velocity_error", "velocity magnitude error"),
    }
    data_vars: dict[str, Any] = {}
    for name, (arr, std, desc) in layers.items():
        attrs: dict[str, Any] = {
            "standard_name": std,
            "description": desc,
            "units": "meter/year",
            "grid_mapping": "mapping",
        }
        if name in ("vx", "vy"):
            attrs.update(_error_attrs(ds, name))
        data_vars[name] = (("y", "x"), np.asarray(arr, dtype=np.float32), attrs)
    data_vars["img_pair_info"] = ((), np.array("", dtype="S1"), pair)
    data_vars["mapping"] = (
        (),
        np.array("", dtype="S1"),
        _mapping_attrs(ds.attrs["crs_wkt"], transform),
    )
    coords = {
        "x": ("x", ds["x"].values, {"standard_name": "projection_x_coordinate", "units": "m"}),
        "y": ("y", ds["y"].values, {"standard_name": "projection_y_coordinate", "units": "m"}),
    }
    out = xr.Dataset(data_vars, coords=coords)
    out.attrs = {
        "Conventions": "CF-1.8",
        "title": "glacierflow surface velocities, ITS_LIVE version 2 granule layout",
        "scene_pair_type": "optical",
        "motion_detection_method": f"glacierflow {ds.attrs.get('method', '')}".strip(),
        "motion_coordinates": "map",
        "date_created": datetime.now(UTC).strftime("%d-%b-%Y %H:%M:%S"),
        "source": "glacierflow",
        "glacierflow_version": str(ds.attrs.get("glacierflow_version", "")),
    }
    encoding = {
        name: {"_FillValue": FILL_VALUE, "zlib": True, "complevel": 2, "shuffle": True}
        for name in layers
    }
    with atomic_write(path) as tmp:
        out.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
    return path


# --------------------------------------------------------------------------------------------
# Reading granules and cubes
# --------------------------------------------------------------------------------------------


def _grid_from_coords(x: np.ndarray, y: np.ndarray) -> list[float]:
    dx = float(x[1] - x[0]) if x.size > 1 else 1.0
    dy = float(y[1] - y[0]) if y.size > 1 else -1.0
    return [float(x[0]) - dx / 2, dx, 0.0, float(y[0]) - dy / 2, 0.0, dy]


def _crs_from_mapping(attrs: dict[str, Any], path: Path | str) -> str:
    for key in ("crs_wkt", "spatial_ref"):
        if attrs.get(key):
            return CRS.from_wkt(str(attrs[key])).to_wkt()
    if attrs.get("spatial_epsg"):
        return CRS.from_epsg(int(attrs["spatial_epsg"])).to_wkt()
    try:
        return CRS.from_cf(dict(attrs)).to_wkt()
    except Exception:
        raise InputError(
            "the 'mapping' variable names no CRS (crs_wkt, spatial_epsg)", path
        ) from None


def _masked(arr: xr.DataArray) -> np.ndarray:
    data = np.asarray(arr.values, dtype=np.float32)
    fill = arr.attrs.get("_FillValue", arr.encoding.get("_FillValue", FILL_VALUE))
    return np.where(data == np.float32(fill), np.float32(np.nan), data)


def read_itslive_granule(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read an ITS_LIVE version 2 image-pair granule into the cube convention (one pair).

    Parameters
    ----------
    path : str or PathLike
        A granule NetCDF file (ITS_LIVE's or :func:`write_itslive_granule`'s).

    Returns
    -------
    xarray.Dataset
        Dimensions ``(mid_date: 1, y, x)``; ``vx``, ``vy``, ``v``, ``v_error`` (m/yr) per
        pixel, ``vx_error``, ``vy_error`` per pair from the ``error`` attributes of ``vx`` and
        ``vy`` (the per-pixel ``v_error`` where those are missing), the pair's dates and
        satellites, and ``crs_wkt``/``transform`` attributes. See the module docstring.

    Raises
    ------
    InputError
        If the file is missing, is not NetCDF or lacks ``vx``, ``vy`` or ``img_pair_info``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such granule file; check the path", path)
    try:
        with xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False) as opened:
            ds = opened.load()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the granule as NetCDF ({exc})", path) from exc
    for name in ("vx", "vy", "img_pair_info"):
        if name not in ds.variables:
            raise InputError(f"not an ITS_LIVE granule: no {name!r} variable", path)
    info = dict(ds["img_pair_info"].attrs)
    for key in ("acquisition_date_img1", "acquisition_date_img2"):
        if key not in info:
            raise InputError(f"img_pair_info has no {key!r} attribute", path)
    t1 = _parse_date(info["acquisition_date_img1"], "acquisition_date_img1", path)
    t2 = _parse_date(info["acquisition_date_img2"], "acquisition_date_img2", path)
    if t2 < t1:  # a few granules list the later image first
        t1, t2 = t2, t1
    mapping = dict(ds["mapping"].attrs) if "mapping" in ds.variables else {}
    crs_wkt = _crs_from_mapping(mapping, path)
    x, y = ds["x"].values.astype(np.float64), ds["y"].values.astype(np.float64)
    # The pixel-centre coordinates define the grid; GeoTransform strings have been written
    # both for corners and for centres over ITS_LIVE's history.
    if x.size > 1 and y.size > 1 or not mapping.get("GeoTransform"):
        transform = _grid_from_coords(x, y)
    else:
        transform = [float(v) for v in str(mapping["GeoTransform"]).split()]
    vx, vy = _masked(ds["vx"]), _masked(ds["vy"])
    v = _masked(ds["v"]) if "v" in ds.variables else np.hypot(vx, vy)
    v_err = _masked(ds["v_error"]) if "v_error" in ds.variables else np.full_like(vx, np.nan)
    errs = []
    for comp in ("vx", "vy"):
        e = _float_attr(dict(ds[comp].attrs), "error")
        errs.append(e if np.isfinite(e) and e > 0 else np.nan)
    grid3 = ("mid_date", "y", "x")
    data_vars: dict[str, Any] = {
        "vx": (grid3, vx[None], {"units": "m/yr", "standard_name": "land_ice_surface_x_velocity"}),
        "vy": (grid3, vy[None], {"units": "m/yr", "standard_name": "land_ice_surface_y_velocity"}),
        "v": (grid3, v[None], {"units": "m/yr", "standard_name": "land_ice_surface_velocity"}),
        "v_error": (grid3, v_err[None], {"units": "m/yr"}),
    }
    if all(np.isfinite(errs)):
        data_vars["vx_error"] = (("mid_date",), np.array([errs[0]], np.float32), {"units": "m/yr"})
        data_vars["vy_error"] = (("mid_date",), np.array([errs[1]], np.float32), {"units": "m/yr"})
    else:
        data_vars["vx_error"] = (grid3, v_err[None], {"units": "m/yr"})
        data_vars["vy_error"] = (grid3, v_err[None], {"units": "m/yr"})
    dt_days = float((t2 - t1) / np.timedelta64(1, "us")) / 86400e6
    data_vars.update(
        {
            "acquisition_date_img1": (("mid_date",), np.array([t1], "datetime64[ns]")),
            "acquisition_date_img2": (("mid_date",), np.array([t2], "datetime64[ns]")),
            "date_dt": (("mid_date",), np.array([dt_days]), {"units": "days"}),
            "satellite_img1": (("mid_date",), np.array([str(info.get("satellite_img1", ""))])),
            "satellite_img2": (("mid_date",), np.array([str(info.get("satellite_img2", ""))])),
            "mission_img1": (("mid_date",), np.array([str(info.get("mission_img1", ""))])),
        }
    )
    mid = np.array([t1 + (t2 - t1) / 2], "datetime64[ns]")
    coords = {"mid_date": ("mid_date", mid), "x": ("x", x), "y": ("y", y)}
    attrs = {"crs_wkt": crs_wkt, "transform": transform, "source_files": [path.name]}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def read_itslive_cube(
    path: str | os.PathLike[str],
    *,
    bbox: tuple[float, float, float, float] | None = None,
    start: Any = None,
    end: Any = None,
) -> xr.Dataset:
    """Open a local Zarr (or NetCDF) cube in ITS_LIVE's layout, lazily, in the cube convention.

    Parameters
    ----------
    path : str or PathLike
        A Zarr store or a NetCDF file (glacierflow's own ``pairs_cube.nc`` and
        ``velocity_series.nc`` among them) with dimensions ``(mid_date, y, x)`` and ITS_LIVE's
        variables (``vx``,
        ``vy``, ``vx_error``/``vy_error`` or ``v_error``, ``acquisition_date_img1/2``,
        ``satellite_img1``, ``date_dt``, a ``mapping`` grid mapping).
    bbox : tuple of 4 float, optional
        ``(xmin, ymin, xmax, ymax)`` in the cube's CRS, metres: the subset to read.
    start, end : datetime-like, optional
        Keep pairs whose both images lie within ``[start, end]``.

    Returns
    -------
    xarray.Dataset
        Dask-backed, ``mid_date`` sorted, with ``crs_wkt`` and ``transform`` attributes.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such Zarr cube; check the path", path)
    kind = "a Zarr cube" if path.is_dir() else "a NetCDF cube"
    try:
        if path.is_dir():
            ds = xr.open_zarr(path, consolidated=None)
        else:
            ds = xr.open_dataset(path, engine="h5netcdf", chunks={})
    except Exception as exc:
        raise InputError(f"cannot open as {kind} ({exc})", path) from exc
    for name in ("vx", "vy", "acquisition_date_img1", "acquisition_date_img2"):
        if name not in ds.variables:
            raise InputError(f"not an ITS_LIVE-like cube: no {name!r} variable", path)
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        ys = slice(y1, y0) if ds["y"].values[0] > ds["y"].values[-1] else slice(y0, y1)
        ds = ds.sel(x=slice(x0, x1), y=ys)
    t1 = ds["acquisition_date_img1"].values.astype("datetime64[ns]")
    t2 = ds["acquisition_date_img2"].values.astype("datetime64[ns]")
    keep = np.ones(t1.shape, dtype=bool)
    if start is not None:
        keep &= t1 >= np.datetime64(start, "ns")
    if end is not None:
        keep &= t2 <= np.datetime64(end, "ns")
    ds = ds.isel(mid_date=np.flatnonzero(keep)).sortby("mid_date")
    if "vx_error" not in ds.variables or "vy_error" not in ds.variables:
        if "v_error" not in ds.variables:
            raise InputError("the cube has neither vx_error/vy_error nor v_error", path)
        ds["vx_error"] = ds["v_error"]
        ds["vy_error"] = ds["v_error"]
    for name in ("satellite_img1", "satellite_img2"):
        if name in ds.variables:  # Zarr reads text back as numpy's StringDType: plain str
            ds[name] = ("mid_date", np.array([str(v) for v in ds[name].values], dtype=object))
    if "date_dt" in ds.variables and np.issubdtype(ds["date_dt"].dtype, np.timedelta64):
        ds["date_dt"] = ds["date_dt"] / np.timedelta64(1, "D")
    mapping = dict(ds["mapping"].attrs) if "mapping" in ds.variables else dict(ds.attrs)
    ds = ds.drop_vars("mapping", errors="ignore")
    ds.attrs["crs_wkt"] = _crs_from_mapping(mapping, path)
    ds.attrs["transform"] = _grid_from_coords(ds["x"].values, ds["y"].values)
    return ds
