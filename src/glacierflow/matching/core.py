"""Area-based matching of a whole image pair on a regular node grid.

Arrays in, arrays out: no files, no CRS. Every correlator (:data:`METHODS`) turns a tile of nodes
into correlation surfaces, one per node over the integer offsets of its search window; the
shared peak location (:func:`locate_peaks`) then picks the integer peak, rejects peaks on the
border of the search range, refines the peak to sub-pixel precision (:mod:`.subpixel`, or the
phase-domain estimator of :mod:`.phase`) and rates it (:func:`peak_snr`).

Search windows need not be centred on their nodes. A *guided* search centres each node's window
on a per-node integer offset: from a prior velocity field (``prior_dx_px``/``prior_dy_px``), from
a first pass on images downsampled by two (``pyramid_levels``), or both. A node whose small chip
fails can be matched again with larger chips (``retry_chip_px``); ``MatchResult.chip_px`` says
which chip each offset came from.

Tiles of nodes are matched on worker processes (forked where the platform allows, so that the
prepared images are shared, not copied).
"""

from __future__ import annotations

import multiprocessing as mp
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from glacierflow.matching import phase
from glacierflow.matching.grid import NodeGrid, extract_chips, make_grid
from glacierflow.matching.ncc import (
    GRID_TILE_SIDE,
    PreparedImage,
    block_size_px,
    dense_is_faster,
    kernel_costs_ns,
    ncc_dense,
    ncc_dense_masked,
    ncc_grid,
    ncc_nodes,
    ncc_surfaces,
)
from glacierflow.matching.orientation import orientation_surfaces
from glacierflow.matching.stats import image_stats
from glacierflow.matching.subpixel import SUBPIXEL_METHODS, refine_peak

#: Correlators: masked normalized cross-correlation, phase correlation, orientation correlation.
METHODS = ("ncc", "phase", "orientation")
#: Ways of computing NCC surfaces (see ``MatchSettings.ncc_kernel``).
NCC_KERNELS = ("auto", "fft", "dense")


