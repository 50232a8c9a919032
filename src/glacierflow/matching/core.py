"""Area-based matching of a whole image pair on a regular node grid.

Arrays in, arrays out: no files, no CRS. The work is split into batches of nodes; each batch is
one set of FFT calls, and batches run on a thread pool (the FFTs release the GIL).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from glacierflow.matching.grid import NodeGrid, extract_chips, make_grid
from glacierflow.matching.ncc import (
    PreparedImage,
    block_size_px,
    ncc_grid,
    ncc_nodes,
    ncc_surfaces,
)
from glacierflow.matching.subpixel import SUBPIXEL_METHODS, refine_peak

METHODS = ("ncc",)


@dataclass(frozen=True)
class MatchSettings:
    """Parameters of area-based matching.

    Attributes
    ----------
    chip_px : int
        Side of the reference chip, in pixels.
    search_px : int
        Largest offset searched in each direction, in pixels.
    step_px : int
        Node spacing, in pixels.
    method : str
        Correlator: ``"ncc"``.
    subpixel : str
        Peak estimator, one of :data:`~glacierflow.matching.subpixel.SUBPIXEL_METHODS`.
    min_valid_fraction : float
        Smallest fraction of valid pixels in a reference chip for its node to be matched.
    batch_nodes : int
        Nodes per tile, matched in one set of FFT calls. Small tiles keep the working set in the
        CPU cache (256 measured fastest for 32 px chips and 16 px search).
    workers : int
        Processes matching tiles in parallel.
    """

    chip_px: int = 32
    search_px: int = 16
    step_px: int = 8
    method: str = "ncc"
    subpixel: str = "lanczos"
    min_valid_fraction: float = 0.5
    batch_nodes: int = 256
    workers: int = 1

    def __post_init__(self) -> None:
        for name in ("chip_px", "search_px", "step_px", "batch_nodes", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive whole number, got {value!r}")
        if self.chip_px < 4:
            raise ValueError(f"chip_px must be at least 4 pixels, got {self.chip_px}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.subpixel not in SUBPIXEL_METHODS:
            raise ValueError(f"subpixel must be one of {SUBPIXEL_METHODS}, got {self.subpixel!r}")
        if not 0 < self.min_valid_fraction <= 1:
            raise ValueError("min_valid_fraction must be in (0, 1]")


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
        Peak normalized cross-correlation.
    snr : ndarray of float32
        Peak correlation over the mean absolute correlation away from the peak.
    """

    grid: NodeGrid
    dx_px: np.ndarray
    dy_px: np.ndarray
    corr: np.ndarray
    snr: np.ndarray
    settings: MatchSettings = field(default_factory=MatchSettings)

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
    finite = np.isfinite(surfaces)
    a = np.abs(np.where(finite, surfaces, 0.0))
    total = a.reshape(n, -1).sum(axis=1, dtype=np.float64)
    count = finite.reshape(n, -1).sum(axis=1)
    # Remove the box around the peak (clipped at the surface border) from sum and count.
    offs = np.arange(-exclude_px, exclude_px + 1)
    rr = rows[:, None] + offs[None, :]
    cc = cols[:, None] + offs[None, :]
    inside = ((rr >= 0) & (rr < k))[:, :, None] & ((cc >= 0) & (cc < k))[:, None, :]
    idx = np.arange(n)[:, None, None]
    rc, ccl = np.clip(rr, 0, k - 1)[:, :, None], np.clip(cc, 0, k - 1)[:, None, :]
    box = np.where(inside, a[idx, rc, ccl], 0.0).reshape(n, -1).sum(axis=1)
    fbox = (inside & finite[idx, rc, ccl]).reshape(n, -1).sum(axis=1)
    noise = (total - box) / np.maximum(count - fbox, 1)
    peak = surfaces[np.arange(n), rows, cols]
    return peak / np.maximum(noise, 1e-6)


