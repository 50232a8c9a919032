"""Compiled (numba) loops of the NCC kernels: normalisation, peak search and sub-pixel refinement.

The kernels of :mod:`.ncc_tiles` end with passes over every correlation surface of a tile:
normalise the raw products, find the integer peak, rate it, refine it. In numpy each of these is
several passes over ``K x K`` values per node with temporaries in between; here each is one loop
per node that reads the surface once, so that the kernels run close to their FFT or box-filter
cost.

Every loop repeats the arithmetic of the numpy code it replaces, operation by operation and in
the same precision: float32 normalisation gives the same values bit for bit; the sub-pixel
refinement and the SNR work in float64 as before (sums in another order, which moves results by
about 1e-16).

Importing this module imports numba and loads the loops (a few tenths of a second; the code is
cached on disk by numba, next to this file or in the user's cache folder where the package is
read-only, so only the very first run compiles, for a few seconds). The kernels reach it through
:func:`glacierflow.matching.ncc.compiled_loops`, which loads it in the background once a process
has matched enough nodes to win it back, and keeps the numpy form (the same values) until then.
"""

from __future__ import annotations

import cv2
import numpy as np

try:  # numba is a core dependency; without it the kernels keep their numpy form
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

__all__ = [
    "AVAILABLE",
    "dense_offset",
    "dense_tile",
    "finish_grid",
    "lattice_sums",
    "locate_lanczos",
    "warm",
]

AVAILABLE = numba is not None


def _jit(fn):
    """``numba.njit`` with the on-disk cache, without it where no cache folder is writable."""
    if numba is None:
        return fn
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError:  # no writable cache location: compile in each process
        return numba.njit(nogil=True, error_model="numpy")(fn)


@_jit
def _finish_grid(raw, dm, s1w, inv_t, inv_w, step):  # pragma: no cover - compiled
    ny, nx, k, _ = raw.shape
    for i in range(ny):
        for j in range(nx):
            d = dm[i, j]
            it = inv_t[i, j]
            r0, c0 = i * step, j * step
            for a in range(k):
                for b in range(k):
                    v = raw[i, j, a, b] + d * s1w[r0 + a, c0 + b]
                    raw[i, j, a, b] = v * (it * inv_w[r0 + a, c0 + b])


def finish_grid(
    raw: np.ndarray,
    dm: np.ndarray,
    s1w: np.ndarray,
    inv_t: np.ndarray,
    inv_w: np.ndarray,
    step_px: int,
) -> None:
    """Correlation coefficients of a block-FFT tile from its float32 raw products, in place.

    ``raw[i, j, a, b] = (raw + dm[i, j] * s1w[i*step + a, j*step + b]) * (inv_t[i, j] *
    inv_w[i*step + a, j*step + b])`` in float32, as ``ncc_tiles._finish_tile`` in numpy.
    """
    _finish_grid(raw, dm, s1w, inv_t, inv_w, int(step_px))


@_jit
def _lattice_axis0(a, width, stride, out, part):  # pragma: no cover - compiled
    """``ncc_tiles._lattice_sums`` along the first axis of 4-D arrays, operation by operation:
    partial sums of 1, 2, 4, ... entries by doubling, those of the set bits of ``width`` added
    from the smallest."""
    n, p2, p3, p4 = a.shape
    n_out = out.shape[0]
    for x in range(n):
        for j in range(p2):
            for r in range(p3):
                for c in range(p4):
                    part[x, j, r, c] = a[x, j, r, c]
    span, rest, offset, first = 1, width, 0, True
    while rest:
        if rest & 1:
            for i in range(n_out):
                x = offset + i * stride
                for j in range(p2):
                    for r in range(p3):
                        for c in range(p4):
                            if first:
                                out[i, j, r, c] = part[x, j, r, c]
                            else:
                                out[i, j, r, c] = out[i, j, r, c] + part[x, j, r, c]
            first = False
            offset += span
        rest >>= 1
        if rest:
            n -= span
            for x in range(n):
                for j in range(p2):
                    for r in range(p3):
                        for c in range(p4):
                            part[x, j, r, c] = part[x, j, r, c] + part[x + span, j, r, c]
            span *= 2


