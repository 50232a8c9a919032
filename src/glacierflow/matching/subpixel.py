"""Sub-pixel location of correlation peaks.

Two families of estimators are offered:

``parabola`` / ``gaussian``
    The classic three-point fits through the integer peak and its neighbours, separately in x
    and y. Cheap, but biased towards whole pixels ("pixel locking"), because a correlation peak
    is neither a parabola nor a Gaussian (Debella-Gilo & Kääb 2011).
``lanczos`` / ``cubic``
    The surface is resampled on a fine grid (1/``factor`` pixel) within one pixel of the integer
    peak with a separable interpolation kernel, the best fine sample is taken and a parabola fit
    on the fine grid finishes the job. A windowed-sinc (Lanczos-3) kernel approximates the
    band-limited interpolation that a sampled correlation surface of band-limited images admits,
    which removes most of the locking; the interpolation is two small matrix products per node.

References
----------
.. [1] M. Debella-Gilo and A. Kääb, "Sub-pixel precision image matching for measuring surface
   displacements on mass movements using normalized cross-correlation", Remote Sensing of
   Environment 115(1), 130-142, 2011. doi:10.1016/j.rse.2010.08.012
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SUBPIXEL_METHODS = ("lanczos", "cubic", "parabola", "gaussian")


def _three_point(left: np.ndarray, centre: np.ndarray, right: np.ndarray, kind: str) -> np.ndarray:
    """Vertex of a parabola (or of a Gaussian, via logs) through three equally spaced samples."""
    if kind == "gaussian":
        floor = 1e-6
        left = np.log(np.maximum(left, floor))
        centre = np.log(np.maximum(centre, floor))
        right = np.log(np.maximum(right, floor))
    denom = left - 2.0 * centre + right
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = 0.5 * (left - right) / denom
    frac = np.where(np.isfinite(frac) & (denom < 0), frac, 0.0)
    return np.clip(frac, -0.5, 0.5)


def _kernel(kind: str, t: np.ndarray) -> np.ndarray:
    """Interpolation kernel weights at distances ``t`` (pixels)."""
    at = np.abs(t)
    if kind == "cubic":  # Keys (1981) cubic convolution, a = -0.5
        a = -0.5
        w = np.where(
            at <= 1,
            (a + 2) * at**3 - (a + 3) * at**2 + 1,
            np.where(at < 2, a * at**3 - 5 * a * at**2 + 8 * a * at - 4 * a, 0.0),
        )
        return w
    if kind == "lanczos":  # Lanczos-3 windowed sinc
        return np.where(at < 3, np.sinc(t) * np.sinc(t / 3.0), 0.0)
    raise ValueError(f"unknown interpolation kernel {kind!r}")


@lru_cache(maxsize=16)
def _weights(kind: str, factor: int, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight matrix from ``2 * taps + 1`` samples around a peak to a fine grid within +/-1 px.

    Returns the fine-grid positions (pixels from the peak) and a (U, 2 * taps + 1) matrix whose
    rows sum to one.
    """
    fine = np.arange(-factor, factor + 1) / factor
    src = np.arange(-taps, taps + 1)
    w = _kernel(kind, fine[:, None] - src[None, :])
    w /= w.sum(axis=1, keepdims=True)
    return fine, w


def refine_peak(
    surfaces: np.ndarray,
    peak_rows: np.ndarray,
    peak_cols: np.ndarray,
    method: str = "lanczos",
    factor: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peak position near an integer peak of each correlation surface.

    Parameters
    ----------
    surfaces : ndarray, shape (N, K, K)
        Correlation surfaces. NaN samples are treated as the surface minimum.
    peak_rows, peak_cols : ndarray of int, shape (N,)
        Integer peak position in each surface. Must lie at least one sample inside the surface
        (peaks on the border cannot be refined and should be rejected by the caller).
    method : {"lanczos", "cubic", "parabola", "gaussian"}
        Estimator; see the module docstring.
    factor : int
        Fine-grid samples per pixel for the interpolating estimators.

    Returns
    -------
    drow_px, dcol_px : ndarray, shape (N,)
        Sub-pixel correction to add to the integer peak, in pixels, within [-1, 1].
    """
    if method not in SUBPIXEL_METHODS:
        raise ValueError(f"subpixel method must be one of {SUBPIXEL_METHODS}, got {method!r}")
    n, k, _ = surfaces.shape
    if n == 0:
        return np.zeros(0), np.zeros(0)
    s = np.asarray(surfaces, dtype=np.float64)
    lowest = np.nanmin(np.where(np.isfinite(s), s, np.inf), axis=(1, 2))
    lowest = np.where(np.isfinite(lowest), lowest, 0.0)
    s = np.where(np.isfinite(s), s, lowest[:, None, None])
    idx = np.arange(n)
    if method in ("parabola", "gaussian"):
        c = s[idx, peak_rows, peak_cols]
        drow = _three_point(
            s[idx, peak_rows - 1, peak_cols], c, s[idx, peak_rows + 1, peak_cols], method
        )
        dcol = _three_point(
            s[idx, peak_rows, peak_cols - 1], c, s[idx, peak_rows, peak_cols + 1], method
        )
        return drow, dcol
    taps = 4 if method == "lanczos" else 3  # kernel support (3 or 2 px) plus the +/-1 px range
    # Pad with edge values so peaks near the border still have a full neighbourhood.
    padded = np.pad(s, ((0, 0), (taps, taps), (taps, taps)), mode="edge")
    offs = np.arange(-taps, taps + 1)
    rr = (peak_rows + taps)[:, None] + offs[None, :]
    cc = (peak_cols + taps)[:, None] + offs[None, :]
    local = padded[idx[:, None, None], rr[:, :, None], cc[:, None, :]]
    fine, w = _weights(method, factor, taps)
    z = np.einsum("ui,nij,vj->nuv", w, local, w, optimize=True)
    flat = z.reshape(n, -1).argmax(axis=1)
    u = fine.size
    fr, fc = np.divmod(flat, u)
    # Finish with a parabola on the fine grid, where the surface is close to quadratic.
    frc = np.clip(fr, 1, u - 2)
    fcc = np.clip(fc, 1, u - 2)
    zc = z[idx, frc, fcc]
    r_frac = _three_point(z[idx, frc - 1, fcc], zc, z[idx, frc + 1, fcc], "parabola")
    c_frac = _three_point(z[idx, frc, fcc - 1], zc, z[idx, frc, fcc + 1], "parabola")
    step = 1.0 / factor
    drow = fine[frc] + r_frac * step
    dcol = fine[fcc] + c_frac * step
    return drow, dcol
