"""Velocity products on disk: Cloud-Optimized GeoTIFF, CF-1.8 NetCDF, a JSON summary, a quick look.

Every writer goes through :func:`atomic_write`: it writes to a temporary name in the target folder
and renames onto the target only when the whole file is written, so a crash or an error never
leaves a half-written product behind, and a product that was already there survives a failed
rewrite untouched.

The in-memory form is the ``xarray.Dataset`` of :func:`glacierflow.velocity.velocity_dataset`:
variables on coordinates ``x``, ``y`` (map metres, pixel centres) with ``units`` and
``long_name``, and the pair metadata plus ``crs_wkt`` and ``transform`` (node grid, GDAL order) in
its attributes. :func:`read_product` turns either file format back into that form.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from affine import Affine
from pyproj import CRS
from rasterio.crs import CRS as RioCRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile

from glacierflow import __version__
from glacierflow.errors import InputError, OutputError
from glacierflow.velocity import DAYS_PER_YEAR, VARIABLES

__all__ = [
    "PRODUCT_NAMES",
    "atomic_write",
    "read_product",
    "write_cog",
    "write_netcdf",
    "write_products",
    "write_summary",
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

#: Percentiles of valid node speeds that the summary reports.
SUMMARY_PERCENTILES = (5, 25, 50, 75, 95)

# Dataset attributes the GeoTIFF carries in its own structures rather than as tags.
_GEO_ATTRS = ("crs_wkt", "transform")
# Tags GDAL adds by itself; they are not product metadata.
_GDAL_TAGS = ("AREA_OR_POINT",)


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name is ``.<name>.tmp-<pid>-<random>`` in the same folder, so the final
    :func:`os.replace` is a rename within one file system and readers see either the old file or
    the complete new one, never a partial file. The temporary is not created: the block writes it.
    If the block raises, the temporary (and a GDAL ``.aux.xml`` sidecar, if any) is removed and
    the exception propagates; an existing file at ``path`` is left as it was.

    Parameters
    ----------
    path : str or PathLike
        The final file. Its folder must exist.

    Yields
    ------
    pathlib.Path
        Where the block must write the file.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        if not tmp.is_file():
            raise InputError("the writer produced no file; nothing was replaced", final)
        _fsync(tmp)
        os.replace(tmp, final)
    except BaseException as exc:
        for leftover in (tmp, tmp.with_name(tmp.name + ".aux.xml")):
            leftover.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            # A full disk, a folder in the way, no permission: the user's problem to fix, said
            # in one line, not a traceback.
            raise OutputError(f"cannot write {final.name}: {exc.strerror or exc}", final) from exc
        raise


def _fsync(path: Path) -> None:
    """Flush ``path`` to disk so that the rename cannot expose an empty file after a crash."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------------------------
# Helpers shared by the writers
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Turn numpy scalars/arrays, tuples and datetimes into plain JSON-able Python values."""
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


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


def _transform(ds: xr.Dataset) -> Affine:
    """The node grid's geotransform from ``ds.attrs['transform']`` (GDAL order)."""
    return Affine.from_gdal(*[float(c) for c in ds.attrs["transform"]])


def _crs(ds: xr.Dataset) -> CRS | None:
    """The map CRS from ``ds.attrs['crs_wkt']``, or None for products without georeferencing."""
    wkt = ds.attrs.get("crs_wkt") or ""
    return CRS.from_wkt(wkt) if wkt else None


