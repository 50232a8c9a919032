"""Known displacement fields applied to real images, for validation and tests.

A feature at reference position ``p`` appears in the warped (secondary) image at ``p + d(p)``.
The warped image is built by inverse mapping: for every output pixel ``q`` the reference
position ``p`` with ``p + d(p) = q`` is found by fixed-point iteration (exact for smooth fields,
not the first-order ``q - d(q)`` shortcut, which is off by ``grad(d) * d``), and the reference is
resampled there with cubic B-splines.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def shift_image(image: np.ndarray, dx_px: float, dy_px: float) -> np.ndarray:
    """Shift an image by a constant sub-pixel offset with the Fourier shift theorem.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Source image.
    dx_px, dy_px : float
        Shift to the right and down, in pixels. Content wraps around the edges: keep nodes at
        least the shift plus a chip away from them.

    Returns
    -------
    ndarray of float64
        The shifted image, band-limited exact for band-limited input.
    """
    spec = np.fft.fft2(np.asarray(image, dtype=np.float64))
    return np.real(np.fft.ifft2(ndimage.fourier_shift(spec, (dy_px, dx_px))))


def warp_image(
    image: np.ndarray, dx_px: np.ndarray, dy_px: np.ndarray, iterations: int = 12
) -> np.ndarray:
    """Move every feature of ``image`` by a per-pixel displacement field.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Reference image.
    dx_px, dy_px : ndarray, shape (H, W)
        Displacement of the feature at each reference pixel, right and down, in pixels. Must be
        smooth (gradients well below 1) for the inverse to exist.
    iterations : int
        Fixed-point iterations of the inverse mapping.

    Returns
    -------
    ndarray of float64
        The warped image; pixels mapped from outside the reference take the nearest edge value.
    """
    h, w = image.shape
    qy, qx = np.mgrid[0:h, 0:w].astype(np.float64)
    coeffs_x = ndimage.spline_filter(np.asarray(dx_px, float), order=3)
    coeffs_y = ndimage.spline_filter(np.asarray(dy_px, float), order=3)
    py, px = qy.copy(), qx.copy()
    for _ in range(iterations):
        coords = np.array([py, px])
        dxp = ndimage.map_coordinates(coeffs_x, coords, order=3, prefilter=False, mode="nearest")
        dyp = ndimage.map_coordinates(coeffs_y, coords, order=3, prefilter=False, mode="nearest")
        px, py = qx - dxp, qy - dyp
    return ndimage.map_coordinates(
        np.asarray(image, dtype=np.float64), np.array([py, px]), order=3, mode="nearest"
    )


def glacier_field(
    shape: tuple[int, int],
    peak_px: float = 10.0,
    direction_deg: float = 200.0,
    width_frac: float = 0.25,
    misregistration_px: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth glacier-like displacement field: a valley glacier with a shear profile.

    Speed peaks along a band through the image centre in ``direction_deg`` (clockwise from
    image up, i.e. a compass bearing on north-up grids), falls to zero across a width of
    ``width_frac`` of the image with a parabolic-to-plug profile, and grows down-glacier.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)``.
    peak_px : float
        Largest displacement, in pixels.
    direction_deg : float
        Flow direction, degrees clockwise from image up.
    width_frac : float
        Half-width of the moving band as a fraction of the smaller image side.
    misregistration_px : tuple of float
        Constant offset ``(dx, dy)`` added everywhere (a residual co-registration error).

    Returns
    -------
    dx_px, dy_px : ndarray, shape (H, W)
        Displacement right and down, in pixels.
    """
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    theta = np.deg2rad(direction_deg)
    ux, uy = np.sin(theta), -np.cos(theta)  # unit flow vector in image axes (y down)
    along = (x - w / 2) * ux + (y - h / 2) * uy
    across = -(x - w / 2) * uy + (y - h / 2) * ux
    half_width = width_frac * min(h, w)
    t = np.clip(1.0 - (across / half_width) ** 2, 0.0, None)
    profile = 1.0 - (1.0 - t) ** 2  # flat centre, steep shear margins
    ramp = 0.6 + 0.4 * np.clip(along / (0.5 * max(h, w)), -1, 1)  # faster down-glacier
    # Smooth the margins so the field's gradient stays well below one pixel per pixel.
    speed = ndimage.gaussian_filter(profile * ramp, sigma=min(h, w) / 40)
    speed *= peak_px / speed.max()
    mx, my = misregistration_px
    return speed * ux + mx, speed * uy + my


def slc_off_mask(
    shape: tuple[int, int],
    period_lines: float = 32.0,
    max_gap_px: float = 14.0,
    phase: float = 0.0,
) -> np.ndarray:
    """Gaps of a Landsat 7 ETM+ scene acquired after the Scan Line Corrector failed (SLC-off).

    Without the corrector, the scan lines zig-zag and leave wedge-shaped gaps between the scans:
    none along the scene centre, widening to about 14 pixels of 15 m (7 of 30 m) at the scene
    edges, repeating with every scan (16 lines of 30 m, i.e. 32 of 15 m). Scenes of two dates
    have the gaps in other places: ``phase`` moves them along the columns.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)``; the scene centre is the middle column.
    period_lines : float
        Gap repeat distance along the columns, in lines (pixels).
    max_gap_px : float
        Gap width at the left and right image edges, in pixels; it grows linearly from 0 at the
        centre column.
    phase : float
        Line of the first gap centre, in pixels (shifts the pattern down).

    Returns
    -------
    ndarray of bool, shape (H, W)
        True in the gaps (nodata), False where the scanner saw the ground.
    """
    if period_lines <= 0 or max_gap_px < 0:
        raise ValueError("period_lines must be positive and max_gap_px not negative")
    if max_gap_px >= period_lines:
        raise ValueError(f"gaps of {max_gap_px} px would fill a period of {period_lines} lines")
    h, w = shape
    y = np.arange(h, dtype=np.float64)[:, None]
    x = np.arange(w, dtype=np.float64)[None, :]
    centre = (w - 1) / 2.0
    width = max_gap_px * np.abs(x - centre) / max(centre, 1.0)
    # Distance of each line to the nearest gap centre.
    d = np.abs((y - phase + period_lines / 2.0) % period_lines - period_lines / 2.0)
    return d < width / 2.0


def low_contrast(
    image: np.ndarray,
    fraction: float = 0.05,
    noise_dn: float = 20.0,
    seed: int = 0,
) -> np.ndarray:
    """Real texture made faint: contrast reduced about the mean, sensor-like noise added.

    ``out = round(mean + fraction * (image - mean) + noise)``, with Gaussian noise of standard
    deviation ``noise_dn`` (read noise of a detector, independent for every pixel and date) and
    rounding to whole digital numbers (quantisation).

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Source image, in digital numbers (DN).
    fraction : float
        Remaining share of the contrast (0.05 for 5 %).
    noise_dn : float
        Noise standard deviation, DN.
    seed : int
        Seed of the noise; use different seeds for the two dates.

    Returns
    -------
    ndarray of float64
        The faint, noisy image in DN, whole numbers.
    """
    img = np.asarray(image, dtype=np.float64)
    mean = float(img.mean())
    rng = np.random.default_rng(seed)
    out = mean + fraction * (img - mean) + rng.normal(0.0, noise_dn, img.shape)
    return np.round(out)