@dataclass(frozen=True)
class MatchSettings:
    """Parameters of area-based matching.

    Attributes
    ----------
    chip_px : int
        Side of the reference chip, in pixels.
    search_px : int
        Largest offset searched in each direction around the search centre, in pixels.
    step_px : int
        Node spacing, in pixels.
    method : str
        Correlator, one of :data:`METHODS`: ``"ncc"`` (masked normalized cross-correlation,
        :mod:`.ncc`), ``"phase"`` (phase correlation, :mod:`.phase`; a node with nodata in its
        chip or windows is matched by masked NCC instead, as phase correlation has no exact
        masked form) or ``"orientation"`` (orientation correlation, :mod:`.orientation`; real
        images are turned into orientation images first).
    subpixel : str
        Peak estimator, one of :data:`~glacierflow.matching.subpixel.SUBPIXEL_METHODS`;
        ``"dft"`` (maximum of the band-limited interpolation of the cross-power spectrum)
        needs ``method="phase"``.
    min_valid_fraction : float
        Smallest fraction of valid pixels in a reference chip for its node to be matched.
    batch_nodes : int, optional
        Nodes per tile, matched in one set of calls. By default (None) :attr:`tile_nodes` picks
        it for the NCC kernel in use: 256 for the FFT kernels (small tiles keep the working set
        in the CPU cache) and 4096 for the dense kernel (whose per-offset calls need large tiles
        to pay off), fewer (down to 1024) for searches wider than +/-16 px.
    ncc_kernel : str
        How NCC surfaces are computed, one of :data:`NCC_KERNELS`: ``"auto"`` picks by grid
        density (:func:`~glacierflow.matching.ncc.dense_is_faster`); ``"fft"`` uses block FFTs
        shared between neighbouring chips (one FFT per node where blocks do not pay);
        ``"dense"`` sums box-filtered products per offset. All give the same coefficients.
    workers : int
        Processes matching tiles in parallel.
    pyramid_levels : int
        1: one pass. 2 or more: a first pass on images downsampled by 2 (with the same chip,
        search and step in coarse pixels, so twice the chip footprint and twice the reach, on a
        grid twice as coarse; recursively for more levels) centres each node's search window
        on the median-filtered coarse offset.
    retry_chip_px : tuple of int
        Larger chips to try, in order, at nodes where the first chip fails (no offset, or an SNR
        below ``retry_min_snr``).
    retry_min_snr : float
        Peak SNR (see :func:`peak_snr`) below which a node counts as failed for the retry; 0
        retries only nodes without an offset.
    """

    chip_px: int = 32
    search_px: int = 16
    step_px: int = 8
    method: str = "ncc"
    subpixel: str = "lanczos"
    min_valid_fraction: float = 0.5
    batch_nodes: int | None = None
    ncc_kernel: str = "auto"
    workers: int = 1
    pyramid_levels: int = 1
    retry_chip_px: tuple[int, ...] = ()
    retry_min_snr: float = 0.0

    def __post_init__(self) -> None:
        for name in ("chip_px", "search_px", "step_px", "batch_nodes", "workers", "pyramid_levels"):
            value = getattr(self, name)
            if value is None and name == "batch_nodes":
                continue
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if self.chip_px < 4:
            raise ValueError(f"chip_px must be at least 4 pixels, got {self.chip_px}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.subpixel not in SUBPIXEL_METHODS:
            raise ValueError(f"subpixel must be one of {SUBPIXEL_METHODS}, got {self.subpixel!r}")
        if self.subpixel == "dft" and self.method != "phase":
            raise ValueError(
                f"subpixel='dft' works on cross-power spectra: use it with method='phase', not "
                f"{self.method!r} (or choose 'lanczos')"
            )
        if self.ncc_kernel not in NCC_KERNELS:
            raise ValueError(f"ncc_kernel must be one of {NCC_KERNELS}, got {self.ncc_kernel!r}")
        if not 0 < self.min_valid_fraction <= 1:
            raise ValueError("min_valid_fraction must be in (0, 1]")
        retry = tuple(self.retry_chip_px)
        object.__setattr__(self, "retry_chip_px", retry)
        for value in retry:
            if isinstance(value, bool) or int(value) != value or value < 4:
                raise ValueError(f"retry_chip_px must hold chip sizes of 4 px or more, got {retry}")
        if not self.retry_min_snr >= 0:
            raise ValueError(f"retry_min_snr must be zero or positive, got {self.retry_min_snr}")

    @property
    def dense(self) -> bool:
        """Whether NCC tiles use the dense kernel (box-filtered products per offset)."""
        if self.method != "ncc" or self.ncc_kernel == "fft":
            return False
        return self.ncc_kernel == "dense" or dense_is_faster(
            self.chip_px, self.step_px, self.search_px
        )

    @property
    def tile_nodes(self) -> int:
        """Nodes per internal tile: ``batch_nodes``, or the kernel's own default."""
        if self.batch_nodes is not None:
            return int(self.batch_nodes)
        if not self.dense:
            return GRID_TILE_SIDE**2
        # 64 x 64 nodes for a +/-16 px search (about 70 MB of surfaces), fewer for larger ones.
        k = 2 * self.search_px + 1
        return int(np.clip(4096 * (33 / k) ** 2, 1024, 4096))


@dataclass
class MatchResult:
    """Offsets and quality on the node grid; every array has shape ``grid.shape``.

    Attributes
    ----------
    grid : NodeGrid
        Node layout.
    dx_px, dy_px : ndarray of float32
        Offset from reference to secondary, right and down, in pixels; NaN where unmatched.
    corr : ndarray of float32
        Peak correlation: the normalized cross-correlation coefficient (``ncc``), the phase
        correlation peak over its ideal value (``phase``) or the mean cosine of the direction
        differences (``orientation``); 1 for a perfect match.
    snr : ndarray of float32
        Peak correlation over the mean absolute correlation away from the peak.
    settings : MatchSettings
        The settings used.
    chip_px : ndarray of int16, optional
        Side of the chip each node's offset was measured with, in pixels (``settings.chip_px``
        unless a retry with a larger chip succeeded).
    """

    grid: NodeGrid
    dx_px: np.ndarray
    dy_px: np.ndarray
    corr: np.ndarray
    snr: np.ndarray
    settings: MatchSettings = field(default_factory=MatchSettings)
    chip_px: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        """True where a node holds an offset."""
        return np.isfinite(self.dx_px) & np.isfinite(self.dy_px)


def peak_snr(
    surfaces: np.ndarray, rows: np.ndarray, cols: np.ndarray, exclude_px: int = 2
) -> np.ndarray:
    """Peak value over the mean absolute value of the surface outside a box around the peak.

    Parameters
    ----------
    surfaces : ndarray, shape (N, K, K)
        Correlation surfaces (NaN ignored).
    rows, cols : ndarray of int
        Integer peak positions.
    exclude_px : int
        Half-width of the box around the peak left out of the noise estimate, in pixels.

    Returns
    -------
    ndarray, shape (N,)
        Signal-to-noise ratio (dimensionless); large for a sharp, unique peak.
    """
    n, k, _ = surfaces.shape
    a = np.abs(surfaces)
    # Sums over the whole surface; surfaces holding NaN (rare: flat or masked shifts) are summed
    # again without them.
    total = a.reshape(n, -1).sum(axis=1, dtype=np.float64)
    count = np.full(n, k * k, dtype=np.int64)
    holes = np.flatnonzero(np.isnan(total))
    if holes.size:
        finite = np.isfinite(a[holes])
        total[holes] = np.where(finite, a[holes], 0.0).reshape(holes.size, -1).sum(axis=1)
        count[holes] = finite.reshape(holes.size, -1).sum(axis=1)
    # Remove the box around the peak (clipped at the surface border) from sum and count.
    offs = np.arange(-exclude_px, exclude_px + 1)
    rr = rows[:, None] + offs[None, :]
    cc = cols[:, None] + offs[None, :]
    inside = ((rr >= 0) & (rr < k))[:, :, None] & ((cc >= 0) & (cc < k))[:, None, :]
    idx = np.arange(n)[:, None, None]
    rc, ccl = np.clip(rr, 0, k - 1)[:, :, None], np.clip(cc, 0, k - 1)[:, None, :]
    near = a[idx, rc, ccl]
    ok = inside & np.isfinite(near)
    box = np.where(ok, near, 0.0).reshape(n, -1).sum(axis=1)
    fbox = ok.reshape(n, -1).sum(axis=1)
    noise = (total - box) / np.maximum(count - fbox, 1)
    peak = surfaces[np.arange(n), rows, cols]
    return peak / np.maximum(noise, 1e-6)


def integer_peaks(surf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer maximum of each surface, and whether it can be trusted.

    Returns
    -------
    rows, cols : ndarray of int, shape (N,)
        Peak position in each surface.
    usable : ndarray of bool, shape (N,)
        False for all-NaN surfaces and for peaks on the border of the search range.
    """
    n, k, _ = surf.shape
    flat = surf.reshape(n, -1).argmax(axis=1)
    # argmax stops at the first NaN: those surfaces (rare) are searched again without them.
    usable = np.ones(n, dtype=bool)
    holes = np.flatnonzero(np.isnan(surf.reshape(n, -1)[np.arange(n), flat]))
    if holes.size:
        part = surf[holes].reshape(holes.size, -1)
        finite = np.isfinite(part)
        usable[holes] = finite.any(axis=1)
        flat[holes] = np.where(finite, part, -np.inf).argmax(axis=1)
    pr, pc = np.divmod(flat, k)
    # A peak on the border of the search range is a truncated peak: the true maximum may lie
    # outside, so its position cannot be trusted.
    usable &= (pr > 0) & (pr < k - 1) & (pc > 0) & (pc < k - 1)
    return pr, pc, usable


def locate_peaks(
    surf: np.ndarray, settings: MatchSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offsets and quality from correlation surfaces (NaN surfaces give NaN offsets).

    Parameters
    ----------
    surf : ndarray, shape (N, K, K)
        Correlation surfaces, ``K = 2 * settings.search_px + 1``.
    settings : MatchSettings
        Search radius and sub-pixel estimator.

    Returns
    -------
    dx_px, dy_px, corr, snr : ndarray, shape (N,)
        Offsets from the search centre (pixels) and peak quality.
    """
    n = surf.shape[0]
    s = settings.search_px
    pr, pc, usable = integer_peaks(surf)
    out = np.full((4, n), np.nan, dtype=np.float32)
    if usable.any():
        u = usable
        sv, pru, pcu = surf[u], pr[u], pc[u]
        dr, dc = refine_peak(sv, pru, pcu, settings.subpixel)
        out[0, u] = pcu - s + dc
        out[1, u] = pru - s + dr
        out[2, u] = sv[np.arange(sv.shape[0]), pru, pcu]
        out[3, u] = peak_snr(sv, pru, pcu)
    return out[0], out[1], out[2], out[3]


def match_nodes(
    ref: PreparedImage,
    sec: PreparedImage,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    settings: MatchSettings,
    centre_dy_px: np.ndarray | None = None,
    centre_dx_px: np.ndarray | None = None,
    chip_px: int | None = None,
    tile: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match a set of nodes.

    Parameters
    ----------
    ref, sec : PreparedImage
        Reference and secondary images on one grid (orientation images for
        ``method="orientation"``).
    rows_px, cols_px : ndarray of int, shape (N,)
        Node centres; chips and search windows must lie inside the images.
    settings : MatchSettings
        Chip and search sizes, correlator and peak estimator.
    centre_dy_px, centre_dx_px : ndarray of int, shape (N,), optional
        Search centre of each node relative to the node, in pixels (default 0).
    chip_px : int, optional
        Chip side to use instead of ``settings.chip_px``.
    tile : (ndarray, ndarray), optional
        The node rows and columns when the nodes form a rectangular tile of the grid (row-major),
        which lets NCC share block correlations between neighbouring chips.

    Returns
    -------
    dx_px, dy_px, corr, snr : ndarray, shape (N,)
        Offsets (pixels, right and down, including the search centre) and quality; NaN where
        the node could not be matched.
    """
    if settings.method == "orientation" and not np.iscomplexobj(ref.image):
        raise ValueError(
            "method='orientation' correlates orientation images: prepare them from "
            "glacierflow.prefilter.orientation (match() does this itself)"
        )
    c = settings.chip_px if chip_px is None else int(chip_px)
    s = settings.search_px
    half = c // 2
    k = 2 * s + 1
    r, col = np.asarray(rows_px), np.asarray(cols_px)
    n = r.size
    cy = np.zeros(n, dtype=np.int64) if centre_dy_px is None else np.asarray(centre_dy_px)
    cx = np.zeros(n, dtype=np.int64) if centre_dx_px is None else np.asarray(centre_dx_px)
    wr, wc = r + cy, col + cx  # search window centres
    top, left = r - half, col - half
    method = settings.method
    # Tables over the bounding box of the chips (phase: of the equal-sized first-stage windows)
    # and of the search windows.
    rext = s if method == "phase" else 0
    r0, c0 = int(top.min()) - rext, int(left.min()) - rext
    ref_tab = ref.tables(
        r0,
        c0,
        int(top.max()) + c + rext - r0,
        int(left.max()) + c + rext - c0,
        sums=method == "ncc",
    )
    # A shared NCC kernel needs one search centre per tile: where the nodes' centres differ, it
    # searches ``reach`` px further around the tile's middle centre and each node keeps its own
    # window of the wider surface (while that costs less than one FFT per node).
    kernel, spread = "nodes", 0
    if method == "ncc" and tile is not None and n:
        cy0 = (int(cy.min()) + int(cy.max())) // 2
        cx0 = (int(cx.min()) + int(cx.max())) // 2
        spread = int(max(cy.max() - cy0, cy0 - cy.min(), cx.max() - cx0, cx0 - cx.min()))
        kernel = _ncc_kernel(settings, c, spread)
    reach = 0 if kernel == "nodes" else spread  # how much wider the tables must be
    if kernel != "nodes":
        wr, wc = r + cy0, col + cx0
    w0, v0 = int(wr.min()) - half - s - reach, int(wc.min()) - half - s - reach
    sec_tab = sec.tables(
        w0,
        v0,
        int(wr.max()) - half + c + s + reach - w0,
        int(wc.max()) - half + c + s + reach - v0,
        sums=method == "ncc",
    )
    wr, wc = r + cy, col + cx
    chip_bad = ref_tab.invalid_count(top, left, c)
    win_bad = sec_tab.invalid_count(wr - half - s, wc - half - s, c + 2 * s)
    usable = chip_bad <= (1.0 - settings.min_valid_fraction) * c * c
    masked = (chip_bad > 0) | (win_bad > 0)
    if method == "phase":
        # Phase correlation's first stage also reads the reference around the chip.
        masked |= ref_tab.invalid_count(top - s, left - s, c + 2 * s) > 0
    surf = np.full((n, k, k), np.nan, dtype=np.float32)
    is_complex = np.iscomplexobj(ref.image)
    part = masked & usable
    dense_masked = method == "ncc" and tile is not None and n > 0
    dense_masked = dense_masked and _masked_dense_pays(
        settings, c, spread, kernel, int((~masked & usable).sum()), int(part.sum())
    )
    if dense_masked:
        # Most chips hold nodata on a dense grid (SLC-off): the masked formulation for the whole
        # tile by box filters, which gives plain NCC where nothing is missing.
        surf = ncc_dense_masked(ref, sec, tile[0], tile[1], c, s + spread, (cy0, cx0))
        surf = _own_windows(surf, cy - cy0 + spread, cx - cx0 + spread, k)
    elif method == "ncc":
        full = ~masked & usable
        if kernel != "nodes" and full.mean() > 0.5:
            args = (ref, sec, ref_tab, sec_tab, tile[0], tile[1], c, s + reach)
            if kernel == "dense":
                surf = ncc_dense(*args, (cy0, cx0))
            else:
                block = block_size_px(c, settings.step_px, s + reach)
                surf = ncc_grid(*args, block, (cy0, cx0))
            surf = _own_windows(surf, cy - cy0 + reach, cx - cx0 + reach, k)
        elif full.any():
            surf[full] = ncc_nodes(
                ref, sec, ref_tab, sec_tab, r[full], col[full], c, s, wr[full], wc[full]
            )
    elif method == "orientation":
        full = ~masked & usable
        if full.any():
            surf[full] = orientation_surfaces(*_gather(ref, sec, r, col, wr, wc, full, c, s)[:2])
    # Nodes with nodata in their chip or window: masked correlation, in which gaps take no part.
    # Phase correlation has no exact masked form (a window's spectrum holds its gaps' pattern,
    # and the two dates' SLC-off stripes correlate), so it hands these nodes to masked NCC (to
    # masked orientation correlation for orientation images).
    if part.any():
        if not dense_masked:
            gathered = _gather(ref, sec, r, col, wr, wc, part, c, s)
            correlate = (
                orientation_surfaces if method == "orientation" or is_complex else ncc_surfaces
            )
            surf[part] = correlate(*gathered)
        # A masked surface with holes (shifts where too few valid pixels overlap, between wide
        # SLC-off gaps) may hide the true peak: the node is not guessed.
        holes = ~np.isfinite(surf[part]).all(axis=(1, 2))
        surf[np.flatnonzero(part)[holes]] = np.nan
    surf[~usable] = np.nan
    if method != "phase":
        dx, dy, corr, snr = locate_peaks(surf, settings)
        return dx + cx, dy + cy, corr, snr
    out = np.full((4, n), np.nan, dtype=np.float32)
    if part.any():
        fallback = replace(settings, subpixel="lanczos") if settings.subpixel == "dft" else settings
        out[:, part] = locate_peaks(surf[part], fallback)
    whole = usable & ~masked
    if whole.any():
        out[:, whole] = _phase_nodes(
            ref, sec, r[whole], col[whole], wr[whole], wc[whole], c, settings
        )
    return out[0] + cx, out[1] + cy, out[2], out[3]


def _ncc_kernel(settings: MatchSettings, chip_px: int, reach_px: int) -> str:
    """The NCC kernel for a tile: ``"dense"``, ``"grid"`` (shared block FFTs) or ``"nodes"``."""
    s = settings.search_px
    if reach_px > 2 * s:
        return "nodes"  # centres too spread for one wider search: memory and work explode
    costs = kernel_costs_ns(chip_px, settings.step_px, s, reach_px)
    if settings.ncc_kernel == "dense":
        return "dense"
    if settings.ncc_kernel == "fft":
        del costs["dense"]
    return min(("nodes", "dense", "grid"), key=lambda key: costs.get(key, np.inf))


def _own_windows(surf: np.ndarray, top: np.ndarray, left: np.ndarray, k: int) -> np.ndarray:
    """Each node's own ``k x k`` window of a wider surface, first shift at ``(top, left)``."""
    if surf.shape[1] == k:
        return surf
    own = sliding_window_view(surf, (k, k), axis=(1, 2))
    return own[np.arange(surf.shape[0]), top, left]


def _masked_dense_pays(
    settings: MatchSettings, chip_px: int, spread_px: int, kernel: str, n_full: int, n_masked: int
) -> bool:
    """Whether one masked dense pass over the whole tile beats the masked path per node."""
    s = settings.search_px
    if settings.ncc_kernel == "fft" or spread_px > 2 * s or n_masked == 0:
        return False
    costs = kernel_costs_ns(chip_px, settings.step_px, s, spread_px)
    n = n_full + n_masked
    main = n * costs[kernel] if kernel != "nodes" and n_full > n / 2 else n_full * costs["nodes"]
    return n * costs["masked_dense"] < n_masked * costs["masked_nodes"] + main


def _gather(ref, sec, r, col, wr, wc, which, c, s):
    """Chips, windows and their validity for the selected nodes."""
    half = c // 2
    rp, cp, wrp, wcp = r[which], col[which], wr[which], wc[which]
    return (
        extract_chips(ref.image, rp, cp, c, half),
        extract_chips(sec.image, wrp, wcp, c + 2 * s, half + s),
        extract_chips(ref.valid, rp, cp, c, half),
        extract_chips(sec.valid, wrp, wcp, c + 2 * s, half + s),
    )


def _phase_nodes(ref, sec, r, col, wr, wc, c, settings):
    """Phase correlation of nodes with complete windows: integer search, then precision.

    Returns offsets from the search centres ``(wr - r, wc - col)``, and the peak quality.
    """
    s = settings.search_px
    n = r.size
    p = c + 2 * s
    half = c // 2
    out = np.full((4, n), np.nan, dtype=np.float32)
    # Stage 1: windows of the search window's size in both images, for the integer peak.
    spec, wsum = phase.cross_power(
        extract_chips(ref.image, r, col, p, half + s),
        extract_chips(sec.image, wr, wc, p, half + s),
    )
    surf = phase.surfaces(spec, wsum, p, s)
    del spec
    pr, pc, ok = integer_peaks(surf)
    if not ok.any():
        return out
    snr = peak_snr(surf[ok], pr[ok], pc[ok])
    u = np.flatnonzero(ok)
    iy, ix = pr[ok] - s, pc[ok] - s
    # Stage 2: chip-sized windows, the secondary one moved by the integer peak; the taper of the
    # secondary then follows the measured fraction for a second estimate.
    ref_chips = extract_chips(ref.image, r[u], col[u], c, half)
    sec_chips = extract_chips(sec.image, wr[u] + iy, wc[u] + ix, c, half)
    fy = np.zeros(u.size)
    fx = np.zeros(u.size)
    for first in (True, False):
        spec, wsum = phase.cross_power(
            ref_chips, sec_chips, None, None, None if first else (fy, fx)
        )
        fy, fx, corr = _phase_subpixel(spec, wsum, c, settings.subpixel, fy, fx, first)
    good = np.isfinite(fy) & np.isfinite(fx) & (np.abs(fy) < 1.5) & (np.abs(fx) < 1.5)
    out[0, u] = np.where(good, ix + fx, np.nan)
    out[1, u] = np.where(good, iy + fy, np.nan)
    out[2, u] = np.where(good, corr, np.nan)
    out[3, u] = np.where(good, snr, np.nan)
    return out


def _phase_subpixel(spec, wsum, c, method, fy, fx, first):
    """Sub-pixel peak near ``(fy, fx)`` of chip-sized phase correlations.

    On the first pass the integer peak may still move by a pixel in the re-centred windows: it
    is taken from the sampled surface near the start. The second pass (taper moved with the
    content) starts from the first pass's estimate.
    """
    n = spec.shape[0]
    if method == "dft" and not first:
        return phase.dft_peak(spec, wsum, c, fy, fx, iterations=2)
    m = min(6, c // 2 - 1) if method != "dft" else 2
    surf = phase.surfaces(spec, wsum, c, m)
    pr = np.clip(np.round(fy).astype(int) + m, 1, 2 * m - 1)
    pc = np.clip(np.round(fx).astype(int) + m, 1, 2 * m - 1)
    if first:
        box = np.stack([surf[np.arange(n), pr + a, pc + b] for a in (-1, 0, 1) for b in (-1, 0, 1)])
        best = np.nan_to_num(box, nan=-np.inf).argmax(axis=0)
        pr, pc = pr + best // 3 - 1, pc + best % 3 - 1
    if method == "dft":
        return phase.dft_peak(spec, wsum, c, (pr - m).astype(float), (pc - m).astype(float))
    dr, dc = refine_peak(surf, pr, pc, method)
    return pr - m + dr, pc - m + dc, surf[np.arange(n), pr, pc]


def match_tile(
    ref: PreparedImage,
    sec: PreparedImage,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    settings: MatchSettings,
    centre_dy_px: np.ndarray | None = None,
    centre_dx_px: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match a rectangular tile of nodes.

    Parameters
    ----------
    ref, sec : PreparedImage
        Reference and secondary images on one grid.
    rows_px, cols_px : ndarray of int
        Node rows and columns of the tile (evenly spaced by ``settings.step_px``); chips and
        search windows must lie inside the images.
    settings : MatchSettings
        Chip and search sizes, correlator and peak estimator.
    centre_dy_px, centre_dx_px : ndarray of int, shape (len(rows_px), len(cols_px)), optional
        Search centres relative to the nodes, in pixels.

    Returns
    -------
    dx_px, dy_px, corr, snr : ndarray, shape (len(rows_px), len(cols_px))
        Offsets (pixels, right and down) and quality; NaN where the node could not be matched.
    """
    rr, cc = np.meshgrid(rows_px, cols_px, indexing="ij")
    cy = None if centre_dy_px is None else np.asarray(centre_dy_px).ravel()
    cx = None if centre_dx_px is None else np.asarray(centre_dx_px).ravel()
    res = match_nodes(ref, sec, rr.ravel(), cc.ravel(), settings, cy, cx, tile=(rows_px, cols_px))
    return tuple(a.reshape(rr.shape) for a in res)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Running tiles on worker processes

_WORKER_STATE: dict[str, object] = {}


def _worker_init(state: dict) -> None:
    _WORKER_STATE.update(state)


def _do_task(state: dict, task: tuple) -> tuple:
    """One unit of work: a rectangular tile ``("tile", ti, tj)`` or ``("nodes", idx, chip)``."""
    rows, cols = state["rows"], state["cols"]
    cy, cx = state["cy"], state["cx"]
    if task[0] == "tile":
        _, ti, tj = task
        res = match_tile(
            state["ref"],
            state["sec"],
            rows[ti],
            cols[tj],
            state["settings"],
            None if cy is None else cy[ti, tj],
            None if cx is None else cx[ti, tj],
        )
        return task, res
    _, idx, chip = task
    i, j = np.divmod(idx, cols.size)
    res = match_nodes(
        state["ref"],
        state["sec"],
        rows[i],
        cols[j],
        state["settings"],
        None if cy is None else cy[i, j],
        None if cx is None else cx[i, j],
        chip_px=chip,
    )
    return task, res


def _worker_task(task: tuple) -> tuple:
    return _do_task(_WORKER_STATE, task)


def _run(state: dict, tasks: list[tuple], workers: int) -> Iterator[tuple]:
    """Run tasks in this process or on ``workers`` worker processes, yielding their results.

    Worker processes, not threads: a tile is many small numpy calls, and threads would queue on
    the interpreter lock between them. Where the platform can fork, workers inherit the prepared
    images without copying; elsewhere they receive them once, at start-up.
    """
    if workers == 1 or len(tasks) < 2:
        for task in tasks:
            yield _do_task(state, task)
        return
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_worker_init, initargs=(state,)
    ) as pool:
        chunk = max(1, len(tasks) // (8 * workers))
        yield from pool.map(_worker_task, tasks, chunksize=chunk)


def tile_slices(grid: NodeGrid, tile_nodes: int) -> list[tuple[slice, slice]]:
    """Split the node grid into tiles of about ``tile_nodes`` nodes (square-ish)."""
    side = max(1, int(round(np.sqrt(tile_nodes))))
    return [
        (slice(i, min(i + side, grid.ny)), slice(j, min(j + side, grid.nx)))
        for i in range(0, grid.ny, side)
        for j in range(0, grid.nx, side)
    ]


# ---------------------------------------------------------------------------------------------
# Guided search: search centres from a prior field and from a coarse pass


def _fill_nan(a: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """NaNs replaced by the nearest finite value (by ``fallback``, or 0, if there is none)."""
    bad = ~np.isfinite(a)
    if not bad.any():
        return a
    if bad.all():
        return np.zeros_like(a) if fallback is None else fallback.copy()
    _, (ii, jj) = ndimage.distance_transform_edt(bad, return_indices=True)
    return a[ii, jj]


def _nanmedian3(a: np.ndarray) -> np.ndarray:
    """3 x 3 median ignoring NaN (NaN where the whole neighbourhood is NaN)."""
    padded = np.pad(a, 1, mode="constant", constant_values=np.nan)
    win = sliding_window_view(padded, (3, 3)).reshape(*a.shape, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods stay NaN
        return np.nanmedian(win, axis=-1)


def _sample(field_: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of a node-grid field at fractional node indices (edges held)."""
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(field_, [rr, cc], order=1, mode="nearest")


def downsample2(image: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """2 x 2 block mean of valid pixels; a block is valid where at least 2 of its 4 are.

    Row by row blocks never cross an even row boundary: an image downsampled strip by strip
    (strips of an even number of rows) is the whole image downsampled, exactly.
    """
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    img = np.asarray(image)[:h, :w]
    ok = np.isfinite(img) if valid is None else (np.asarray(valid, bool)[:h, :w] & np.isfinite(img))
    dtype = np.complex128 if np.iscomplexobj(img) else np.float64
    v = np.where(ok, img, 0).astype(dtype)
    s = v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2]
    cnt = ok[0::2, 0::2].astype(int) + ok[1::2, 0::2] + ok[0::2, 1::2] + ok[1::2, 1::2]
    out = s / np.maximum(cnt, 1)
    return out.astype(np.complex64 if dtype == np.complex128 else np.float32), cnt >= 2


def _coarse_centres(ref, sec, ref_valid, sec_valid, settings, grid, prior):
    """Search centres (integer pixels) of the fine nodes from a pass at half resolution."""
    ref2, rv2 = downsample2(ref, ref_valid)
    sec2, sv2 = downsample2(sec, sec_valid)
    return coarse_centres(ref2, rv2, sec2, sv2, settings, grid, prior)


def coarse_centres(
    ref2: np.ndarray,
    ref2_valid: np.ndarray,
    sec2: np.ndarray,
    sec2_valid: np.ndarray,
    settings: MatchSettings,
    grid: NodeGrid,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Search centres of the fine nodes from a matching pass on images at half resolution.

    Parameters
    ----------
    ref2, ref2_valid, sec2, sec2_valid : ndarray
        The images downsampled by two (:func:`downsample2`) and their validity.
    settings : MatchSettings
        The fine settings; the coarse pass uses the same chip, search and step in coarse
        pixels, ``pyramid_levels - 1`` levels below it.
    grid : NodeGrid
        The fine node grid.
    prior : (ndarray, ndarray), optional
        Expected offsets (rows, columns) of the fine nodes, in fine pixels, NaN-free.

    Returns
    -------
    (ndarray, ndarray) or None
        Row and column offsets of the fine nodes' search centres, in fine pixels (not rounded);
        the prior (or None) where the images are too small for a coarse grid.
    """
    rv2, sv2 = ref2_valid, sec2_valid
    coarse = replace(
        settings,
        pyramid_levels=settings.pyramid_levels - 1,
        subpixel="parabola",
        retry_chip_px=(),
        retry_min_snr=0.0,
    )
    try:
        cgrid = make_grid(
            ref2.shape,
            chip_px=coarse.chip_px,
            search_px=coarse.search_px,
            step_px=coarse.step_px,
        )
    except ValueError:
        return prior  # too small to coarsen: the prior (or nothing) must do
    # Fine node index of each coarse node: coarse pixel i covers fine pixels 2i and 2i + 1.
    crow = (2 * cgrid.rows_px() + 0.5 - grid.row0_px) / grid.step_px
    ccol = (2 * cgrid.cols_px() + 0.5 - grid.col0_px) / grid.step_px
    cprior = None
    if prior is not None:
        cprior = tuple(_sample(p.astype(np.float64), crow, ccol) / 2.0 for p in prior)
    res = match(
        ref2,
        sec2,
        rv2,
        sv2,
        coarse,
        prior_dx_px=None if cprior is None else cprior[1],
        prior_dy_px=None if cprior is None else cprior[0],
    )
    # Coarse node index of each fine node.
    frow = ((grid.rows_px() - 0.5) / 2.0 - cgrid.row0_px) / cgrid.step_px
    fcol = ((grid.cols_px() - 0.5) / 2.0 - cgrid.col0_px) / cgrid.step_px
    out = []
    for k, off in enumerate((res.dy_px, res.dx_px)):
        fallback = None if cprior is None else cprior[k]
        smooth = _fill_nan(_nanmedian3(off.astype(np.float64)), fallback)
        out.append(2.0 * _sample(smooth, frow, fcol))
    return out[0], out[1]


def match(
    ref: np.ndarray,
    sec: np.ndarray,
    ref_valid: np.ndarray | None = None,
    sec_valid: np.ndarray | None = None,
    settings: MatchSettings | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    prior_dx_px: np.ndarray | None = None,
    prior_dy_px: np.ndarray | None = None,
) -> MatchResult:
    """Match a whole image pair on a regular node grid.

    Parameters
    ----------
    ref, sec : ndarray, shape (H, W)
        Reference (earlier) and secondary (later) images on the same grid, any real dtype; or
        complex orientation images (:func:`glacierflow.prefilter.orientation`) for the
        ``"orientation"`` and ``"phase"`` methods.
    ref_valid, sec_valid : ndarray of bool, optional
        Pixel validity; invalid pixels take no part in the correlation.
    settings : MatchSettings, optional
        Matching parameters (defaults: NCC, chip 32 px, search +/-16 px, step 8 px).
    progress : callable, optional
        Called with the number of nodes finished after each tile of the main pass.
    prior_dx_px, prior_dy_px : ndarray, shape ``grid.shape``, optional
        Expected offset of each node (e.g. a prior velocity times the time separation), right and
        down, in pixels, on the node grid of :func:`~glacierflow.matching.grid.make_grid` for
        these settings; NaN where unknown (taken as 0). Each node's search window is centred on
        the rounded prior, so motion far beyond ``search_px`` can be measured.

    Returns
    -------
    MatchResult
        Offsets from reference to secondary in pixels (including the search centres), with peak
        correlation, SNR and the chip used at each node.
    """
    settings = settings or MatchSettings()
    ref = np.asarray(ref)
    sec = np.asarray(sec)
    if ref.ndim != 2 or ref.shape != sec.shape:
        raise ValueError(
            f"ref and sec must be 2-D arrays of one shape, got {ref.shape} and {sec.shape}"
        )
    for name, v in (("ref_valid", ref_valid), ("sec_valid", sec_valid)):
        if v is not None and v.shape != ref.shape:
            raise ValueError(f"{name} must have the image shape {ref.shape}, got {v.shape}")
    is_complex = np.iscomplexobj(ref) or np.iscomplexobj(sec)
    if is_complex and settings.method == "ncc":
        raise ValueError(
            "complex (orientation) images need method='orientation' or 'phase', not 'ncc'"
        )
    grid = make_grid(
        ref.shape,
        chip_px=settings.chip_px,
        search_px=settings.search_px,
        step_px=settings.step_px,
    )
    prior = None
    if (prior_dx_px is None) != (prior_dy_px is None):
        raise ValueError("give both prior_dx_px and prior_dy_px, or neither")
    if prior_dx_px is not None:
        prior = []
        for name, p in (("prior_dy_px", prior_dy_px), ("prior_dx_px", prior_dx_px)):
            p = np.asarray(p, dtype=np.float64)
            if p.shape != grid.shape:
                raise ValueError(
                    f"{name} must be on the node grid, shape {grid.shape}, got {p.shape}"
                )
            prior.append(np.where(np.isfinite(p), p, 0.0))
        prior = tuple(prior)
    centres = prior
    if settings.pyramid_levels > 1:
        centres = _coarse_centres(ref, sec, ref_valid, sec_valid, settings, grid, prior)
    cy = cx = None
    if centres is not None:
        cy, cx = (np.rint(a).astype(np.int64) for a in centres)
    # Orientation correlation works on orientation images; real input is converted here.
    if settings.method == "orientation" and not is_complex:
        from glacierflow.prefilter import orientation

        ref, ref_valid = orientation(ref, ref_valid)
        sec, sec_valid = orientation(sec, sec_valid)
    # Guided windows and larger retry chips may reach past the image: pad with invalid pixels,
    # which every correlator ignores.
    reach = 0 if cy is None else int(max(np.abs(cy).max(), np.abs(cx).max()))
    grow = max((c - settings.chip_px) // 2 + 1 for c in (settings.chip_px, *settings.retry_chip_px))
    pad = reach + max(grow, 0) if (reach or settings.retry_chip_px) else 0
    # Statistics of the images themselves, not of their padding (whose rows would shift the
    # strips): the same normalisation as a tiled run from the files.
    ref_p, sec_p = (
        PreparedImage(
            *_padded(img, ok, pad),
            stats=None if pad == 0 or np.iscomplexobj(img) else image_stats(img, ok),
        )
        for img, ok in ((ref, ref_valid), (sec, sec_valid))
    )
    rows, cols = grid.rows_px() + pad, grid.cols_px() + pad
    state = dict(ref=ref_p, sec=sec_p, rows=rows, cols=cols, cy=cy, cx=cx, settings=settings)
    out = np.full((4, *grid.shape), np.nan, dtype=np.float32)
    tasks = [("tile", ti, tj) for ti, tj in tile_slices(grid, settings.tile_nodes)]
    for (_, ti, tj), res in _run(state, tasks, settings.workers):
        for layer, values in zip(out, res, strict=True):
            layer[ti, tj] = values
        if progress:
            progress(res[0].size)
    chip = np.full(grid.shape, settings.chip_px, dtype=np.int16)
    for retry_chip in settings.retry_chip_px:
        failed = ~np.isfinite(out[0]) | ~(out[3] >= settings.retry_min_snr)
        idx = np.flatnonzero(failed)
        if idx.size == 0:
            break
        tasks = [("nodes", idx[i : i + 256], int(retry_chip)) for i in range(0, idx.size, 256)]
        flat = out.reshape(4, -1)
        for (_, sel, _), res in _run(state, tasks, settings.workers):
            ok = np.isfinite(res[0]) & (res[3] >= settings.retry_min_snr)
            for layer, values in zip(flat, res, strict=True):
                layer[sel[ok]] = values[ok]
            chip.reshape(-1)[sel[ok]] = retry_chip
    dx, dy, corr, snr = out
    return MatchResult(grid, dx, dy, corr, snr, settings, chip)


def _padded(image: np.ndarray, valid: np.ndarray | None, pad: int):
    if pad == 0:
        return image, valid
    ok = np.isfinite(image) if valid is None else (np.asarray(valid, bool) & np.isfinite(image))
    return np.pad(np.where(ok, image, 0), pad), np.pad(ok, pad)