def _version(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("glacierflow_version") or __version__)


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
    ``units`` and ``long_name`` are band tags (and the band's GDAL unit). Missing values are NaN,
    which is also the nodata value. Scalar pair metadata (times, ``dt_days``, sensors, chip,
    search and step sizes in pixels, version, ...) become dataset tags; ``image_transform`` and
    other lists are stored as JSON. The file is tiled 256 x 256, DEFLATE-compressed with the
    floating-point predictor, and carries averaged overviews when it is larger than one tile.

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
        if k not in _GEO_ATTRS and not str(k).startswith("_")
    }
    tags.setdefault("glacierflow_version", __version__)
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
                band_tags = {key: str(attrs[key]) for key in ("units", "long_name") if key in attrs}
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


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write the product as a CF-1.8 NetCDF-4 file (engine ``h5netcdf``).

    Every (y, x) variable keeps its ``units`` and ``long_name``, gets ``_FillValue`` NaN, zlib
    compression and ``grid_mapping = "spatial_ref"``. ``spatial_ref`` is an integer scalar
    holding the CRS as CF grid-mapping attributes (from :meth:`pyproj.CRS.to_cf`) plus
    ``crs_wkt``, ``spatial_ref`` (WKT, for GDAL) and ``GeoTransform`` (GDAL order, space
    separated). ``x``/``y`` are CF projection coordinates in metres. Pair metadata stays in the
    global attributes; values netCDF cannot hold are converted (booleans to 0/1, mappings and
    mixed lists to JSON strings, ``None`` dropped).

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
    transform = _transform(ds)
    version = _version(ds)

    out = ds[names].copy()
    out.attrs = {
        str(k): _netcdf_attr(v)
        for k, v in ds.attrs.items()
        if v is not None and not str(k).startswith("_")
    }
    ref, sec = ds.attrs.get("ref_time", "?"), ds.attrs.get("sec_time", "?")
    sensor = ds.attrs.get("ref_sensor") or ds.attrs.get("sensor") or "optical"
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    history = f"{now}: written by glacierflow {version}"
    if ds.attrs.get("history"):
        history = f"{history}\n{ds.attrs['history']}"
    out.attrs.update(
        Conventions="CF-1.8",
        title=f"Glacier surface velocity from {sensor} images {ref} to {sec}",
        source=f"glacierflow {version} feature tracking ({ds.attrs.get('method', 'unknown')})",
        history=history,
        glacierflow_version=version,
    )
    out["x"].attrs.update(
        standard_name="projection_x_coordinate", long_name="x (easting)", units="m", axis="X"
    )
    out["y"].attrs.update(
        standard_name="projection_y_coordinate", long_name="y (northing)", units="m", axis="Y"
    )
    encoding: dict[str, dict[str, Any]] = {
        "x": {"_FillValue": None},
        "y": {"_FillValue": None},
    }
    for name in names:
        attrs = {**VARIABLES.get(name, {}), **out[name].attrs}
        attrs.pop("_FillValue", None)
        attrs.pop("grid_mapping", None)
        if crs is not None:
            attrs["grid_mapping"] = "spatial_ref"
        # Integer layers (the quality bit flags) stay integers, without a fill value, with
        # their CF flag_masks in the variable's own type; everything else is float32 with NaN.
        integer = np.issubdtype(out[name].dtype, np.integer)
        if not integer:
            out[name] = out[name].astype(np.float32)
        out[name].attrs = {k: _netcdf_attr(v) for k, v in attrs.items() if v is not None}
        if integer and "flag_masks" in attrs:
            out[name].attrs["flag_masks"] = np.asarray(attrs["flag_masks"], out[name].dtype)
        out[name].encoding = {}
        encoding[name] = {
            "_FillValue": None if integer else np.float32(np.nan),
            "zlib": True,
            "complevel": 4,
            "shuffle": True,
        }
    if crs is not None:
        wkt = crs.to_wkt()
        gm_attrs = {k: _netcdf_attr(v) for k, v in crs.to_cf().items()}
        gm_attrs.update(
            crs_wkt=wkt,
            spatial_ref=wkt,
            GeoTransform=" ".join(repr(float(c)) for c in transform.to_gdal()),
        )
        out["spatial_ref"] = xr.DataArray(np.int32(0), attrs=gm_attrs)
    with atomic_write(path) as tmp:
        out.to_netcdf(tmp, engine="h5netcdf", format="NETCDF4", encoding=encoding)
    return path


# --------------------------------------------------------------------------------------------
# Reading products back
# --------------------------------------------------------------------------------------------


