"""Strain-aware second pass: where a node needs it, refine its match with an affine warp.

After the correlator's pass, the displacement gradient (the local strain, px/px) of every node
is estimated from its neighbours' offsets (a 3 x 3 median first, so that one bad node does not
make its neighbours look strained). A node is refined (:func:`~.affine.refine_affine`:
centre-weighted, affine least squares, started from its offset and that gradient) where

* the displacement changes across its chip by more than ``settings.refine_px`` (the strain times
  half the chip side): a translation-only chip measures its texture's mean motion there, not
  the node's;
* its offset stands out from its neighbours' median by more than ``refine_px`` (a gross error
  at a shear margin is started from the neighbours' median instead);
* or its correlation peak is weak (below ``settings.refine_weak_corr``): faint texture, where
  the window grows with the texture's weakness (:func:`window_sigma_px`).

A converged fit is kept only where it matches the chip better than the start's translation
alone under the same window (:func:`accepted`) and its strain is below :data:`STRAIN_LIMIT`:
started from a strain its neighbours suggest but the node does not share, a fit can converge in
a wrong basin, which the median test then removes with its neighbours. A fit whose start shares
no texture with the later image (:data:`START_MIN_CORR`) stops after its first iteration. A fit
not kept is tried once more from the other start (:data:`SECOND_MIN_CORR`).

``settings.refine = "auto"`` (off by default) refines where a node needs it, ``"all"`` every
matched node, ``"off"`` none. The strain each node saw (the refined gradient where refined, the
neighbours' elsewhere) is returned with the result.

Every node is refined from its own windows only, with the gradient of the complete first pass:
the result does not depend on how nodes are grouped into tasks, nor on tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from glacierflow.matching.ncc import PreparedImage
from glacierflow.matching.pyramid import nanmedian3
from glacierflow.matching.settings import MAX_GRADIENT, MAX_MOVE_PX, MatchSettings

__all__ = [
    "image_crop",
    "neighbour_gradient",
    "refine_nodes",
    "select_nodes",
    "strain_magnitude",
]

#: Lowest peak correlation of a node ``refine="auto"`` refines: about the median peak of a chance
#: match between unrelated 32 px chips of real Landsat texture (the NCC threshold of
#: ``glacierflow.filters``).
MIN_CORR = 0.3

#: Width of the second try's window (where the first fails), relative to the first.
SECOND_WIDTH = 1.5
#: Lowest peak correlation of a node tried a second time: a clear peak whose fit failed was
#: started too far off (a gross error at a margin); a weak one is mostly a surface that changed.
SECOND_MIN_CORR = 0.8

#: Lowest weighted correlation of a fit's start (with the neighbours' strain, or its translation
#: alone, whichever is higher) for the fit to go on past its first iteration: below it the window
#: shares no texture (unrelated chips score 0 +/- 0.1), and such fits converged to a kept result
#: at 2 of 376 such nodes of the Yahtse pair (step 8), for a third of the pass's time.
START_MIN_CORR = 0.2

#: Largest strain (px/px) of a fit that is kept: 0.8 of the model's limit
#: (:data:`~glacierflow.matching.settings.MAX_GRADIENT`).
STRAIN_LIMIT = 0.8 * MAX_GRADIENT

#: Window crops per refinement task: ``crop(top, left, rows, cols)`` returns the reference and
#: secondary windows as (image, valid, image, valid) arrays. A crop with a true attribute
#: ``in_worker`` (a picklable one that reads files) is called by each task, in the process that
#: runs it; any other is called here, and the task carries its windows.
Crop = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def image_crop(ref: PreparedImage, sec: PreparedImage) -> Crop:
    """A :data:`Crop` of two prepared images: pixels past their edges are invalid."""

    def crop(top: int, left: int, rows: int, cols: int):
        return (*_window(ref, top, left, rows, cols), *_window(sec, top, left, rows, cols))

    return crop


def _window(img: PreparedImage, top: int, left: int, rows: int, cols: int):
    image = np.zeros((rows, cols), dtype=img.image.dtype)
    valid = np.zeros((rows, cols), dtype=bool)
    h, w = img.shape
    r0, c0, r1, c1 = max(top, 0), max(left, 0), min(top + rows, h), min(left + cols, w)
    if r1 > r0 and c1 > c0:
        image[r0 - top : r1 - top, c0 - left : c1 - left] = img.image[r0:r1, c0:c1]
        valid[r0 - top : r1 - top, c0 - left : c1 - left] = img.valid[r0:r1, c0:c1]
    return image, valid


def neighbour_gradient(dx_px: np.ndarray, dy_px: np.ndarray, step_px: int) -> np.ndarray:
    """Displacement gradient of every node from its neighbours' offsets.

    Parameters
    ----------
    dx_px, dy_px : ndarray, shape (ny, nx)
        Offsets on the node grid, px (NaN where unmatched).
    step_px : int
        Node spacing, px.

    Returns
    -------
    ndarray, shape (ny, nx, 4)
        ``(d dx / d col, d dx / d row, d dy / d col, d dy / d row)``, px/px, of the 3 x 3 median
        of the offsets (central differences, one-sided at edges and gaps); NaN where unknown.
    """
    smooth = [nanmedian3(np.asarray(field, np.float64)) for field in (dx_px, dy_px)]
    return _gradient_of(*smooth, step_px)


def _gradient_of(sx: np.ndarray, sy: np.ndarray, step_px: int) -> np.ndarray:
    """:func:`neighbour_gradient` of offsets already smoothed by their 3 x 3 median."""
    out = np.full((*sx.shape, 4), np.nan)
    for k, smooth in enumerate((sx, sy)):
        out[..., 2 * k] = _derivative(smooth, axis=1) / step_px
        out[..., 2 * k + 1] = _derivative(smooth, axis=0) / step_px
    return out


def _derivative(a: np.ndarray, axis: int) -> np.ndarray:
    """Central differences along ``axis``, one-sided where a neighbour is missing."""
    a = np.moveaxis(a, axis, 0)
    fwd = np.full_like(a, np.nan)
    bwd = np.full_like(a, np.nan)
    fwd[:-1] = a[1:] - a[:-1]
    bwd[1:] = a[1:] - a[:-1]
    both = np.isfinite(fwd) & np.isfinite(bwd)
    out = np.where(both, 0.5 * (fwd + bwd), np.where(np.isfinite(fwd), fwd, bwd))
    return np.moveaxis(out, 0, axis)


def strain_magnitude(gradient: np.ndarray) -> np.ndarray:
    """Largest change of displacement per pixel in any direction (px/px): the largest singular
    value of the 2 x 2 displacement gradient ``(ux, uy, vx, vy)`` along the last axis."""
    g = np.asarray(gradient, np.float64)
    a, b, c, d = g[..., 0], g[..., 1], g[..., 2], g[..., 3]
    s = 0.5 * (a * a + b * b + c * c + d * d)
    det = a * d - b * c
    return np.sqrt(s + np.sqrt(np.maximum(s * s - det * det, 0.0)))


def window_sigma_px(settings: MatchSettings, corr: np.ndarray) -> np.ndarray:
    """Gaussian weight of each refined node, px: ``settings.chip_px / 5`` for a clear peak,
    growing to ``chip_px / 2.5`` as the peak correlation falls from ``refine_weak_corr`` to
    :data:`MIN_CORR` (faint texture needs more pixels); rounded to half pixels."""
    base = settings.chip_px / 5.0
    weak_corr = settings.refine_weak_corr
    if weak_corr <= MIN_CORR:
        return np.full(np.shape(corr), base)
    c = np.nan_to_num(np.asarray(corr, np.float64), nan=MIN_CORR)
    weak = np.clip((weak_corr - c) / (weak_corr - MIN_CORR), 0.0, 1.0)
    return np.round(2.0 * base * (1.0 + weak)) / 2.0


def select_nodes(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    corr: np.ndarray,
    snr: np.ndarray,
    settings: MatchSettings,
    step_px: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nodes to refine, where to start them, and the strain every node shows.

    ``"auto"`` leaves alone nodes whose peak correlation is below :data:`MIN_CORR` (chance
    matches, which the outlier filters reject anyway).

    Parameters
    ----------
    dx_px, dy_px, corr, snr : ndarray, shape (ny, nx)
        The first pass's offsets (px), peak correlation and SNR (the SNR, a poor measure of
        texture on real chips, is not used by the selection today).
    settings : MatchSettings
        ``refine``, ``refine_px``, ``refine_weak_corr`` and the chip size.
    step_px : int
        Node spacing, px.

    Returns
    -------
    idx : ndarray of int
        Flat indices of the nodes to refine.
    start : ndarray, shape (idx.size, 4)
        Starting offsets ``(dx, dy)``, px, twice: the node's own (or its neighbours' median
        where it stands out from them by more than 1 px), then the other one, tried (with a
        wider window) where the first fit fails.
    gradient : ndarray, shape (ny, nx, 4)
        Neighbours' displacement gradient (:func:`neighbour_gradient`), px/px.
    strain : ndarray, shape (ny, nx)
        Its magnitude (:func:`strain_magnitude`), px/px.
    """
    mx, my = nanmedian3(dx_px.astype(np.float64)), nanmedian3(dy_px.astype(np.float64))
    gradient = _gradient_of(mx, my, step_px)
    strain = strain_magnitude(gradient)
    matched = np.isfinite(dx_px) & np.isfinite(dy_px)
    if settings.refine == "auto":
        matched &= corr >= MIN_CORR
    jump = np.hypot(dx_px - mx, dy_px - my)
    if settings.refine == "all":
        need = matched
    elif settings.refine == "off":
        need = np.zeros_like(matched)
    else:
        half = settings.chip_px / 2.0
        need = matched & (
            (np.nan_to_num(strain) * half > settings.refine_px)
            | (np.nan_to_num(jump) > settings.refine_px)
            | (corr < settings.refine_weak_corr)
        )
    idx = np.flatnonzero(need)
    flat = lambda a: a.reshape(-1)[idx].astype(np.float64)  # noqa: E731
    stray = np.nan_to_num(flat(jump)) > 1.0
    own = np.stack([flat(dx_px), flat(dy_px)], axis=1)
    median = np.stack([flat(mx), flat(my)], axis=1)
    median = np.where(np.isfinite(median), median, own)
    # First start: the node's own offset, or the neighbours' median for a stray node; second
    # start (where the first fit fails): the other one.
    first = np.where(stray[:, None], median, own)
    second = np.where(stray[:, None], own, median)
    return idx, np.concatenate([first, second], axis=1), gradient, strain


