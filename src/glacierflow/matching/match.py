"""Area-based matching of a whole image pair on a regular node grid.

Arrays in, arrays out: no files, no CRS, no globals. Every correlator (:data:`METHODS`) turns a
tile of nodes into correlation surfaces, one per node over the integer offsets of its search
window (:mod:`.nodes`); the shared peak location (:func:`~glacierflow.matching.peaks.locate_peaks`)
then picks the integer peak, rejects peaks on the border of the search range, refines the peak to
sub-pixel precision (:mod:`.subpixel`, or the phase-domain estimator of :mod:`.phase`) and rates
it (:func:`~glacierflow.matching.peaks.peak_snr`).

Search windows need not be centred on their nodes. A *guided* search centres each node's window
on a per-node integer offset: from a prior velocity field (``prior_dx_px``/``prior_dy_px``), from
a first pass on images downsampled by two (``pyramid_levels``, :mod:`.pyramid`), or both. A node
whose small chip fails can be matched again with larger chips (``retry_chip_px``);
``MatchResult.chip_px`` says which chip each offset came from.

Tiles of nodes are independent tasks, each carrying the windows of both prepared images it reads,
so that any executor with a ``map_unordered`` (:class:`glacierflow.execute.Executor`: this
process, local workers or a Dask cluster) can run them; the result does not depend on which.
Local workers share the prepared images (:meth:`~glacierflow.execute.Executor.shared`): a
task then carries where its windows lie, not their pixels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from glacierflow.matching.chips import (
    broad_strain,
    information,
    noise_limited,
    weak_nodes,
    window_image,
)
from glacierflow.matching.grid import NodeGrid, make_grid
from glacierflow.matching.ncc import PreparedImage
from glacierflow.matching.nodes import match_nodes, match_tile
from glacierflow.matching.orientation import orientation
from glacierflow.matching.pyramid import (
    coarse_settings,
    downsample2,
    fill_nan,
    fine_settings,
    nanmedian3,
    sample_nodes,
)
from glacierflow.matching.settings import METHODS, MatchSettings
from glacierflow.matching.stats import image_stats
from glacierflow.matching.strain import (
    Crop,
    image_crop,
    refine_nodes,
)

__all__ = [
    "LAYERS",
    "METHODS",
    "MatchResult",
    "TaskRunner",
    "adapt_chips",
    "coarse_centres",
    "match",
    "tile_slices",
]


#: Closure (pixels) beyond which a node is matched again with ``recheck_search_px``: the
#: default ``filtering.max_closure_px``.
RECHECK_CLOSURE_PX = 0.5
#: Layers a matching task returns per node: ``dx_px, dy_px, corr, snr, closure_px``.
LAYERS = 5


class TaskRunner(Protocol):
    """What runs matching tasks: anything with ``map_unordered(fn, items)`` yielding ``fn(item)``
    for every item, in any order (:class:`glacierflow.execute.Executor` is one). One that also
    has ``shared(arrays)`` (a context manager yielding copies that its tasks receive by
    reference) gets the prepared images that way (:meth:`glacierflow.execute.Executor.shared`).
    """

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]: ...


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
    strain : ndarray of float32, optional
        Local strain each node saw, px/px (the largest change of displacement per pixel: of the
        affine fit where refined, of the neighbours' offsets elsewhere; :mod:`.strain`).
    refined : ndarray of bool, optional
        Nodes whose offset comes from the affine refinement (``settings.refine``).
    closure_px : ndarray of float32, optional
        Forward-backward closure of each offset, in pixels (``inf``: the backward match did not
        return home; NaN: not checked); see :mod:`~glacierflow.matching.consistency`.
    """

    grid: NodeGrid
    dx_px: np.ndarray
    dy_px: np.ndarray
    corr: np.ndarray
    snr: np.ndarray
    settings: MatchSettings = field(default_factory=MatchSettings)
    chip_px: np.ndarray | None = None
    strain: np.ndarray | None = None
    refined: np.ndarray | None = None
    closure_px: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        """True where a node holds an offset."""
        return np.isfinite(self.dx_px) & np.isfinite(self.dy_px)


