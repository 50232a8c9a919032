"""Masked normalized cross-correlation of many chips at once.

The correlation surface of every node is computed in the frequency domain, a batch of nodes per
FFT call. Chips and windows that hold no invalid pixel take the fast path: one product of spectra
for the numerator, and summed-area tables of the search window for the local energy under the
chip (Lewis 1995). Nodes that touch nodata use the masked formulation of Padfield (2012), in which
invalid pixels take no part in any sum, so that a Landsat 7 SLC-off gap or a scene edge neither
correlates with itself nor drags the normalisation.

References
----------
.. [1] J. P. Lewis, "Fast normalized cross-correlation", Vision Interface, 1995.
.. [2] D. Padfield, "Masked object registration in the Fourier domain", IEEE Transactions on
   Image Processing 21(5), 2706-2718, 2012. doi:10.1109/TIP.2011.2181402
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

#: Smallest fraction of a chip's valid pixels that must overlap valid search pixels for a shift
#: to count. Relative to the chip's own valid count, so that a chip crossed by a gap is not
#: penalised twice, yet high enough that a handful of pixels cannot fake a correlation peak.
MIN_OVERLAP_FRACTION = 0.5


def _box_sums(a: np.ndarray, size_px: int) -> np.ndarray:
    """Sums of ``a`` over every ``size_px`` square window, batched over the first axis."""
    c = np.zeros((a.shape[0], a.shape[1] + 1, a.shape[2] + 1), dtype=np.float64)
    np.cumsum(np.cumsum(a, axis=1, dtype=np.float64), axis=2, out=c[:, 1:, 1:])
    s = size_px
    return c[:, s:, s:] - c[:, :-s, s:] - c[:, s:, :-s] + c[:, :-s, :-s]


def _xcorr(
    chip_spec: np.ndarray, window: np.ndarray, shape: tuple[int, int], n_shift: int
) -> np.ndarray:
    """Linear cross-correlation for shifts 0..n_shift-1 from a chip spectrum and a window."""
    prod = np.conj(chip_spec) * sfft.rfft2(window, s=shape, axes=(-2, -1))
    return sfft.irfft2(prod, s=shape, axes=(-2, -1))[..., :n_shift, :n_shift]


def ncc_surfaces(
    chips: np.ndarray,
    windows: np.ndarray,
    chip_valid: np.ndarray | None = None,
    window_valid: np.ndarray | None = None,
) -> np.ndarray:
    """Normalized cross-correlation of each chip at every integer shift inside its window.

    Parameters
    ----------
    chips : ndarray, shape (N, C, C)
        Reference chips.
    windows : ndarray, shape (N, C + 2S, C + 2S)
        Search windows in the secondary image, centred on the same nodes.
    chip_valid, window_valid : ndarray of bool, optional
        Validity of every pixel. Where given, invalid pixels take no part in the correlation.

    Returns
    -------
    ndarray, shape (N, 2S + 1, 2S + 1), float32
        Correlation in [-1, 1]; element ``[n, S + dy, S + dx]`` is the correlation for an offset
        of ``dx`` pixels right and ``dy`` pixels down. NaN where the chip or the window has no
        contrast, or where too little valid data overlaps.
    """
    n, c, _ = chips.shape
    p = windows.shape[1]
    if windows.shape[1:] != (p, p) or p < c:
        raise ValueError(f"windows must be square and larger than chips, got {windows.shape}")
    n_shift = p - c + 1
    out = np.full((n, n_shift, n_shift), np.nan, dtype=np.float32)
    if n == 0:
        return out
    masked = np.zeros(n, dtype=bool)
    if chip_valid is not None:
        masked |= ~chip_valid.reshape(n, -1).all(axis=1)
    if window_valid is not None:
        masked |= ~window_valid.reshape(n, -1).all(axis=1)
    full = ~masked
    if full.any():
        out[full] = _ncc_full(chips[full], windows[full], n_shift)
    if masked.any():
        cv = np.ones(chips[masked].shape, bool) if chip_valid is None else chip_valid[masked]
        wv = np.ones(windows[masked].shape, bool) if window_valid is None else window_valid[masked]
        out[masked] = _ncc_masked(chips[masked], windows[masked], cv, wv, n_shift)
    return out


def _ncc_full(
    chips: np.ndarray,
    windows: np.ndarray,
    n_shift: int,
    s1: np.ndarray | None = None,
    s2: np.ndarray | None = None,
) -> np.ndarray:
    """Fast path: no invalid pixels anywhere in the batch.

    ``s1`` and ``s2`` are the sums of the window and of its square under the chip at every
    shift, shape (N, n_shift, n_shift); when omitted they are computed from ``windows``.
    Callers that match many overlapping nodes precompute them once for the whole image with
    summed-area tables (see :class:`PreparedImage`).
    """
    c = chips.shape[1]
    p = windows.shape[1]
    shape = (p, p)
    t = chips.astype(np.float64)
    t -= t.mean(axis=(1, 2), keepdims=True)
    t_energy = np.einsum("nij,nij->n", t, t)
    # The chip is zero-mean in float64 before it is rounded to float32, so the numerator does
    # not suffer from the window's local mean (it cancels exactly in the sum).
    t_spec = sfft.rfft2(t.astype(np.float32), s=shape, axes=(-2, -1))
    num = _xcorr(t_spec, windows.astype(np.float32, copy=False), shape, n_shift)
    if s1 is None or s2 is None:
        w = windows.astype(np.float64)
        s1 = _box_sums(w, c)
        s2 = _box_sums(w * w, c)
    w_energy = s2 - s1 * s1 / (c * c)
    denom = np.sqrt(t_energy[:, None, None] * np.clip(w_energy, 0.0, None))
    # A flat chip or window has no defined correlation: a floor relative to the chip's energy
    # marks those shifts, which become NaN.
    flat = denom <= 1e-6 * (t_energy[:, None, None] + 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / denom
    r[flat] = np.nan
    return np.clip(r, -1.0, 1.0).astype(np.float32)


class PreparedImage:
    """A secondary image made ready for many overlapping search windows.

    The image is normalised once (zero mean, unit spread over its valid pixels, float32), and
    summed-area tables give the sum and the sum of squares under a ``chip_px`` chip at every
    position, plus the count of invalid pixels in any rectangle, so that each node's
    normalisation costs a gather instead of a cumulative sum.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The secondary image.
    valid : ndarray of bool, optional
        Pixel validity; invalid pixels are set to zero after normalisation.
    chip_px : int
        Side of the reference chip, in pixels.
    """

    def __init__(self, image: np.ndarray, valid: np.ndarray | None, chip_px: int) -> None:
        img = np.asarray(image, dtype=np.float64)
        ok = np.isfinite(img) if valid is None else (valid & np.isfinite(img))
        vals = img[ok]
        mean = float(vals.mean()) if vals.size else 0.0
        std = float(vals.std()) if vals.size else 1.0
        norm = np.where(ok, (img - mean) / (std if std > 0 else 1.0), 0.0)
        self.chip_px = chip_px
        self.image = norm.astype(np.float32)
        self.valid = ok
        self.has_invalid = not bool(ok.all())
        self.box1 = _box_sums(norm[None], chip_px)[0]
        self.box2 = _box_sums((norm * norm)[None], chip_px)[0]
        bad = np.zeros((ok.shape[0] + 1, ok.shape[1] + 1), dtype=np.int64)
        np.cumsum(np.cumsum(~ok, axis=0), axis=1, out=bad[1:, 1:])
        self._bad = bad

    def invalid_count(self, top: np.ndarray, left: np.ndarray, size_px: int) -> np.ndarray:
        """Invalid pixels in each ``size_px`` square with first pixel ``(top, left)``."""
        b = self._bad
        s = size_px
        return b[top + s, left + s] - b[top, left + s] - b[top + s, left] + b[top, left]


def _ncc_masked(
    chips: np.ndarray,
    windows: np.ndarray,
    chip_valid: np.ndarray,
    window_valid: np.ndarray,
    n_shift: int,
) -> np.ndarray:
    """Masked path (Padfield 2012): six correlations of masked sums, in float64."""
    p = windows.shape[1]
    shape = (p, p)
    mt = chip_valid.astype(np.float64)
    mi = window_valid.astype(np.float64)
    t = np.where(chip_valid, chips, 0.0).astype(np.float64)
    w = np.where(window_valid, windows, 0.0).astype(np.float64)
    # Centre and scale with the valid pixels only, for numerical headroom.
    for a, m in ((t, mt), (w, mi)):
        cnt = np.maximum(m.sum(axis=(1, 2), keepdims=True), 1.0)
        mean = a.sum(axis=(1, 2), keepdims=True) / cnt
        a -= mean
        a *= m
        std = np.sqrt((a * a).sum(axis=(1, 2), keepdims=True) / cnt)
        a /= np.maximum(std, 1e-12)
    spec = sfft.rfft2(np.stack([mt, t, t * t]), s=shape, axes=(-2, -1))
    mt_s, t_s, t2_s = spec[0], spec[1], spec[2]
    win = sfft.rfft2(np.stack([mi, w, w * w]), s=shape, axes=(-2, -1))
    mi_s, w_s, w2_s = win[0], win[1], win[2]
    prods = np.stack(
        [
            np.conj(mt_s) * mi_s,  # overlap count
            np.conj(t_s) * mi_s,  # sum of chip values over the overlap
            np.conj(t2_s) * mi_s,  # sum of squared chip values
            np.conj(mt_s) * w_s,  # sum of window values under the valid chip
            np.conj(mt_s) * w2_s,  # sum of squared window values
            np.conj(t_s) * w_s,  # cross term
        ]
    )
    sums = sfft.irfft2(prods, s=shape, axes=(-2, -1))[..., :n_shift, :n_shift]
    cnt, st, st2, sw, sw2, stw = sums
    cnt = np.round(cnt)
    chip_count = mt.sum(axis=(1, 2))[:, None, None]
    enough = (cnt >= MIN_OVERLAP_FRACTION * chip_count) & (cnt >= 16)
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(enough, cnt, 1.0)
        num = stw - st * sw / safe
        vt = st2 - st * st / safe
        vw = sw2 - sw * sw / safe
        # Variances below a small fraction of the overlap count mean a flat, textureless overlap.
        floor = 1e-6 * safe
        ok = enough & (vt > floor) & (vw > floor)
        r = num / np.sqrt(np.where(ok, vt * vw, 1.0))
    r[~ok] = np.nan
    return np.clip(r, -1.0, 1.0).astype(np.float32)
