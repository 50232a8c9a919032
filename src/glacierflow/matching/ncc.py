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

import sys
import threading

import cv2
import numpy as np
import scipy.fft as sfft

from glacierflow.matching.stats import image_stats

#: Smallest fraction of a chip's valid pixels that must overlap valid search pixels for a shift
#: to count. Relative to the chip's own valid count, so that a chip crossed by a gap is not
#: penalised twice, yet high enough that a handful of pixels cannot fake a correlation peak.
#: Not higher: where both dates have SLC-off gaps 10-14 px wide, the true shift overlaps only
#: 25-50 % of the chip's valid pixels; at 0.5 it was cut out and every such node locked onto
#: the stripes instead (a surface with such holes is now rejected, see ``match_nodes``).
MIN_OVERLAP_FRACTION = 0.25


#: Correlation values (nodes times shifts) a process computes with the numpy kernels before it
#: loads the compiled loops: 30,000 nodes of a +/-16 px search. numba's import and cached code
#: cost about half a second of CPU, which a smaller run would not win back (the loops save
#: about 30 ns per correlation value on a busy 2-core machine).
COMPILE_AFTER_VALUES = 30_000 * 33 * 33
_LOADING: list[threading.Thread] = []
_LOADING_LOCK = threading.Lock()
_VALUES_SEEN = [0]


def compiled_loops(values: int = 0):
    """The compiled loops of the NCC kernels (:mod:`glacierflow.matching.fused`), or None.

    Until they are loaded the kernels take their numpy form, which gives the same values bit
    for bit. Once this process has computed :data:`COMPILE_AFTER_VALUES` correlation values
    (``values`` per call: the peak search counts each tile's surfaces), a background thread
    imports numba and loads the
    loops (a few tenths of a second; seconds on the very first run, which compiles), and every
    call after that returns them: a small run never pays for numba, a large one switches
    after its first tiles. A process that imported the module has them at once; where numba
    is missing this stays None.
    """
    mod = sys.modules.get("glacierflow.matching.fused")
    if mod is not None and getattr(mod, "READY", False):
        return mod if mod.AVAILABLE else None
    with _LOADING_LOCK:
        _VALUES_SEEN[0] += values
        if not _LOADING and _VALUES_SEEN[0] >= COMPILE_AFTER_VALUES:
            thread = threading.Thread(target=_load_compiled, name="glacierflow-numba", daemon=True)
            _LOADING.append(thread)
            thread.start()
    return None


def _load_compiled() -> None:
    import glacierflow.matching.fused  # noqa: F401  (its import loads the loops)


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
    """An image made ready for many overlapping chips and search windows.

    A real image is normalised once (zero mean, unit spread over its valid pixels) and rounded to
    float32, the precision the FFTs work in; a complex one (an orientation image) is kept as
    complex64. Summed-area tables for any part of it come from :meth:`tables`; they are built per
    tile, where they fit in the CPU cache.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The image.
    valid : ndarray of bool, optional
        Pixel validity; invalid pixels are set to zero after normalisation.
    stats : tuple of float, optional
        Mean and standard deviation to normalise with (those of the whole image when this is
        a tile of it); by default the image's own (:func:`glacierflow.matching.stats.image_stats`).
    """

    def __init__(
        self,
        image: np.ndarray,
        valid: np.ndarray | None = None,
        stats: tuple[float, float] | None = None,
    ) -> None:
        img = np.asarray(image)
        finite = np.isfinite(img)
        ok = finite if valid is None else (np.asarray(valid, bool) & finite)
        if np.iscomplexobj(img):
            self.image = np.where(ok, img, 0).astype(np.complex64)
        else:
            # Statistics strip by strip (see matching.stats), or given: a tile of a larger image
            # is then normalised exactly as the whole image would be.
            mean, std = stats if stats is not None else image_stats(img, ok)
            norm = (img - mean) / (std if std > 0 else 1.0)
            self.image = np.where(ok, norm, 0.0).astype(np.float32)
        self.valid = ok
        self.shape = ok.shape
        self.all_valid = bool(ok.all())

    def crop(self, top: int, left: int, rows: int, cols: int) -> PreparedImage:
        """The rectangle ``[top, top+rows) x [left, left+cols)`` as a prepared image of its own
        (already normalised: the same pixels, so the same correlations, in its coordinates)."""
        part = object.__new__(PreparedImage)
        part.image = self.image[top : top + rows, left : left + cols]
        part.valid = self.valid[top : top + rows, left : left + cols]
        part.shape = part.valid.shape
        part.all_valid = bool(part.valid.all())
        return part

    def tables(self, top: int, left: int, rows: int, cols: int, sums: bool = True) -> SumTables:
        """Summed-area tables of the rectangle ``[top, top+rows) x [left, left+cols)``.

        ``sums=False`` builds only the table of invalid pixels (all that correlators other than
        NCC need).
        """
        return SumTables(self, top, left, rows, cols, sums)