def refinement_tasks(
    idx: np.ndarray,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    start: np.ndarray,
    gradient: np.ndarray,
    sigma_px: np.ndarray,
    settings: MatchSettings,
    crop: Crop,
    corr: np.ndarray,
    per_task: int = 256,
    block_nodes: int = 32,
) -> Iterator[tuple]:
    """Self-contained tasks for :func:`refine_task`: up to ``per_task`` nodes (flat indices
    ``idx`` of a grid with node rows ``rows_px`` and columns ``cols_px``) of one block of
    ``block_nodes`` x ``block_nodes`` nodes each, so that each task reads a bounded window;
    ``corr`` (of the ``idx`` nodes) decides which may be tried twice (:data:`SECOND_MIN_CORR`)."""
    nx = cols_px.size
    g = gradient.reshape(-1, 4)
    r, c = np.divmod(idx, nx)
    block = (r // block_nodes) * (nx // block_nodes + 1) + c // block_nodes
    order = np.argsort(block, kind="stable")
    cuts = np.flatnonzero(np.diff(block[order])) + 1
    for part in np.split(order, cuts):
        for i in range(0, part.size, per_task):
            k = part[i : i + per_task]
            sel = idx[k]
            rows, cols = rows_px[r[k]], cols_px[c[k]]
            st, sg = start[k], sigma_px[k]
            reach = _reach_px(settings, SECOND_WIDTH * float(sg.max()), float(np.abs(st).max()))
            top, left = int(rows.min()) - reach, int(cols.min()) - reach
            height = int(rows.max()) - top + reach + 1
            width = int(cols.max()) - left + reach + 1
            box = (top, left, height, width)
            windows = (crop, box) if getattr(crop, "in_worker", False) else crop(*box)
            again = corr[k] >= SECOND_MIN_CORR
            yield (sel, windows, rows - top, cols - left, st, g[sel], sg, again)


def _reach_px(settings: MatchSettings, sigma_px: float, offset_px: float) -> int:
    """How far from a node its refinement reads, px (windows, warps, patches, stencils)."""
    half = int(np.ceil(2.0 * sigma_px))
    patch = int(np.ceil(MAX_GRADIENT * half + MAX_MOVE_PX)) + 3
    return int(np.ceil(offset_px)) + half + patch + 3


def refine_task(task: tuple) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Run one task of :func:`refinement_tasks` (in any process): its node indices and the
    refined ``dx, dy, gradient, corr, ok``."""
    # numba is imported only where a node is refined (a run without any never loads it).
    from glacierflow.matching.affine import refine_affine

    sel, windows, rows, cols, start, grad, sigma, again = task
    if callable(windows[0]):  # read here, on the worker (files), not by the process that plans
        windows = windows[0](*windows[1])
    ref, ref_ok, sec, sec_ok = windows
    out = [np.full(sel.size, np.nan), np.full(sel.size, np.nan)]
    out += [np.full((sel.size, 4), np.nan), np.full(sel.size, np.nan), np.zeros(sel.size, bool)]
    # Nodes of one window size together (the fit's arrays need one size); a node whose fit
    # fails from its first start is tried once more from its second.
    for s in np.unique(sigma):
        for first in (True, False):
            k = np.flatnonzero((sigma == s) & ~out[4] & (first | again))
            if k.size == 0:
                continue
            # The second try also widens the window by half: a wider basin of convergence.
            at, sw = (start[k, :2], s) if first else (start[k, 2:], SECOND_WIDTH * s)
            fit = refine_affine(
                ref, ref_ok, sec, sec_ok, rows[k], cols[k], at[:, 0], at[:, 1], grad[k],
                half_px=int(np.ceil(2.0 * sw)), sigma_px=float(sw), min_start_corr=START_MIN_CORR,
            )  # fmt: skip
            keep = accepted(fit)
            for o, v in zip(out, fit[:5], strict=True):
                o[k[keep]] = v[keep]
            out[4][k[keep]] = True
    return sel, tuple(out)


def accepted(fit) -> np.ndarray:
    """Where a converged fit (:class:`~.affine.AffineFit`) is kept: it matches the chip better
    than the start's translation alone under the same window (a fit that does not has found a
    wrong basin, e.g. from a neighbours' gradient the node does not share), and its strain is
    below :data:`STRAIN_LIMIT` (near the model's limit it fits texture, not motion)."""
    return (
        fit.ok
        & (fit.corr > np.nan_to_num(fit.corr_start, nan=-1.0))
        & (strain_magnitude(np.nan_to_num(fit.gradient)) <= STRAIN_LIMIT)
    )


def refine_nodes(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    corr: np.ndarray,
    snr: np.ndarray,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    settings: MatchSettings,
    crop: Crop,
    run: Callable = map,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The strain-aware second pass over a whole node grid (see the module docstring).

    Parameters
    ----------
    dx_px, dy_px, corr, snr : ndarray, shape (ny, nx)
        The first pass's offsets (px), peak correlation and SNR.
    rows_px, cols_px : ndarray of int
        Node rows and columns in the frame of ``crop``.
    settings : MatchSettings
        ``refine``, ``refine_px``, ``refine_weak_corr`` and the chip size.
    crop : callable
        ``crop(top, left, rows, cols)``: windows of both images, (image, valid) each.
    run : callable
        ``map``-like runner of the tasks (e.g. an executor's ``map_unordered``).

    Returns
    -------
    dx_px, dy_px : ndarray of float32
        Offsets, refined where the fit converged.
    strain : ndarray of float32
        Strain each node saw, px/px (:func:`strain_magnitude`).
    refined : ndarray of bool
        Nodes whose offset comes from the refinement.
    """
    dx = np.array(dx_px, dtype=np.float32)
    dy = np.array(dy_px, dtype=np.float32)
    step = int(rows_px[1] - rows_px[0]) if rows_px.size > 1 else int(cols_px[1] - cols_px[0])
    idx, start, gradient, strain = select_nodes(dx, dy, corr, snr, settings, max(step, 1))
    refined = np.zeros(dx.shape, bool)
    strain = strain.astype(np.float32)
    if idx.size == 0:
        return dx, dy, strain, refined
    sigma = window_sigma_px(settings, corr.reshape(-1)[idx])
    node_corr = corr.reshape(-1)[idx]
    tasks = refinement_tasks(
        idx, rows_px, cols_px, start, gradient, sigma, settings, crop, node_corr
    )  # fmt: skip
    for sel, (rdx, rdy, rgrad, _corr, ok) in run(refine_task, tasks):
        kept = sel[ok]
        dx.reshape(-1)[kept] = rdx[ok]
        dy.reshape(-1)[kept] = rdy[ok]
        strain.reshape(-1)[kept] = strain_magnitude(rgrad[ok])
        refined.reshape(-1)[kept] = True
    return dx, dy, strain, refined
