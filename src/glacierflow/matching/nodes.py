"""Matching a set of nodes, or a rectangular tile of them, on prepared images.

The correlators (:mod:`.ncc`, :mod:`.phase`, :mod:`.orientation`) turn nodes into correlation
surfaces; this module picks, for a set of nodes, which kernel computes them (shared block FFTs,
dense box sums or one FFT per node; masked forms where chips or windows hold nodata), and hands
the surfaces to :func:`~glacierflow.matching.peaks.locate_peaks`. Phase correlation finds its
peaks in the phase domain (:func:`_phase_nodes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from glacierflow.matching import phase
from glacierflow.matching.consistency import closure_px
from glacierflow.matching.grid import extract_chips
from glacierflow.matching.ncc import PreparedImage, SumTables, ncc_nodes, ncc_surfaces
from glacierflow.matching.ncc_tiles import (
    block_size_px,
    kernel_costs_ns,
    ncc_dense,
    ncc_dense_masked,
    ncc_grid,
)
from glacierflow.matching.orientation import orientation_surfaces
from glacierflow.matching.peaks import integer_peaks, locate_peaks, peak_snr
from glacierflow.matching.settings import MatchSettings
from glacierflow.matching.subpixel import refine_peak

__all__ = ["match_nodes", "match_tile"]


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
) -> tuple[np.ndarray, ...]:
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
    dx_px, dy_px, corr, snr, closure_px : ndarray, shape (N,)
        Offsets (pixels, right and down, including the search centre) and quality; NaN where
        the node could not be matched. ``closure_px``: the forward-backward closure of each
        offset (:func:`~glacierflow.matching.consistency.closure_px`; NaN where not checked).
    """
    dx, dy, corr, snr = _match_nodes(
        ref, sec, rows_px, cols_px, settings, centre_dy_px, centre_dx_px, chip_px, tile
    )
    c = settings.chip_px if chip_px is None else int(chip_px)
    back = closure_px(ref, sec, rows_px, cols_px, dx, dy, c, settings.backmatch_px, snr)
    return dx, dy, corr, snr, back


def _match_nodes(ref, sec, rows_px, cols_px, settings, centre_dy_px, centre_dx_px, chip_px, tile):
    """:func:`match_nodes` without the forward-backward check."""
    if settings.method == "orientation" and not np.iscomplexobj(ref.image):
        raise ValueError(
            "method='orientation' correlates orientation images: prepare them from "
            "glacierflow.prefilter.orientation (match() does this itself)"
        )
    c = settings.chip_px if chip_px is None else int(chip_px)
    r, col = np.asarray(rows_px), np.asarray(cols_px)
    n = r.size
    cy = np.zeros(n, dtype=np.int64) if centre_dy_px is None else np.asarray(centre_dy_px)
    cx = np.zeros(n, dtype=np.int64) if centre_dx_px is None else np.asarray(centre_dx_px)
    nodes = _Nodes(r, col, cy, cx, c, settings.search_px)
    tabs, kernel = _tables(ref, sec, nodes, settings, tile)
    usable, masked = _validity(tabs, nodes, settings)
    surf, part = _surfaces(ref, sec, tabs, nodes, settings, tile, kernel, usable, masked)
    if settings.method != "phase":
        dx, dy, corr, snr = locate_peaks(surf, settings)
        return dx + cx, dy + cy, corr, snr
    out = np.full((4, n), np.nan, dtype=np.float32)
    if part.any():
        fallback = (
            settings.model_copy(update={"subpixel": "lanczos"})
            if settings.subpixel == "dft"
            else settings
        )
        out[:, part] = locate_peaks(surf[part], fallback)
    whole = usable & ~masked
    if whole.any():
        wr, wc = nodes.wr, nodes.wc
        out[:, whole] = _phase_nodes(
            ref, sec, r[whole], col[whole], wr[whole], wc[whole], c, settings
        )
    return out[0] + cx, out[1] + cy, out[2], out[3]


@dataclass
class _Nodes:
    """Where a set of nodes reads: centres, search centres and sizes (pixels)."""

    r: np.ndarray  # node rows
    col: np.ndarray  # node columns
    cy: np.ndarray  # search centres relative to the nodes, rows
    cx: np.ndarray  # and columns
    c: int  # chip side
    s: int  # search radius

    def __post_init__(self) -> None:
        self.n = self.r.size
        self.half = self.c // 2
        self.k = 2 * self.s + 1
        self.wr, self.wc = self.r + self.cy, self.col + self.cx  # search window centres
        self.top, self.left = self.r - self.half, self.col - self.half


@dataclass
class _Tables:
    """Summed-area tables of both images, and the shared NCC kernel's search centre."""

    ref: SumTables
    sec: SumTables
    spread: int = 0  # how far the nodes' search centres lie from the tile's middle one
    centre: tuple[int, int] | None = None  # the tile's middle search centre (rows, columns)


