"""Image enhancement before matching: Gaussian high-pass, Wallis filter, orientation images.

Every filter here is nodata-aware. Invalid pixels (declared nodata, Landsat 7 SLC-off gaps, scene
edges) are *missing*, not zeros: local means and spreads are normalized convolutions (Knutsson &
Westin 1993) that weigh valid pixels only, so a gap does not ring into its neighbours, and a
gradient is invalid wherever a pixel of its difference stencil is invalid, so a gap's border
does not become an edge. Filtered images are float32 (complex64 for orientation images) with 0 at
invalid pixels; the validity mask comes back with them.

* ``highpass``: the image minus its Gaussian local mean (``sigma_px``). Removes illumination
  gradients, shading and haze, which otherwise dominate large chips.
* ``wallis``: local mean removed and local contrast equalised (Wallis 1976, in the form of
  Baltsavias 1991): faint snow texture weighs as much as bright rock edges.
* ``orientation``: the direction of the intensity gradient as a complex number of (nearly) unit
  length, the input of orientation correlation (Fitch et al. 2002; Heid & Kääb 2012).
  Insensitive to contrast and illumination by construction.

References
----------
.. [1] H. Knutsson and C.-F. Westin, "Normalized and differential convolution", IEEE CVPR 1993,
   515-523. doi:10.1109/CVPR.1993.341081
.. [2] R. Wallis, "An approach to the space variant restoration and enhancement of images",
   Symposium on Current Mathematical Problems in Image Science, 1976.
.. [3] E. P. Baltsavias, "Multiphoto geometrically constrained matching", PhD thesis, ETH Zurich,
   1991 (the Wallis filter parameters used in photogrammetry).
.. [4] A. J. Fitch, A. Kadyrov, W. J. Christmas and J. Kittler, "Orientation correlation",
   British Machine Vision Conference 2002, 133-142. doi:10.5244/C.16.11
.. [5] T. Heid and A. Kääb, "Evaluation of existing image matching methods for deriving glacier
   surface displacements globally from optical satellite imagery", Remote Sensing of Environment
   118, 339-355, 2012. doi:10.1016/j.rse.2011.11.024
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from glacierflow.matching.orientation import (
    ORIENTATION_REACH_PX,
    ORIENTATION_SOFT,
    gradient,
    orientation,
)
from glacierflow.matching.stats import checked_image as _inputs
from glacierflow.matching.stats import sampled_median

__all__ = [
    "MAX_HIGHPASS_SIGMA_PX",
    "MAX_WALLIS_WINDOW_PX",
    "ORIENTATION_REACH_PX",
    "ORIENTATION_SOFT",
    "PREFILTERS",
    "gradient",
    "highpass",
    "highpass_reach_px",
    "local_mean",
    "orientation",
    "prefilter",
    "sampled_median",
    "wallis",
    "wallis_reach_px",
    "wallis_spread",
]

#: Pre-filters understood by :func:`prefilter`.
PREFILTERS = ("none", "highpass", "wallis", "orientation")
#: Defaults, written once: the settings tree (:class:`glacierflow.settings.PrefilterSettings`)
#: and tiled matching take them from here. High-pass Gaussian sigma (pixels), Wallis window
#: side (pixels) and Wallis contrast constant (dimensionless).
HIGHPASS_SIGMA_PX = 3.0
WALLIS_WINDOW_PX = 21.0
WALLIS_CONTRAST = 0.9
#: Largest high-pass sigma and Wallis window, pixels: Gaussian kernels up to 2001 px (the
#: Wallis window is four of its sigmas). Larger ones only allocate (a 1e9 px sigma asks for a
#: 60 GiB kernel); both are also checked against the image before any work.
MAX_HIGHPASS_SIGMA_PX = 250.0
MAX_WALLIS_WINDOW_PX = 1000.0

#: Gaussian kernels are cut off this many standard deviations from their centre (scipy's
#: default, stated here because tiled matching reads exactly that far around each window).
TRUNCATE = 4.0

#: A pixel whose valid neighbourhood carries less than this share of the Gaussian weight has no
#: reliable local mean (it sits deep inside a gap): it becomes invalid.
MIN_SUPPORT = 0.05


def local_mean(
    image: np.ndarray, valid: np.ndarray | None = None, sigma_px: float = HIGHPASS_SIGMA_PX
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-weighted local mean over valid pixels only (normalized convolution).

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Image, any real dtype.
    valid : ndarray of bool, optional
        Pixel validity; invalid pixels take no part.
    sigma_px : float
        Standard deviation of the Gaussian weight, in pixels.

    Returns
    -------
    mean : ndarray of float64
        Local mean, in the image's units; 0 where there is no support.
    support : ndarray of float64
        Share of the Gaussian weight on valid pixels, in [0, 1].
    """
    if not sigma_px > 0:
        raise ValueError(f"sigma_px must be positive, got {sigma_px}")
    img = np.asarray(image, dtype=np.float64)
    ok = _finite_and_valid(img, valid)
    w = ok.astype(np.float64)
    # mode="constant": outside the image is missing data, like a gap.
    num = ndimage.gaussian_filter(
        np.where(ok, img, 0.0), sigma_px, mode="constant", truncate=TRUNCATE
    )
    den = ndimage.gaussian_filter(w, sigma_px, mode="constant", truncate=TRUNCATE)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(den > 1e-12, num / den, 0.0)
    return mean, den