def read_product(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a GeoTIFF (``.tif``/``.tiff``) or NetCDF (``.nc``) product back into a Dataset.

    The result has the layout of :func:`glacierflow.velocity.velocity_dataset`: float32
    variables named by band description (GeoTIFF) or variable name (NetCDF), coordinates ``x``,
    ``y`` in map metres at pixel centres, and ``attrs`` with ``crs_wkt``, ``transform`` (GDAL
    order list) and the pair metadata. The data are loaded into memory and the file closed.

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
        attrs = {k: _decode_tag(v) for k, v in src.tags().items() if k not in _GDAL_TAGS}
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
        ds = opened.load()
    grid_mapping = ds["spatial_ref"].attrs if "spatial_ref" in ds.variables else {}
    ds = ds.drop_vars("spatial_ref", errors="ignore")
    for name in ds.data_vars:
        ds[name].attrs.pop("grid_mapping", None)
        if ds[name].dtype != np.float32 and np.issubdtype(ds[name].dtype, np.floating):
            ds[name] = ds[name].astype(np.float32)
    ds.attrs = {k: _plain(v) for k, v in ds.attrs.items()}
    if not ds.attrs.get("crs_wkt") and grid_mapping:
        ds.attrs["crs_wkt"] = CRS.from_cf(dict(grid_mapping)).to_wkt()
    ds.attrs.setdefault("crs_wkt", "")
    if "transform" not in ds.attrs and "GeoTransform" in grid_mapping:
        ds.attrs["transform"] = [float(c) for c in str(grid_mapping["GeoTransform"]).split()]
    return ds


# --------------------------------------------------------------------------------------------
# JSON summary
# --------------------------------------------------------------------------------------------


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: replace non-finite floats (recursively) by None."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def summarize(ds: xr.Dataset) -> dict[str, Any]:
    """The summary of a velocity product as plain JSON-able values.

    Speeds are percentiles of ``v`` over the valid (finite) nodes, in m/yr and in m/day (a year
    is 365.25 days); they are None when no node is valid.

    Parameters
    ----------
    ds : xarray.Dataset
        A velocity product with a ``v`` variable (m/yr).

    Returns
    -------
    dict
        Keys ``ref_time``, ``sec_time``, ``dt_days``, ``ref_sensor``, ``sec_sensor``, ``grid``,
        ``nodes``, ``speed_m_per_yr``, ``speed_m_per_day``, ``settings``,
        ``glacierflow_version``; and, where the product has them, ``coregistration``
        (``coreg_*`` attributes), ``stable_ground`` (``stable_*``: source and the statistics of
        vx, vy on stable ground in px, m and m/yr), ``v_error`` (the error model),
        ``filter`` (its thresholds) and ``quality_nodes`` (nodes per quality flag).
    """
    if "v" not in ds.data_vars:
        raise InputError("the dataset has no 'v' (speed) variable to summarise")
    attrs = ds.attrs
    v = np.asarray(ds["v"].values, dtype=np.float64)
    valid = v[np.isfinite(v)]
    total = int(v.size)
    crs = _crs(ds)
    transform = _transform(ds) if "transform" in attrs else None
    if valid.size:
        pct = np.percentile(valid, SUMMARY_PERCENTILES)
        per_yr = {f"p{p}": float(q) for p, q in zip(SUMMARY_PERCENTILES, pct, strict=True)}
        per_yr["max"] = float(valid.max())
    else:
        per_yr = {f"p{p}": None for p in SUMMARY_PERCENTILES} | {"max": None}
    per_day = {k: (None if q is None else q / DAYS_PER_YEAR) for k, q in per_yr.items()}
    summary = {
        "ref_time": attrs.get("ref_time"),
        "sec_time": attrs.get("sec_time"),
        "dt_days": attrs.get("dt_days"),
        "ref_sensor": attrs.get("ref_sensor"),
        "sec_sensor": attrs.get("sec_sensor"),
        "ref_file": attrs.get("ref_file"),
        "sec_file": attrs.get("sec_file"),
        "grid": {
            "crs_epsg": crs.to_epsg() if crs is not None else None,
            "shape": [int(ds.sizes["y"]), int(ds.sizes["x"])],
            "node_spacing_m": (
                float(np.hypot(transform.a, transform.d)) if transform is not None else None
            ),
            "transform": list(transform.to_gdal()) if transform is not None else None,
        },
        "nodes": {
            "total": total,
            "valid": int(valid.size),
            "valid_fraction": float(valid.size / total) if total else 0.0,
        },
        "speed_m_per_yr": per_yr,
        "speed_m_per_day": per_day,
        "settings": {key: attrs.get(key) for key in ("chip_px", "search_px", "step_px", "method")},
        "glacierflow_version": _version(ds),
    }
    summary.update(_quality_summary(ds))
    return _finite_or_none(_plain(summary))


def _prefixed(attrs: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Attributes starting with ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in attrs.items() if k.startswith(prefix)}


def _quality_summary(ds: xr.Dataset) -> dict[str, Any]:
    """Blocks on co-registration, stable ground, the error model and the quality flags."""
    out: dict[str, Any] = {}
    for key, prefix in (
        ("coregistration", "coreg_"),
        ("stable_ground", "stable_"),
        ("v_error", "v_error_"),
        ("filter", "filter_"),
    ):
        block = _prefixed(ds.attrs, prefix)
        if block:
            out[key] = block
    if "quality" in ds.data_vars:
        q = np.asarray(ds["quality"].values)
        # The variable's CF attributes, or (GeoTIFF band tags hold only units and long_name)
        # the dataset's copies of them.
        attrs = {**ds.attrs, **{f"quality_{k}": v for k, v in ds["quality"].attrs.items()}}
        masks = list(np.atleast_1d(attrs.get("quality_flag_masks", [])))
        meanings = str(attrs.get("quality_flag_meanings", "")).split()
        counts = {"good": int((q == 0).sum())}
        for mask, meaning in zip(masks, meanings, strict=True):
            counts[meaning] = int(((q.astype(np.int64) & int(mask)) != 0).sum())
        out["quality_nodes"] = counts
    return out


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


def write_products(
    ds: xr.Dataset,
    out_dir: str | os.PathLike[str],
    background: np.ndarray | None = None,
    background_transform: Affine | None = None,
) -> dict[str, Path]:
    """Write the GeoTIFF, NetCDF, quick-look PNG and JSON summary of one pair into a folder.

    The folder is created if needed. Only the four files named in :data:`PRODUCT_NAMES` are
    replaced, each atomically; other files in the folder are never touched.

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

    Returns
    -------
    dict of str to pathlib.Path
        Paths keyed ``"cog"``, ``"netcdf"``, ``"quicklook"`` and ``"summary"``.
    """
    from glacierflow.plot import quicklook  # plot imports matplotlib: only when drawing

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("the output folder is a file; choose a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in PRODUCT_NAMES.items()}
    writers = {
        "cog": lambda p: write_cog(ds, p),
        "netcdf": lambda p: write_netcdf(ds, p),
        "quicklook": lambda p: quicklook(
            ds, p, background=background, background_transform=background_transform
        ),
        "summary": lambda p: write_summary(ds, p),
    }
    # The four products are one set: each is written complete under a hidden staging name, and
    # only when all four exist are they renamed into place. A failure leaves the old set whole.
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    staged: dict[str, Path] = {}
    try:
        for kind, write in writers.items():
            tmp = out / f".{PRODUCT_NAMES[kind]}.staged-{tag}"
            write(tmp)
            staged[kind] = tmp
        for kind, tmp in staged.items():
            try:
                os.replace(tmp, paths[kind])
            except OSError as exc:
                raise OutputError(
                    f"cannot write {paths[kind].name}: {exc.strerror or exc}", paths[kind]
                ) from exc
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return paths