def lattice_sums(f: np.ndarray, width: int, stride: int) -> np.ndarray:
    """``ncc_tiles._lattice_sums`` along axis 0 then axis 1 of ``f`` (NU, NV, K, K), float32:
    the same sums bit for bit, without temporaries. Returns (NY, NX, K, K), C-contiguous."""
    nu, nv, k, _ = f.shape
    ny, nx = (nu - width) // stride + 1, (nv - width) // stride + 1
    g = np.empty((ny, nv, k, k), dtype=np.float32)
    _lattice_axis0(f, int(width), int(stride), g, np.empty(f.shape, dtype=np.float32))
    out = np.empty((ny, nx, k, k), dtype=np.float32)
    _lattice_axis0(
        g.transpose(1, 0, 2, 3),
        int(width),
        int(stride),
        out.transpose(1, 0, 2, 3),
        np.empty((nv, ny, k, k), dtype=np.float32),
    )
    return out


@_jit
def _dense_offset(box, step, sy, sx, dm, s1w, inv_t, inv_w, out):  # pragma: no cover
    ny, nx = dm.shape
    k = out.shape[1]
    for i in range(ny):
        for j in range(nx):
            v = box[i * step, j * step] + dm[i, j] * s1w[i * step + sy, j * step + sx]
            f = np.float32(v)
            out[i * nx + j, sy, sx] = f * (inv_t[i, j] * inv_w[i * step + sy, j * step + sx])
    return k


def dense_offset(
    box: np.ndarray,
    step_px: int,
    sy: int,
    sx: int,
    dm: np.ndarray,
    s1w: np.ndarray,
    inv_t: np.ndarray,
    inv_w: np.ndarray,
    out: np.ndarray,
) -> None:
    """Correlations of every node of a dense tile at one offset ``(sy, sx)``, into ``out``.

    ``box`` holds the float64 box sums of the tile's products at this offset (first pixel of
    each square at ``[i, j]``); the coefficient of node ``(i, j)`` is written to
    ``out[i * nx + j, sy, sx]`` (float32), as ``ncc_tiles._finish_tile`` computes it in numpy.
    """
    _dense_offset(box, int(step_px), int(sy), int(sx), dm, s1w, inv_t, inv_w, out)


def _jit_inline(fn):
    """:func:`_jit` for a helper that the compiler inlines into its caller."""
    if numba is None:
        return fn
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(fn)
    except RuntimeError:  # no writable cache location: compile in each process
        return numba.njit(nogil=True, error_model="numpy", inline="always")(fn)


@_jit_inline
def _row_sums(a, b, y0, n_rows, sy, sx, c, step, nx, p, rows):  # pragma: no cover
    """OpenCV's RowSum (``s += S[i + c] - S[i]``, float64) of the products of up to eight rows
    from ``y0``, interleaved (independent chains), kept at the node columns in ``rows[y0:]``.
    Eight rows always (zeros past ``n_rows``): loops of a fixed length, which the compiler
    unrolls and vectorises."""
    w = a.shape[1]
    for r in range(8):
        if r < n_rows:
            ar = a[y0 + r]
            br = b[y0 + r + sy]
            for x in range(w):
                p[r, x] = np.float64(ar[x] * br[x + sx])
        else:
            for x in range(w):
                p[r, x] = 0.0
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for x in range(c):
        s0 += p[0, x]
        s1 += p[1, x]
        s2 += p[2, x]
        s3 += p[3, x]
        s4 += p[4, x]
        s5 += p[5, x]
        s6 += p[6, x]
        s7 += p[7, x]
    rows[y0, 0], rows[y0 + 1, 0], rows[y0 + 2, 0], rows[y0 + 3, 0] = s0, s1, s2, s3
    rows[y0 + 4, 0], rows[y0 + 5, 0], rows[y0 + 6, 0], rows[y0 + 7, 0] = s4, s5, s6, s7
    for j in range(1, nx):
        for i in range((j - 1) * step, j * step):
            s0 += p[0, i + c] - p[0, i]
            s1 += p[1, i + c] - p[1, i]
            s2 += p[2, i + c] - p[2, i]
            s3 += p[3, i + c] - p[3, i]
            s4 += p[4, i + c] - p[4, i]
            s5 += p[5, i + c] - p[5, i]
            s6 += p[6, i + c] - p[6, i]
            s7 += p[7, i + c] - p[7, i]
        rows[y0, j], rows[y0 + 1, j], rows[y0 + 2, j], rows[y0 + 3, j] = s0, s1, s2, s3
        rows[y0 + 4, j], rows[y0 + 5, j], rows[y0 + 6, j], rows[y0 + 7, j] = s4, s5, s6, s7


