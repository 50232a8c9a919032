"""Peak location on correlation surfaces: integer peak, border test, sub-pixel refinement, SNR.

Every correlator turns a node into a correlation surface over the integer offsets of its search
window; :func:`locate_peaks` then picks the integer peak, rejects peaks on the border of the
search range (truncated peaks), refines the peak to sub-pixel precision
(:mod:`glacierflow.matching.subpixel`) and rates it (:func:`peak_snr`).
"""

from __future__ import annotations

import numpy as np

from glacierflow.matching.ncc import compiled_loops
from glacierflow.matching.settings import MatchSettings
from glacierflow.matching.subpixel import (
    COS_TAYLOR,
    SIN_TAYLOR,
    lanczos_tap_factors,
    lanczos_taps,
    refine_peak,
)

__all__ = ["integer_peaks", "locate_peaks", "peak_snr"]


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
    fused = compiled_loops(surf.size) if settings.subpixel == "lanczos" else None
    if fused is not None:
        # One compiled pass per surface: peak, SNR and refinement (the same values).
        taps, order = lanczos_taps(surf.shape[1])
        factors = (*lanczos_tap_factors(taps, order), SIN_TAYLOR, COS_TAYLOR)
        out = fused.locate_lanczos(surf, s, taps, order, factors)
        return out[0], out[1], out[2], out[3]
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
