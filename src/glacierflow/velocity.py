"""Offsets in pixels to displacement in metres and velocity in m/yr, as an ``xarray.Dataset``.

Conventions (see the design guide): offsets ``dx_px``, ``dy_px`` are measured from the earlier
(reference) image to the later (secondary) one, x to the right and y *down* in pixel space. Map
components are ``vx`` east and ``vy`` north. A year is 365.25 days.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine

DAYS_PER_YEAR = 365.25
"""Length of the year used for every m/yr conversion (Julian year), in days."""

#: CF attributes of every variable a velocity product carries, in band order.
VARIABLES: dict[str, dict[str, str]] = {
    "vx": {"units": "m/yr", "long_name": "velocity component towards map east (x)"},
    "vy": {"units": "m/yr", "long_name": "velocity component towards map north (y)"},
    "v": {"units": "m/yr", "long_name": "velocity magnitude"},
    "dx": {"units": "pixel", "long_name": "offset along columns, reference to secondary"},
    "dy": {"units": "pixel", "long_name": "offset along rows (down), reference to secondary"},
    "corr": {"units": "1", "long_name": "peak normalized cross-correlation"},
    "snr": {"units": "1", "long_name": "correlation peak signal-to-noise ratio"},
}


def pixel_to_map_displacement(
    dx_px: np.ndarray, dy_px: np.ndarray, transform: Affine
) -> tuple[np.ndarray, np.ndarray]:
    """Turn pixel offsets into map displacement in metres.

    Parameters
    ----------
    dx_px, dy_px : ndarray
        Offsets in pixels along columns (right) and rows (down) of the image grid.
    transform : affine.Affine
        The image grid's geotransform (pixel to map metres). Rotated grids are handled.

    Returns
    -------
    de_m, dn_m : ndarray
        Displacement towards map east (x) and map north (y), in metres.
    """
    de_m = transform.a * dx_px + transform.b * dy_px
    dn_m = transform.d * dx_px + transform.e * dy_px
    return de_m, dn_m


def displacement_to_velocity(
    de_m: np.ndarray, dn_m: np.ndarray, dt_days: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn map displacement in metres over ``dt_days`` into velocity in m/yr.

    Parameters
    ----------
    de_m, dn_m : ndarray
        Displacement towards east and north, in metres.
    dt_days : float
        Time between the two acquisitions, in days (positive).

    Returns
    -------
    vx_m_per_yr, vy_m_per_yr, v_m_per_yr : ndarray
        East and north components and magnitude, in metres per year of 365.25 days.
    """
    if not dt_days > 0:
        raise ValueError(f"dt_days must be positive, got {dt_days}")
    scale = DAYS_PER_YEAR / dt_days
    vx = de_m * scale
    vy = dn_m * scale
    return vx, vy, np.hypot(vx, vy)


def node_grid_transform(transform: Affine, row0_px: int, col0_px: int, step_px: int) -> Affine:
    """Geotransform of the output grid whose pixel centres sit on the matching nodes.

    Node ``(i, j)`` lies at the centre of input pixel ``(row0_px + i * step_px, col0_px + j *
    step_px)``; the returned transform maps output pixel ``(j + 0.5, i + 0.5)`` onto that point.
    """
    shift = 0.5 - step_px / 2.0
    return transform @ Affine.translation(col0_px + shift, row0_px + shift) @ Affine.scale(step_px)


def velocity_dataset(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    corr: np.ndarray,
    snr: np.ndarray,
    *,
    image_transform: Affine,
    row0_px: int,
    col0_px: int,
    step_px: int,
    crs_wkt: str | None,
    dt_days: float,
    attrs: Mapping[str, Any] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> xr.Dataset:
    """Assemble the velocity product from offsets on a node grid.

    Parameters
    ----------
    dx_px, dy_px : ndarray, shape (ny, nx)
        Offsets in pixels from reference to secondary (x right, y down); NaN where invalid.
    corr, snr : ndarray, shape (ny, nx)
        Peak correlation and signal-to-noise ratio per node.
    image_transform : affine.Affine
        Geotransform of the image grid the offsets were measured on.
    row0_px, col0_px, step_px : int
        Image row and column of node ``(0, 0)`` and the node spacing, in pixels.
    crs_wkt : str or None
        The map CRS as WKT; None for images without georeferencing.
    dt_days : float
        Time between acquisitions in days.
    attrs : mapping, optional
        Pair metadata to carry (acquisition times, sensor, chip/search/step sizes, ...).
    extra : mapping, optional
        More per-node layers, keyed by variable name.

    Returns
    -------
    xarray.Dataset
        Variables ``vx``, ``vy``, ``v`` (m/yr), ``dx``, ``dy`` (pixels), ``corr``, ``snr``, on
        coordinates ``x``, ``y`` (map metres at pixel centres). ``attrs`` holds ``crs_wkt``,
        ``transform`` (node grid, GDAL order), ``image_transform``, ``pixel_size_m``,
        ``step_px``, ``dt_days`` and whatever ``attrs`` gave.
    """
    ny, nx = dx_px.shape
    transform = node_grid_transform(image_transform, row0_px, col0_px, step_px)
    de_m, dn_m = pixel_to_map_displacement(dx_px, dy_px, image_transform)
    vx, vy, v = displacement_to_velocity(de_m, dn_m, dt_days)
    cols = np.arange(nx) + 0.5
    rows = np.arange(ny) + 0.5
    # Coordinates of node centres; exact for north-up grids (b = d = 0), which is what CF x/y
    # coordinates can express.
    x = transform.c + transform.a * cols
    y = transform.f + transform.e * rows
    layers = {"vx": vx, "vy": vy, "v": v, "dx": dx_px, "dy": dy_px, "corr": corr, "snr": snr}
    if extra:
        layers.update(extra)
    data_vars = {}
    for name, arr in layers.items():
        var_attrs = dict(VARIABLES.get(name, {}))
        data_vars[name] = (("y", "x"), np.asarray(arr, dtype=np.float32), var_attrs)
    ds = xr.Dataset(
        data_vars,
        coords={
            "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate"}),
            "y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate"}),
        },
    )
    ds.attrs.update(dict(attrs or {}))
    ds.attrs["crs_wkt"] = crs_wkt or ""
    ds.attrs["transform"] = list(transform.to_gdal())
    ds.attrs["dt_days"] = float(dt_days)
    ds.attrs["image_transform"] = list(image_transform.to_gdal())
    ds.attrs["pixel_size_m"] = float(np.hypot(image_transform.a, image_transform.d))
    ds.attrs["step_px"] = int(step_px)
    return ds