@_jit
def _dense_tile(a, b, c, step, dm, s1w, inv_t, inv_w, k, part):  # pragma: no cover
    h, w = a.shape
    ny, nx = dm.shape
    rows = np.empty((h + 7, nx))
    p = np.empty((8, w))
    acc = np.empty(nx)
    for sy in range(k):
        for sx in range(k):
            o = sy * k + sx
            for y0 in range(0, h, 8):
                _row_sums(a, b, y0, min(8, h - y0), sy, sx, c, step, nx, p, rows)
            # OpenCV's ColumnSum down every node column, finished at the node rows.
            acc[:] = 0.0
            for r in range(c - 1):
                for j in range(nx):
                    acc[j] += rows[r, j]
            for r in range((ny - 1) * step + 1):
                if r % step == 0:
                    i = r // step
                    rr = r + sy
                    for j in range(nx):
                        s0 = acc[j] + rows[r + c - 1, j]
                        cc = j * step + sx
                        v = np.float32(s0 + dm[i, j] * s1w[rr, cc])
                        part[o, i * nx + j] = v * (inv_t[i, j] * inv_w[rr, cc])
                        acc[j] = s0 - rows[r, j]
                else:
                    for j in range(nx):
                        s0 = acc[j] + rows[r + c - 1, j]
                        acc[j] = s0 - rows[r, j]


def dense_tile(
    a: np.ndarray,
    b: np.ndarray,
    chip_px: int,
    step_px: int,
    dm: np.ndarray,
    s1w: np.ndarray,
    inv_t: np.ndarray,
    inv_w: np.ndarray,
) -> np.ndarray:
    """NCC surfaces of a dense tile: products, box sums and normalisation in one loop.

    ``a`` is the tile's reference (H, W), float32, ``b`` its secondary with the search margin
    (H + K - 1, W + K - 1). For each offset the products ``a * b[sy:, sx:]`` (float32) are summed
    over every chip in float64 by running sums along rows then down columns, in the order of
    OpenCV's ``boxFilter`` (so the same values bit for bit), but only where a node's chip
    starts; each coefficient is then finished as ``ncc_tiles._finish_tile`` does.

    Returns
    -------
    ndarray, shape (NY * NX, K, K), float32
    """
    ny, nx = dm.shape
    k = b.shape[0] - a.shape[0] + 1
    part = np.empty((k * k, ny * nx), dtype=np.float32)  # offsets-major, written in order
    _dense_tile(a, b, int(chip_px), int(step_px), dm, s1w, inv_t, inv_w, k, part)
    # Nodes-major by OpenCV's cache-blocked transpose (many times a copy node by node).
    return cv2.transpose(part).reshape(ny * nx, k, k)


@_jit
def _three_point(left, centre, right):  # pragma: no cover - compiled
    denom = left - 2.0 * centre + right
    frac = 0.5 * (left - right) / denom
    if not (np.isfinite(frac) and denom < 0):
        return 0.0
    return min(max(frac, -0.5), 0.5)


@_jit
def _step(g, h, cross, cross_g, det, concave):  # pragma: no cover - compiled
    """Newton step along one axis (clipped to 0.25 px), a small gradient step if not concave."""
    if concave:
        st = -(h * g - cross * cross_g) / det
    elif g > 0:
        st = 0.05
    elif g < 0:
        st = -0.05
    else:
        st = 0.05 * g  # 0, or NaN for a NaN gradient
    if np.isnan(st):
        return 0.0
    return min(max(st, -0.25), 0.25)