def tile_slices(grid: NodeGrid, tile_nodes: int) -> list[tuple[slice, slice]]:
    """Split the node grid into tiles of about ``tile_nodes`` nodes (square-ish)."""
    side = max(1, int(round(np.sqrt(tile_nodes))))
    return [
        (slice(i, min(i + side, grid.ny)), slice(j, min(j + side, grid.nx)))
        for i in range(0, grid.ny, side)
        for j in range(0, grid.nx, side)
    ]


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
    executor: TaskRunner | None = None,
) -> MatchResult:
    """Match a whole image pair on a regular node grid.

    Parameters
    ----------
    ref, sec : ndarray, shape (H, W)
        Reference (earlier) and secondary (later) images on the same grid, any real dtype; or
        complex orientation images (:func:`glacierflow.matching.orientation.orientation`) for the
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
    executor : TaskRunner, optional
        Runs the tiles (e.g. ``glacierflow.execute.Executor(settings.workers)``); by default
        they run here, one after the other. The result is the same either way.

    Returns
    -------
    MatchResult
        Offsets from reference to secondary in pixels (including the search centres), with peak
        correlation, SNR and the chip used at each node.
    """
    settings = settings or MatchSettings()
    ref, sec, is_complex = _checked_images(ref, sec, ref_valid, sec_valid, settings)
    grid = make_grid(
        ref.shape,
        chip_px=settings.chip_px,
        search_px=settings.search_px,
        step_px=settings.step_px,
    )
    centres = _prior_on_grid(prior_dx_px, prior_dy_px, grid)
    if settings.pyramid_levels > 1:
        ref2, rv2 = downsample2(ref, ref_valid)
        sec2, sv2 = downsample2(sec, sec_valid)
        centres = coarse_centres(ref2, rv2, sec2, sv2, settings, grid, centres, executor)
        del ref2, rv2, sec2, sv2
    cy = cx = None
    if centres is not None:
        cy, cx = (np.rint(a).astype(np.int64) for a in centres)
    # Orientation correlation works on orientation images; real input is converted here.
    if settings.method == "orientation" and not is_complex:
        ref, ref_valid = orientation(ref, ref_valid)
        sec, sec_valid = orientation(sec, sec_valid)
    fine = fine_settings(settings)  # coarse to fine: a narrower search around the centres
    ref_p, sec_p, pad = _prepared(ref, sec, ref_valid, sec_valid, fine, cy, cx)
    with _shared_images(executor, ref_p, sec_p) as (ref_p, sec_p):
        job = _Job(ref_p, sec_p, grid.rows_px() + pad, grid.cols_px() + pad, cy, cx, fine)
        return _match_passes(job, grid, progress, executor)


def _match_passes(
    job: _Job, grid: NodeGrid, progress: Callable[[int], None] | None, executor: TaskRunner | None
) -> MatchResult:
    """Every pass of :func:`match` over the prepared images: the tiles, the strain-aware
    refinement, the wider recheck and the retries with larger chips."""
    settings, ref_p, sec_p = job.settings, job.ref, job.sec
    run = map if executor is None else executor.map_unordered
    out = np.full((LAYERS, *grid.shape), np.nan, dtype=np.float32)
    for (_, ti, tj), res in run(_match_task, job.tile_tasks(grid)):
        for layer, values in zip(out, res, strict=True):
            layer[ti, tj] = values
        if progress:
            progress(res[0].size)
    # The strain-aware second pass on the first chip's matches (before any retry, which leaves
    # them untouched): affine refinement where a node needs it.
    strain = refined = None
    if settings.refine != "off" and not np.iscomplexobj(ref_p.image):
        out[0], out[1], strain, refined = refine_nodes(
            *out[:4], job.rows, job.cols, settings, image_crop(ref_p, sec_p), run
        )  # fmt: skip
    if settings.recheck_search_px:
        _recheck(out, job, run)
    # Texture-adaptive chips where the first chip's match is weak (after the refinement and
    # the recheck, which leave a larger chip's matches untouched).
    crop = image_crop(ref_p, sec_p)
    chip = adapt_chips(out, job.rows, job.cols, _centres(job), settings, crop, run)
    if refined is not None:
        refined &= chip == settings.chip_px
    dx, dy, corr, snr, closure = out
    return MatchResult(grid, dx, dy, corr, snr, settings, chip, strain, refined, closure)


