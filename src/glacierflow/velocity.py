"""Offsets in pixels to displacement in metres and velocity in m/yr, with errors, as a Dataset.

Conventions (see the design guide): offsets ``dx_px``, ``dy_px`` are measured from the earlier
(reference) image to the later (secondary) one, x to the right and y *down* in pixel space. Map
components are ``vx`` east and ``vy`` north. A year is 365.25 days.

Errors
------
``v_error`` is the one-sigma error of *each* velocity component, ``vx`` and ``vy`` alike
(isotropic), in m/yr; ``vx_error`` and ``vy_error`` are those of ``vx`` and of ``vy`` apart.
The error model (its terms, its calibration on stable ground) is :mod:`glacierflow.uncertainty`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine

from glacierflow.coregister import nmad
from glacierflow.filters import quality_attrs
from glacierflow.uncertainty import (
    DEFAULT_PEAK_SIGMA_SCALE,
    DEFORMATION_FACTOR,
    PEAK_COVARIANCE_BOUNDS,
    PEAK_SIGMA_FLOOR_PX,
    calibrate_component_sigma,
    calibrate_peak_sigma,
    component_gradients,
    component_sigma_px,
    displacement_gradient,
    offset_sigma_px,
    peak_covariance_shape,
    peak_sigma_px,
    peak_sigma_shape,
)

#: The error model lives in :mod:`glacierflow.uncertainty`; its names are also read from here.
__all__ = [
    "DAYS_PER_YEAR",
    "DEFAULT_PEAK_SIGMA_SCALE",
    "DEFORMATION_FACTOR",
    "ERROR_VARIABLES",
    "PEAK_COVARIANCE_BOUNDS",
    "PEAK_SIGMA_FLOOR_PX",
    "QUALITY_VARIABLES",
    "VARIABLES",
    "calibrate_component_sigma",
    "calibrate_peak_sigma",
    "component_errors_m_per_yr",
    "component_gradients",
    "component_sigma_px",
    "displacement_gradient",
    "displacement_to_velocity",
    "error_px_to_m_per_yr",
    "node_grid_transform",
    "offset_sigma_px",
    "peak_covariance_shape",
    "peak_sigma_px",
    "peak_sigma_shape",
    "pixel_to_map_displacement",
    "stable_statistics",
    "velocity_dataset",
]

DAYS_PER_YEAR = 365.25
"""Length of the year used for every m/yr conversion (Julian year), in days."""

#: CF attributes of every variable a velocity product carries, in band order.
#: ``vx``, ``vy`` and ``v`` carry the CF standard names ITS_LIVE's granules use; the offsets,
#: correlation and SNR have no CF standard name and are described by ``long_name`` alone.
VARIABLES: dict[str, dict[str, str]] = {
    "vx": {
        "units": "m/yr",
        "standard_name": "land_ice_surface_x_velocity",
        "long_name": "velocity component towards map east (x)",
    },
    "vy": {
        "units": "m/yr",
        "standard_name": "land_ice_surface_y_velocity",
        "long_name": "velocity component towards map north (y)",
    },
    "v": {
        "units": "m/yr",
        "standard_name": "land_ice_surface_velocity",
        "long_name": "velocity magnitude",
    },
    "dx": {"units": "pixel", "long_name": "offset along columns, reference to secondary"},
    "dy": {"units": "pixel", "long_name": "offset along rows (down), reference to secondary"},
    "corr": {"units": "1", "long_name": "peak normalized cross-correlation"},
    "snr": {"units": "1", "long_name": "correlation peak signal-to-noise ratio"},
}

#: CF attributes of the error and quality layers; they follow :data:`VARIABLES` in band order.
QUALITY_VARIABLES: dict[str, dict[str, Any]] = {
    "v_error": {
        "units": "m/yr",
        "long_name": "1-sigma error of each velocity component vx and vy",
        "description": (
            "one-sigma error of vx and of vy (isotropic), m/yr; also of v where v >> v_error. "
            "Shape from the correlation peak, scale calibrated on stable ground (see the "
            "v_error_* attributes: of this variable in velocity.nc, of the product in memory)."
        ),
    },
    "vx_error": {
        "units": "m/yr",
        "long_name": "1-sigma error of vx",
        "description": (
            "one-sigma error of the east component vx, m/yr: the peak term elongated along the "
            "texture, the strain of dx across the chip and the co-registration, with a scale "
            "calibrated on the stable nodes' vx (see the v_error_* attributes)"
        ),
    },
    "vy_error": {
        "units": "m/yr",
        "long_name": "1-sigma error of vy",
        "description": (
            "one-sigma error of the north component vy, m/yr: the peak term elongated along the "
            "texture, the strain of dy across the chip and the co-registration, with a scale "
            "calibrated on the stable nodes' vy (see the v_error_* attributes)"
        ),
    },
    "quality": quality_attrs(),
    "chip_px": {
        "units": "pixel",
        "long_name": "side of the reference chip the node was measured with",
    },
    "strain": {
        "units": "1",
        "long_name": "local strain the matcher saw: largest displacement change per pixel",
        "description": (
            "largest singular value of the displacement gradient over the pair (px/px), of the "
            "affine refinement where a node was refined, else of its neighbours' offsets"
        ),
    },
}

#: The error layers, in band order.
ERROR_VARIABLES = ("v_error", "vx_error", "vy_error")


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


def component_errors_m_per_yr(
    sigma_x_px: np.ndarray, sigma_y_px: np.ndarray, transform: Affine, dt_days: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-component errors in pixels (columns, rows) as errors of ``vx`` (east) and ``vy``
    (north) in m/yr (365.25-day year): exact on north-up grids; on rotated ones the two are
    mixed as independent.
    """
    if not dt_days > 0:
        raise ValueError(f"dt_days must be positive, got {dt_days}")
    per_year = DAYS_PER_YEAR / dt_days
    sx, sy = np.asarray(sigma_x_px), np.asarray(sigma_y_px)
    ex = np.hypot(transform.a * sx, transform.b * sy) * per_year
    ey = np.hypot(transform.d * sx, transform.e * sy) * per_year
    return ex, ey


