"""Affine least-squares refinement of a chip's match: the offset of the node, not of the chip.

A translation-only correlator (NCC, phase) returns the displacement of a chip's texture-weighted
centre. Where the ice shears across the chip (a glacier margin), that is not the displacement
of the node in the chip's middle, and bright texture on one side of the chip can pull the peak
a pixel or more away. This module refines such matches with the inverse-compositional
Gauss-Newton algorithm of digital image correlation (IC-GN; Baker and Matthews 2004, "Lucas-Kanade
20 years on"; Pan, Li and Tong 2013, "Fast, robust and accurate digital image correlation
calculation without redundant computations", Experimental Mechanics 53) with a first-order
(affine) shape function and the zero-normalised sum of squared differences, so that gain and
offset between the dates do not matter:

* the displacement of a reference pixel at ``(u, v)`` from the node is modelled as
  ``(u0 + ux u + uy v, v0 + vx u + vy v)``: the translation ``(u0, v0)`` is the node's own
  offset and ``(ux, uy, vx, vy)`` the displacement gradient (px/px) across the chip;
* every pixel is weighted by a Gaussian centred on the node (``sigma_px``), so the estimate
  belongs to the node rather than to the edge of the chip;
* the secondary image is sampled by cubic B-splines computed on a patch around each node (its
  own prefilter; no image-wide state), so a node's result does not depend on which other nodes
  are refined with it, nor on the tile it lies in.

Importing this module imports numba and loads the compiled fit (a few tenths of a second, cached
on disk by numba; seconds the very first time, which compiles): the worker processes of a
matching run import it before they fork (``glacierflow.track.MATCHING_MODULES``), so that each
worker has it ready; a process that matches alone imports it only once a node is refined.

Arrays in, arrays out: windows of prepared images (:class:`~glacierflow.matching.ncc.PreparedImage`)
and node positions in their pixel frame.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from glacierflow.matching.settings import MAX_GRADIENT, MAX_MOVE_PX

__all__ = ["AffineFit", "refine_affine"]


class AffineFit(NamedTuple):
    """Result of :func:`refine_affine`, one entry per node."""

    dx_px: np.ndarray  #: refined offset right, px (NaN: not refined)
    dy_px: np.ndarray  #: refined offset down, px (NaN: not refined)
    gradient: np.ndarray  #: displacement gradient (ux, uy, vx, vy), px/px, shape (N, 4)
    corr: np.ndarray  #: weighted zero-normalised correlation of the affine-warped chip
    ok: np.ndarray  #: True where the fit converged (and is kept)
    #: the same weighted correlation at the starting translation without strain (the
    #: correlator's match under the fit's window; NaN where the node was not tried)
    corr_start: np.ndarray


def refine_affine(
    ref_image: np.ndarray,
    ref_valid: np.ndarray,
    sec_image: np.ndarray,
    sec_valid: np.ndarray,
    rows_px: np.ndarray,
    cols_px: np.ndarray,
    dx0_px: np.ndarray,
    dy0_px: np.ndarray,
    gradient0: np.ndarray | None = None,
    *,
    half_px: int = 16,
    sigma_px: float = 8.0,
    iterations: int = 6,
    min_valid_fraction: float = 0.2,
    tolerance_px: float = 0.02,
    min_start_corr: float = -1.0,
) -> AffineFit:
    """Refine the offsets of nodes with an affine, centre-weighted least-squares match.

    Parameters
    ----------
    ref_image, sec_image : ndarray of float, shape (H, W)
        Reference and secondary images (or windows of them) on one pixel grid.
    ref_valid, sec_valid : ndarray of bool, shape (H, W)
        Pixel validity; invalid pixels take no part.
    rows_px, cols_px : ndarray of int, shape (N,)
        Node rows and columns in the images' frame.
    dx0_px, dy0_px : ndarray of float, shape (N,)
        Starting offsets (e.g. the correlator's), right and down, px.
    gradient0 : ndarray, shape (N, 4), optional
        Starting displacement gradient ``(ux, uy, vx, vy)`` (``ux = d dx / d col``, ...), px/px,
        e.g. from the neighbours' offsets; zero by default.
    half_px : int
        Half side of the square window around each node, px (the window is ``2 half_px + 1``).
    sigma_px : float
        Standard deviation of the Gaussian weight centred on the node, px.
    iterations : int
        Most Gauss-Newton iterations.
    min_valid_fraction : float
        Smallest weighted share of valid pixels for a node to be refined.
    tolerance_px : float
        The fit has converged when an update moves the node's offset less than this, px.
    min_start_corr : float
        A node is given up after its first iteration where the weighted correlation of its
        start (with the starting gradient, or its translation alone, whichever is higher) is
        below this: its window shares no texture to fit (the cost of a fit that would not
        converge, saved).

    Returns
    -------
    AffineFit
        Refined offsets and gradients, the weighted zero-normalised correlation of the warped
        chip, where the fit converged (elsewhere the offsets are NaN), and the same correlation
        at the starting translation with no strain (the score a translation-only match gets
        under the same window). Windows must lie inside the images; a node whose warped window
        leaves its patch is not refined.
    """
    rows = np.asarray(rows_px, dtype=np.int64)
    cols = np.asarray(cols_px, dtype=np.int64)
    n = rows.size
    p = np.zeros((n, 6))  # u0, ux, uy, v0, vx, vy
    p[:, 0] = np.asarray(dx0_px, float)
    p[:, 3] = np.asarray(dy0_px, float)
    if gradient0 is not None:
        g0 = np.clip(np.nan_to_num(np.asarray(gradient0, float)), -MAX_GRADIENT, MAX_GRADIENT)
        p[:, [1, 2, 4, 5]] = g0
    finite = np.isfinite(p).all(axis=1)
    p[~finite] = 0.0
    h = int(half_px)
    # Secondary patches around the rounded start, wide enough for the starting gradient (and
    # some more) and the moves; a node whose warp leaves its patch is not refined.
    reach_grad = np.minimum(MAX_GRADIENT, np.abs(p[:, [1, 2, 4, 5]]).max(axis=1) + 0.1)
    margin = (np.ceil(reach_grad * h + MAX_MOVE_PX) + 3).astype(np.int64)
    corr = np.full(n, np.nan)
    corr_start = np.full(n, np.nan)
    ok = np.zeros(n, dtype=bool)
    _icgn(
        np.ascontiguousarray(ref_image, dtype=np.float64),
        np.ascontiguousarray(ref_valid, dtype=np.bool_),
        np.ascontiguousarray(sec_image, dtype=np.float64),
        np.ascontiguousarray(sec_valid, dtype=np.bool_),
        rows, cols, p, finite, h, float(sigma_px), margin, int(iterations),
        float(tolerance_px), float(min_valid_fraction), float(min_start_corr), MAX_MOVE_PX,
        MAX_GRADIENT, corr, ok, corr_start,
    )  # fmt: skip
    ok &= np.isfinite(corr)
    dx = np.where(ok, p[:, 0], np.nan)
    dy = np.where(ok, p[:, 3], np.nan)
    grad = np.where(ok[:, None], p[:, [1, 2, 4, 5]], np.nan)
    return AffineFit(dx, dy, grad, corr, ok, corr_start)


_Z = np.sqrt(3.0) - 2.0  # pole of the cubic B-spline prefilter


@numba.njit(cache=True, inline="always")
def _prefilter_line(c: np.ndarray) -> None:  # pragma: no cover - compiled
    """Cubic B-spline coefficients of one line, in place (mirror boundary; Unser 1999)."""
    n = c.size
    z = _Z
    for k in range(n):
        c[k] *= 6.0
    zk, s = 1.0, 0.0
    for k in range(min(n, 28)):
        s += zk * c[k]
        zk *= z
    c[0] = s
    for k in range(1, n):
        c[k] += z * c[k - 1]
    c[n - 1] = (z / (z * z - 1.0)) * (c[n - 1] + z * c[n - 2])
    for k in range(n - 2, -1, -1):
        c[k] = z * (c[k + 1] - c[k])


@numba.njit(cache=True, inline="always")
def _bspline(t: float) -> tuple[float, float, float, float]:  # pragma: no cover - compiled
    """Weights of the cubic B-spline taps at floor - 1 .. floor + 2 for a fraction ``t``."""
    t2 = t * t
    t3 = t2 * t
    s = 1.0 - t
    w1 = (3 * t3 - 6 * t2 + 4) / 6.0
    w2 = (-3 * t3 + 3 * t2 + 3 * t + 1) / 6.0
    return s * s * s / 6.0, w1, w2, t3 / 6.0


@numba.njit(cache=True)
def _icgn(
    ref, rok, sec, sok, rows, cols, p, alive, h, sigma, margins, iterations, tol, min_frac,
    min_start, max_move, max_grad, corr, ok, corr_start,
):  # pragma: no cover - compiled  # fmt: skip
    """IC-GN with a first-order shape function and ZNSSD, node by node, in place on ``p``."""
    side = 2 * h + 1
    npx = side * side
    big = 2 * (h + margins.max()) + 1
    f = np.empty(npx)
    w0 = np.empty(npx)
    jac = np.empty((npx, 6))
    uu = np.empty(npx)
    vv = np.empty(npx)
    coef_all = np.empty((big, big))
    pok_all = np.empty((big, big), dtype=np.bool_)
    gauss = np.empty(npx)
    for j in range(side):
        for i in range(side):
            k = j * side + i
            uu[k] = i - h
            vv[k] = j - h
            gauss[k] = np.exp(-((i - h) ** 2 + (j - h) ** 2) / (2.0 * sigma * sigma))
    total = gauss.sum()
    for n in range(rows.size):
        if not alive[n]:
            continue
        wsum = _template(ref, rok, rows[n], cols[n], uu, vv, gauss, f, w0, jac)
        if wsum < min_frac * total:
            continue
        # The secondary patch around the rounded start, its gaps filled, then its coefficients.
        reach = h + margins[n]
        ps = 2 * reach + 1
        coef = coef_all[:ps, :ps]
        pok = pok_all[:ps, :ps]
        iy = int(np.rint(p[n, 3]))
        ix = int(np.rint(p[n, 0]))
        cnt = _patch(sec, sok, rows[n] + iy - reach, cols[n] + ix - reach, coef, pok)
        if cnt < ps * ps // 2:
            continue
        gappy = cnt < ps * ps
        consts = _template_sums(f, w0, jac, gappy)
        sx, sy = p[n, 0], p[n, 3]
        # The score of the start's translation alone (no strain) under the same window: what
        # a converged fit has to beat to count as better than the correlator's match.
        flat = np.zeros(6)
        flat[0], flat[3] = sx, sy
        at0 = _sums(flat, reach - ix, reach - iy, uu, vv, f, w0, jac, coef, pok, gappy, consts)
        if at0[0] >= min_frac * total:
            corr_start[n] = _zncc(at0)
        best_start = corr_start[n] if np.isfinite(corr_start[n]) else -1.0
        for it in range(iterations):
            off_x, off_y = reach - ix, reach - iy
            sums = _sums(p[n], off_x, off_y, uu, vv, f, w0, jac, coef, pok, gappy, consts)
            if sums[0] < min_frac * total:
                break
            dp, corr[n] = _update(sums)
            if not np.isfinite(corr[n]):
                break
            if it == 0 and max(corr[n], best_start) < min_start:
                break  # no shared texture in the window: nothing a warp could fit
            _compose(p[n], dp)
            if np.hypot(p[n, 0] - sx, p[n, 3] - sy) > max_move:
                break
            if max(abs(p[n, 1]), abs(p[n, 2]), abs(p[n, 4]), abs(p[n, 5])) > max_grad:
                break
            if np.hypot(dp[0], dp[3]) < tol:
                ok[n] = True
                break


@numba.njit(cache=True, inline="always")
def _template(ref, rok, r0, c0, uu, vv, gauss, f, w0, jac):  # pragma: no cover - compiled
    """Fill the template of the node at ``(r0, c0)``: values, weights (zero where the five-point
    derivative stencil is not all valid) and steepest-descent images; the weights' sum."""
    hh, ww = ref.shape
    wsum = 0.0
    for k in range(uu.size):
        r = r0 + int(vv[k])
        c = c0 + int(uu[k])
        w0[k] = 0.0
        f[k] = 0.0
        jac[k, :] = 0.0
        if r < 2 or c < 2 or r > hh - 3 or c > ww - 3:
            continue
        good = True
        for d in range(-2, 3):
            good = good and rok[r + d, c] and rok[r, c + d]
        if not good:
            continue
        gy = (ref[r - 2, c] - 8 * ref[r - 1, c] + 8 * ref[r + 1, c] - ref[r + 2, c]) / 12.0
        gx = (ref[r, c - 2] - 8 * ref[r, c - 1] + 8 * ref[r, c + 1] - ref[r, c + 2]) / 12.0
        f[k] = ref[r, c]
        w0[k] = gauss[k]
        wsum += w0[k]
        jac[k, 0], jac[k, 1], jac[k, 2] = gx, gx * uu[k], gx * vv[k]
        jac[k, 3], jac[k, 4], jac[k, 5] = gy, gy * uu[k], gy * vv[k]
    return wsum


@numba.njit(cache=True, inline="always")
def _patch(sec, sok, top, left, coef, pok):  # pragma: no cover - compiled
    """Fill ``coef`` with the B-spline coefficients of the secondary patch at ``(top, left)``
    (gaps and pixels past the edges take the valid mean first) and ``pok`` with its validity;
    the number of valid pixels."""
    hh, ww = sec.shape
    ps = coef.shape[0]
    cnt, acc = 0, 0.0
    for b in range(ps):
        for a in range(ps):
            r, c = top + b, left + a
            good = r >= 0 and c >= 0 and r < hh and c < ww and sok[r, c]
            pok[b, a] = good
            coef[b, a] = sec[r, c] if good else 0.0
            if good:
                cnt += 1
                acc += coef[b, a]
    if 0 < cnt < ps * ps:
        fill = acc / cnt
        for b in range(ps):
            for a in range(ps):
                if not pok[b, a]:
                    coef[b, a] = fill
    line = np.empty(ps)
    for b in range(ps):
        line[:] = coef[b, :]
        _prefilter_line(line)
        coef[b, :] = line
    for a in range(ps):
        line[:] = coef[:, a]
        _prefilter_line(line)
        coef[:, a] = line
    return cnt


@numba.njit(cache=True, inline="always")
def _template_sums(f, w0, jac, gappy):  # pragma: no cover - compiled
    """Weighted sums over the template alone (sum w, w f, w f^2, w J f, w J, w J J^T): constant
    while no sample falls near a secondary gap (zeros when ``gappy``: summed per iteration)."""
    sw = swf = swff = 0.0
    jf = np.zeros(6)
    js = np.zeros(6)
    hs = np.zeros((6, 6))
    if not gappy:
        for k in range(f.size):
            w = w0[k]
            if w == 0.0:
                continue
            sw += w
            swf += w * f[k]
            swff += w * f[k] * f[k]
            for q in range(6):
                wj = w * jac[k, q]
                jf[q] += wj * f[k]
                js[q] += wj
                for q2 in range(q, 6):
                    hs[q, q2] += wj * jac[k, q2]
    return sw, swf, swff, jf, js, hs


@numba.njit(cache=True, inline="always")
def _sums(pn, off_x, off_y, uu, vv, f, w0, jac, coef, pok, gappy, consts):  # pragma: no cover
    """Weighted sums of one iteration at the warp ``pn``; ``sw = 0`` if it leaves the patch."""
    u0, ux, uy, v0, vx, vy = pn[0], pn[1], pn[2], pn[3], pn[4], pn[5]
    sw, swf, swff, jf0, js0, hs0 = consts
    jf, js, hs = jf0.copy(), js0.copy(), hs0.copy()
    swg = swgg = swfg = 0.0
    jg = np.zeros(6)
    ps = coef.shape[0]
    for k in range(f.size):
        if w0[k] == 0.0:
            continue
        x = off_x + u0 + (1.0 + ux) * uu[k] + uy * vv[k]
        y = off_y + v0 + vx * uu[k] + (1.0 + vy) * vv[k]
        if x < 1.0 or y < 1.0 or x > ps - 3.0 or y > ps - 3.0:
            return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, jf, js, hs, jg
        fx = int(np.floor(x))
        fy = int(np.floor(y))
        if gappy and not pok[fy - 1 : fy + 3, fx - 1 : fx + 3].all():
            continue
        ax0, ax1, ax2, ax3 = _bspline(x - fx)
        ay0, ay1, ay2, ay3 = _bspline(y - fy)
        g = 0.0
        for b, wy in ((fy - 1, ay0), (fy, ay1), (fy + 1, ay2), (fy + 2, ay3)):
            g += wy * (
                ax0 * coef[b, fx - 1] + ax1 * coef[b, fx] + ax2 * coef[b, fx + 1]
                + ax3 * coef[b, fx + 2]
            )  # fmt: skip
        w = w0[k]
        fv = f[k]
        swg += w * g
        swgg += w * g * g
        swfg += w * fv * g
        for q in range(6):
            jg[q] += w * jac[k, q] * g
        if gappy:
            sw += w
            swf += w * fv
            swff += w * fv * fv
            for q in range(6):
                wj = w * jac[k, q]
                jf[q] += wj * fv
                js[q] += wj
                for q2 in range(q, 6):
                    hs[q, q2] += wj * jac[k, q2]
    return sw, swf, swff, swg, swgg, swfg, jf, js, hs, jg


@numba.njit(cache=True, inline="always")
def _zncc(sums):  # pragma: no cover - compiled
    """The weighted zero-normalised correlation of one evaluation's sums (NaN: flat)."""
    sw, swf, swff, swg, swgg, swfg = sums[0], sums[1], sums[2], sums[3], sums[4], sums[5]
    fm, gm = swf / sw, swg / sw
    vf = swff / sw - fm * fm
    vg = swgg / sw - gm * gm
    if vf <= 0.0 or vg <= 0.0:
        return np.nan
    return (swfg / sw - fm * gm) / np.sqrt(vf * vg)


@numba.njit(cache=True, inline="always")
def _update(sums):  # pragma: no cover - compiled
    """The Gauss-Newton update of ZNSSD and the weighted ZNCC (NaN: no update possible)."""
    sw, swf, swff, swg, swgg, swfg, jf, js, hs, jg = sums
    dp = np.zeros(6)
    fm, gm = swf / sw, swg / sw
    vf = swff / sw - fm * fm
    vg = swgg / sw - gm * gm
    if vf <= 0.0 or vg <= 0.0:
        return dp, np.nan
    sf, sg = np.sqrt(vf), np.sqrt(vg)
    corr = (swfg / sw - fm * gm) / (sf * sg)
    ratio = sf / sg
    rhs = np.empty(6)
    for q in range(6):
        rhs[q] = -(jf[q] - fm * js[q] - ratio * (jg[q] - gm * js[q]))
        for q2 in range(q):
            hs[q, q2] = hs[q2, q]
    if np.linalg.cond(hs) > 1e8:
        return dp, np.nan
    return np.linalg.solve(hs, rhs), corr


@numba.njit(cache=True, inline="always")
def _compose(pn, dp):  # pragma: no cover - compiled
    """The inverse-compositional update ``W(p) <- W(p) o W(dp)^-1``, in place on ``pn``."""
    m = np.array([[1 + pn[1], pn[2], pn[0]], [pn[4], 1 + pn[5], pn[3]], [0.0, 0.0, 1.0]])
    d = np.array([[1 + dp[1], dp[2], dp[0]], [dp[4], 1 + dp[5], dp[3]], [0.0, 0.0, 1.0]])
    m = m @ np.linalg.inv(d)
    pn[0], pn[1], pn[2] = m[0, 2], m[0, 0] - 1.0, m[0, 1]
    pn[3], pn[4], pn[5] = m[1, 2], m[1, 0], m[1, 1] - 1.0


def warm() -> None:
    """Load (or compile) the fit once, on a tiny input, so that the first node pays nothing."""
    image = np.add.outer(np.arange(16.0), np.arange(16.0) ** 2)
    ok = np.ones(image.shape, dtype=bool)
    one = np.array([8])
    refine_affine(
        image, ok, image, ok, one, one, one * 0.0, one * 0.0, None, half_px=2, sigma_px=1.0
    )


# Loaded at import, so that worker processes forked from a server that imported this module
# have the fit ready.
warm()