@_jit
def _weights6(drow, dcol, h, taps, order, u, v, wy, wx, st, ct, sc):  # pragma: no cover
    """The six normalised Lanczos weight vectors of one Newton step (``subpixel._kernel_weights``
    of samples ``-taps..taps``): at ``drow + (s - 1) h`` into ``wy[s]`` and at ``dcol + (s - 1)
    h`` into ``wx[s]``, operation by operation as in numpy, the twelve Taylor series of their
    sines and cosines (``subpixel.sin_cos_pi``) evaluated side by side: independent chains, not
    one latency-bound chain after another. ``sc``: scratch, shape (7, 12)."""
    a = float(order)
    fs, ts, xs, x2, ss, cs, ns = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6]
    for q in range(6):
        f = (drow if q < 3 else dcol) + (q % 3 - 1) * h
        whole = np.rint(f)
        if abs(f - whole) < 1e-7:
            f = whole + 1e-7
        fs[q] = f
        ts[q] = f
        ts[q + 6] = f / a
    # _sin_cos_pi of ts, lane by lane.
    m = st.size
    for q in range(12):
        n = np.rint(ts[q])
        x = np.pi * (ts[q] - n)
        ns[q] = n
        xs[q] = x
        x2[q] = x * x
        ss[q] = st[m - 1]
        cs[q] = ct[m - 1]
    for i in range(m - 2, -1, -1):
        si, ci = st[i], ct[i]
        for q in range(12):
            ss[q] = ss[q] * x2[q] + si
            cs[q] = cs[q] * x2[q] + ci
    for q in range(12):
        sign = 1.0 - 2.0 * (ns[q] % 2)
        ss[q] = sign * (ss[q] * xs[q])
        cs[q] = sign * cs[q]
    for q in range(6):
        w = wy[q] if q < 3 else wx[q - 3]
        f = fs[q]
        c = a / (np.pi * np.pi) * ss[q]
        p = c * ss[q + 6]
        qq = c * cs[q + 6]
        for k in range(2 * taps + 1):  # branch-free, so that the divisions vectorise
            t = f - (k - taps)
            t2 = t * t
            x = p * u[k]
            x -= qq * v[k]
            x /= t2
            w[k] = x if t2 < a * a else 0.0
        total = _leaf_sum(w, 0, 2 * taps + 1, 0.0)
        for k in range(2 * taps + 1):
            w[k] /= total


@_jit
def _refine(local, taps, order, u, v, st, ct, iterations, buf):  # pragma: no cover - compiled
    """Sub-pixel peak of one neighbourhood (``subpixel.refine_peak``, Lanczos). ``buf``:
    scratch, 1-D, ``9 (2 taps + 1) + 93`` values (weights, weighted rows, Taylor lanes)."""
    n = 2 * taps + 1
    t = taps
    c = local[t, t]
    drow = _three_point(local[t - 1, t], c, local[t + 1, t])
    dcol = _three_point(local[t, t - 1], c, local[t, t + 1])
    h = 0.05
    flat = buf
    wy = flat[: 3 * n].reshape(3, n)
    wx = flat[3 * n : 6 * n].reshape(3, n)
    m = flat[6 * n : 9 * n].reshape(3, n)
    z = flat[9 * n : 9 * n + 9].reshape(3, 3)
    sc = flat[9 * n + 9 : 9 * n + 9 + 84].reshape(7, 12)
    for _ in range(iterations):
        _weights6(drow, dcol, h, taps, order, u, v, wy, wx, st, ct, sc)
        # wy @ local @ wx.T, summed sample by sample (as subpixel._interpolate).
        for s in range(3):
            for col in range(n):
                m[s, col] = wy[s, 0] * local[0, col]
            for row in range(1, n):
                for col in range(n):
                    m[s, col] = m[s, col] + wy[s, row] * local[row, col]
        for s in range(3):
            a0 = m[s, 0] * wx[0, 0]
            a1 = m[s, 0] * wx[1, 0]
            a2 = m[s, 0] * wx[2, 0]
            for col in range(1, n):
                a0 = a0 + m[s, col] * wx[0, col]
                a1 = a1 + m[s, col] * wx[1, col]
                a2 = a2 + m[s, col] * wx[2, col]
            z[s, 0], z[s, 1], z[s, 2] = a0, a1, a2
        gy = (z[2, 1] - z[0, 1]) / (2 * h)
        gx = (z[1, 2] - z[1, 0]) / (2 * h)
        hyy = (z[2, 1] - 2 * z[1, 1] + z[0, 1]) / h**2
        hxx = (z[1, 2] - 2 * z[1, 1] + z[1, 0]) / h**2
        hxy = (z[2, 2] - z[2, 0] - z[0, 2] + z[0, 0]) / (4 * h * h)
        det = hyy * hxx - hxy * hxy
        concave = (hyy < 0) and (det > 0)
        sy = _step(gy, hxx, hxy, gx, det, concave)
        sx = _step(gx, hyy, hxy, gy, det, concave)
        drow = min(max(drow + sy, -1.0), 1.0)
        dcol = min(max(dcol + sx, -1.0), 1.0)
    return drow, dcol


