"""Offsets in pixels to displacement in metres and velocity in m/yr, with errors, as a Dataset.

Conventions (see the design guide): offsets ``dx_px``, ``dy_px`` are measured from the earlier
(reference) image to the later (secondary) one, x to the right and y *down* in pixel space. Map
components are ``vx`` east and ``vy`` north. A year is 365.25 days.

Errors
------
``v_error`` is the one-sigma error of *each* velocity component, ``vx`` and ``vy`` alike
(isotropic), in m/yr. Where ``v >> v_error`` it is also the one-sigma error of the speed ``v``;
near zero ``v = hypot(vx, vy)`` is Rician-biased upwards (about ``1.25 * v_error`` on still
ground), so average components, never speeds, and take the speed of the mean vector.

The per-node error, in pixels, adds four terms in quadrature:

* matching noise, with a *shape* from the correlation peak and a *scale* from stable ground
  (:func:`peak_sigma_shape`, :func:`calibrate_peak_sigma`): the precision of a correlation peak
  falls as the peak correlation ``rho`` drops, like ``sqrt(1 - rho**2) / rho`` (the noise in
  the correlation surface over its curvature at the peak; see Altena et al. 2022 for the peak's
  dispersion as a measure of precision). The scale is calibrated so that the offsets of stable
  ground, divided by their predicted sigma, have unit normalized median absolute deviation;
* a floor, :data:`PEAK_SIGMA_FLOOR_PX`, for the sub-pixel estimator's own error;
* strain across the chip, :data:`DEFORMATION_FACTOR` times the local displacement gradient
  (:func:`displacement_gradient`) times the chip side: zero on stable ground, where nothing
  could calibrate it, and the largest term in shear margins;
* the uncertainty of the co-registration surface at the node.

References
----------
.. [1] Altena, B., Kaab, A. and Wouters, B. (2022). Correlation dispersion as a measure to
   better estimate uncertainty in remotely sensed glacier displacements. The Cryosphere 16,
   2285-2300. doi:10.5194/tc-16-2285-2022
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine
from numpy.lib.stride_tricks import sliding_window_view
from scipy.optimize import brentq

from glacierflow.coregister import nmad
from glacierflow.filters import quality_attrs

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
    "quality": quality_attrs(),
    "chip_px": {
        "units": "pixel",
        "long_name": "side of the reference chip the node was measured with",
    },
}

#: Smallest per-component sigma of a correlation peak, in pixels: the systematic error of the
#: sub-pixel peak estimator (Lanczos, below 0.02 px on real texture).
PEAK_SIGMA_FLOOR_PX = 0.02

#: Error of a chip's offset per unit of displacement gradient across the chip: the matcher
#: returns the displacement of the chip's texture-weighted centre, not of its middle. On
#: Landsat 7 and 8 texture warped by known glacier flows, the RMS error of each component is
#: 0.09 to 0.16 (about 0.11 on Everest, 0.13 on Yahtse) times the gradient (px/px) times the
#: chip side (px).
DEFORMATION_FACTOR = 0.11

#: Peak-shape scale used when too little stable ground is left to calibrate it: the value the
#: bundled Yahtse pair gives on its stable rock (6.6 with 32 px chips; synthetic noise on
#: Landsat 7 texture gives 1.4 to 3). Products that use it say so in ``v_error_calibration``.
DEFAULT_PEAK_SIGMA_SCALE = 6.5


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


def peak_sigma_shape(
    corr: np.ndarray,
    chip_px: int,
    curvature_x: np.ndarray | None = None,
    curvature_y: np.ndarray | None = None,
) -> np.ndarray:
    """Relative precision of correlation peaks, before calibration (pixels per unit scale).

    With the peak curvature: ``sqrt((1 - rho**2) / (N * rho * c))``, where ``N = chip_px**2``,
    ``rho`` is the peak correlation and ``c`` the mean of the two curvatures
    ``-d2(rho)/dx2``, ``-d2(rho)/dy2`` at the peak (1/px**2): the noise of a correlation
    surface, ``sqrt((1 - rho**2) / N)`` per pixel, moves its maximum by that noise's slope over
    the peak's curvature. Without it the curvature is taken proportional to ``rho`` (the
    expected surface is ``rho`` times the chip's autocorrelation), which leaves
    ``sqrt(1 - rho**2) / (rho * chip_px)``; the unknown autocorrelation width and the effective
    number of independent pixels are left to the calibrated scale.

    Parameters
    ----------
    corr : ndarray
        Peak normalized cross-correlation (clipped to [0.05, 0.999]).
    chip_px : int
        Chip side, in pixels.
    curvature_x, curvature_y : ndarray, optional
        Peak curvatures along columns and rows, in 1/px**2 (positive at a maximum).

    Returns
    -------
    ndarray of float64
        Shape of the per-component sigma, in pixels for a scale of 1.
    """
    rho = np.clip(np.asarray(corr, dtype=np.float64), 0.05, 0.999)
    n = float(chip_px) ** 2
    if curvature_x is None or curvature_y is None:
        return np.sqrt(1.0 - rho**2) / (rho * np.sqrt(n))
    c = np.clip((np.asarray(curvature_x) + np.asarray(curvature_y)) / 2.0, 1e-4, None)
    return np.sqrt((1.0 - rho**2) / (n * rho * c))


def peak_sigma_px(
    shape: np.ndarray, scale: float, floor_px: float | np.ndarray = PEAK_SIGMA_FLOOR_PX
) -> np.ndarray:
    """Calibrated per-component sigma of the offsets: ``sqrt((scale * shape)**2 + floor**2)``.

    Parameters
    ----------
    shape : ndarray
        From :func:`peak_sigma_shape`.
    scale : float
        Calibration factor from :func:`calibrate_peak_sigma` (dimensionless).
    floor_px : float
        Estimator floor, in pixels.

    Returns
    -------
    ndarray
        One-sigma error of dx and of dy, in pixels.
    """
    return np.hypot(scale * np.asarray(shape, dtype=np.float64), floor_px)


#: Side of the neighbourhood :func:`displacement_gradient` fits its planes on, in nodes.
GRADIENT_WINDOW_NODES = 5


def displacement_gradient(
    dx_px: np.ndarray, dy_px: np.ndarray, step_px: float, window_nodes: int = GRADIENT_WINDOW_NODES
) -> np.ndarray:
    """Magnitude of the displacement gradient at each node, in pixels per pixel.

    The Frobenius norm of the 2 x 2 gradient of ``(dx, dy)``, from a least-squares plane fitted
    to each component over the valid nodes of a ``window_nodes`` square around the node: exact
    for linear fields, and 5 x 5 nodes (40 px at 8 px steps, about a chip) average matching
    noise down so that it does not pass for strain.

    Parameters
    ----------
    dx_px, dy_px : ndarray, shape (ny, nx)
        Offsets in pixels, NaN where invalid.
    step_px : float
        Node spacing, in pixels.
    window_nodes : int
        Side of the neighbourhood, in nodes (odd).

    Returns
    -------
    ndarray of float64
        ``sqrt(sum of the four squared partial derivatives)``; NaN where the node is invalid, 0
        where its neighbourhood cannot hold a plane.
    """
    h = window_nodes // 2
    offs = np.arange(-h, h + 1, dtype=np.float64) * step_px
    oy, ox = np.meshgrid(offs, offs, indexing="ij")
    ox, oy = ox.ravel(), oy.ravel()
    valid = np.isfinite(dx_px) & np.isfinite(dy_px)
    comps = []
    for comp in (dx_px, dy_px):
        u = np.where(valid, np.asarray(comp, dtype=np.float64), np.nan)
        win = sliding_window_view(np.pad(u, h, constant_values=np.nan), (2 * h + 1,) * 2)
        comps.append(win.reshape(*u.shape, -1))
    w = np.isfinite(comps[0]).astype(np.float64)
    # Normal equations of u = a + b x + c y per node, on the valid nodes of its window.
    sums = {
        name: (w * t).sum(axis=-1)
        for name, t in (("1", 1.0), ("x", ox), ("y", oy), ("xx", ox * ox), ("yy", oy * oy))
    }
    sums["xy"] = (w * ox * oy).sum(axis=-1)
    m = np.stack(
        [
            np.stack([sums["1"], sums["x"], sums["y"]], axis=-1),
            np.stack([sums["x"], sums["xx"], sums["xy"]], axis=-1),
            np.stack([sums["y"], sums["xy"], sums["yy"]], axis=-1),
        ],
        axis=-2,
    )
    det = np.linalg.det(m)
    ok = valid & (np.abs(det) > 1e-9 * step_px**4 * np.maximum(sums["1"], 1) ** 3)
    out = np.zeros(np.shape(dx_px))
    for vals in comps:
        v = np.nan_to_num(vals)
        rhs = np.stack([(w * v).sum(-1), (w * v * ox).sum(-1), (w * v * oy).sum(-1)], axis=-1)
        coef = np.zeros(rhs.shape)
        coef[ok] = np.linalg.solve(m[ok], rhs[ok][..., None])[..., 0]
        out += coef[..., 1] ** 2 + coef[..., 2] ** 2
    g = np.sqrt(out)
    g[~valid] = np.nan
    return g


def calibrate_peak_sigma(
    res_dx_px: np.ndarray,
    res_dy_px: np.ndarray,
    shape: np.ndarray,
    floor_px: float | np.ndarray = PEAK_SIGMA_FLOOR_PX,
    min_nodes: int = 30,
) -> float:
    """The scale that makes stable-ground residuals, over their sigma, have unit NMAD.

    Parameters
    ----------
    res_dx_px, res_dy_px : ndarray
        Offsets of stable nodes after co-registration (their true value is zero), in pixels.
    shape : ndarray
        :func:`peak_sigma_shape` of the same nodes.
    floor_px : float or ndarray
        Error not scaled by the calibration, in pixels, added in quadrature: the estimator
        floor, and where known per node the deformation and co-registration terms.
    min_nodes : int
        Fewest nodes for a calibration.

    Returns
    -------
    float
        The scale for :func:`peak_sigma_px`; 0 if the floor alone already explains the scatter.

    Raises
    ------
    ValueError
        With fewer than ``min_nodes`` usable nodes.
    """
    rx = np.asarray(res_dx_px, dtype=np.float64).ravel()
    ry = np.asarray(res_dy_px, dtype=np.float64).ravel()
    sh = np.asarray(shape, dtype=np.float64).ravel()
    fl = np.broadcast_to(np.asarray(floor_px, dtype=np.float64), np.shape(res_dx_px)).ravel()
    ok = np.isfinite(rx) & np.isfinite(ry) & np.isfinite(sh) & np.isfinite(fl)
    if ok.sum() < min_nodes:
        raise ValueError(
            f"only {int(ok.sum())} stable nodes to calibrate the error model; need {min_nodes}"
        )
    rx, ry, sh, fl = rx[ok], ry[ok], sh[ok], fl[ok]

    def excess(scale: float) -> float:
        sigma = peak_sigma_px(sh, scale, fl)
        return nmad(np.concatenate([rx / sigma, ry / sigma])) - 1.0

    if excess(0.0) <= 0:
        return 0.0
    hi = 1.0
    while excess(hi) > 0 and hi < 1e6:
        hi *= 4.0
    return float(brentq(excess, 0.0, hi, xtol=1e-6 * hi))


def offset_sigma_px(
    corr: np.ndarray,
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    stable: np.ndarray,
    *,
    chip_px: int,
    step_px: int,
    coreg_sigma_px: float | np.ndarray = 0.0,
    scale: float | None = None,
    runner: Any = None,
) -> tuple[np.ndarray, float]:
    """One-sigma error of each offset component per node, in pixels (see the module docstring).

    Parameters
    ----------
    corr : ndarray, shape (ny, nx)
        Peak correlation.
    dx_px, dy_px : ndarray, shape (ny, nx)
        Co-registered offsets in pixels, NaN where invalid.
    stable : ndarray of bool
        Stable nodes (true offset zero) to calibrate the scale on.
    chip_px, step_px : int
        Chip side and node spacing, in pixels.
    coreg_sigma_px : float or ndarray
        Uncertainty of the co-registration correction, in pixels.
    scale : float, optional
        Peak-shape scale; calibrated on ``stable`` when None.
    runner : optional
        Anything with ``rowwise(fn, arrays, halo, **kwargs)``
        (:meth:`glacierflow.execute.Executor.rowwise`): the displacement gradient is computed
        in bands of rows on its workers (the same values); here when None.

    Returns
    -------
    sigma_px : ndarray of float64
        NaN where the offsets are.
    scale : float
        The scale used.

    Raises
    ------
    ValueError
        If ``scale`` is None and too few stable nodes hold an offset.
    """
    shape = peak_sigma_shape(corr, chip_px)
    if runner is None:
        gradient = displacement_gradient(dx_px, dy_px, step_px)
    else:
        halo = GRADIENT_WINDOW_NODES // 2
        gradient = runner.rowwise(displacement_gradient, (dx_px, dy_px), halo, step_px=step_px)
    deform_px = DEFORMATION_FACTOR * gradient * chip_px
    fixed_px = np.sqrt(
        PEAK_SIGMA_FLOOR_PX**2 + deform_px**2 + np.broadcast_to(coreg_sigma_px, shape.shape) ** 2
    )
    if scale is None:
        ok = np.asarray(stable, dtype=bool)
        scale = calibrate_peak_sigma(dx_px[ok], dy_px[ok], shape[ok], fixed_px[ok])
    sigma = peak_sigma_px(shape, scale, fixed_px)
    sigma[~(np.isfinite(dx_px) & np.isfinite(dy_px))] = np.nan
    return sigma, float(scale)


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
    seven of :data:`VARIABLES`, ``v_error``, ``quality`` (uint8, when given), then any extra."""
    data_vars = {}
    for name, arr in layers.items():
        var_attrs = dict(VARIABLES.get(name, QUALITY_VARIABLES.get(name, {})))
        data_vars[name] = (("y", "x"), np.asarray(arr, dtype=np.float32), var_attrs)
    if quality is None:
        return data_vars
    if np.shape(quality) != shape:
        raise ValueError(f"quality has shape {np.shape(quality)}, the grid {shape}")
    q = (("y", "x"), np.asarray(quality).astype(np.uint8), dict(QUALITY_VARIABLES["quality"]))
    return {
        **{k: data_vars[k] for k in list(VARIABLES) + ["v_error"] if k in data_vars},
        "quality": q,
        **{k: val for k, val in data_vars.items() if k not in VARIABLES and k != "v_error"},
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

    Returns
    -------
    xarray.Dataset
        Variables ``vx``, ``vy``, ``v`` (m/yr), ``dx``, ``dy`` (pixels), ``corr``, ``snr``, then
        ``v_error`` (m/yr) and ``quality`` when given, on
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
    if v_error is not None:
        layers["v_error"] = v_error
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
