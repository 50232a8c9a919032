"""Velocity products on disk: Cloud-Optimized GeoTIFF, CF-1.8 NetCDF, a JSON summary, a quick look.

Also the project-level outputs: the NetCDF cube of period composites (:func:`write_netcdf_cube`),
cubes of pairs and of inverted time series in ITS_LIVE's cube layout as Zarr
(:func:`write_zarr_cube`) and NetCDF (:func:`write_itslive_netcdf_cube`), CSV tables
(:func:`write_table`) and GeoPackages (:func:`write_gpkg`).

Every writer goes through :func:`glacierflow.atomic.atomic_write`: it writes to a temporary name
in the target folder and renames onto the target only when the whole file is written, so a crash
or an error never leaves a half-written product behind, and a product that was already there
survives a failed rewrite untouched.

The in-memory form is the ``xarray.Dataset`` of :func:`glacierflow.velocity.velocity_dataset`:
variables on coordinates ``x``, ``y`` (map metres, pixel centres) with ``units``, ``long_name``
and CF ``standard_name``, and the pair metadata plus ``crs_wkt`` and ``transform`` (node grid, GDAL
order) in one flat ``attrs`` mapping. The NetCDF file groups that metadata as ITS_LIVE image-pair
granules do (``img_pair_info``, ``mapping``, error and stable-shift attributes on ``vx``/``vy``;
see :mod:`glacierflow.product_layout`); the GeoTIFF keeps it as flat tags. :func:`read_product`
turns either file format, and NetCDF products written before the ITS_LIVE layout, back into the
in-memory form.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import re
import secrets
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from affine import Affine
from pyproj import CRS
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS as RioCRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile

from glacierflow import __version__
from glacierflow.atomic import atomic_write
from glacierflow.errors import InputError, OutputError
from glacierflow.limits import check_writable_folder
from glacierflow.product_layout import (
    GRID_MAPPING,
    ITSLIVE_PAIR_DATES,
    PAIR_INFO,
    PROCESSING_INFO,
    flatten_netcdf,
    netcdf_attributes,
    pair_info_attributes,
)
from glacierflow.summary import dataset_crs as _crs
from glacierflow.summary import dataset_transform as _transform
from glacierflow.summary import finite_or_none as _finite_or_none
from glacierflow.summary import plain as _plain
from glacierflow.summary import summarize
from glacierflow.velocity import VARIABLES

__all__ = [
    "PRODUCT_NAMES",
    "prepare_output",
    "read_product",
    "remove_stale_staging",
    "refuse_earlier_products",
    "warm_writers",
    "write_cog",
    "write_gpkg",
    "write_itslive_netcdf_cube",
    "write_netcdf",
    "write_netcdf_cube",
    "write_products",
    "write_products_with_worker",
    "write_summary",
    "write_table",
    "write_zarr_cube",
]

#: File names :func:`write_products` writes in its output folder, by product kind.
PRODUCT_NAMES: dict[str, str] = {
    "cog": "velocity.tif",
    "netcdf": "velocity.nc",
    "quicklook": "quicklook.png",
    "summary": "summary.json",
}

#: Internal tile size of the GeoTIFF, in pixels (square).
COG_BLOCK_PX = 256

# Dataset attributes the GeoTIFF carries in its own structures rather than as tags.
_GEO_ATTRS = ("crs_wkt", "transform")
# Tags GDAL adds by itself; they are not product metadata.
_GDAL_TAGS = ("AREA_OR_POINT",)
# Variable attributes a GeoTIFF band carries as tags.
_BAND_TAGS = ("units", "long_name", "standard_name")


# --------------------------------------------------------------------------------------------
# Helpers shared by the writers
# --------------------------------------------------------------------------------------------


def _grid_variables(ds: xr.Dataset, variables: Sequence[str] | None, path: Path) -> list[str]:
    """Names of the layers to write, in band order, after checking they are (y, x) grids."""
    if "x" not in ds.coords or "y" not in ds.coords:
        raise InputError("the dataset has no x/y coordinates; build it with velocity_dataset", path)
    if "transform" not in ds.attrs:
        raise InputError(
            "the dataset has no 'transform' attribute (node grid, GDAL order); build it with "
            "velocity_dataset",
            path,
        )
    if variables is None:
        known = [name for name in VARIABLES if name in ds.data_vars]
        extra = [name for name in ds.data_vars if name not in VARIABLES]
        variables = [name for name in known + extra if ds[name].dims == ("y", "x")]
    names = list(variables)
    if not names:
        raise InputError("the dataset has no (y, x) variable to write", path)
    for name in names:
        if name not in ds.data_vars:
            raise InputError(
                f"the dataset has no variable {name!r}; it has {sorted(map(str, ds.data_vars))}",
                path,
            )
        if ds[name].dims != ("y", "x"):
            raise InputError(
                f"variable {name!r} has dimensions {ds[name].dims}, expected ('y', 'x')", path
            )
    return names


# --------------------------------------------------------------------------------------------
# GeoTIFF tags: attribute values as strings that read back exactly
# --------------------------------------------------------------------------------------------


def _decode_tag(text: str) -> Any:
    """Read a tag value: JSON where it parses (numbers, lists, null, ...), else the raw string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _encode_tag(value: Any) -> str:
    """Write an attribute value so that :func:`_decode_tag` gives it back unchanged.

    Strings are written as they are (readable in ``gdalinfo``) unless they would read back as
    something else, such as ``"16"`` or ``"null"``; those, and every other value, are JSON.
    """
    value = _plain(value)
    if isinstance(value, str) and _decode_tag(value) == value:
        return value
    return json.dumps(value)


