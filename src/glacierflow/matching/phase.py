"""Phase correlation of many equal-sized windows at once, with sub-pixel peaks from the phase.

The cross-power spectrum of two windows, normalised to unit magnitude, is a pure phase ramp for a
pure translation; its inverse transform is a sharp peak at the displacement (Kuglin & Hines
1975). Whitening the spectrum makes the peak sharp and independent of contrast, but gives every
frequency the same weight: the high ones, where the image holds mostly noise and aliasing, are
masked with a radial raised-cosine weight, as COSI-Corr masks its noisy components (Leprince et
al. 2007). Windows are apodised with a raised-cosine (Tukey) taper so that their borders do not
correlate with each other.

Two stages per node:

1. *Integer search*: windows of ``chip_px + 2 * search_px`` in both images, the secondary one
   centred on the node's search centre. Their correlation surface, cropped to shifts
   ``-search_px..search_px``, goes through the shared peak location of :mod:`.core`.
2. *Precision*: windows of ``chip_px``, the secondary one moved by the integer peak, so that the
   residual is below a pixel, where the stationary taper's pull towards zero is smallest. The
   sub-pixel offset is the maximum of the band-limited (trigonometric) interpolation of the
   masked cross-power spectrum, found by Newton steps: an upsampled DFT (Guizar-Sicairos et al.
   2008) taken to the limit, which is also the weighted least-squares fit of a phase plane to
   the spectrum of Leprince et al. (2007). A second pass moves the secondary window's taper
   with the measured fraction, so that both tapered windows hold the same content, and the
   remaining bias of the taper vanishes.

Phase correlation has no exact form with missing pixels: zero weights cut the gaps out of each
window, but the gaps' own pattern then sits in the spectrum, and two dates' SLC-off stripes
correlate with each other. :func:`cross_power` accepts validity masks (zero weight, means over
valid pixels only), but :func:`glacierflow.matching.match` sends nodes with nodata in their chip
or window to the masked NCC instead.

References
----------
.. [1] C. D. Kuglin and D. C. Hines, "The phase correlation image alignment method", IEEE
   Conference on Cybernetics and Society, 163-165, 1975.
.. [2] S. Leprince, S. Barbot, F. Ayoub and J.-P. Avouac, "Automatic and precise
   orthorectification, coregistration, and subpixel correlation of satellite images,
   application to ground deformation measurements", IEEE Transactions on Geoscience and Remote
   Sensing 45(6), 1529-1558, 2007. doi:10.1109/TGRS.2006.888937
.. [3] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
   registration algorithms", Optics Letters 33(2), 156-158, 2008. doi:10.1364/OL.33.000156
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

#: Share of each window border inside the raised-cosine taper (0: box, 1: Hann).
TAPER_FRACTION = 0.5
#: Radial frequency (cycles per pixel) up to which the cross-power spectrum keeps full weight;
#: the weight then falls as a raised cosine to zero at the Nyquist frequency, 0.5.
PASS_CYCLES_PER_PX = 0.2


def tukey(n: int, shift_px: np.ndarray | float = 0.0, fraction: float = TAPER_FRACTION):
    """Raised-cosine (Tukey) taper of ``n`` samples, optionally moved by ``shift_px``.

    Parameters
    ----------
    n : int
        Window length, in pixels.
    shift_px : float or ndarray, shape (N,)
        Sub-pixel displacement of the taper (positive: towards higher indices).
    fraction : float
        Share of the window in the two cosine flanks together.

    Returns
    -------
    ndarray, shape (n,) or (N, n), float64
        Weights in [0, 1].
    """
    shift = np.asarray(shift_px, dtype=np.float64)
    x = np.arange(n) - shift[..., None]  # sample position relative to the moved window
    edge = max(fraction * n / 2.0, 1e-9)
    # Distance into the window from the nearer border (borders at -0.5 and n - 0.5).
    d = np.minimum(x + 0.5, n - 0.5 - x)
    w = 0.5 - 0.5 * np.cos(np.pi * np.clip(d / edge, 0.0, 1.0))
    return w


def frequency_weights(
    n: int, pass_cpp: float = PASS_CYCLES_PER_PX, full: bool = False
) -> np.ndarray:
    """Radial raised-cosine low-pass weights for the spectrum of an ``(n, n)`` window.

    Full weight up to ``pass_cpp`` cycles per pixel, falling to zero at the Nyquist frequency;
    the corners beyond Nyquist get zero weight as well. Layout of ``scipy.fft.rfft2`` unless
    ``full`` (then ``fft2``).
    """
    fy = sfft.fftfreq(n)[:, None]
    fx = (sfft.fftfreq(n) if full else sfft.rfftfreq(n))[None, :]
    r = np.hypot(fy, fx)
    t = np.clip((r - pass_cpp) / (0.5 - pass_cpp), 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


def _hermitian_weights(n: int) -> np.ndarray:
    """Multiplicity of each rfft column in the full spectrum (1 for DC and Nyquist, else 2)."""
    m = np.full(n // 2 + 1, 2.0)
    m[0] = 1.0
    if n % 2 == 0:
        m[-1] = 1.0
    return m


def cross_power(
    ref_windows: np.ndarray,
    sec_windows: np.ndarray,
    ref_valid: np.ndarray | None = None,
    sec_valid: np.ndarray | None = None,
    sec_taper_shift_px: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masked, normalised cross-power spectra of equal-sized windows.

    Parameters
    ----------
    ref_windows, sec_windows : ndarray, shape (N, n, n)
        Windows of the reference and the secondary image (real or complex).
    ref_valid, sec_valid : ndarray of bool, shape (N, n, n), optional
        Pixel validity; invalid pixels get zero weight.
    sec_taper_shift_px : (dy, dx) of ndarray, shape (N,), optional
        Move the secondary window's taper by these fractions of a pixel, so that it follows the
        content (removes the taper's bias once the offset is nearly known).

    Returns
    -------
    spectra : ndarray, shape (N, n, n) or (N, n, n // 2 + 1), complex64
        ``conj(R) * S / |R * S|`` times the frequency weights (rfft layout for real windows).
        Its inverse transform peaks at the displacement from reference to secondary.
    weight_sum : ndarray, shape (N,)
        Sum of the frequency weights over the full spectrum: the value of a perfect peak.
    """
    n_nodes, n, m = ref_windows.shape
    if sec_windows.shape != ref_windows.shape or n != m:
        raise ValueError(
            f"windows must be square and of one shape, got {ref_windows.shape} and "
            f"{sec_windows.shape}"
        )
    complex_input = np.iscomplexobj(ref_windows) or np.iscomplexobj(sec_windows)
    taper = tukey(n)
    ref_w = (taper[:, None] * taper[None, :]).astype(np.float32)
    if sec_taper_shift_px is None:
        sec_w = ref_w
    else:
        ty = tukey(n, sec_taper_shift_px[0])
        tx = tukey(n, sec_taper_shift_px[1])
        sec_w = ty[:, :, None] * tx[:, None, :]
    if ref_valid is not None:
        ref_w = ref_w * ref_valid
    if sec_valid is not None:
        sec_w = sec_w * sec_valid
    a = _apodise(ref_windows, ref_w)
    b = _apodise(sec_windows, sec_w)
    if complex_input:
        fa, fb = sfft.fft2(a), sfft.fft2(b)
        weights = frequency_weights(n, full=True)
        wsum = float(weights.sum())
    else:
        fa, fb = sfft.rfft2(a), sfft.rfft2(b)
        weights = frequency_weights(n)
        wsum = float((weights * _hermitian_weights(n)[None, :]).sum())
    prod = np.conj(fa)
    prod *= fb
    mag = np.abs(prod)
    # A component with (almost) no energy in either window has a random phase: a floor relative
    # to the window's typical magnitude keeps it from counting as much as the real ones.
    floor = 1e-4 * mag.reshape(n_nodes, -1).mean(axis=1)[:, None, None] + 1e-30
    np.maximum(mag, floor, out=mag)
    np.divide(weights, mag, out=mag)
    prod *= mag
    return prod, np.full(n_nodes, wsum)