@_jit
def _leaf_sum(a, lo, n, zero):  # pragma: no cover - compiled
    """numpy's pairwise summation of at most 128 values (eight interleaved sums)."""
    if n < 8:
        res = zero
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@_jit
def _pairwise_sum(a, lo, n, zero):  # pragma: no cover - compiled
    """numpy's pairwise summation (``np.add.reduce`` of a contiguous row) in the precision of
    ``zero``, bit for bit: halves (rounded down to a multiple of 8) summed recursively down to
    128 values (:func:`_pairwise_sum_into`, its stacks allocated here)."""
    if n <= 128:
        return _leaf_sum(a, lo, n, zero)
    seg = np.empty((2, 64), np.int64)
    done = np.empty(64, np.asarray(zero).dtype)
    return _pairwise_sum_into(a, lo, n, zero, seg, done)


@_jit
def _pairwise_sum_into(a, lo, n, zero, seg, done):  # pragma: no cover - compiled
    """:func:`_pairwise_sum` with its stacks given (``seg``: int64, shape (2, 64); ``done``: 64
    values of the sum's precision). Written with an explicit stack (numba cannot cache
    recursive functions)."""
    seg_lo, seg_n = seg[0], seg[1]  # seg_n -1: add the last two results
    top, n_done = 0, 0
    seg_lo[0], seg_n[0] = lo, n
    while top >= 0:
        start, m = seg_lo[top], seg_n[top]
        top -= 1
        if m < 0:
            n_done -= 1
            done[n_done - 1] = done[n_done - 1] + done[n_done]
        elif m <= 128:
            done[n_done] = _leaf_sum(a, start, m, zero)
            n_done += 1
        else:
            half = m // 2
            half -= half % 8
            seg_lo[top + 1], seg_n[top + 1] = 0, -1  # then add them
            seg_lo[top + 2], seg_n[top + 2] = start + half, m - half  # then the second
            seg_lo[top + 3], seg_n[top + 3] = start, half  # the first half first
            top += 3
    return done[0]


@_jit
def _snr(s, pr, pc, exclude, total, a32, b32):  # pragma: no cover - compiled
    """``peaks.peak_snr`` of one surface from its float64 sum of absolute values, with numpy's
    sums (float32 over the finite values where the surface holds NaN, float32 over the box
    around the peak)."""
    k = s.shape[0]
    count = k * k
    if np.isnan(total):
        count = 0
        m = 0
        for r in range(k):
            for c in range(k):
                x = abs(s[r, c])
                a32[m] = 0.0
                if np.isfinite(x):
                    a32[m] = x
                    count += 1
                m += 1
        total = np.float64(_pairwise_sum(a32, 0, k * k, np.float32(0.0)))
    m = 0
    fbox = 0
    for r in range(pr - exclude, pr + exclude + 1):
        for c in range(pc - exclude, pc + exclude + 1):
            b32[m] = 0.0
            if 0 <= r < k and 0 <= c < k:
                x = abs(s[r, c])
                if np.isfinite(x):
                    b32[m] = x
                    fbox += 1
            m += 1
    box = _pairwise_sum(b32, 0, m, np.float32(0.0))
    noise = (total - box) / max(count - fbox, 1)
    return s[pr, pc] / max(noise, 1e-6)


