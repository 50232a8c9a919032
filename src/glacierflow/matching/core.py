"""Area-based matching of a whole image pair on a regular node grid.

Arrays in, arrays out: no files, no CRS. The work is split into batches of nodes; each batch is
one set of FFT calls, and batches run on a thread pool (the FFTs release the GIL).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from glacierflow.matching.grid import NodeGrid, extract_chips, make_grid
from glacierflow.matching.ncc import PreparedImage, _ncc_full, ncc_surfaces
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
        Nodes per FFT batch (memory grows about 0.3 MB per node for 32 px chips).
    workers : int
        Threads matching batches in parallel.
    """

    chip_px: int = 32
    search_px: int = 16
    step_px: int = 8
    method: str = "ncc"
    subpixel: str = "lanczos"
    min_valid_fraction: float = 0.5
    batch_nodes: int = 1024
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
    a = np.abs(np.nan_to_num(surfaces, nan=0.0))
    total = a.reshape(n, -1).sum(axis=1, dtype=np.float64)
    count = np.isfinite(surfaces).reshape(n, -1).sum(axis=1)
    # Remove the box around the peak (clipped at the surface border) from sum and count.
    w = 2 * exclude_px + 1
    padded = np.pad(a, ((0, 0), (exclude_px, exclude_px), (exclude_px, exclude_px)))
    fin = np.pad(np.isfinite(surfaces), ((0, 0), (exclude_px, exclude_px), (exclude_px,) * 2))
    box = sliding_window_view(padded, (w, w), axis=(1, 2))[np.arange(n), rows, cols]
    fbox = sliding_window_view(fin, (w, w), axis=(1, 2))[np.arange(n), rows, cols]
    noise = (total - box.reshape(n, -1).sum(axis=1)) / np.maximum(
        count - fbox.reshape(n, -1).sum(axis=1), 1
    )
    peak = surfaces[np.arange(n), rows, cols]
    return peak / np.maximum(noise, 1e-6)


def match_nodes(
    ref: PreparedImage,
    sec: PreparedImage,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    settings: MatchSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match one batch of nodes.

    Parameters
    ----------
    ref, sec : PreparedImage
        Reference and secondary images on one grid, prepared for ``settings.chip_px``.
    rows_px, cols_px : ndarray of int, shape (N,)
        Node positions; chips and search windows must lie inside the images.
    settings : MatchSettings
        Chip and search sizes, correlator and peak estimator.

    Returns
    -------
    dx_px, dy_px, corr, snr : ndarray, shape (N,)
        Offsets (pixels, right and down) and quality; NaN where the node could not be matched.
    """
    c, s = settings.chip_px, settings.search_px
    half = c // 2
    n = rows_px.size
    k = 2 * s + 1
    top, left = rows_px - half, cols_px - half
    chip_bad = ref.invalid_count(top, left, c)
    win_bad = sec.invalid_count(top - s, left - s, c + 2 * s)
    usable = chip_bad <= (1.0 - settings.min_valid_fraction) * c * c
    masked = (chip_bad > 0) | (win_bad > 0)
    full = ~masked & usable
    surf = np.full((n, k, k), np.nan, dtype=np.float32)
    if full.any():
        r, cc = rows_px[full], cols_px[full]
        chips = extract_chips(ref.image, r, cc, c, half)
        windows = extract_chips(sec.image, r, cc, c + 2 * s, half + s)
        s1 = sliding_window_view(sec.box1, (k, k))[r - half - s, cc - half - s]
        s2 = sliding_window_view(sec.box2, (k, k))[r - half - s, cc - half - s]
        surf[full] = _ncc_full(chips, windows, k, s1, s2)
    part = masked & usable
    if part.any():
        r, cc = rows_px[part], cols_px[part]
        surf[part] = ncc_surfaces(
            extract_chips(ref.image, r, cc, c, half),
            extract_chips(sec.image, r, cc, c + 2 * s, half + s),
            extract_chips(ref.valid, r, cc, c, half),
            extract_chips(sec.valid, r, cc, c + 2 * s, half + s),
        )
    finite = np.isfinite(surf)
    usable &= finite.any(axis=(1, 2))
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
    ref_p = PreparedImage(ref, ref_valid, settings.chip_px)
    sec_p = PreparedImage(sec, sec_valid, settings.chip_px)
    grid = make_grid(
        ref.shape,
        chip_px=settings.chip_px,
        search_px=settings.search_px,
        step_px=settings.step_px,
    )
    rr, cc = np.meshgrid(grid.rows_px(), grid.cols_px(), indexing="ij")
    rows, cols = rr.ravel(), cc.ravel()
    n = rows.size
    out = np.full((4, n), np.nan, dtype=np.float32)
    b = settings.batch_nodes
    starts = range(0, n, b)

    def run(start: int) -> int:
        sl = slice(start, min(start + b, n))
        out[:, sl] = match_nodes(ref_p, sec_p, rows[sl], cols[sl], settings)
        return sl.stop - sl.start

    if settings.workers == 1:
        for start in starts:
            done = run(start)
            if progress:
                progress(done)
    else:
        with ThreadPoolExecutor(settings.workers) as pool:
            for done in pool.map(run, starts):
                if progress:
                    progress(done)
    dx, dy, corr, snr = (a.reshape(grid.shape) for a in out)
    return MatchResult(grid, dx, dy, corr, snr, settings)