def stable_statistics(
    vx_m_per_yr: np.ndarray,
    vy_m_per_yr: np.ndarray,
    stable: np.ndarray,
    *,
    pixel_size_m: float,
    dt_days: float,
) -> dict[str, float | int]:
    """Scatter of the velocity of stable ground, whose true velocity is zero.

    Statistics are of the components (never of speeds, which are Rician-biased): count, mean,
    median, standard deviation (ddof 1), NMAD and RMSE about zero, in pixels over the pair
    (metres / ``pixel_size_m``), metres over the pair, and m/yr (365.25-day year).

    Parameters
    ----------
    vx_m_per_yr, vy_m_per_yr : ndarray
        Velocity components, NaN where invalid.
    stable : ndarray of bool
        Stable-ground nodes.
    pixel_size_m : float
        Image pixel size, in metres.
    dt_days : float
        Time between the images, in days.

    Returns
    -------
    dict
        ``stable_nodes`` and ``stable_{vx,vy}_{mean,median,std,nmad,rmse}_{px,m,m_per_yr}``.
    """
    vx = np.asarray(vx_m_per_yr, dtype=np.float64)
    vy = np.asarray(vy_m_per_yr, dtype=np.float64)
    ok = np.asarray(stable, dtype=bool) & np.isfinite(vx) & np.isfinite(vy)
    out: dict[str, float | int] = {"stable_nodes": int(ok.sum())}
    to_m = dt_days / DAYS_PER_YEAR
    for name, comp in (("vx", vx[ok]), ("vy", vy[ok])):
        n = comp.size
        stats = {
            "mean": float(np.mean(comp)) if n else np.nan,
            "median": float(np.median(comp)) if n else np.nan,
            "std": float(np.std(comp, ddof=1)) if n > 1 else np.nan,
            "nmad": nmad(comp),
            "rmse": float(np.sqrt(np.mean(comp**2))) if n else np.nan,
        }
        for stat, value in stats.items():
            out[f"stable_{name}_{stat}_px"] = value * to_m / pixel_size_m
            out[f"stable_{name}_{stat}_m"] = value * to_m
            out[f"stable_{name}_{stat}_m_per_yr"] = value
    return out