def adapt_chips(
    out: np.ndarray,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    centres: tuple[np.ndarray, np.ndarray] | None,
    settings: MatchSettings,
    crop: Crop,
    run: Callable = map,
) -> np.ndarray:
    """Texture-adaptive chips: match the weak nodes again with the larger chips of
    ``settings.retry_chip_px``, in order, and keep a larger chip's match where it is more
    reliable (in place in ``out``).

    A node is weak where its NCC peak correlation is below ``retry_below_corr`` and noise
    explains it (:func:`~glacierflow.matching.chips.noise_limited`), or its peak SNR is below
    ``retry_min_snr`` (with
    ``retry_below_corr`` 0: also where it holds no offset; for any correlator). For a chip of
    ``n`` pixels of one texture seen through independent noise in both images, the peak
    correlation is ``rho = S / (S + N)`` (``S``, ``N``: signal and noise variance), and the
    variance of the offset falls as ``(1 - rho) / (rho n)``: a larger chip is kept where
    ``n rho / (1 - rho)`` grows, that is, where its extra pixels carry the same texture, and
    (forward-backward check on) where it returns home if the first match did. A node that
    gains nothing from one larger chip is not tried with the next. Where the adapted field
    shows shear (its displacement changing by more than ``refine_px`` across half the larger
    chip, as the refinement counts it across half the first one), the larger chip would
    measure its texture-weighted mean rather than the node: the node falls back to the
    largest chip it took that the shear allows, or the first.

    Parameters
    ----------
    out : ndarray of float32, shape (LAYERS, ny, nx)
        The first pass's layers (``dx_px, dy_px, corr, snr, closure_px``); updated in place.
    rows_px, cols_px : ndarray of int
        Node rows and columns in the frame of ``crop``.
    centres : (ndarray, ndarray) of int, shape (ny, nx), optional
        Search centres (rows, columns) relative to the nodes, px.
    settings : MatchSettings
        ``retry_chip_px``, ``retry_min_snr``, ``retry_below_corr``, ``refine_px`` and the
        first chip and search.
    crop : callable
        ``crop(top, left, rows, cols)``: windows of both prepared images, (image, valid) each,
        invalid past their edges (:func:`~glacierflow.matching.strain.image_crop`).
    run : callable
        ``map``-like runner of the tasks (e.g. an executor's ``map_unordered``).

    Returns
    -------
    ndarray of int16, shape (ny, nx)
        Side of the chip each node's offset came from, px.
    """
    flat = out.reshape(LAYERS, -1)
    chip = np.full(out.shape[1:], settings.chip_px, dtype=np.int16)
    cflat = chip.reshape(-1)
    if not settings.retry_chip_px or (settings.retry_below_corr > 0 and settings.method != "ncc"):
        return chip  # the peak-correlation model below is that of NCC
    levels = []  # the layers and chips before each larger chip: fall-backs across shear
    # Only weak peaks that noise explains are tried (see noise_limited).
    last = noise_limited(out, rows_px, cols_px, settings, crop).reshape(-1)
    for retry_chip in settings.retry_chip_px:
        # A node that gained nothing from one larger chip (water, cloud, a changed surface)
        # is not tried with the next: its extra pixels do not carry its texture.
        idx = np.flatnonzero(weak_nodes(flat, settings) & last)
        if idx.size == 0:
            break
        levels.append((flat.copy(), cflat.copy()))
        tasks = _chip_tasks(idx, rows_px, cols_px, centres, settings, crop, int(retry_chip))
        for (_, sel, _), res in run(_match_task, tasks):
            ok = np.isfinite(res[0]) & (res[3] >= settings.retry_min_snr)
            gain = information(res[2], retry_chip) > information(flat[2, sel], cflat[sel])
            ok &= gain | ~np.isfinite(flat[0, sel])
            # A match that returned home is replaced only by one that returns home too.
            ok &= ~(res[4] > RECHECK_CLOSURE_PX) | ~(flat[4, sel] <= RECHECK_CLOSURE_PX)
            for layer, values in zip(flat, res, strict=True):
                layer[sel[ok]] = values[ok]
            cflat[sel[ok]] = retry_chip
        last = cflat == retry_chip
    # Across shear a node falls back to the largest chip it took that the shear allows (the
    # first chip at least: the refinement's own business).
    step = int(rows_px[1] - rows_px[0]) if rows_px.size > 1 else int(cols_px[1] - cols_px[0])
    half = broad_strain(out[0], out[1], max(step, 1)).reshape(-1) / 2.0
    todo = (cflat > settings.chip_px) & (cflat * half > settings.refine_px)
    for layers, chips in reversed(levels):
        take = todo & ((chips * half <= settings.refine_px) | (chips == settings.chip_px))
        flat[:, take] = layers[:, take]
        cflat[take] = chips[take]
        todo &= ~take
    return chip


