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

import math

import cv2
import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view

from glacierflow.matching.stats import image_stats

#: Smallest fraction of a chip's valid pixels that must overlap valid search pixels for a shift
#: to count. Relative to the chip's own valid count, so that a chip crossed by a gap is not
#: penalised twice, yet high enough that a handful of pixels cannot fake a correlation peak.
#: Not higher: where both dates have SLC-off gaps 10-14 px wide, the true shift overlaps only
#: 25-50 % of the chip's valid pixels; at 0.5 it was cut out and every such node locked onto
#: the stripes instead (a surface with such holes is now rejected, see ``match_nodes``).
MIN_OVERLAP_FRACTION = 0.25


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


def _lattice_sums(a: np.ndarray, width: int, stride: int, axis: int) -> np.ndarray:
    """Sums of ``width`` consecutive entries along ``axis``, taken every ``stride`` entries."""
    a = np.moveaxis(a, axis, 0)
    n_out = (a.shape[0] - width) // stride + 1
    acc = None
    span = 1
    part = a
    rest = width
    # Binary decomposition of width: partial sums of length 1, 2, 4, ... by doubling.
    offset = 0
    while rest:
        if rest & 1:
            piece = part[offset : offset + (n_out - 1) * stride + 1 : stride]
            acc = piece.copy() if acc is None else acc + piece
            offset += span
        rest >>= 1
        if rest:
            part = part[:-span] + part[span:]
            span *= 2
    return np.moveaxis(acc, 0, axis)


