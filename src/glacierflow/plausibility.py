"""What makes an offset plausible for a pair: a return home, a speed limit, the flow direction.

The outlier filter (:func:`glacierflow.filters.filter_offsets`) works on node grids in pixels;
this module turns a pair's checks into its inputs:

* the forward-backward closures of the nodes in doubt (:func:`closure_in_doubt`): a weak peak
  (correlation below ``filtering.closure_weak_corr``), or an offset that strays from its
  neighbours (``filtering.closure_stray_px``). The aliased matches of periodic crevasses (the
  crevassed neck of Yahtse Glacier, corr 0.34-0.52) are both weak and, within a +/-16 px search,
  close badly often enough to break their patch apart; true matches of streaked or faint
  texture peak high and agree with their neighbours, while their closure measures how far they
  slide along the streaks (0.5-1.5 px at SNRs of 1.3-2 on the clear Yahtse tongue), which is
  not a mismatch;

* a speed no glacier reaches (``filtering.max_speed_m_per_yr``) as an offset in pixels over the
  pair's time separation;
* with a DEM (``filtering.dem``), the direction down the surface slope at each node. Ice flows
  down the surface slope averaged over a few ice thicknesses (Paterson, *The Physics of
  Glaciers*: longitudinal stresses average the driving stress over about 4 to 10 thicknesses,
  i.e. about 1 km on a valley glacier), not down every local bump; the DEM is therefore smoothed
  with a Gaussian of :data:`SMOOTH_M` (sigma) before its gradient is taken, and the direction is
  given only where that smoothed slope is at least ``filtering.dem_min_slope``. The DEM may be in
  any CRS; it is resampled (bilinear) onto the node grid first.

References
----------
.. [1] Cuffey, K. M. and Paterson, W. S. B. (2010). The Physics of Glaciers, 4th edition,
   section 8.7 (longitudinal coupling). Academic Press.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import numpy as np
from affine import Affine
from scipy import ndimage

from glacierflow.errors import InputError
from glacierflow.filters import FilterSettings, max_offset_px, window_median

__all__ = [
    "SMOOTH_M",
    "closure_in_doubt",
    "downslope_px",
    "filter_inputs",
    "stray_px",
    "weak_strays",
]

#: Gaussian sigma of the DEM smoothing before its slope is taken, metres (about ten thicknesses
#: of a valley glacier).
SMOOTH_M = 1000.0


def downslope_px(
    dem_path: str | PathLike[str],
    *,
    crs: Any,
    image_transform: Affine,
    node_transform: Affine,
    shape: tuple[int, int],
    min_slope: float = 0.02,
    smooth_m: float = SMOOTH_M,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors down the smoothed surface slope at every node, in image pixel axes.

    Parameters
    ----------
    dem_path : str or PathLike
        Elevation raster (metres), any CRS GDAL can reproject; nodata or NaN where unknown.
    crs : rasterio.crs.CRS
        The pair's (projected) CRS.
    image_transform : affine.Affine
        Pixel (col, row) to map transform of the pair's images.
    node_transform : affine.Affine
        Map transform of the node grid (one cell per node, centred on it).
    shape : (int, int)
        Node grid shape (rows, columns).
    min_slope : float
        Smallest smoothed slope (rise over run) at which a direction is given.
    smooth_m : float
        Gaussian sigma of the smoothing, metres.

    Returns
    -------
    ux, uy : ndarray of float64, shape ``shape``
        Unit vector downhill along the image columns (right) and rows (down); NaN where the
        smoothed slope is gentler than ``min_slope`` or the DEM has no value.

    Raises
    ------
    InputError
        If the DEM cannot be read, the pair has no CRS, or the DEM does not cover the nodes.
    """
    import rasterio.warp

    from glacierflow.scenes import read_raster_band

    if crs is None:
        raise InputError("the pair has no CRS: a DEM cannot be placed on it", dem_path)
    dem, dem_transform, dem_crs = read_raster_band(dem_path, what="DEM")
    z = np.full(shape, np.nan, dtype=np.float64)
    rasterio.warp.reproject(
        dem,
        z,
        src_transform=dem_transform,
        src_crs=dem_crs,
        src_nodata=np.nan,
        dst_transform=node_transform,
        dst_crs=crs,
        dst_nodata=np.nan,
        resampling=rasterio.warp.Resampling.bilinear,
    )
    known = np.isfinite(z)
    if not known.any():
        raise InputError("the DEM does not cover the image pair", dem_path, key="filtering.dem")
    # Normalised (nodata-aware) Gaussian smoothing on the node grid.
    spacing_m = float(np.hypot(node_transform.a, node_transform.d))
    sigma = smooth_m / spacing_m
    weight = ndimage.gaussian_filter(known.astype(np.float64), sigma, mode="constant")
    total = ndimage.gaussian_filter(np.where(known, z, 0.0), sigma, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        zs = np.where(weight > 0.5, total / weight, np.nan)
    # Gradient along the node columns and rows, then to map axes (x east, y north).
    dz_dcol = np.gradient(zs, axis=1)
    dz_drow = np.gradient(zs, axis=0)
    t = node_transform
    det = t.a * t.e - t.b * t.d
    # d(col, row)/d(x, y) is the inverse of the transform's linear part.
    gx = (dz_dcol * t.e - dz_drow * t.d) / det
    gy = (-dz_dcol * t.b + dz_drow * t.a) / det
    slope = np.hypot(gx, gy)
    # Downhill in map axes, then in image pixel axes (columns, rows).
    mx, my = -gx, -gy
    a, b, d, e = image_transform.a, image_transform.b, image_transform.d, image_transform.e
    idet = a * e - b * d
    ux, uy = (e * mx - b * my) / idet, (-d * mx + a * my) / idet
    norm = np.hypot(ux, uy)
    with np.errstate(invalid="ignore", divide="ignore"):
        steep = slope >= min_slope
        return np.where(steep, ux / norm, np.nan), np.where(steep, uy / norm, np.nan)


def closure_in_doubt(
    closure_px: np.ndarray,
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    corr: np.ndarray,
    snr: np.ndarray,
    settings: FilterSettings,
    stray: np.ndarray | None = None,
) -> np.ndarray:
    """The forward-backward closures the filter judges: those of the nodes in doubt.

    A node is in doubt where its peak correlation is below ``settings.closure_weak_corr``, or
    where its offset lies further than ``settings.closure_stray_px`` from the median offset of
    the usable nodes (matched, peak at ``min_corr`` and ``min_snr`` or above) of its 5 x 5
    neighbourhood, itself included.

    Parameters
    ----------
    closure_px : ndarray, shape (ny, nx)
        The matcher's forward-backward closures, pixels; NaN where not checked.
    dx_px, dy_px : ndarray, shape (ny, nx)
        The matcher's offsets, pixels; NaN where unmatched.
    corr, snr : ndarray, shape (ny, nx)
        Peak correlation and SNR of the matches.
    settings : FilterSettings
        ``closure_weak_corr``, ``closure_stray_px``, ``min_corr`` and ``min_snr``.
    stray : ndarray, shape (ny, nx), optional
        :func:`stray_px` of these offsets, pixels, where the caller has it already.

    Returns
    -------
    ndarray of float64, shape (ny, nx)
        ``closure_px`` at the nodes in doubt, NaN elsewhere.
    """
    if stray is None:
        stray = stray_px(dx_px, dy_px, corr, snr, settings)
    with np.errstate(invalid="ignore"):
        doubt = (np.asarray(corr) < settings.closure_weak_corr) | (
            stray > settings.closure_stray_px
        )
    return np.where(doubt, np.asarray(closure_px, dtype=np.float64), np.nan)


def stray_px(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    corr: np.ndarray,
    snr: np.ndarray,
    settings: FilterSettings,
) -> np.ndarray:
    """Distance of each offset from the median offset of the usable nodes (matched, peak at
    ``settings.min_corr`` and ``min_snr`` or above) of its 5 x 5 neighbourhood, itself
    included, pixels; NaN where none is usable (arguments as in :func:`closure_in_doubt`)."""
    dx, dy = (np.asarray(a, dtype=np.float64) for a in (dx_px, dy_px))
    with np.errstate(invalid="ignore"):
        usable = (np.asarray(corr) >= settings.min_corr) & (np.asarray(snr) >= settings.min_snr)
    mx, my = (window_median(np.where(usable, a, np.nan), 2) for a in (dx, dy))
    return np.hypot(dx - mx, dy - my)


def weak_strays(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    corr: np.ndarray,
    snr: np.ndarray,
    settings: FilterSettings,
    stray: np.ndarray | None = None,
) -> np.ndarray:
    """Nodes in doubt twice over: a weak peak (below ``settings.closure_weak_corr``) further
    than ``settings.weak_stray_px`` from its neighbours (:func:`stray_px`). Nothing confirms
    such a match, and its return home does not either: the aliased matches of periodic
    crevasses return home too. On the Yahtse pair they are the chaotic margins of the neck's
    aliased patch (one of them flowed uphill through every other test). Arguments as in
    :func:`closure_in_doubt`.

    Returns
    -------
    ndarray of bool, shape (ny, nx)
    """
    if stray is None:
        stray = stray_px(dx_px, dy_px, corr, snr, settings)
    with np.errstate(invalid="ignore"):
        return (np.asarray(corr) < settings.closure_weak_corr) & (stray > settings.weak_stray_px)


def filter_inputs(
    settings: FilterSettings,
    *,
    closure_px: np.ndarray | None,
    crs: Any,
    image_transform: Affine,
    node_transform: Affine,
    shape: tuple[int, int],
    dt_days: float,
    match: Any = None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`~glacierflow.filters.filter_offsets` for a pair's
    plausibility tests: ``closure_px`` (the matcher's; with ``match``, those of the nodes in
    doubt, :func:`closure_in_doubt`, and ``weak_stray``, :func:`weak_strays`), ``max_offset_px``
    (the speed limit over ``dt_days``) and, with ``settings.dem``, ``downslope_px``.

    ``match`` is the pair's :class:`~glacierflow.matching.MatchResult` (its offsets, ``corr``
    and ``snr`` tell which nodes are in doubt).

    Raises
    ------
    InputError
        For an unusable DEM (see :func:`downslope_px`).
    """
    pixel_size_m = float(np.hypot(image_transform.a, image_transform.d))
    out: dict[str, Any] = {}
    if match is not None:
        offsets = (match.dx_px, match.dy_px, match.corr, match.snr)
        stray = stray_px(*offsets, settings)  # two 5 x 5 medians: once for both tests
        out["weak_stray"] = weak_strays(*offsets, settings, stray)
        if closure_px is not None:
            closure_px = closure_in_doubt(closure_px, *offsets, settings, stray)
    out |= {
        "closure_px": closure_px,
        "max_offset_px": max_offset_px(settings.max_speed_m_per_yr, pixel_size_m, dt_days),
    }
    if settings.dem is not None:
        out["downslope_px"] = downslope_px(
            settings.dem,
            crs=crs,
            image_transform=image_transform,
            node_transform=node_transform,
            shape=shape,
            min_slope=settings.dem_min_slope,
        )
    return out