# --------------------------------------------------------------------------------------------
# Cloud-Optimized GeoTIFF
# --------------------------------------------------------------------------------------------


def _has_cog_driver() -> bool:
    with rasterio.Env() as env:
        return "COG" in env.drivers()


def write_cog(
    ds: xr.Dataset, path: str | os.PathLike[str], variables: Sequence[str] | None = None
) -> Path:
    """Write the product as a float32 Cloud-Optimized GeoTIFF, one band per variable.

    Bands follow the order of :data:`glacierflow.velocity.VARIABLES` and then any other (y, x)
    variable of ``ds`` in its own order; each band's description is its variable name and its
    ``units``, ``long_name`` and CF ``standard_name`` are band tags (``units`` also the band's
    GDAL unit). Missing values are NaN, which is also the nodata value. The flat pair metadata
    (times, ``dt_days``, sensors, chip, search and step sizes in pixels, version, ...) become
    dataset tags, with ITS_LIVE's ``acquisition_date_img1``/``_img2``, ``date_center`` and
    ``date_dt`` beside them; ``image_transform`` and other lists are stored as JSON. The file
    is tiled 256 x 256, DEFLATE-compressed with the floating-point predictor, and carries
    averaged overviews when it is larger than one tile.

    Parameters
    ----------
    ds : xarray.Dataset
        A velocity product from :func:`glacierflow.velocity.velocity_dataset` (``attrs`` must
        hold ``transform``; ``crs_wkt`` may be empty for images without georeferencing).
    path : str or PathLike
        The file to write (replaced atomically if it exists).
    variables : sequence of str, optional
        Variables to write, in band order; default all (y, x) variables in the order above.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        If the dataset lacks the grid attributes or a requested variable.
    """
    path = Path(path)
    names = _grid_variables(ds, variables, path)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    crs = _crs(ds)
    profile = {
        "driver": "GTiff",
        "width": nx,
        "height": ny,
        "count": len(names),
        "dtype": "float32",
        "nodata": float("nan"),
        "transform": _transform(ds),
        "crs": RioCRS.from_wkt(crs.to_wkt()) if crs is not None else None,
    }
    tags = {
        str(k): _encode_tag(v)
        for k, v in ds.attrs.items()
        if k not in _GEO_ATTRS and k not in ITSLIVE_PAIR_DATES and not str(k).startswith("_")
    }
    tags.setdefault("glacierflow_version", __version__)
    pair = pair_info_attributes(ds.attrs, crs=None, transform=None, shape=(ny, nx))
    tags.update({k: _encode_tag(pair[k]) for k in ITSLIVE_PAIR_DATES if k in pair})
    cog_options = {
        "blocksize": COG_BLOCK_PX,
        "compress": "DEFLATE",
        "predictor": "FLOATING_POINT",
        "overview_resampling": "AVERAGE",
        "bigtiff": "IF_SAFER",
    }
    with atomic_write(path) as tmp, MemoryFile() as mem:
        with mem.open(**profile) as src:
            src.update_tags(**tags)
            for band, name in enumerate(names, start=1):
                src.write(np.asarray(ds[name].values, dtype=np.float32), band)
                src.set_band_description(band, name)
                attrs = {**VARIABLES.get(name, {}), **ds[name].attrs}
                band_tags = {key: str(attrs[key]) for key in _BAND_TAGS if key in attrs}
                src.update_tags(band, **band_tags)
                if "units" in attrs:
                    src.set_band_unit(band, str(attrs["units"]))
        with mem.open() as src:
            if _has_cog_driver():
                rasterio.shutil.copy(src, tmp, driver="COG", **cog_options)
            else:  # GDAL < 3.1: a tiled GeoTIFF with overviews laid out ahead of the data
                _copy_tiled_geotiff(src, tmp)
    return path