def block_size_px(chip_px: int, step_px: int, search_px: int) -> int | None:
    """Block side for :func:`ncc_grid`, or None when one FFT per node is cheaper.

    Chips on a regular grid are unions of ``b x b`` blocks with ``b = gcd(chip_px, step_px)``; a
    block's correlation is shared by every chip that contains it. The choice compares the FFT
    work of both ways (``n log n`` per transform).
    """
    b = math.gcd(chip_px, step_px)
    per_node = _fft_work(chip_px + 2 * search_px)
    per_node_blocks = (step_px // b) ** 2 * _fft_work(b + 2 * search_px)
    return b if per_node_blocks < 0.8 * per_node else None


#: Measured costs of the NCC kernels on a laptop CPU (``benchmarks/speed.py --kernels`` prints
#: the crossover), in nanoseconds: the dense kernel per pixel and offset, the block-FFT kernel
#: (per block, margins of its 16 x 16-node tiles included) and one FFT per node per ``n log2 n``
#: of their transforms, and the finishing work (spread, numerator, layout) per element of a
#: correlation surface.
DENSE_NS, BLOCK_FFT_NS, NODE_FFT_NS, SURFACE_NS = 1.1, 0.45, 1.0, 4.0
#: The masked kernels: :func:`ncc_dense_masked` costs about ten dense passes per pixel and
#: offset (six products and box filters, and their samples) plus its float64 combination per
#: node and offset; the masked path per node six float64 correlations, per ``n log2 n`` of one
#: transform (measured on Landsat 7 SLC-off gaps at steps 2 and 8).
MASKED_BOXES, MASKED_NS, MASKED_FFT_NS = 10, 10.0, 10.0
#: Side, in nodes, of the tiles the block-FFT kernel works on (``MatchSettings.tile_nodes``).
GRID_TILE_SIDE = 16


def kernel_costs_ns(
    chip_px: int, step_px: int, search_px: int, reach_px: int = 0
) -> dict[str, float]:
    """Estimated cost per node of each NCC kernel, in nanoseconds.

    Parameters
    ----------
    chip_px, step_px, search_px : int
        Chip side, node spacing and search radius, in pixels.
    reach_px : int
        How far the search centres of a tile's nodes lie from the tile's middle centre, in
        pixels: the shared kernels (``"dense"``, ``"grid"``) then search ``search_px + reach_px``
        around the middle and each node keeps its own window; one FFT per node (``"nodes"``)
        searches each node's own window.

    Returns
    -------
    dict
        ``"nodes"`` and ``"dense"`` always, ``"grid"`` where shared blocks pay
        (:func:`block_size_px`); and for chips or windows with nodata, ``"masked_nodes"`` (per
        such node) and ``"masked_dense"`` (per node of the tile). What all kernels share (peak
        location, sub-pixel refinement) is left out.
    """
    k, s_ext = 2 * search_px + 1, search_px + reach_px
    k_ext = 2 * s_ext + 1
    wider = SURFACE_NS * (k_ext * k_ext - k * k)
    costs = {
        "nodes": NODE_FFT_NS * _fft_work(chip_px + 2 * search_px),
        "dense": DENSE_NS * step_px * step_px * k_ext * k_ext + wider,
    }
    costs["masked_dense"] = (MASKED_BOXES * DENSE_NS * step_px * step_px + MASKED_NS) * k_ext**2
    costs["masked_nodes"] = MASKED_FFT_NS * _fft_work(chip_px + 2 * search_px)
    b = block_size_px(chip_px, step_px, s_ext)
    if b is not None:
        # Blocks per node, the tile's margin included: ((side - 1) * step / b + chip / b)^2.
        side = GRID_TILE_SIDE
        blocks = ((side - 1) * (step_px // b) + chip_px // b) ** 2 / side**2
        costs["grid"] = BLOCK_FFT_NS * blocks * _fft_work(b + 2 * s_ext) + wider
    return costs


def dense_is_faster(chip_px: int, step_px: int, search_px: int) -> bool:
    """Whether :func:`ncc_dense` beats the FFT kernels for this grid density.

    By :func:`kernel_costs_ns`: the dense kernel costs about ``step_px**2 * (2 search_px + 1)**2``
    multiply-adds per node, the FFT kernels about one block FFT per node. The crossover for
    32 px chips and a 16 px search lies between steps 4 and 6 px.
    """
    costs = kernel_costs_ns(chip_px, step_px, search_px)
    return costs["dense"] < min(v for key, v in costs.items() if key in ("nodes", "grid"))


def _fft_work(p: int) -> float:
    n = sfft.next_fast_len(p, real=True) ** 2
    return n * math.log2(n)


def ncc_grid(
    ref: PreparedImage,
    sec: PreparedImage,
    ref_tab: SumTables,
    sec_tab: SumTables,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    chip_px: int,
    search_px: int,
    block_px: int,
    win_offset_px: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """NCC surfaces of a rectangular tile of nodes from shared block correlations.

    Every chip is cut into ``block_px`` blocks on the node lattice; the correlation of each block
    with its search window is computed once (one small FFT) and the chip's numerator is the sum
    of its blocks' correlations, moving sums over the block lattice. To keep the float32 FFTs
    exact enough, blocks and windows are taken less their means over the tile; each chip's own
    mean is put back in float64 from summed-area tables of the window.

    Parameters
    ----------
    ref, sec : PreparedImage
        Reference and secondary images; every chip and window must be free of invalid pixels
        for the result to be meaningful (callers recompute the others with the masked path).
    ref_tab, sec_tab : SumTables
        Their summed-area tables, covering every chip and search window of the tile.
    rows_px : ndarray of int, shape (NY,)
        Node rows of the tile, evenly spaced.
    cols_px : ndarray of int, shape (NX,)
        Node columns of the tile, evenly spaced with the same step.
    chip_px, search_px : int
        Chip side and search radius, in pixels.
    block_px : int
        Block side; divides ``chip_px`` and the node step.
    win_offset_px : (int, int)
        Search centre of every node of the tile, relative to the node (rows, columns).

    Returns
    -------
    ndarray, shape (NY * NX, 2 * search_px + 1, 2 * search_px + 1), float32
        Surfaces of the nodes in row-major order.
    """

    c, s, b = chip_px, search_px, block_px
    oy, ox = (int(v) for v in win_offset_px)
    half = c // 2
    k = 2 * s + 1
    step = _tile_step(rows_px, cols_px, b)
    st, nb = step // b, c // b
    nu = (rows_px.size - 1) * st + nb
    nv = (cols_px.size - 1) * st + nb
    br = rows_px[0] - half + b * np.arange(nu)  # block first rows
    bc = cols_px[0] - half + b * np.arange(nv)
    p0 = b + 2 * s
    shape = (sfft.next_fast_len(p0, real=True),) * 2
    # Blocks of the reference less its mean over the tile ``m``, windows less the secondary's
    # ``m_w``: sum (t - t_mean) w is unchanged by constants taken off t and w (they are put back
    # per node in float64), and the smaller values keep the float32 FFTs accurate.
    r0, c0 = int(br[0]) - s + oy, int(bc[0]) - s + ox
    r1, c1 = int(br[-1]) + b + s + oy, int(bc[-1]) + b + s + ox
    m = float(ref.image[br[0] : br[-1] + b, bc[0] : bc[-1] + b].mean(dtype=np.float64))
    m_w = float(sec.image[r0:r1, c0:c1].mean(dtype=np.float64))
    blocks = sliding_window_view(ref.image, (b, b))[br[:, None], bc[None, :]] - np.float32(m)
    wins = np.zeros((nu, nv, *shape), dtype=np.float32)
    wins[:, :, :p0, :p0] = sliding_window_view(sec.image, (p0, p0))[
        (br - s + oy)[:, None], (bc - s + ox)[None, :]
    ]
    wins[:, :, :p0, :p0] -= np.float32(m_w)
    # The block spectrum: only its first b rows are non-zero, so transform those rows first
    # and let the column transform pad (about a third less work than a padded 2-D FFT).
    spec = sfft.fft(sfft.rfft(blocks, n=shape[1], axis=-1), n=shape[0], axis=-2)
    np.conjugate(spec, out=spec)
    spec *= sfft.rfft2(wins)
    del wins
    # Inverse transform of the rows that hold shifts 0..K-1 only.
    f = sfft.irfft(sfft.ifft(spec, axis=-2)[:, :, :k], n=shape[1], axis=-1)[..., :k]
    del spec
    # A chip's numerator is the sum of its nb x nb blocks: moving sums over the block lattice
    # by pairwise doubling (log2(nb) passes per axis when nb is a power of two).
    raw = _lattice_sums(_lattice_sums(f, nb, st, axis=0), nb, st, axis=1)
    del f
    return _finish_tile(raw, m, m_w, ref_tab, sec_tab, rows_px, cols_px, c, s, step, (oy, ox))


def _tile_step(rows_px: np.ndarray, cols_px: np.ndarray, default: int) -> int:
    """Node spacing of a tile, in pixels (``default`` for a tile of one node)."""
    if rows_px.size > 1:
        return int(rows_px[1] - rows_px[0])
    return int(cols_px[1] - cols_px[0]) if cols_px.size > 1 else default


def _finish_tile(
    raw: np.ndarray,
    m: float,
    m_w: float,
    ref_tab: SumTables,
    sec_tab: SumTables,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    chip_px: int,
    search_px: int,
    step_px: int,
    win_offset_px: tuple[int, int],
) -> np.ndarray:
    """Correlation coefficients of a tile from its raw products, in place.

    ``raw`` holds, for every node and shift, the sum over the chip of ``(t - m) * (w - m_w)``:
    the reference and the window less constants (their means over the tile, which keep the
    float32 sums small), shape (NY, NX, K, K) or anything that reshapes to it, float32.

    Returns
    -------
    ndarray, shape (NY * NX, K, K), float32
    """
    c, s, step = chip_px, search_px, step_px
    oy, ox = win_offset_px
    half, k = c // 2, 2 * s + 1
    ny, nx = rows_px.size, cols_px.size
    n_px = c * c
    rr, cc = np.meshgrid(rows_px, cols_px, indexing="ij")
    top, left = rr.ravel() - half, cc.ravel() - half
    sum_t = ref_tab.box_sums(top, left, c)
    energy = ref_tab.box_sums(top, left, c, squared=True) - sum_t * sum_t / n_px
    # Window sums under the chip at every shift, for the whole tile at once: each node's are a
    # strided view of these dense maps.
    t0, l0 = top[0] - s + oy, left[0] - s + ox
    rows_d, cols_d = (ny - 1) * step + k, (nx - 1) * step + k
    s1 = sec_tab.box_region(t0, l0, rows_d, cols_d, c)
    s2 = sec_tab.box_region(t0, l0, rows_d, cols_d, c, squared=True)
    inv_w = _inverse_spread(s2 - s1 * (s1 / n_px), n_px)
    s1_w = (s1 - n_px * m_w).astype(raw.dtype)
    s1v, inv_wv = (sliding_window_view(a, (k, k))[::step, ::step] for a in (s1_w, inv_w))
    # Numerator: sum (t - mean_t) w = sum (t - mean_t) (w - m_w)
    #                               = raw + (m - mean_t) * (sum of w - m_w under the chip).
    raw = raw.reshape(ny, nx, k, k)
    dm = (m - sum_t / n_px).astype(raw.dtype).reshape(ny, nx)
    raw += dm[:, :, None, None] * s1v
    raw = raw.astype(np.float32, copy=False)
    inv_t = _inverse_spread(energy, n_px).reshape(ny, nx)
    raw *= inv_t[:, :, None, None] * inv_wv
    return raw.reshape(-1, k, k)


def ncc_dense(
    ref: PreparedImage,
    sec: PreparedImage,
    ref_tab: SumTables,
    sec_tab: SumTables,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    chip_px: int,
    search_px: int,
    win_offset_px: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """NCC surfaces of a dense rectangular tile of nodes by box-filtered products per offset.

    For each of the ``(2 S + 1)^2`` offsets, the reference is multiplied by the shifted
    secondary over the whole tile and the products are summed over every chip with a box
    filter (OpenCV's running sums, accumulated in float64). The cost grows with pixels times
    offsets, not with nodes: on dense grids, where neighbouring chips share almost all their
    pixels, it is far cheaper than one FFT per node or per block (see :func:`dense_is_faster`).

    Parameters and returns are those of :func:`ncc_grid`, without the block size.
    """
    c, s = chip_px, search_px
    oy, ox = (int(v) for v in win_offset_px)
    half, k = c // 2, 2 * s + 1
    ny, nx = rows_px.size, cols_px.size
    step = _tile_step(rows_px, cols_px, 1)
    top0, left0 = int(rows_px[0]) - half, int(cols_px[0]) - half
    h, w = (ny - 1) * step + c, (nx - 1) * step + c
    # The reference less its mean over the tile: smaller products, exact enough in float32.
    m = float(ref.image[top0 : top0 + h, left0 : left0 + w].mean(dtype=np.float64))
    a = ref.image[top0 : top0 + h, left0 : left0 + w] - np.float32(m)
    t0, l0 = top0 - s + oy, left0 - s + ox
    bsec = sec.image[t0 : t0 + h + k - 1, l0 : l0 + w + k - 1]
    m_w = float(bsec.mean(dtype=np.float64))
    bsec = bsec - np.float32(m_w)
    raw = np.empty((k, k, ny, nx), dtype=np.float64)
    prod = np.empty((h, w), dtype=np.float32)
    box = np.empty((h, w), dtype=np.float64)
    for sy in range(k):
        for sx in range(k):
            cv2.multiply(a, bsec[sy : sy + h, sx : sx + w], dst=prod)
            _box_sums_px(prod, c, box)
            raw[sy, sx] = box[: h - c + 1 : step, : w - c + 1 : step]
    # Offsets-major to nodes-major (OpenCV's cache-blocked transpose: many times numpy's).
    raw = cv2.transpose(raw.reshape(k * k, ny * nx))
    return _finish_tile(raw, m, m_w, ref_tab, sec_tab, rows_px, cols_px, c, s, step, (oy, ox))


def _box_sums_px(src: np.ndarray, size_px: int, out: np.ndarray | None = None) -> np.ndarray:
    """Sums of ``src`` (float32) over every ``size_px`` square, in float64 (OpenCV's running
    sums); element ``[i, j]`` is the square whose first pixel is ``(i, j)`` (zeros past the
    edge)."""
    return cv2.boxFilter(
        src,
        cv2.CV_64F,
        (size_px, size_px),
        dst=out,
        anchor=(0, 0),
        normalize=False,
        borderType=cv2.BORDER_CONSTANT,
    )


def ncc_dense_masked(
    ref: PreparedImage,
    sec: PreparedImage,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    chip_px: int,
    search_px: int,
    win_offset_px: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Masked NCC surfaces of a dense rectangular tile of nodes, by box-filtered products.

    The masked formulation of :func:`ncc_surfaces` (Padfield 2012: every sum over the pixels
    valid in both chip and window) computed like :func:`ncc_dense`: for each offset, six
    products of the tile (validity and values of both images) summed over every chip with a
    box filter. About six times the dense kernel's work, and many times cheaper than six FFTs
    per node where most chips hold nodata (Landsat 7 SLC-off gaps) on a dense grid.

    Returns
    -------
    ndarray, shape (NY * NX, 2 * search_px + 1, 2 * search_px + 1), float32
        As :func:`ncc_surfaces`: NaN where too little valid data overlaps or a side is flat.
    """
    c, s = chip_px, search_px
    oy, ox = (int(v) for v in win_offset_px)
    half, k = c // 2, 2 * s + 1
    ny, nx = rows_px.size, cols_px.size
    step = _tile_step(rows_px, cols_px, 1)
    top0, left0 = int(rows_px[0]) - half, int(cols_px[0]) - half
    h, w = (ny - 1) * step + c, (nx - 1) * step + c
    t0, l0 = top0 - s + oy, left0 - s + ox

    def centred(img: PreparedImage, r0: int, c0: int, rows: int, cols: int):
        ok = img.valid[r0 : r0 + rows, c0 : c0 + cols]
        vals = img.image[r0 : r0 + rows, c0 : c0 + cols]
        mean = float(vals[ok].mean(dtype=np.float64)) if ok.any() else 0.0
        a = np.where(ok, vals - np.float32(mean), np.float32(0.0))
        return ok.astype(np.float32), a, a * a

    mt, a, a2 = centred(ref, top0, left0, h, w)
    mw, b, b2 = centred(sec, t0, l0, h + k - 1, w + k - 1)
    prod = np.empty((h, w), dtype=np.float32)
    box = np.empty((h, w), dtype=np.float64)
    sample = (slice(0, h - c + 1, step), slice(0, w - c + 1, step))

    def box_sum(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        cv2.multiply(x, y, dst=prod)
        _box_sums_px(prod, c, box)
        return box[sample].copy()

    chip_count = _box_sums_px(mt, c)[sample]
    need = np.maximum(MIN_OVERLAP_FRACTION * chip_count, 16.0)
    out = np.empty((k, k, ny, nx), dtype=np.float32)
    for sy in range(k):
        for sx in range(k):
            win = (slice(sy, sy + h), slice(sx, sx + w))
            mwd, bd, b2d = mw[win], b[win], b2[win]
            cnt = np.rint(box_sum(mt, mwd))
            st, sw = box_sum(a, mwd), box_sum(mt, bd)
            st2, sw2, stw = box_sum(a2, mwd), box_sum(mt, b2d), box_sum(a, bd)
            enough = cnt >= need
            safe = np.where(enough, cnt, 1.0)
            vt = st2 - st * st / safe
            vw = sw2 - sw * sw / safe
            floor = 1e-6 * safe
            ok = enough & (vt > floor) & (vw > floor)
            with np.errstate(invalid="ignore", divide="ignore"):
                r = (stw - st * sw / safe) / np.sqrt(np.where(ok, vt * vw, 1.0))
            out[sy, sx] = np.where(ok, np.clip(r, -1.0, 1.0), np.nan)
    return cv2.transpose(out.reshape(k * k, ny * nx)).reshape(-1, k, k)


def _inverse_spread(energy: np.ndarray, n_px: int) -> np.ndarray:
    """``1 / sqrt(energy)`` in float32, NaN where the energy is that of a flat patch.

    A flat chip or window has no defined correlation: a floor relative to the pixel count marks
    those, and every correlation they take part in becomes NaN (a textureless patch must not be
    matched).
    """
    e = np.asarray(energy, dtype=np.float64)
    floor = 1e-6 * n_px
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(e > floor, 1.0 / np.sqrt(np.maximum(e, floor)), np.nan)
    return out.astype(np.float32)


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