def _apodise(windows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Windows minus their weighted mean, times the weights (float32 or complex64).

    ``weights`` is (n, n), shared by every window, or (N, n, n).
    """
    weights = weights.astype(np.float32, copy=False)
    dtype = np.complex64 if np.iscomplexobj(windows) else np.float32
    w = windows.astype(dtype, copy=False)
    if weights.ndim == 2:
        wsum = np.full(w.shape[0], weights.sum())
        wmean = np.einsum("nij,ij->n", w, weights)
    else:
        wsum = weights.sum(axis=(1, 2))
        wmean = np.einsum("nij,nij->n", w, weights)
    mean = wmean / np.maximum(wsum, 1e-12)
    out = w - mean[:, None, None].astype(dtype)
    out *= weights
    return out


def surfaces(spectra: np.ndarray, weight_sum: np.ndarray, n: int, search_px: int) -> np.ndarray:
    """Correlation surfaces for shifts ``-search_px..search_px`` from cross-power spectra.

    Parameters
    ----------
    spectra : ndarray
        Output of :func:`cross_power` for windows of side ``n``.
    weight_sum : ndarray, shape (N,)
        Its weight sums; the surfaces are divided by them, so a perfect match peaks at 1.
    n : int
        Window side, in pixels.
    search_px : int
        Largest shift kept each way; needs ``2 * search_px < n``.

    Returns
    -------
    ndarray, shape (N, 2 * search_px + 1, 2 * search_px + 1), float32
        Element ``[k, S + dy, S + dx]`` is the correlation at an offset ``(dx, dy)``.
    """
    if 2 * search_px >= n:
        raise ValueError(f"windows of {n} px cannot hold shifts of +/-{search_px} px")
    if spectra.shape[-1] == n:
        full = np.real(sfft.ifft2(spectra))
    else:
        full = sfft.irfft2(spectra, s=(n, n))
    idx = np.arange(-search_px, search_px + 1) % n
    out = full[:, idx[:, None], idx[None, :]]
    out = out * (n * n / weight_sum)[:, None, None]
    return out.astype(np.float32)


def dft_peak(
    spectra: np.ndarray,
    weight_sum: np.ndarray,
    n: int,
    start_y: np.ndarray,
    start_x: np.ndarray,
    iterations: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum of the band-limited interpolation of each correlation surface, by Newton steps.

    The surface at a continuous offset ``(y, x)`` is ``Re sum_f Q(f) exp(2 pi i f . (y, x))``
    over the (masked) cross-power spectrum ``Q``: the exact interpolation of the sampled surface,
    which an upsampled DFT approximates on a finer and finer grid. Gradient and Hessian are
    analytic, so each step is a few small matrix products per node.

    Parameters
    ----------
    spectra : ndarray
        Output of :func:`cross_power` for windows of side ``n``.
    weight_sum : ndarray, shape (N,)
        Its weight sums (the surface value of a perfect match).
    n : int
        Window side, in pixels.
    start_y, start_x : ndarray, shape (N,)
        Starting offsets, pixels (within about a pixel of the peak).
    iterations : int
        Newton steps (each limited to 0.25 px).

    Returns
    -------
    dy_px, dx_px : ndarray, shape (N,)
        Offsets of the maximum, pixels, within +/-1.5 px of the start.
    peak : ndarray, shape (N,)
        Surface value there, divided by the weight sum (1 for a perfect match).
    """
    full = spectra.shape[-1] == n
    ay = (2j * np.pi * sfft.fftfreq(n)).astype(np.complex64)
    ax = (2j * np.pi * (sfft.fftfreq(n) if full else sfft.rfftfreq(n))).astype(np.complex64)
    q = spectra.astype(np.complex64)
    if not full:
        q = q * _hermitian_weights(n).astype(np.float32)
    y = np.asarray(start_y, dtype=np.float64).copy()
    x = np.asarray(start_x, dtype=np.float64).copy()
    y0, x0 = y.copy(), x.copy()
    powers = np.arange(3)
    for it in range(iterations + 1):
        ey = np.exp(ay[None, :] * y[:, None].astype(np.float32))  # (N, n)
        ex = np.exp(ax[None, :] * x[:, None].astype(np.float32))
        # Rows weighted by 1, 2 pi i fy, (2 pi i fy)^2; then the same for the columns: the 3 x 3
        # products hold the value, the gradient and the Hessian.
        rows = ey[:, None, :] * (ay[None, None, :] ** powers[None, :, None])
        cols = ex[:, None, :] * (ax[None, None, :] ** powers[None, :, None])
        z = np.real(np.matmul(np.matmul(rows, q), np.swapaxes(cols, 1, 2))).astype(np.float64)
        if it == iterations:
            break
        gy, gx = z[:, 1, 0], z[:, 0, 1]
        hyy, hxx, hxy = z[:, 2, 0], z[:, 0, 2], z[:, 1, 1]
        det = hyy * hxx - hxy * hxy
        concave = (hyy < 0) & (det > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            sy = np.where(concave, -(hxx * gy - hxy * gx) / det, 0.05 * np.sign(gy))
            sx = np.where(concave, -(hyy * gx - hxy * gy) / det, 0.05 * np.sign(gx))
        y = np.clip(y + np.clip(np.nan_to_num(sy), -0.25, 0.25), y0 - 1.5, y0 + 1.5)
        x = np.clip(x + np.clip(np.nan_to_num(sx), -0.25, 0.25), x0 - 1.5, x0 + 1.5)
    return y, x, z[:, 0, 0] / weight_sum
