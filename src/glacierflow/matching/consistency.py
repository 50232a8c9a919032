"""The forward-backward check: does a match return home when it is made the other way round?

Area-based matching picks the best of the offsets it searched, right or wrong. A *true* match is
symmetric: the secondary chip at the position found, matched back onto the reference, lands on
the node it came from (within the sub-pixel noise, about 0.1 px on real texture). A wrong one
often is not. Where the chip's best partner is a chance alignment of oriented texture (periodic
crevasses seen one crevasse spacing away, when the true peak lies beyond the search range), a
smooth brightness ramp (snow under a changed sun), an edge of cloud, shadow or melange, the
secondary chip at the found position has a better partner elsewhere near home, and the backward
peak lands there. This is the left-right consistency check of stereo matching (e.g. Hirschmüller
2008) and the forward-backward error of feature tracking (Kalal et al. 2010), applied to chips.

The check runs where a node needs it: on every node with an offset whose forward peak is not
unambiguous (SNR below :data:`UNAMBIGUOUS_SNR`). The backward search is small: the secondary
chip is correlated with the reference over ``(2 b + 1)^2`` integer shifts around home (``b`` =
:attr:`MatchSettings.backmatch_px`, 2 px by default), the peak refined on the cubic-convolution
interpolation of that small surface (a three-point parabola, biased for the oblique peaks of
crevassed ice, closes true matches on the Yahtse tongue about twice as badly). A backward peak
on the border of that small search did not return home: its closure is infinite. It runs inside
the matcher (:func:`glacierflow.matching.nodes.match_nodes`), on the windows the node's task
holds, so in-memory and tiled runs give the same closures bit for bit. Nodes whose secondary
chip or reference window holds nodata are not checked (NaN), nor are complex (orientation)
images. The closure is judged by :func:`glacierflow.filters.filter_offsets`
(``max_closure_px``) at the nodes in doubt only (:func:`glacierflow.plausibility.closure_in_doubt`:
a weak peak, or an offset straying from its neighbours): on streaked or faint texture a true
match slides along the streaks both ways, and its closure measures that slop, not a mismatch.

References
----------
.. [1] Hirschmüller, H. (2008). Stereo processing by semiglobal matching and mutual
   information. IEEE Transactions on Pattern Analysis and Machine Intelligence 30(2), 328-341.
   doi:10.1109/TPAMI.2007.1166
.. [2] Kalal, Z., Mikolajczyk, K. and Matas, J. (2010). Forward-backward error: automatic
   detection of tracking failures. 20th International Conference on Pattern Recognition,
   2756-2759. doi:10.1109/ICPR.2010.675
"""

from __future__ import annotations

import numpy as np

from glacierflow.matching.grid import extract_chips
from glacierflow.matching.ncc import PreparedImage
from glacierflow.matching.subpixel import refine_peak

__all__ = ["BATCH_NODES", "UNAMBIGUOUS_SNR", "closure_px"]

#: Nodes whose backward surfaces are computed at once (bounds the memory of the window stack:
#: about 5 MB for 32 px chips).
BATCH_NODES = 1024
#: Forward peaks at least this many times the mean absolute correlation of the rest of their
#: surface (:func:`~glacierflow.matching.peaks.peak_snr`) have no rival and are not checked. On
#: the real Yahtse pair, the backward match misses home by more than 0.5 px for 32 % of the
#: nodes with an SNR below 2, 8 % at 3 to 4, 1 % at 5 to 8 and none above 12; the aliased
#: matches of the crevassed neck peak at SNR 2 to 5. Skipping the unambiguous third of the
#: nodes keeps the check's cost near a quarter of the matching.
UNAMBIGUOUS_SNR = 5.0