def _chip_tasks(idx, rows_px, cols_px, centres, settings, crop, chip_px, block_nodes=16):
    """Tasks for :func:`_match_task`: the ``idx`` nodes (flat) of each block of
    ``block_nodes`` x ``block_nodes`` nodes, at most 256 a task, with the windows of both images
    that their chips and searches read (so each task reads a bounded window)."""
    r, c = np.divmod(idx, cols_px.size)
    block = (r // block_nodes) * (cols_px.size // block_nodes + 1) + c // block_nodes
    order = np.argsort(block, kind="stable")
    for part in np.split(order, np.flatnonzero(np.diff(block[order])) + 1):
        for i in range(0, part.size, 256):
            k = part[i : i + 256]
            rows, cols = rows_px[r[k]], cols_px[c[k]]
            cy = None if centres is None else centres[0][r[k], c[k]]
            cx = None if centres is None else centres[1][r[k], c[k]]
            reach = 0 if cy is None else int(max(np.abs(cy).max(), np.abs(cx).max())) + 1
            margin = chip_px + settings.search_px + reach
            top, left = int(rows.min()) - margin, int(cols.min()) - margin
            height = int(rows.max()) + margin - top
            width = int(cols.max()) + margin - left
            ref, rv, sec, sv = crop(top, left, height, width)
            key = ("nodes", idx[k], chip_px)
            windows = (window_image(ref, rv), window_image(sec, sv))
            yield key, *windows, rows - top, cols - left, cy, cx, settings, chip_px


def _centres(job: _Job) -> tuple[np.ndarray, np.ndarray] | None:
    return None if job.cy is None else (job.cy, job.cx)


def _checked_images(ref, sec, ref_valid, sec_valid, settings: MatchSettings):
    """The images as arrays, checked against each other and the method; whether complex."""
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
    return ref, sec, is_complex


def _prior_on_grid(
    prior_dx_px: np.ndarray | None, prior_dy_px: np.ndarray | None, grid: NodeGrid
) -> tuple[np.ndarray, np.ndarray] | None:
    """The prior offsets (rows, columns) as float64 on the node grid, NaN taken as 0."""
    if (prior_dx_px is None) != (prior_dy_px is None):
        raise ValueError("give both prior_dx_px and prior_dy_px, or neither")
    if prior_dx_px is None:
        return None
    prior = []
    for name, p in (("prior_dy_px", prior_dy_px), ("prior_dx_px", prior_dx_px)):
        p = np.asarray(p, dtype=np.float64)
        if p.shape != grid.shape:
            raise ValueError(f"{name} must be on the node grid, shape {grid.shape}, got {p.shape}")
        prior.append(np.where(np.isfinite(p), p, 0.0))
    return prior[0], prior[1]


def _prepared(ref, sec, ref_valid, sec_valid, settings: MatchSettings, cy, cx):
    """Both images prepared for matching, padded where guided windows or retry chips may reach
    past them; and the padding, in pixels."""
    # Guided windows and larger retry chips may reach past the image: pad with invalid pixels,
    # which every correlator ignores.
    reach = 0 if cy is None else int(max(np.abs(cy).max(), np.abs(cx).max()))
    grow = max(1, settings.recheck_search_px - settings.search_px + 1)
    pad = reach + grow if (reach or settings.recheck_search_px) else 0
    # Statistics of the images themselves, not of their padding (whose rows would shift the
    # strips): the same normalisation as a tiled run from the files.
    ref_p, sec_p = (
        PreparedImage(
            *_padded(img, ok, pad),
            stats=None if pad == 0 or np.iscomplexobj(img) else image_stats(img, ok),
        )
        for img, ok in ((ref, ref_valid), (sec, sec_valid))
    )
    return ref_p, sec_p, pad


@contextmanager
def _shared_images(
    executor: TaskRunner | None, ref: PreparedImage, sec: PreparedImage
) -> Iterator[tuple[PreparedImage, PreparedImage]]:
    """Both prepared images in memory the executor's workers share (``executor.shared``,
    where it has one: local worker processes), for the ``with`` block: each task then
    carries the place of its windows, not their pixels. The images as they are otherwise."""
    shared = getattr(executor, "shared", None)
    if shared is None:
        yield ref, sec
        return
    with shared([ref.image, ref.valid, sec.image, sec.valid]) as arrays:
        out = []
        for image, (pixels, valid) in zip((ref, sec), (arrays[:2], arrays[2:]), strict=True):
            twin = copy.copy(image)
            twin.image, twin.valid = pixels, valid
            out.append(twin)
        yield out[0], out[1]


def _recheck(out: np.ndarray, job: _Job, run: Callable) -> None:
    """Match again, over ``recheck_search_px`` around the same centres, the nodes whose match
    did not return home (closure above :data:`RECHECK_CLOSURE_PX`) or found no peak inside the
    search (one on its border); keep a new match only where it returns home. The true motion
    may lie beyond the first search (ice moving 17-22 px through the crevassed neck of Yahtse
    in 16 days, against +/-16 px), where the first search could only find a chance alignment
    one crevasse spacing short of it. Nodes still not home are then searched over the first
    search radius around the median offset of their 5 x 5 neighbours that are home."""
    settings = job.settings
    idx = np.flatnonzero(~np.isfinite(out[0]) | (out[4] > RECHECK_CLOSURE_PX))
    if idx.size == 0:
        return
    wide = replace(
        job, settings=settings.model_copy(update={"search_px": settings.recheck_search_px})
    )
    flat = out.reshape(LAYERS, -1)
    for (_, sel, _), res in run(_match_task, wide.node_tasks(idx, settings.chip_px)):
        ok = np.isfinite(res[0]) & ~(res[4] > RECHECK_CLOSURE_PX)
        for layer, values in zip(flat, res, strict=True):
            layer[sel[ok]] = values[ok]
    # Nodes still not home may have found a wrong peak inside the search (a shadow, a rock
    # edge) while the truth lies beside it: search again around their neighbours' motion.
    idx = np.flatnonzero(np.isfinite(out[0]) & (out[4] > RECHECK_CLOSURE_PX))
    if idx.size == 0:
        return
    lim = max(settings.recheck_search_px - settings.search_px, 0)  # what the padding holds
    home = np.isfinite(out[0]) & ~(out[4] > RECHECK_CLOSURE_PX)
    cy, cx = (np.clip(_neighbour_median(a, home), -lim, lim) for a in (out[1], out[0]))
    moved = replace(job, cy=cy, cx=cx)
    for (_, sel, _), res in run(_match_task, moved.node_tasks(idx, settings.chip_px)):
        ok = np.isfinite(res[0]) & ~(res[4] > RECHECK_CLOSURE_PX)
        for layer, values in zip(flat, res, strict=True):
            layer[sel[ok]] = values[ok]


def _neighbour_median(offset_px: np.ndarray, use: np.ndarray, half: int = 2) -> np.ndarray:
    """Rounded median of the used offsets in each node's ``(2 half + 1)^2`` neighbourhood
    (pixels; 0 where none is used)."""
    w = 2 * half + 1
    padded = np.pad(np.where(use, offset_px, np.nan), half, constant_values=np.nan)
    windows = sliding_window_view(padded, (w, w)).reshape(*offset_px.shape, w * w)
    counts = np.isfinite(windows).sum(axis=-1)
    med = np.nanmedian(np.where(counts[..., None] > 0, windows, 0.0), axis=-1)
    return np.rint(np.where(counts > 0, med, 0.0)).astype(np.int64)


def _padded(image: np.ndarray, valid: np.ndarray | None, pad: int):
    if pad == 0:
        return image, valid
    ok = np.isfinite(image) if valid is None else (np.asarray(valid, bool) & np.isfinite(image))
    return np.pad(np.where(ok, image, 0), pad), np.pad(ok, pad)


@dataclass
class _Job:
    """One matching pass: the prepared images, node positions and search centres, from which
    self-contained tasks are cut (each with the windows of both images that it reads)."""

    ref: PreparedImage
    sec: PreparedImage
    rows: np.ndarray  # node rows in the (padded) images, px
    cols: np.ndarray  # node columns, px
    cy: np.ndarray | None  # search centres relative to the nodes, px, shape of the grid
    cx: np.ndarray | None
    settings: MatchSettings

    def tile_tasks(self, grid: NodeGrid) -> Iterator[tuple]:
        """One task per rectangular tile of :func:`tile_slices`."""
        for ti, tj in tile_slices(grid, self.settings.tile_nodes):
            cy = None if self.cy is None else self.cy[ti, tj]
            cx = None if self.cx is None else self.cx[ti, tj]
            yield self._task(("tile", ti, tj), self.rows[ti], self.cols[tj], cy, cx, None)

    def node_tasks(self, idx: np.ndarray, chip_px: int, per_task: int = 256) -> Iterator[tuple]:
        """Tasks of ``per_task`` nodes (flat grid indices ``idx``) matched with ``chip_px``."""
        for i in range(0, idx.size, per_task):
            sel = idx[i : i + per_task]
            r, c = np.divmod(sel, self.cols.size)
            cy = None if self.cy is None else self.cy[r, c]
            cx = None if self.cx is None else self.cx[r, c]
            yield self._task(("nodes", sel, chip_px), self.rows[r], self.cols[c], cy, cx, chip_px)

    def _task(self, key, rows, cols, cy, cx, chip_px) -> tuple:
        # The window every chip and search window of these nodes lies in (with a pixel to spare
        # around a shared kernel's middle centre), clipped to the images; rows and columns are
        # then counted from its corner.
        chip = max(self.settings.chip_px, chip_px or 0)
        reach = 0 if cy is None else int(max(np.abs(cy).max(), np.abs(cx).max())) + 1
        margin = chip + self.settings.search_px + reach
        h, w = self.ref.shape
        r0, c0 = max(int(rows.min()) - margin, 0), max(int(cols.min()) - margin, 0)
        r1, c1 = min(int(rows.max()) + margin, h), min(int(cols.max()) + margin, w)
        windows = tuple(im.crop(r0, c0, r1 - r0, c1 - c0) for im in (self.ref, self.sec))
        return key, *windows, rows - r0, cols - c0, cy, cx, self.settings, chip_px


def _match_task(task: tuple) -> tuple[tuple, tuple[np.ndarray, ...]]:
    """Run one task of :class:`_Job` (in any process): its key and its :data:`LAYERS`."""
    key, ref, sec, rows, cols, cy, cx, settings, chip_px = task
    if key[0] == "tile":
        return key, match_tile(ref, sec, rows, cols, settings, cy, cx)
    return key, match_nodes(ref, sec, rows, cols, settings, cy, cx, chip_px=chip_px)


def coarse_centres(
    ref2: np.ndarray,
    ref2_valid: np.ndarray,
    sec2: np.ndarray,
    sec2_valid: np.ndarray,
    settings: MatchSettings,
    grid: NodeGrid,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
    executor: TaskRunner | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Search centres of the fine nodes from a matching pass on images at half resolution.

    Parameters
    ----------
    ref2, ref2_valid, sec2, sec2_valid : ndarray
        The images downsampled by two (:func:`~glacierflow.matching.pyramid.downsample2`) and
        their validity.
    settings : MatchSettings
        The fine settings; the coarse pass uses the same chip, search and step in coarse
        pixels, ``pyramid_levels - 1`` levels below it
        (:func:`~glacierflow.matching.pyramid.coarse_settings`).
    grid : NodeGrid
        The fine node grid.
    prior : (ndarray, ndarray), optional
        Expected offsets (rows, columns) of the fine nodes, in fine pixels, NaN-free.
    executor : TaskRunner, optional
        Runs the coarse pass's tiles (see :func:`match`).

    Returns
    -------
    (ndarray, ndarray) or None
        Row and column offsets of the fine nodes' search centres, in fine pixels (not rounded);
        the prior (or None) where the images are too small for a coarse grid.
    """
    coarse = coarse_settings(settings).model_copy(update={"refine": "off"})
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
        cprior = tuple(sample_nodes(p.astype(np.float64), crow, ccol) / 2.0 for p in prior)
    res = match(
        ref2,
        sec2,
        ref2_valid,
        sec2_valid,
        coarse,
        prior_dx_px=None if cprior is None else cprior[1],
        prior_dy_px=None if cprior is None else cprior[0],
        executor=executor,
    )
    # Coarse node index of each fine node.
    frow = ((grid.rows_px() - 0.5) / 2.0 - cgrid.row0_px) / cgrid.step_px
    fcol = ((grid.cols_px() - 0.5) / 2.0 - cgrid.col0_px) / cgrid.step_px
    out = []
    for k, off in enumerate((res.dy_px, res.dx_px)):
        fallback = None if cprior is None else cprior[k]
        smooth = fill_nan(nanmedian3(off.astype(np.float64)), fallback)
        out.append(2.0 * sample_nodes(smooth, frow, fcol))
    return out[0], out[1]