def _tables(ref, sec, g: _Nodes, settings: MatchSettings, tile) -> tuple[_Tables, str]:
    """Tables over the bounding box of the chips (phase: of the equal-sized first-stage windows)
    and of the search windows, and the NCC kernel that will read them."""
    c, s, half, r, col = g.c, g.s, g.half, g.r, g.col
    method = settings.method
    rext = s if method == "phase" else 0
    r0, c0 = int(g.top.min()) - rext, int(g.left.min()) - rext
    ref_tab = ref.tables(
        r0,
        c0,
        int(g.top.max()) + c + rext - r0,
        int(g.left.max()) + c + rext - c0,
        sums=method == "ncc",
    )
    # A shared NCC kernel needs one search centre per tile: where the nodes' centres differ, it
    # searches ``reach`` px further around the tile's middle centre and each node keeps its own
    # window of the wider surface (while that costs less than one FFT per node).
    kernel, spread, centre = "nodes", 0, None
    wr, wc = g.wr, g.wc
    if method == "ncc" and tile is not None and g.n:
        cy, cx = g.cy, g.cx
        cy0 = (int(cy.min()) + int(cy.max())) // 2
        cx0 = (int(cx.min()) + int(cx.max())) // 2
        spread = int(max(cy.max() - cy0, cy0 - cy.min(), cx.max() - cx0, cx0 - cx.min()))
        kernel = _ncc_kernel(settings, c, spread)
        centre = (cy0, cx0)
    reach = 0 if kernel == "nodes" else spread  # how much wider the tables must be
    if kernel != "nodes":
        wr, wc = r + centre[0], col + centre[1]
    w0, v0 = int(wr.min()) - half - s - reach, int(wc.min()) - half - s - reach
    sec_tab = sec.tables(
        w0,
        v0,
        int(wr.max()) - half + c + s + reach - w0,
        int(wc.max()) - half + c + s + reach - v0,
        sums=method == "ncc",
    )
    return _Tables(ref_tab, sec_tab, spread, centre), kernel


def _validity(tabs: _Tables, g: _Nodes, settings: MatchSettings) -> tuple[np.ndarray, np.ndarray]:
    """Nodes whose chip holds enough valid pixels, and nodes with nodata in what they read."""
    c, s, half = g.c, g.s, g.half
    chip_bad = tabs.ref.invalid_count(g.top, g.left, c)
    win_bad = tabs.sec.invalid_count(g.wr - half - s, g.wc - half - s, c + 2 * s)
    usable = chip_bad <= (1.0 - settings.min_valid_fraction) * c * c
    masked = (chip_bad > 0) | (win_bad > 0)
    if settings.method == "phase":
        # Phase correlation's first stage also reads the reference around the chip.
        masked |= tabs.ref.invalid_count(g.top - s, g.left - s, c + 2 * s) > 0
    return usable, masked


def _surfaces(ref, sec, tabs: _Tables, g: _Nodes, settings, tile, kernel, usable, masked):
    """Correlation surfaces of the nodes (NaN where not matched; phase correlation's complete
    nodes are left to :func:`_phase_nodes`), and the nodes matched by masked correlation."""
    c, s, k, n = g.c, g.s, g.k, g.n
    r, col, wr, wc, cy, cx = g.r, g.col, g.wr, g.wc, g.cy, g.cx
    method, spread = settings.method, tabs.spread
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
        cy0, cx0 = tabs.centre
        surf = ncc_dense_masked(ref, sec, tile[0], tile[1], c, s + spread, (cy0, cx0))
        surf = _own_windows(surf, cy - cy0 + spread, cx - cx0 + spread, k)
    elif method == "ncc":
        full = ~masked & usable
        reach = 0 if kernel == "nodes" else spread
        if kernel != "nodes" and full.mean() > 0.5:
            cy0, cx0 = tabs.centre
            args = (ref, sec, tabs.ref, tabs.sec, tile[0], tile[1], c, s + reach)
            if kernel == "dense":
                surf = ncc_dense(*args, (cy0, cx0))
            else:
                block = block_size_px(c, settings.step_px, s + reach)
                surf = ncc_grid(*args, block, (cy0, cx0))
            surf = _own_windows(surf, cy - cy0 + reach, cx - cx0 + reach, k)
        elif full.any():
            surf[full] = ncc_nodes(
                ref, sec, tabs.ref, tabs.sec, r[full], col[full], c, s, wr[full], wc[full]
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
    return surf, part


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
) -> tuple[np.ndarray, ...]:
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
    dx_px, dy_px, corr, snr, closure_px : ndarray, shape (len(rows_px), len(cols_px))
        Offsets (pixels, right and down) and quality; NaN where the node could not be matched;
        the forward-backward closure (see :func:`match_nodes`).
    """
    rr, cc = np.meshgrid(rows_px, cols_px, indexing="ij")
    cy = None if centre_dy_px is None else np.asarray(centre_dy_px).ravel()
    cx = None if centre_dx_px is None else np.asarray(centre_dx_px).ravel()
    res = match_nodes(ref, sec, rr.ravel(), cc.ravel(), settings, cy, cx, tile=(rows_px, cols_px))
    return tuple(a.reshape(rr.shape) for a in res)  # type: ignore[return-value]