class SumTables:
    """Summed-area tables, in float64, of part of a :class:`PreparedImage`.

    They hold the float32 image values, their squares and the invalid pixels, so that the sum,
    sum of squares and number of invalid pixels of any square inside the part take four
    look-ups. Coordinates passed to the methods are those of the whole image.
    """

    def __init__(
        self, image: PreparedImage, top: int, left: int, rows: int, cols: int, sums: bool = True
    ) -> None:
        self.top, self.left = top, left
        part = image.image[top : top + rows, left : left + cols]
        if sums:
            # OpenCV sums float32 values and their squares in float64: the same tables as
            # cumulative sums in numpy, bit for bit, several times faster.
            self._s1, self._s2 = cv2.integral2(part, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
        # Counts of invalid pixels: skipped (all zero) for the common fully valid image.
        self._bad = (
            None
            if image.all_valid
            else cv2.integral(
                (~image.valid[top : top + rows, left : left + cols]).view(np.uint8),
                sdepth=cv2.CV_32S,
            )
        )

    def box_sums(
        self, top: np.ndarray, left: np.ndarray, size_px: int, squared: bool = False
    ) -> np.ndarray:
        """Sum of the (squared) image over ``size_px`` squares with first pixel ``(top, left)``.

        ``top`` and ``left`` broadcast against each other; the result has their broadcast shape.
        """
        t = self._s2 if squared else self._s1
        return _rect(t, top - self.top, left - self.left, size_px)

    def invalid_count(self, top: np.ndarray, left: np.ndarray, size_px: int) -> np.ndarray:
        """Invalid pixels in each ``size_px`` square with first pixel ``(top, left)``."""
        if self._bad is None:
            return np.zeros(np.broadcast(top, left).shape, dtype=np.int64)
        return np.rint(_rect(self._bad, top - self.top, left - self.left, size_px)).astype(np.int64)

    def box_region(
        self, top: int, left: int, rows: int, cols: int, size_px: int, squared: bool = False
    ) -> np.ndarray:
        """Dense box sums for first pixels ``top..top+rows-1`` x ``left..left+cols-1``.

        Four slices of the summed-area table: far cheaper than gathering the same values.
        """
        t = self._s2 if squared else self._s1
        s = size_px
        r0, c0 = top - self.top, left - self.left
        return (
            t[r0 + s : r0 + s + rows, c0 + s : c0 + s + cols]
            - t[r0 : r0 + rows, c0 + s : c0 + s + cols]
            - t[r0 + s : r0 + s + rows, c0 : c0 + cols]
            + t[r0 : r0 + rows, c0 : c0 + cols]
        )


def _rect(table: np.ndarray, top: np.ndarray, left: np.ndarray, size_px: int) -> np.ndarray:
    s = size_px
    return table[top + s, left + s] - table[top, left + s] - table[top + s, left] + table[top, left]


def _normalise(
    num: np.ndarray, chip_energy: np.ndarray, s1: np.ndarray, s2: np.ndarray, n_px: int
) -> np.ndarray:
    """Correlation coefficient from the numerator and the window sums under the chip.

    ``chip_energy`` is the chip's sum of squared deviations, shape (N,); ``s1``/``s2`` the sum and
    sum of squares of the window under the chip at every shift, shape (N, K, K).
    """
    # The differences cancel (sums of squares minus squared sums): take them in float64, then
    # finish in float32, which holds a correlation coefficient to far better than needed.
    w_energy = (s2 - s1 * (s1 / n_px)).astype(np.float32)
    e = np.maximum(chip_energy, 0.0).astype(np.float32)[:, None, None]
    # A flat chip or window has no defined correlation: a floor relative to the energies marks
    # those shifts, which become NaN (a textureless patch must not be matched).
    floor = np.float32(1e-6 * n_px)
    flat = (w_energy <= floor) | (e <= floor)
    np.maximum(w_energy, floor, out=w_energy)
    w_energy *= e
    np.sqrt(w_energy, out=w_energy)
    r = num.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # flat shifts, set to NaN next
        r /= w_energy
    r[flat] = np.nan
    return np.clip(r, -1.0, 1.0, out=r)


def ncc_nodes(
    ref: PreparedImage,
    sec: PreparedImage,
    ref_tab: SumTables,
    sec_tab: SumTables,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    chip_px: int,
    search_px: int,
    win_rows_px: np.ndarray | None = None,
    win_cols_px: np.ndarray | None = None,
) -> np.ndarray:
    """NCC surfaces of nodes whose chips and windows hold no invalid pixel, one FFT per node.

    Parameters
    ----------
    ref, sec : PreparedImage
        Reference and secondary images.
    ref_tab, sec_tab : SumTables
        Their summed-area tables, covering every chip and search window.
    rows_px, cols_px : ndarray of int, shape (N,)
        Node centres.
    chip_px, search_px : int
        Chip side and search radius, in pixels.
    win_rows_px, win_cols_px : ndarray of int, shape (N,), optional
        Centres of the search windows (the search centres of a guided search); default: the
        nodes.

    Returns
    -------
    ndarray, shape (N, 2 * search_px + 1, 2 * search_px + 1), float32
        Element ``[n, S + dy, S + dx]`` is the correlation at an offset ``(dx, dy)`` from the
        window centre.
    """
    from glacierflow.matching.grid import extract_chips

    wr = rows_px if win_rows_px is None else win_rows_px
    wc = cols_px if win_cols_px is None else win_cols_px
    c, s = chip_px, search_px
    half = c // 2
    k = 2 * s + 1
    p = c + 2 * s
    shape = (sfft.next_fast_len(p, real=True),) * 2
    n = rows_px.size
    top, left = rows_px - half, cols_px - half
    sum_t = ref_tab.box_sums(top, left, c)
    energy = ref_tab.box_sums(top, left, c, squared=True) - sum_t * sum_t / (c * c)
    chips = np.zeros((n, *shape), dtype=np.float32)
    chips[:, :c, :c] = extract_chips(ref.image, rows_px, cols_px, c, half)
    # Zero-mean chips: the window's local mean then cancels exactly in the numerator.
    chips[:, :c, :c] -= (sum_t / (c * c)).astype(np.float32)[:, None, None]
    wins = np.zeros((n, *shape), dtype=np.float32)
    wins[:, :p, :p] = extract_chips(sec.image, wr, wc, p, half + s)
    num = sfft.irfft2(np.conj(sfft.rfft2(chips)) * sfft.rfft2(wins), s=shape)[:, :k, :k].astype(
        np.float64
    )
    sh = np.arange(k)
    wt = (wr - half - s)[:, None, None] + sh[None, :, None]
    wl = (wc - half - s)[:, None, None] + sh[None, None, :]
    s1, s2 = sec_tab.box_sums(wt, wl, c), sec_tab.box_sums(wt, wl, c, True)
    return _normalise(num, energy, s1, s2, c * c)


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
