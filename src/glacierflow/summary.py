"""The summary of a velocity product, and the helpers that read its grid from its attributes.

:func:`summarize` turns a product (the ``xarray.Dataset`` of
:func:`glacierflow.velocity.velocity_dataset`) into plain JSON-able values: speed percentiles,
valid nodes, grid, settings, co-registration, stable-ground statistics and quality flags.
:func:`glacierflow.products.write_summary` writes it. Nothing here opens files.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine
from pyproj import CRS

from glacierflow import __version__
from glacierflow.errors import InputError
from glacierflow.velocity import DAYS_PER_YEAR

__all__ = [
    "SUMMARY_PERCENTILES",
    "dataset_crs",
    "dataset_transform",
    "finite_or_none",
    "plain",
    "product_version",
    "summarize",
]

#: Percentiles of valid node speeds that the summary reports.
SUMMARY_PERCENTILES = (5, 25, 50, 75, 95)


def plain(value: Any) -> Any:
    """Turn numpy scalars/arrays, tuples and datetimes into plain JSON-able Python values."""
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def dataset_transform(ds: xr.Dataset) -> Affine:
    """The node grid's geotransform from ``ds.attrs['transform']`` (GDAL order)."""
    return Affine.from_gdal(*[float(c) for c in ds.attrs["transform"]])


def dataset_crs(ds: xr.Dataset) -> CRS | None:
    """The map CRS from ``ds.attrs['crs_wkt']``, or None for products without georeferencing."""
    wkt = ds.attrs.get("crs_wkt") or ""
    return CRS.from_wkt(wkt) if wkt else None


def product_version(ds: xr.Dataset) -> str:
    """The glacierflow version that made ``ds`` (its attribute), else this one."""
    return str(ds.attrs.get("glacierflow_version") or __version__)


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: replace non-finite floats (recursively) by None."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
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
    crs = dataset_crs(ds)
    transform = dataset_transform(ds) if "transform" in attrs else None
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
        "glacierflow_version": product_version(ds),
    }
    summary.update(_quality_summary(ds))
    return finite_or_none(plain(summary))


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