def closure_px(
    ref: PreparedImage,
    sec: PreparedImage,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    chip_px: int,
    back_px: int = 2,
    snr: np.ndarray | None = None,
) -> np.ndarray:
    """Forward-backward closure of matched nodes, in pixels.

    Parameters
    ----------
    ref, sec : PreparedImage
        The reference and secondary images the forward match was made on.
    rows_px, cols_px : ndarray of int, shape (N,)
        Node centres, in the images' pixels.
    dx_px, dy_px : ndarray, shape (N,)
        Forward offsets from reference to secondary (right, down), in pixels; NaN where the node
        has none.
    chip_px : int
        Chip side, in pixels (the forward chip's).
    back_px : int
        Radius of the backward search around home, in pixels (at least 2: the integer peak must
        have neighbours inside the search for its sub-pixel refinement); 0 checks nothing.
    snr : ndarray, shape (N,), optional
        The forward peaks' SNR: nodes at :data:`UNAMBIGUOUS_SNR` or above are not checked.

    Returns
    -------
    ndarray of float32, shape (N,)
        ``|forward + backward|``, the distance from home at which the backward match lands, in
        pixels; ``inf`` where the backward peak lies on the border of its search (it did not
        return home); NaN where not checked (no offset, an unambiguous forward peak, nodata in
        the secondary chip or the reference window, complex images, ``back_px`` 0, or chips
        reaching past the images).

    Raises
    ------
    ValueError
        For ``back_px`` of 1 or a negative one, or arrays of different lengths.
    """
    rows_px, cols_px = np.asarray(rows_px), np.asarray(cols_px)
    dx_px, dy_px = np.asarray(dx_px, np.float64), np.asarray(dy_px, np.float64)
    if not rows_px.shape == cols_px.shape == dx_px.shape == dy_px.shape:
        raise ValueError("rows_px, cols_px, dx_px and dy_px must have one shape")
    if back_px == 1 or back_px < 0:
        raise ValueError(f"back_px must be 0 (no check) or at least 2, got {back_px}")
    out = np.full(rows_px.shape, np.nan, dtype=np.float32)
    if back_px == 0 or np.iscomplexobj(ref.image) or np.iscomplexobj(sec.image):
        return out
    c, b = int(chip_px), int(back_px)
    half = c // 2
    ok = np.isfinite(dx_px) & np.isfinite(dy_px)
    if snr is not None:
        ok &= ~(np.asarray(snr) >= UNAMBIGUOUS_SNR)
    iy = np.where(ok, np.rint(dy_px), 0).astype(np.int64)
    ix = np.where(ok, np.rint(dx_px), 0).astype(np.int64)
    # Both reads must lie inside the images (the task's windows always hold them).
    h, w = ref.shape
    qr, qc = rows_px + iy, cols_px + ix
    inside = (qr - half >= 0) & (qr - half + c <= h) & (qc - half >= 0) & (qc - half + c <= w)
    inside &= (rows_px - half - b >= 0) & (rows_px - half - b + c + 2 * b <= h)
    inside &= (cols_px - half - b >= 0) & (cols_px - half - b + c + 2 * b <= w)
    idx = np.flatnonzero(ok & inside)
    if idx.size == 0:
        return out
    # Summed-area tables over what the nodes read: window sums and nodata counts by look-ups.
    r, col = rows_px[idx], cols_px[idx]
    top = min(int(r.min()) - half - b, int(qr[idx].min()) - half)
    left = min(int(col.min()) - half - b, int(qc[idx].min()) - half)
    bottom = max(int(r.max()) - half + c + b, int(qr[idx].max()) - half + c)
    right = max(int(col.max()) - half + c + b, int(qc[idx].max()) - half + c)
    ref_tab = ref.tables(top, left, bottom - top, right - left)
    sec_tab = sec.tables(top, left, bottom - top, right - left, sums=False)
    for start in range(0, idx.size, BATCH_NODES):
        sel = idx[start : start + BATCH_NODES]
        ey, ex, checked = _backward_peaks(
            ref, sec, ref_tab, sec_tab, rows_px[sel], cols_px[sel], qr[sel], qc[sel], c, b
        )
        fy, fx = dy_px[sel] - iy[sel], dx_px[sel] - ix[sel]
        closure = np.hypot(fy + ey, fx + ex).astype(np.float32)
        out[sel] = np.where(checked, closure, np.nan)
    return out


def _backward_peaks(ref, sec, ref_tab, sec_tab, rows, cols, qr, qc, c, b):
    """Backward sub-pixel peaks (rows, columns, relative to home) of nodes, and whether each
    was checked (no nodata read); ``inf`` for peaks on the border of the backward search."""
    half = c // 2
    k = 2 * b + 1
    n = rows.size
    checked = sec_tab.invalid_count(qr - half, qc - half, c) == 0
    checked &= ref_tab.invalid_count(rows - half - b, cols - half - b, c + 2 * b) == 0
    chips = extract_chips(sec.image, qr, qc, c, half)
    chips = chips - chips.mean(axis=(1, 2), dtype=np.float64)[:, None, None].astype(np.float32)
    chip_energy = np.einsum("nkl,nkl->n", chips, chips, dtype=np.float64)
    wins = extract_chips(ref.image, rows, cols, c + 2 * b, half + b)
    # The chip is zero-mean, so the window's local mean cancels in the numerator; the window's
    # energy at each shift comes from the summed-area tables.
    sh = np.arange(-b, b + 1)
    tops = (rows - half)[:, None, None] + sh[None, :, None]
    lefts = (cols - half)[:, None, None] + sh[None, None, :]
    s1 = ref_tab.box_sums(tops, lefts, c)
    s2 = ref_tab.box_sums(tops, lefts, c, squared=True)
    energy = np.maximum(s2 - s1 * s1 / (c * c), 0.0) * chip_energy[:, None, None]
    num = np.empty((n, k, k))
    for i in range(k):
        for j in range(k):
            num[:, i, j] = np.einsum("nkl,nkl->n", chips, wins[:, i : i + c, j : j + c])
    with np.errstate(divide="ignore", invalid="ignore"):  # flat chips: NaN, not checked
        surf = np.where(energy > 0, num / np.sqrt(energy), np.nan)
    flat = np.where(np.isfinite(surf), surf, -np.inf).reshape(n, -1).argmax(axis=1)
    pr, pc = np.divmod(flat, k)
    checked &= np.isfinite(surf.reshape(n, -1)[np.arange(n), flat])
    border = (pr == 0) | (pr == k - 1) | (pc == 0) | (pc == k - 1)
    ey = np.full(n, np.inf)
    ex = np.full(n, np.inf)
    inner = ~border & checked
    if inner.any():
        dr, dc = refine_peak(surf[inner], pr[inner], pc[inner], "cubic")
        ey[inner] = pr[inner] - b + dr
        ex[inner] = pc[inner] - b + dc
    return ey, ex, checked