def error_px_to_m_per_yr(sigma_px: np.ndarray, transform: Affine, dt_days: float) -> np.ndarray:
    """An isotropic per-component error in pixels as m/yr (365.25-day year).

    Uses the pixel size along columns, ``hypot(a, d)`` of the geotransform (square pixels).
    """
    if not dt_days > 0:
        raise ValueError(f"dt_days must be positive, got {dt_days}")
    pixel_size_m = float(np.hypot(transform.a, transform.d))
    return np.asarray(sigma_px) * pixel_size_m * DAYS_PER_YEAR / dt_days


def node_grid_transform(transform: Affine, row0_px: int, col0_px: int, step_px: int) -> Affine:
    """Geotransform of the output grid whose pixel centres sit on the matching nodes.

    Node ``(i, j)`` lies at the centre of input pixel ``(row0_px + i * step_px, col0_px + j *
    step_px)``; the returned transform maps output pixel ``(j + 0.5, i + 0.5)`` onto that point.
    """
    shift = 0.5 - step_px / 2.0
    return transform @ Affine.translation(col0_px + shift, row0_px + shift) @ Affine.scale(step_px)


def _data_vars(
    layers: Mapping[str, np.ndarray], quality: np.ndarray | None, shape: tuple[int, int]
) -> dict[str, tuple]:
    """The product's variables as float32 layers with their CF attributes, in band order: the
    seven of :data:`VARIABLES`, the :data:`ERROR_VARIABLES`, ``quality`` (uint8, when given),
    then any extra."""
    data_vars = {}
    for name, arr in layers.items():
        var_attrs = dict(VARIABLES.get(name, QUALITY_VARIABLES.get(name, {})))
        data_vars[name] = (("y", "x"), np.asarray(arr, dtype=np.float32), var_attrs)
    if quality is None:
        return data_vars
    if np.shape(quality) != shape:
        raise ValueError(f"quality has shape {np.shape(quality)}, the grid {shape}")
    q = (("y", "x"), np.asarray(quality).astype(np.uint8), dict(QUALITY_VARIABLES["quality"]))
    first = [*VARIABLES, *ERROR_VARIABLES]
    return {
        **{k: data_vars[k] for k in first if k in data_vars},
        "quality": q,
        **{k: val for k, val in data_vars.items() if k not in first},
    }


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
    v_error: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    vx_error: np.ndarray | None = None,
    vy_error: np.ndarray | None = None,
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
        More per-node layers, keyed by variable name (after ``v_error`` and ``quality``).
    v_error : ndarray, optional
        One-sigma error of each velocity component, in m/yr (see the module docstring).
    quality : ndarray of int, optional
        Bit flags of :class:`glacierflow.filters.Quality`; stored as uint8.
    vx_error, vy_error : ndarray, optional
        One-sigma errors of ``vx`` and of ``vy`` apart, in m/yr (:func:`component_sigma_px`).

    Returns
    -------
    xarray.Dataset
        Variables ``vx``, ``vy``, ``v`` (m/yr), ``dx``, ``dy`` (pixels), ``corr``, ``snr``, then
        ``v_error``, ``vx_error``, ``vy_error`` (m/yr) and ``quality`` when given, on
        coordinates ``x``, ``y`` (map metres at pixel centres), each with the CF attributes of
        :data:`VARIABLES` (``standard_name`` ``land_ice_surface_x_velocity`` etc. on ``vx``,
        ``vy``, ``v``). ``attrs`` is one flat mapping holding ``crs_wkt``, ``transform`` (node
        grid, GDAL order), ``image_transform``, ``pixel_size_m``, ``step_px``, ``dt_days`` and
        whatever ``attrs`` gave; :func:`glacierflow.products.write_netcdf` files it on the
        variables it describes, as ITS_LIVE granules do (see
        :mod:`glacierflow.product_layout`), and :func:`glacierflow.products.read_product`
        flattens it back.
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
    for name, err in (("v_error", v_error), ("vx_error", vx_error), ("vy_error", vy_error)):
        if err is not None:
            layers[name] = err
    if extra:
        layers.update(extra)
    ds = xr.Dataset(
        _data_vars(layers, quality, (ny, nx)),
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
    if quality is not None:
        # Also as dataset attributes: GeoTIFF band tags carry only units and long_name.
        ds.attrs["quality_flag_masks"] = list(QUALITY_VARIABLES["quality"]["flag_masks"])
        ds.attrs["quality_flag_meanings"] = QUALITY_VARIABLES["quality"]["flag_meanings"]
    return ds
