"""Sub-pixel location of correlation peaks.

Two families of estimators are offered:

``parabola`` / ``gaussian``
    The classic three-point fits through the integer peak and its neighbours, separately in x
    and y. Cheap, but biased towards whole pixels ("pixel locking"), because a correlation peak
    is neither a parabola nor a Gaussian (Debella-Gilo & Kääb 2011).
``lanczos`` / ``cubic``
    The surface is interpolated around the integer peak with a separable kernel and the maximum
    of the interpolated, continuous surface is found by Newton steps. A windowed-sinc (Lanczos-3)
    kernel approximates the band-limited interpolation that a sampled correlation surface of
    band-limited images admits, which removes most of the locking; each step is a few small
    matrix products per node.

References
----------
.. [1] M. Debella-Gilo and A. Kääb, "Sub-pixel precision image matching for measuring surface
   displacements on mass movements using normalized cross-correlation", Remote Sensing of
   Environment 115(1), 130-142, 2011. doi:10.1016/j.rse.2010.08.012
"""

from __future__ import annotations

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


def _kernel_weights(kind: str, frac: np.ndarray, taps: int) -> np.ndarray:
    """Normalised weights of samples ``-taps..taps`` for positions ``frac`` (any shape)."""
    src = np.arange(-taps, taps + 1)
    w = _kernel(kind, frac[..., None] - src)
    return w / w.sum(axis=-1, keepdims=True)


def refine_peak(
    surfaces: np.ndarray,
    peak_rows: np.ndarray,
    peak_cols: np.ndarray,
    method: str = "lanczos",
    iterations: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peak position near an integer peak of each correlation surface.

    Parameters
    ----------
    surfaces : ndarray, shape (N, K, K)
        Correlation surfaces. NaN samples are treated as the local minimum.
    peak_rows, peak_cols : ndarray of int, shape (N,)
        Integer peak position in each surface. Must lie at least one sample inside the surface
        (peaks on the border cannot be refined and should be rejected by the caller).
    method : {"lanczos", "cubic", "parabola", "gaussian"}
        Estimator; see the module docstring.
    iterations : int
        Newton steps on the interpolated surface for the interpolating estimators.

    Returns
    -------
    drow_px, dcol_px : ndarray, shape (N,)
        Sub-pixel correction to add to the integer peak, in pixels, within [-1, 1].

    Notes
    -----
    The interpolating estimators maximise the continuous surface that the kernel interpolates
    through the samples around the peak. They start from the three-point parabola and take
    Newton steps, with gradient and Hessian from central differences (0.05 px) of the
    interpolated surface; steps are limited to 0.25 px and the result to +/-1 px.
    """
    if method not in SUBPIXEL_METHODS:
        raise ValueError(f"subpixel method must be one of {SUBPIXEL_METHODS}, got {method!r}")
    n, k, _ = surfaces.shape
    if n == 0:
        return np.zeros(0), np.zeros(0)
    taps = 4 if method == "lanczos" else 3  # kernel support (3 or 2 px) plus the +/-1 px range
    if method in ("parabola", "gaussian"):
        taps = 1
    # Neighbourhood of the peak; indices clipped at the border repeat the edge sample, and NaN
    # samples (too little overlap in masked correlation) take the neighbourhood's minimum.
    offs = np.arange(-taps, taps + 1)
    rr = np.clip(peak_rows[:, None] + offs[None, :], 0, k - 1)
    cc = np.clip(peak_cols[:, None] + offs[None, :], 0, k - 1)
    idx = np.arange(n)
    local = surfaces[idx[:, None, None], rr[:, :, None], cc[:, None, :]].astype(np.float64)
    bad = ~np.isfinite(local)
    if bad.any():
        lowest = np.nanmin(np.where(bad, np.inf, local), axis=(1, 2))
        local = np.where(bad, np.where(np.isfinite(lowest), lowest, 0.0)[:, None, None], local)
    t = taps
    c = local[:, t, t]
    kind = "gaussian" if method == "gaussian" else "parabola"
    drow = _three_point(local[:, t - 1, t], c, local[:, t + 1, t], kind)
    dcol = _three_point(local[:, t, t - 1], c, local[:, t, t + 1], kind)
    if method in ("parabola", "gaussian"):
        return drow, dcol
    h = 0.05
    stencil = np.array([-h, 0.0, h])
    for _ in range(iterations):
        wy = _kernel_weights(method, drow[:, None] + stencil, taps)  # (N, 3, taps*2+1)
        wx = _kernel_weights(method, dcol[:, None] + stencil, taps)
        z = np.einsum("npi,nij,nqj->npq", wy, local, wx, optimize=True)  # (N, 3, 3)
        gy = (z[:, 2, 1] - z[:, 0, 1]) / (2 * h)
        gx = (z[:, 1, 2] - z[:, 1, 0]) / (2 * h)
        hyy = (z[:, 2, 1] - 2 * z[:, 1, 1] + z[:, 0, 1]) / h**2
        hxx = (z[:, 1, 2] - 2 * z[:, 1, 1] + z[:, 1, 0]) / h**2
        hxy = (z[:, 2, 2] - z[:, 2, 0] - z[:, 0, 2] + z[:, 0, 0]) / (4 * h * h)
        det = hyy * hxx - hxy * hxy
        # Newton step where the surface is locally concave; a small gradient step elsewhere.
        concave = (hyy < 0) & (det > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            sy = np.where(concave, -(hxx * gy - hxy * gx) / det, 0.05 * np.sign(gy))
            sx = np.where(concave, -(hyy * gx - hxy * gy) / det, 0.05 * np.sign(gx))
        sy = np.clip(np.nan_to_num(sy), -0.25, 0.25)
        sx = np.clip(np.nan_to_num(sx), -0.25, 0.25)
        drow = np.clip(drow + sy, -1.0, 1.0)
        dcol = np.clip(dcol + sx, -1.0, 1.0)
    return drow, dcol