@_jit
def _locate(surf, search, taps, order, u, v, st, ct, iterations, exclude, out):  # pragma: no cover
    n, k, _ = surf.shape
    nb = 2 * taps + 1
    local = np.empty((nb, nb))
    buf = np.empty(9 * nb + 93)  # scratch of the refinement
    seg, done = np.empty((2, 64), np.int64), np.empty(64)  # and of the SNR's sum
    a64 = np.empty(k * k)
    a32 = np.empty(k * k, dtype=np.float32)
    b32 = np.empty((2 * exclude + 1) ** 2, dtype=np.float32)
    for i in range(n):
        s = surf[i]
        flat = s.reshape(k * k)
        best = -np.inf
        at = -1
        for m in range(k * k):
            x = flat[m]
            a64[m] = abs(np.float64(x))
            if x > best:  # the first maximum; NaN never compares greater
                best = x
                at = m
        pr, pc = at // k, at % k
        if at < 0 or pr <= 0 or pr >= k - 1 or pc <= 0 or pc >= k - 1:
            continue  # no finite value, or a truncated peak on the border of the search
        # NaN anywhere makes the float64 sum NaN: numpy's signal to sum finite values only.
        total = _pairwise_sum_into(a64, 0, k * k, 0.0, seg, done)
        snr = _snr(s, pr, pc, exclude, total, a32, b32)
        # Neighbourhood of the peak, edge samples repeated, non-finite ones its minimum.
        lowest = np.inf
        bad = False
        for a in range(nb):
            rr = min(max(pr + a - taps, 0), k - 1)
            for b in range(nb):
                cc = min(max(pc + b - taps, 0), k - 1)
                x = np.float64(s[rr, cc])
                local[a, b] = x
                if np.isfinite(x):
                    lowest = min(lowest, x)
                else:
                    bad = True
        if bad:
            fill = lowest if np.isfinite(lowest) else 0.0
            for a in range(nb):
                for b in range(nb):
                    if not np.isfinite(local[a, b]):
                        local[a, b] = fill
        dr, dc = _refine(local, taps, order, u, v, st, ct, iterations, buf)
        out[0, i] = pc - search + dc
        out[1, i] = pr - search + dr
        out[2, i] = s[pr, pc]
        out[3, i] = snr


def locate_lanczos(
    surf: np.ndarray,
    search_px: int,
    taps: int,
    order: int,
    factors: tuple[np.ndarray, ...],
    iterations: int = 3,
    exclude_px: int = 2,
) -> np.ndarray:
    """``peaks.locate_peaks`` with Lanczos refinement, one pass per surface.

    Parameters
    ----------
    surf : ndarray, shape (N, K, K), float32
        Correlation surfaces (NaN where undefined).
    search_px : int
        Search radius, pixels (``K = 2 search_px + 1``).
    taps, order : int
        Samples on each side of the peak and Lanczos order (as ``subpixel.refine_peak``).
    factors : tuple of ndarray
        ``u, v`` per tap (``subpixel.lanczos_tap_factors``) and the Taylor coefficients of
        ``subpixel.sin_cos_pi`` (``SIN_TAYLOR``, ``COS_TAYLOR``), float64.
    iterations : int
        Newton steps.
    exclude_px : int
        Half-width of the box left out of the SNR's noise estimate, pixels.

    Returns
    -------
    ndarray, shape (4, N), float32
        ``dx_px, dy_px, corr, snr``; NaN where the surface has no usable peak.
    """
    out = np.full((4, surf.shape[0]), np.nan, dtype=np.float32)
    if surf.shape[0]:
        u, v, st, ct = (np.asarray(a, dtype=np.float64) for a in factors)
        surf = np.ascontiguousarray(surf, dtype=np.float32)
        _locate(
            surf,
            int(search_px),
            int(taps),
            int(order),
            u,
            v,
            st,
            ct,
            int(iterations),
            int(exclude_px),
            out,
        )
    return out


def warm() -> None:
    """Load (or compile) every loop once, on tiny inputs, so that the first tile pays nothing."""
    if not AVAILABLE:
        return
    f32 = np.float32
    raw = np.zeros((1, 1, 3, 3), f32)
    two = np.ones((3, 3), f32)
    one = np.ones((1, 1), f32)
    finish_grid(raw, one, two, one, two, 1)
    dense_offset(np.zeros((3, 3)), 1, 0, 0, np.ones((1, 1)), np.ones((3, 3)), one, two, raw[0])
    dense_tile(np.zeros((2, 2), f32), np.zeros((3, 3), f32), 2, 1, np.ones((1, 1)), np.ones((2, 2)),
               one, np.ones((2, 2), f32))  # fmt: skip
    f4 = np.zeros((4, 4, 2, 2), f32)
    lattice_sums(f4, 2, 1)
    lattice_sums(f4[..., :1], 2, 1)  # the view the FFTs leave
    ones = tuple(np.ones(n) for n in (7, 7, 13, 13))
    locate_lanczos(np.zeros((1, 7, 7), f32), 3, 3, 2, ones)


try:  # loaded here, so that a process that imports this module has the loops ready
    warm()
except Exception:  # pragma: no cover - a numba that cannot compile: the numpy form stays
    AVAILABLE = False
#: Set once the loops are loaded (:func:`glacierflow.matching.ncc.compiled_loops` reads it).
READY = True