def _finite_and_valid(img: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Pixels that are finite and (when a mask is given) valid."""
    return np.isfinite(img) if valid is None else (np.asarray(valid, bool) & np.isfinite(img))


def highpass_reach_px(sigma_px: float) -> int:
    """How far, in pixels, :func:`highpass` reads around a pixel (the Gaussian's radius)."""
    return int(TRUNCATE * float(sigma_px) + 0.5)


def highpass(
    image: np.ndarray, valid: np.ndarray | None = None, sigma_px: float = HIGHPASS_SIGMA_PX
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian high-pass: the image minus its nodata-aware Gaussian local mean.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Image, any real dtype.
    valid : ndarray of bool, optional
        Pixel validity (default: finite pixels).
    sigma_px : float
        Standard deviation of the Gaussian local mean, in pixels; features larger than about
        ``2 * sigma_px`` are suppressed.

    Returns
    -------
    filtered : ndarray of float32
        High-passed image in the image's units, 0 at invalid pixels.
    valid : ndarray of bool
        The input validity, less pixels without enough valid neighbours for a local mean.
    """
    img, ok = _inputs(image, valid)
    mean, support = local_mean(img, ok, sigma_px)
    ok = ok & (support >= MIN_SUPPORT)
    return np.where(ok, img - mean, 0.0).astype(np.float32), ok


def wallis(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    window_px: float = WALLIS_WINDOW_PX,
    contrast: float = WALLIS_CONTRAST,
    target: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Wallis filter: local mean removed, local contrast equalised, nodata-aware.

    ``out = (f - m) * c * s_t / (c * s + (1 - c) * s_t)`` with ``m`` and ``s`` the local mean
    and standard deviation of the valid pixels, ``s_t`` the median of ``s`` (the target
    spread) and ``c`` the contrast expansion constant. ``c`` bounds the gain where the local
    spread vanishes (at most ``c / (1 - c)``), so flat snow is brightened but its noise is not
    blown up without limit.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Image, any real dtype.
    valid : ndarray of bool, optional
        Pixel validity (default: finite pixels).
    window_px : float
        Size of the local window, in pixels (a Gaussian of standard deviation ``window_px / 4``:
        about the same footprint as a box of this side, without its ringing).
    contrast : float
        Contrast expansion constant ``c`` in (0, 1): 1 equalises fully, smaller values less.
    target : float, optional
        The target spread ``s_t``; by default the median of ``s`` over the valid pixels of the
        sampled strips (:func:`sampled_median`).

    Returns
    -------
    filtered : ndarray of float32
        Zero-mean output in units of the median local spread, 0 at invalid pixels.
    valid : ndarray of bool
        The input validity, less pixels without enough valid neighbours.

    References
    ----------
    .. [1] R. Wallis, 1976; E. P. Baltsavias, 1991 (see the module docstring).
    """
    if not 0 < contrast < 1:
        raise ValueError(f"contrast must be in (0, 1), got {contrast}")
    dev, spread, ok = wallis_spread(image, valid, window_px)
    if target is None:
        target = sampled_median(spread, ok)
    target = target if target is not None and target > 0 else 1.0
    gain = contrast / (contrast * spread / target + (1.0 - contrast))
    return np.where(ok, dev * gain, 0.0).astype(np.float32), ok


def wallis_spread(
    image: np.ndarray, valid: np.ndarray | None = None, window_px: float = WALLIS_WINDOW_PX
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local deviation from the mean, local standard deviation and validity of the Wallis filter.

    Returns
    -------
    dev, spread : ndarray of float64
        ``f - m`` and ``s`` of :func:`wallis`, in the image's units.
    valid : ndarray of bool
        Pixels with enough valid neighbours.
    """
    if not window_px > 0:
        raise ValueError(f"window_px must be positive, got {window_px}")
    img, ok = _inputs(image, valid)
    sigma = window_px / 4.0
    mean, support = local_mean(img, ok, sigma)
    ok = ok & (support >= MIN_SUPPORT)
    dev = np.where(ok, img - mean, 0.0)
    var, _ = local_mean(dev * dev, ok, sigma)
    return dev, np.sqrt(np.maximum(var, 0.0)), ok


def wallis_reach_px(window_px: float) -> int:
    """How far, in pixels, :func:`wallis` reads around a pixel (two Gaussian local means)."""
    return 2 * highpass_reach_px(window_px / 4.0)


def prefilter(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    kind: str = "none",
    *,
    sigma_px: float = HIGHPASS_SIGMA_PX,
    window_px: float = WALLIS_WINDOW_PX,
    contrast: float = WALLIS_CONTRAST,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one pre-filter to an image, nodata-aware.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Image, any real dtype.
    valid : ndarray of bool, optional
        Pixel validity (default: finite pixels).
    kind : {"none", "highpass", "wallis", "orientation"}
        The filter; see the module docstring.
    sigma_px : float
        Gaussian standard deviation of the high-pass, in pixels.
    window_px, contrast : float
        Window size (pixels) and contrast constant of the Wallis filter.

    Returns
    -------
    filtered : ndarray
        float32 (complex64 for ``"orientation"``), 0 at invalid pixels. ``"none"`` returns the
        image as float32 with invalid pixels zeroed.
    valid : ndarray of bool
        Validity of the filtered pixels.
    """
    if kind not in PREFILTERS:
        raise ValueError(f"prefilter must be one of {PREFILTERS}, got {kind!r}")
    if kind == "highpass":
        return highpass(image, valid, sigma_px)
    if kind == "wallis":
        return wallis(image, valid, window_px, contrast)
    if kind == "orientation":
        return orientation(image, valid)
    img = np.asarray(image)
    ok = _finite_and_valid(img, valid)
    return np.where(ok, img, 0).astype(np.float32), ok