def match_tile(
    ref: PreparedImage,
    sec: PreparedImage,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    settings: MatchSettings,
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

    Returns
    -------
    dx_px, dy_px, corr, snr : ndarray, shape (len(rows_px), len(cols_px))
        Offsets (pixels, right and down) and quality; NaN where the node could not be matched.
    """
    c, s = settings.chip_px, settings.search_px
    half = c // 2
    k = 2 * s + 1
    rr, cc = np.meshgrid(rows_px, cols_px, indexing="ij")
    r, col = rr.ravel(), cc.ravel()
    n = r.size
    top, left = r - half, col - half
    r0, c0 = int(rows_px[0]) - half, int(cols_px[0]) - half
    span_r = int(rows_px[-1] - rows_px[0]) + c
    span_c = int(cols_px[-1] - cols_px[0]) + c
    ref_tab = ref.tables(r0, c0, span_r, span_c)
    sec_tab = sec.tables(r0 - s, c0 - s, span_r + 2 * s, span_c + 2 * s)
    chip_bad = ref_tab.invalid_count(top, left, c)
    win_bad = sec_tab.invalid_count(top - s, left - s, c + 2 * s)
    usable = chip_bad <= (1.0 - settings.min_valid_fraction) * c * c
    masked = (chip_bad > 0) | (win_bad > 0)
    full = ~masked & usable
    block = block_size_px(c, settings.step_px, s)
    if block is not None and full.mean() > 0.5:
        surf = ncc_grid(ref, sec, ref_tab, sec_tab, rows_px, cols_px, c, s, block)
    else:
        surf = np.full((n, k, k), np.nan, dtype=np.float32)
        if full.any():
            surf[full] = ncc_nodes(ref, sec, ref_tab, sec_tab, r[full], col[full], c, s)
    part = masked & usable
    if part.any():
        rp, cp = r[part], col[part]
        surf[part] = ncc_surfaces(
            extract_chips(ref.image, rp, cp, c, half),
            extract_chips(sec.image, rp, cp, c + 2 * s, half + s),
            extract_chips(ref.valid, rp, cp, c, half),
            extract_chips(sec.valid, rp, cp, c + 2 * s, half + s),
        )
    surf[~usable] = np.nan
    dx, dy, corr, snr = locate_peaks(surf, settings)
    shape = rr.shape
    return dx.reshape(shape), dy.reshape(shape), corr.reshape(shape), snr.reshape(shape)


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
    """
    n, k, _ = surf.shape
    s = settings.search_px
    finite = np.isfinite(surf)
    usable = finite.any(axis=(1, 2))
    flat = np.where(finite, surf, -np.inf).reshape(n, -1).argmax(axis=1)
    pr, pc = np.divmod(flat, k)
    # A peak on the border of the search range is a truncated peak: the true maximum may lie
    # outside, so its position cannot be trusted.
    usable &= (pr > 0) & (pr < k - 1) & (pc > 0) & (pc < k - 1)
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


_WORKER_STATE: dict[str, object] = {}


def _worker_init(ref: PreparedImage, sec: PreparedImage, rows, cols, settings) -> None:
    _WORKER_STATE.update(ref=ref, sec=sec, rows=rows, cols=cols, settings=settings)


def _worker_tile(tile: tuple[slice, slice]):
    st = _WORKER_STATE
    ti, tj = tile
    return tile, match_tile(st["ref"], st["sec"], st["rows"][ti], st["cols"][tj], st["settings"])


def run_tiles(
    ref: PreparedImage,
    sec: PreparedImage,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    tiles: list[tuple[slice, slice]],
    settings: MatchSettings,
) -> Iterator[tuple[tuple[slice, slice], tuple[np.ndarray, ...]]]:
    """Match tiles, in this process or on ``settings.workers`` worker processes.

    Worker processes, not threads: a tile is many small numpy calls, and threads would queue on
    the interpreter lock between them. Where the platform can fork, workers inherit the prepared
    images without copying; elsewhere they receive them once, at start-up.

    Yields
    ------
    tile, (dx_px, dy_px, corr, snr)
        Each tile's slices of the node grid and its results, in completion order.
    """
    if settings.workers == 1 or len(tiles) < 2:
        for ti, tj in tiles:
            yield (ti, tj), match_tile(ref, sec, rows_px[ti], cols_px[tj], settings)
        return
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(
        settings.workers,
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(ref, sec, rows_px, cols_px, settings),
    ) as pool:
        chunk = max(1, len(tiles) // (8 * settings.workers))
        yield from pool.map(_worker_tile, tiles, chunksize=chunk)


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
) -> MatchResult:
    """Match a whole image pair on a regular node grid.

    Parameters
    ----------
    ref, sec : ndarray, shape (H, W)
        Reference (earlier) and secondary (later) images on the same grid, any real dtype.
    ref_valid, sec_valid : ndarray of bool, optional
        Pixel validity; invalid pixels take no part in the correlation.
    settings : MatchSettings, optional
        Matching parameters (defaults: chip 32 px, search +/-16 px, step 8 px).
    progress : callable, optional
        Called with the number of nodes finished after each batch.

    Returns
    -------
    MatchResult
        Offsets from reference to secondary in pixels, with peak correlation and SNR.
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
    ref_p = PreparedImage(ref, ref_valid)
    sec_p = PreparedImage(sec, sec_valid)
    grid = make_grid(
        ref.shape,
        chip_px=settings.chip_px,
        search_px=settings.search_px,
        step_px=settings.step_px,
    )
    rows, cols = grid.rows_px(), grid.cols_px()
    out = np.full((4, *grid.shape), np.nan, dtype=np.float32)
    tiles = tile_slices(grid, settings.batch_nodes)
    for (ti, tj), res in run_tiles(ref_p, sec_p, rows, cols, tiles, settings):
        for layer, values in zip(out, res, strict=True):
            layer[ti, tj] = values
        if progress:
            progress(res[0].size)
    dx, dy, corr, snr = out
    return MatchResult(grid, dx, dy, corr, snr, settings)