def _copy_tiled_geotiff(src: rasterio.io.DatasetReader, dst_path: Path) -> None:
    """Fallback without GDAL's COG driver: tiled, compressed GeoTIFF with copied overviews."""
    factors = []
    size = max(src.width, src.height)
    while size > COG_BLOCK_PX:
        factors.append(2 ** (len(factors) + 1))
        size //= 2
    with MemoryFile() as mem:
        with mem.open(**src.profile) as tiled:
            tiled.write(src.read())
            tiled.update_tags(**src.tags())
            for band in src.indexes:
                tiled.set_band_description(band, src.descriptions[band - 1])
                tiled.update_tags(band, **src.tags(band))
                tiled.set_band_unit(band, src.units[band - 1] or "")
            if factors:
                tiled.build_overviews(factors, Resampling.average)
        with mem.open() as tiled:
            rasterio.shutil.copy(
                tiled,
                dst_path,
                driver="GTiff",
                tiled=True,
                blockxsize=COG_BLOCK_PX,
                blockysize=COG_BLOCK_PX,
                compress="DEFLATE",
                predictor=3,
                copy_src_overviews=True,
            )


# --------------------------------------------------------------------------------------------
# CF-1.8 NetCDF
# --------------------------------------------------------------------------------------------


def _netcdf_attr(value: Any) -> Any:
    """An attribute value netCDF-4 can hold: numbers, strings, lists of numbers; else JSON."""
    value = _plain(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        return value if value else ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _geotransform_text(gdal: Sequence[float]) -> str:
    """A geotransform (GDAL order) as the space-separated text of the CF ``GeoTransform``."""
    return " ".join(repr(float(c)) for c in gdal)


def _set_xy_attrs(out: xr.Dataset) -> dict[str, dict[str, Any]]:
    """CF projection-coordinate attributes on ``x``/``y``; returns their encoding (no fill)."""
    out["x"].attrs.update(
        standard_name="projection_x_coordinate", long_name="x (easting)", units="m", axis="X"
    )
    out["y"].attrs.update(
        standard_name="projection_y_coordinate", long_name="y (northing)", units="m", axis="Y"
    )
    return {"x": {"_FillValue": None}, "y": {"_FillValue": None}}


def _layer_encoding(integer: bool, dtype: str | None = None) -> dict[str, Any]:
    """Compressed storage of one (y, x) layer: NaN fill for floats, no fill for integers."""
    encoding: dict[str, Any] = {"_FillValue": None if integer else np.float32(np.nan)}
    if dtype is not None:
        encoding["dtype"] = dtype
    encoding.update(zlib=True, complevel=4, shuffle=True)
    return encoding


def _grid_mapping(crs: CRS, geotransform: str) -> xr.DataArray:
    """A CF grid-mapping variable: CF attributes of ``crs``, WKT for GDAL, ITS_LIVE's EPSG code."""
    wkt = crs.to_wkt()
    attrs = {k: _netcdf_attr(v) for k, v in crs.to_cf().items()}
    attrs.update(crs_wkt=wkt, spatial_ref=wkt, GeoTransform=geotransform)
    epsg = crs.to_epsg()
    if epsg:
        attrs["spatial_epsg"] = int(epsg)
    return xr.DataArray(np.int32(0), attrs=attrs)


@contextlib.contextmanager
def _without_distributed() -> Iterator[None]:
    """Keep xarray's writer from importing ``distributed``: it asks dask for the active
    scheduler before writing, and dask imports ``distributed`` (half a second of CPU) to see
    whether a client is active, which none can be unless ``distributed`` is imported already.
    """
    if "distributed" in sys.modules:
        yield
        return
    sys.modules["distributed"] = None  # type: ignore[assignment]  # import fails at once
    try:
        yield
    finally:
        if "distributed" in sys.modules and sys.modules["distributed"] is None:
            del sys.modules["distributed"]


def _save_netcdf(out: xr.Dataset, path: Path, encoding: Mapping[str, Any]) -> Path:
    """``out`` as NetCDF-4 (engine ``h5netcdf``) at ``path``, atomically."""
    options = {"engine": "h5netcdf", "format": "NETCDF4", "encoding": dict(encoding)}
    with atomic_write(path) as tmp, _without_distributed():
        if shutil.disk_usage(tmp.parent).free > 2 * out.nbytes + 2**20:
            out.to_netcdf(tmp, **options)
        else:
            # HDF5 brings the process down when the disk fills under it: near a full disk the
            # file is built in memory and written with plain I/O, which fails cleanly.
            buffer = io.BytesIO()
            out.to_netcdf(buffer, **options)
            tmp.write_bytes(buffer.getbuffer())
    return path


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write the product as a CF-1.8 NetCDF-4 file (engine ``h5netcdf``) in ITS_LIVE's layout.

    Every (y, x) variable keeps its ``units``, ``long_name`` and CF ``standard_name``
    (``land_ice_surface_x_velocity``, ``land_ice_surface_y_velocity``,
    ``land_ice_surface_velocity`` on ``vx``, ``vy``, ``v``), gets ``_FillValue`` NaN, zlib
    compression and ``grid_mapping = "mapping"``. ``mapping`` is an integer scalar holding the
    CRS as CF grid-mapping attributes (from :meth:`pyproj.CRS.to_cf`) plus ``crs_wkt``,
    ``spatial_ref`` (WKT, for GDAL), ``spatial_epsg`` and ``GeoTransform`` (GDAL order, space
    separated, pixel corners). ``x``/``y`` are CF projection coordinates in metres.

    The flat metadata of ``ds.attrs`` is filed where ITS_LIVE image-pair granules keep theirs
    (:mod:`glacierflow.product_layout`): the pair on the scalar variable ``img_pair_info``
    (with ITS_LIVE's ``acquisition_date_img1/2``, ``date_center``, ``date_dt``, mission,
    satellite and sensor codes), the processing settings and the co-registration fit on
    ``processing_info``, stable-ground statistics and ITS_LIVE's ``error`` and ``stable_shift``
    attributes on ``vx``/``vy``, the error model on ``v_error``; the global attributes are the
    CF/ACDD set (title, summary, source, history, references, date_created, time coverage,
    geographic bounds, ``glacierflow_version``) and any attribute without a home. Values netCDF
    cannot hold are converted (booleans to 0/1, mappings and mixed lists to JSON strings,
    ``None`` dropped).

    Parameters
    ----------
    ds : xarray.Dataset
        A velocity product from :func:`glacierflow.velocity.velocity_dataset`.
    path : str or PathLike
        The file to write (replaced atomically if it exists).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    names = _grid_variables(ds, None, path)
    crs = _crs(ds)
    out = ds[names].copy()
    glob, grouped = netcdf_attributes(ds, names)
    out.attrs = {k: _netcdf_attr(v) for k, v in glob.items() if v is not None}
    encoding = _set_xy_attrs(out)
    for name in names:
        attrs = {**VARIABLES.get(name, {}), **out[name].attrs, **grouped.get(name, {})}
        attrs.pop("_FillValue", None)
        attrs.pop("grid_mapping", None)
        if crs is not None:
            attrs["grid_mapping"] = GRID_MAPPING
        # Integer layers (the quality bit flags) stay integers, without a fill value, with
        # their CF flag_masks in the variable's own type; everything else is float32 with NaN.
        integer = np.issubdtype(out[name].dtype, np.integer)
        if not integer:
            out[name] = out[name].astype(np.float32)
        out[name].attrs = {k: _netcdf_attr(v) for k, v in attrs.items() if v is not None}
        if integer and "flag_masks" in attrs:
            out[name].attrs["flag_masks"] = np.asarray(attrs["flag_masks"], out[name].dtype)
        out[name].encoding = {}
        encoding[name] = _layer_encoding(integer)
    for name in (PAIR_INFO, PROCESSING_INFO):
        attrs = {k: _netcdf_attr(v) for k, v in grouped[name].items() if v is not None}
        out[name] = xr.DataArray(np.int32(0), attrs=attrs)
    if crs is not None:
        out[GRID_MAPPING] = _grid_mapping(crs, _geotransform_text(_transform(ds).to_gdal()))
    return _save_netcdf(out, path, encoding)


#: Layers of the composite cube (:func:`glacierflow.stack.cube_dataset`), all (time, y, x).
CUBE_LAYERS = ("v", "vx", "vy", "v_error", "vx_error", "vy_error", "count")

#: Time encoding of the cube's ``time`` and ``time_bnds``.
_CUBE_TIME_ENCODING = {
    "units": "days since 1970-01-01 00:00:00",
    "calendar": "standard",
    "dtype": "float64",
}


def write_netcdf_cube(cube: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write a cube of period composites as one CF-1.8 NetCDF-4 file with a time axis.

    ``v``, ``vx``, ``vy``, ``v_error`` (float32, m/yr, fill NaN) and ``count`` (int16, no fill)
    on (time, y, x) get zlib compression and ``grid_mapping = "spatial_ref"``, the grid-mapping
    variable of :func:`write_netcdf`. ``time`` (middle of each period) and ``time_bnds`` are
    stored as days since 1970-01-01. The global attributes are the cube's ``title``, ``years``,
    ``composite_*`` rules, ``crs_wkt`` and ``GeoTransform``, with CF ``Conventions``, ``source``
    and ``history``.

    Parameters
    ----------
    cube : xarray.Dataset
        From :func:`glacierflow.stack.cube_dataset` (attributes ``crs_wkt``, ``transform``
        in GDAL order, ``title``, ``years``).
    path : str or PathLike
        The file to write (replaced atomically if it exists).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        If the cube has no CRS (``crs_wkt``).
    """
    path = Path(path)
    crs = _crs(cube)
    if crs is None:
        raise InputError("the cube has no 'crs_wkt' attribute; build it with cube_dataset", path)
    out = cube.copy()
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out.attrs = {
        "Conventions": "CF-1.8",
        "title": cube.attrs["title"],
        "source": f"glacierflow {__version__}: pair products combined per period",
        "history": f"{now}: written by glacierflow {__version__}",
        "years": list(cube.attrs["years"]),
        "composite_assign": cube.attrs.get("composite_assign", ""),
        "composite_weights": cube.attrs.get("composite_weights", ""),
        "composite_v_error": cube.attrs.get("composite_v_error", ""),
        "crs_wkt": cube.attrs["crs_wkt"],
        "GeoTransform": _geotransform_text(cube.attrs["transform"]),
    }
    for key in ("data_start_datetime", "data_end_datetime"):
        if cube.attrs.get(key):
            out.attrs[key] = str(cube.attrs[key])
    encoding = _set_xy_attrs(out)
    out["time"].attrs.update(axis="T", long_name="middle of the period")
    encoding.update(time=dict(_CUBE_TIME_ENCODING), time_bnds=dict(_CUBE_TIME_ENCODING))
    for name in ("data_start", "data_end"):
        if name in out.variables:
            encoding[name] = dict(_CUBE_TIME_ENCODING)
    for name in (n for n in CUBE_LAYERS if n in out.data_vars):
        out[name].attrs["grid_mapping"] = "spatial_ref"
        integer = name == "count"
        encoding[name] = _layer_encoding(integer, "int16" if integer else "float32")
    out["spatial_ref"] = _grid_mapping(crs, out.attrs["GeoTransform"])
    return _save_netcdf(out, path, encoding)


# --------------------------------------------------------------------------------------------
# Cubes in ITS_LIVE's layout: Zarr and NetCDF
# --------------------------------------------------------------------------------------------


def _itslive_cube(cube: xr.Dataset, path: Path) -> tuple[xr.Dataset, dict[str, Any]]:
    """``cube`` with ITS_LIVE's ``mapping`` grid mapping and CF attributes, and its encoding:
    float32 layers with a NaN fill, dates as days since 1970-01-01 (float64), ``date_dt`` in
    days."""
    crs = _crs(cube)
    if crs is None:
        raise InputError("the cube has no 'crs_wkt' attribute; it cannot be placed on a map", path)
    geotransform = _geotransform_text(_transform(cube).to_gdal())
    out = cube.drop_vars([GRID_MAPPING, "spatial_ref"], errors="ignore")
    encoding: dict[str, Any] = _set_xy_attrs(out)
    for name, var in out.variables.items():
        if name in ("x", "y"):
            continue
        if var.dtype.kind in "Mm":
            for key in ("units", "calendar"):
                out[name].attrs.pop(key, None)  # the encoding says them
        if var.dtype.kind == "M":
            encoding[name] = {**_CUBE_TIME_ENCODING, "_FillValue": np.nan}
        elif var.dtype.kind == "m":
            encoding[name] = {"units": "days", "dtype": "float64", "_FillValue": np.nan}
        elif var.dtype.kind == "f" and {"y", "x"} <= set(var.dims):
            encoding[name] = {"dtype": "float32", "_FillValue": np.float32(np.nan)}
        if {"y", "x"} <= set(var.dims):
            out[name].attrs["grid_mapping"] = GRID_MAPPING
    out[GRID_MAPPING] = _grid_mapping(crs, geotransform)
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs = {k: _netcdf_attr(v) for k, v in cube.attrs.items() if k not in _GEO_ATTRS}
    out.attrs = {
        "Conventions": "CF-1.8",
        **attrs,
        "source": f"glacierflow {__version__}",
        "history": f"{now}: written by glacierflow {__version__}",
        "projection": str(crs.to_epsg() or ""),
        "crs_wkt": crs.to_wkt(),
        "GeoTransform": geotransform,
    }
    return out, encoding


def write_zarr_cube(cube: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write a cube in ITS_LIVE's layout as a Zarr store (format 2, consolidated), atomically.

    The store is written to a hidden temporary folder beside ``path`` and renamed onto it when
    complete; a store already at ``path`` is moved aside first and removed only after the
    rename, so a failed write leaves the old store as it was.

    Parameters
    ----------
    cube : xarray.Dataset
        A cube on ``(mid_date, y, x)`` with ITS_LIVE's variable names
        (:mod:`glacierflow.timeseries.cube`) and ``crs_wkt``/``transform`` attributes.
    path : str or PathLike
        The store (a folder, conventionally ``*.zarr``).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        If the cube has no CRS.
    OutputError
        If the store cannot be written.
    """
    import shutil

    path = Path(path)
    out, encoding = _itslive_cube(cube, path)
    for enc in encoding.values():
        enc.pop("zlib", None)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    old = path.with_name(f".{path.name}.old-{tag}")
    try:
        out.to_zarr(tmp, mode="w", encoding=encoding, consolidated=True, zarr_format=2)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path.name}: {exc.strerror or exc}", path) from exc
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def write_itslive_netcdf_cube(cube: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write a cube in ITS_LIVE's layout as one CF-1.8 NetCDF-4 file (zlib), atomically.

    Parameters
    ----------
    cube : xarray.Dataset
        As for :func:`write_zarr_cube`.
    path : str or PathLike
        The ``.nc`` file.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    out, encoding = _itslive_cube(cube, path)
    for name, var in out.data_vars.items():
        if var.ndim >= 2 and var.dtype.kind in "fiu":
            encoding.setdefault(name, {}).update(zlib=True, complevel=4, shuffle=True)
    return _save_netcdf(out, path, encoding)


# --------------------------------------------------------------------------------------------
# Tables: CSV and GeoPackage
# --------------------------------------------------------------------------------------------


def write_table(df, path: str | os.PathLike[str]) -> Path:
    """Write a table as CSV (no index column, floats to 7 significant digits), atomically.

    Parameters
    ----------
    df : pandas.DataFrame
        The table (e.g. :func:`glacierflow.glaciers.glacier_statistics`).
    path : str or PathLike
        The ``.csv`` file to write (replaced atomically if it exists).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.7g")
    return path


def write_gpkg(gdf, path: str | os.PathLike[str]) -> Path:
    """Write a GeoDataFrame as a GeoPackage, one layer named after the file, atomically.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        Features with a CRS.
    path : str or PathLike
        The ``.gpkg`` file to write (replaced atomically if it exists); its stem names the
        layer.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    with atomic_write(path) as tmp, warnings.catch_warnings():
        # The temporary name does not end in .gpkg; the final one does.
        warnings.filterwarnings("ignore", message=".*extension should be 'gpkg'")
        gdf.to_file(tmp, driver="GPKG", layer=path.stem)
    return path


# --------------------------------------------------------------------------------------------
# Reading products back
# --------------------------------------------------------------------------------------------


def read_product(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a GeoTIFF (``.tif``/``.tiff``) or NetCDF (``.nc``) product back into a Dataset.

    The result has the layout of :func:`glacierflow.velocity.velocity_dataset`: float32
    variables named by band description (GeoTIFF) or variable name (NetCDF), coordinates ``x``,
    ``y`` in map metres at pixel centres, and ``attrs`` with ``crs_wkt``, ``transform`` (GDAL
    order list) and the pair metadata, one flat mapping: a NetCDF file's grouped attributes
    (``img_pair_info``, ``processing_info``, statistics on ``vx``/``vy``/``v_error``; see
    :func:`write_netcdf`) are flattened back, and its group and grid-mapping variables
    (``mapping``, or ``spatial_ref`` in files written before the ITS_LIVE layout) dropped. The
    data are loaded into memory and the file closed.

    Parameters
    ----------
    path : str or PathLike
        A product written by :func:`write_cog` or :func:`write_netcdf`.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    InputError
        If the file does not exist, has an unknown extension or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such product file; check the path", path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            return _read_geotiff(path)
        if suffix in (".nc", ".nc4"):
            return _read_netcdf(path)
    except (RasterioIOError, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(
            f"cannot read the product ({exc}); is it a glacierflow file?", path
        ) from exc
    raise InputError(f"unknown product type {suffix!r}; expected .tif or .nc", path)


def _node_coords(transform: Affine, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of pixel centres along x and y (exact for north-up grids)."""
    x = transform.c + transform.a * (np.arange(nx) + 0.5)
    y = transform.f + transform.e * (np.arange(ny) + 0.5)
    return x, y


def _read_geotiff(path: Path) -> xr.Dataset:
    with rasterio.open(path) as src:
        transform = src.transform
        data_vars = {}
        for band in src.indexes:
            name = src.descriptions[band - 1] or f"band{band}"
            attrs = dict(src.tags(band))
            if "units" not in attrs and src.units[band - 1]:
                attrs["units"] = src.units[band - 1]
            data_vars[name] = (("y", "x"), src.read(band).astype(np.float32), attrs)
        skip = (*_GDAL_TAGS, *ITSLIVE_PAIR_DATES)
        attrs = {k: _decode_tag(v) for k, v in src.tags().items() if k not in skip}
        attrs["crs_wkt"] = src.crs.to_wkt() if src.crs else ""
        x, y = _node_coords(transform, src.height, src.width)
    attrs["transform"] = list(transform.to_gdal())
    return xr.Dataset(
        data_vars,
        coords={
            "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate"}),
            "y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate"}),
        },
        attrs=attrs,
    )


def _read_netcdf(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, engine="h5netcdf") as opened:
        ds = flatten_netcdf(opened.load())
    for name in ds.data_vars:
        if ds[name].dtype != np.float32 and np.issubdtype(ds[name].dtype, np.floating):
            ds[name] = ds[name].astype(np.float32)
    ds.attrs = {k: _plain(v) for k, v in ds.attrs.items()}
    return ds


# --------------------------------------------------------------------------------------------
# JSON summary
# --------------------------------------------------------------------------------------------


def write_summary(
    ds: xr.Dataset, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> Path:
    """Write :func:`summarize` of ``ds``, with ``extra`` merged in, as pretty-printed JSON.

    Parameters
    ----------
    ds : xarray.Dataset
        A velocity product with a ``v`` variable (m/yr).
    path : str or PathLike
        The file to write (replaced atomically if it exists).
    extra : mapping, optional
        More top-level entries (numpy values are converted); they override the summary's keys.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    summary = summarize(ds)
    if extra:
        summary.update(_finite_or_none(_plain(dict(extra))))
    text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# All products of one pair
# --------------------------------------------------------------------------------------------


def _default_quicklook(
    ds: xr.Dataset, background: np.ndarray | None, background_transform: Affine | None
) -> Callable[[Path], Path]:
    """The quick-look writer of :func:`glacierflow.plot.quicklook` for ``ds``."""
    # The one place products reach for plot (matplotlib), and only when a picture is drawn.
    from glacierflow.plot import quicklook

    return lambda p: quicklook(
        ds, p, background=background, background_transform=background_transform
    )


#: Name prefix of the hidden folder :func:`write_products` stages a product set in.
STAGING_PREFIX = ".glacierflow-staging-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0 and not isinstance(pid, bool)
    return True


def remove_stale_staging(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed writers left in ``folder``: staging folders of :func:`write_products`
    and hidden temporaries of :func:`glacierflow.atomic.atomic_write` (``.NAME.tmp-PID-...``,
    ``.NAME.staged-PID-...``) whose process is gone. Returns what was removed."""
    removed: list[Path] = []
    pattern = re.compile(rf"^(?:{re.escape(STAGING_PREFIX)}|\..+\.(?:tmp|staged)-)(\d+)-")
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _switch_in(staged: Mapping[str, Path], paths: Mapping[str, Path], staging: Path) -> None:
    """Rename the staged products onto ``paths``, all or none.

    Anything in the way that is not a file is refused before the first rename; the old files
    are kept (hard links, else copies) in ``staging`` and renamed back if a rename fails, so
    that the folder holds either the old set or the new one.
    """
    for target in paths.values():
        if os.path.lexists(target) and (target.is_dir() or not target.is_file()):
            raise OutputError(
                f"cannot write {target.name}: something that is not a file is in "
                "the way; remove it",
                target,
            )
    backups: dict[str, Path | None] = {}
    for kind, target in paths.items():
        backups[kind] = None
        if target.is_file():
            backup = staging / f"old-{target.name}"
            try:
                os.link(target, backup)
            except OSError:
                shutil.copy2(target, backup)
            backups[kind] = backup
    done: list[str] = []
    try:
        for kind, tmp in staged.items():
            try:
                os.replace(tmp, paths[kind])
            except OSError as exc:
                raise OutputError(
                    f"cannot write {paths[kind].name}: {exc.strerror or exc}; the previous "
                    "products were kept",
                    paths[kind],
                ) from exc
            done.append(kind)
    except BaseException:
        for kind in reversed(done):
            backup = backups[kind]
            with contextlib.suppress(OSError):
                if backup is None:
                    paths[kind].unlink()
                else:
                    os.replace(backup, paths[kind])
        raise


#: What a worker process writing products imports (:func:`write_products` with an executor
#: sends it the NetCDF and the GeoTIFF): preloaded by the server workers are forked from.
#: Not matplotlib: the quick look is drawn here, the one process that needs it (importing
#: it took the server 0.4-0.6 s of CPU while the workers waited to start).
WORKER_MODULES = ("glacierflow.products",)

#: Products :func:`write_products` hands to local workers (the others are written here).
_ON_WORKERS = ("netcdf", "cog")


def write_products(
    ds: xr.Dataset,
    out_dir: str | os.PathLike[str],
    background: np.ndarray | None = None,
    background_transform: Affine | None = None,
    *,
    quicklook: Callable[[Path], object] | None = None,
    executor: Any = None,
) -> dict[str, Path]:
    """Write the GeoTIFF, NetCDF, quick-look PNG and JSON summary of one pair into a folder.

    The folder is created if needed. Only the four files named in :data:`PRODUCT_NAMES` are
    replaced, as one set: all four are written in a hidden staging folder first and switched
    in together, so a failure leaves the previous set whole (:func:`remove_stale_staging`
    clears what a killed run left). Other files in the folder are never touched.

    Parameters
    ----------
    ds : xarray.Dataset
        A velocity product from :func:`glacierflow.velocity.velocity_dataset`.
    out_dir : str or PathLike
        The output folder.
    background : ndarray, optional
        The reference image (2-D) to draw under the quick look's speed map.
    background_transform : affine.Affine, optional
        Geotransform of ``background`` (required with it).
    quicklook : callable, optional
        Writes the quick-look PNG to the path it is given. Default: the speed map of
        :func:`glacierflow.plot.quicklook` over ``background``.
    executor : glacierflow.execute.Executor, optional
        With local worker processes, the products are written at once: the NetCDF and the
        GeoTIFF on workers, the quick look and the summary here. The files are the same as
        without.

    Returns
    -------
    dict of str to pathlib.Path
        Paths keyed ``"cog"``, ``"netcdf"``, ``"quicklook"`` and ``"summary"``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the output folder is a file; choose a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in PRODUCT_NAMES.items()}
    remote: dict[str, tuple[Callable[..., object], tuple]] = {}
    if executor is not None and getattr(executor, "kind", "inline") == "processes":
        remote["netcdf"] = (_write_netcdf_task, (ds,))
        remote["cog"] = (_write_cog_task, (ds,))
    if quicklook is None:
        quicklook = _default_quicklook(ds, background, background_transform)
    writers = {
        "cog": lambda p: write_cog(ds, p),
        "netcdf": lambda p: write_netcdf(ds, p),
        "quicklook": quicklook,
        "summary": lambda p: write_summary(ds, p),
    }
    # The four products are one set: each is written complete in a hidden staging folder, and
    # only when all four exist are they switched in (see _switch_in). A failure, at any point,
    # leaves the old set whole; a staging folder left by a killed run is removed here.
    remove_stale_staging(out)
    staging = out / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    futures: dict[str, Any] = {}
    try:
        staging.mkdir()
        staged = {kind: staging / name for kind, name in PRODUCT_NAMES.items()}
        for kind, (task, args) in remote.items():
            futures[kind] = executor.submit(task, *args, staged[kind])
        for kind, write in writers.items():
            if kind not in remote:
                write(staged[kind])
        for future in futures.values():
            future.result()
        _switch_in(staged, paths, staging)
    except (OSError, rasterio.errors.RasterioError, CPLE_BaseError) as exc:
        if isinstance(exc, OutputError):
            if staging in Path(exc.path).parents:  # name the product, not its staged copy
                raise OutputError(exc.problem, out / Path(exc.path).name) from exc
            raise
        # A full disk or a lost mount, as the OS or GDAL says it: one line, the old set kept.
        detail = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:200]
        raise OutputError(f"cannot write the products: {detail}", out) from exc
    finally:
        _settle(futures.values())  # no worker writes into the staging folder any more
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _settle(futures: Iterable[Any]) -> None:
    """Cancel ``futures`` not started and wait for the others, ignoring their outcome."""
    futures = list(futures)
    for future in futures:
        future.cancel()
    for future in futures:
        with contextlib.suppress(BaseException):
            future.result()


def prepare_output(
    out_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = True,
) -> None:
    """Check, before any work, that the output folder (and a work folder) can be written and
    holds no earlier products unless ``overwrite`` (:func:`refuse_earlier_products`), and clear
    what a killed run left there (:func:`remove_stale_staging`).

    Raises an :class:`OutputError` naming a folder that cannot be used
    (:func:`glacierflow.limits.check_writable_folder`); creates nothing.
    """
    check_writable_folder(out_dir)
    if work_dir is not None:
        check_writable_folder(work_dir, "work folder")
    refuse_earlier_products(out_dir, overwrite)
    if Path(out_dir).exists():
        remove_stale_staging(out_dir)


def refuse_earlier_products(out_dir: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Raise unless ``out_dir`` holds no product of an earlier run, or ``overwrite`` is True.

    Raises
    ------
    InputError
        Naming the folder and the products found in it (keyed ``overwrite``).
    """
    earlier = [name for name in PRODUCT_NAMES.values() if (Path(out_dir) / name).exists()]
    if earlier and not overwrite:
        raise InputError(
            f"already holds products of an earlier run ({', '.join(earlier)}); choose another "
            "folder, or set overwrite to replace them",
            out_dir,
            key="overwrite",
        )


def write_products_with_worker(
    ds: xr.Dataset,
    out_dir: str | os.PathLike[str],
    background: np.ndarray | None,
    background_transform: Any,
    executor: Any,
) -> dict[str, Path]:
    """:func:`write_products` with the products written at once on the local workers of
    ``executor`` (a :class:`glacierflow.execute.Executor`) and here."""
    return write_products(
        ds,
        out_dir,
        background=background,
        background_transform=background_transform,
        executor=executor,
    )


def warm_writers() -> None:
    """Import what :func:`write_products` with local workers needs in this process before it
    writes: the quick look's plotting (matplotlib), and its fonts by drawing a tiny figure in
    memory. Meant for a moment this process would otherwise wait (see
    :meth:`glacierflow.execute.Executor.meanwhile`); writes no file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import glacierflow.plot  # noqa: F401  (what the quick look imports)

    figure = Figure(figsize=(1, 1), dpi=10)
    FigureCanvasAgg(figure)
    figure.text(0.5, 0.5, "0 m/yr")
    figure.canvas.draw()


def _write_netcdf_task(ds: xr.Dataset, path: Path) -> None:
    """:func:`write_netcdf` as a task (in any process); returns nothing to send back."""
    write_netcdf(ds, path)


def _write_cog_task(ds: xr.Dataset, path: Path) -> None:
    """:func:`write_cog` as a task (in any process); returns nothing to send back."""
    write_cog(ds, path)
