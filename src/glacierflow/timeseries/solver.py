"""Fast per-pixel solver: every smoothing strength from one eigendecomposition per pixel.

For fixed pair weights ``W`` a pixel's estimate at smoothing ``lambda`` solves
``(N + lambda R) u = b`` with ``N = A^T W A``, ``b = A^T W v`` and ``R = D^T D`` the penalty on
differences of consecutive steps. ``R`` is the same for every pixel, so it is diagonalised once:
``R = Q diag(r) Q^T``. Its null space ``Z`` (the constant for first differences; constant and
trend for second) is not penalised; on its range the basis ``P = Q_r diag(r)^(-1/2)`` turns the
penalty into ``|z|^2`` (standard form, ``u = P z + Z c``). Eliminating ``c`` (a ``k x k``
solve, k = 1 or 2) leaves, per pixel, ``(N~ + lambda I) z = F^T b`` with ``F = P + Z E``,
``E = -(Z^T N Z)^-1 Z^T N P`` and ``N~ = F^T N F``. One symmetric eigendecomposition
``N~ = V diag(s) V^T`` then gives, for *every* lambda at the cost of a matrix-vector product:

* the solution ``u = F V diag(1 / (s + lambda)) V^T F^T b + Z (Z^T N Z)^-1 Z^T b``,
* the trace of the influence matrix ``tr(H) = k + sum s / (s + lambda)`` (for GCV),
* the posterior variances ``diag(F V diag(1 / (s + lambda)) V^T F^T) + diag(Z (Z^T N Z)^-1 Z^T)``,
* the model resolution ``diag((N + lambda R)^-1 N)``.

This is exactly the problem the direct solver (one matrix inverse per pixel and lambda) solves;
the grid search over lambda costs one ``eigh`` per pixel instead of one inverse per lambda.
Normal matrices are built from the pairs' outer products ``A_i A_i^T`` held sparse (a pair only
spans the steps between its dates), so building them costs the non-zeros, not ``m^2`` per pair.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy import sparse

__all__ = [
    "PenaltyBasis",
    "normal_matrices",
    "outer_products",
    "reg_trace",
    "single_threaded_blas",
    "solve_fixed",
    "solve_grid",
    "step_coverage",
]

RIDGE = 1e-10

_BLAS_LOCK = threading.Lock()
_BLAS_STATE: dict[str, object] = {"users": 0, "limiter": None}


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block inside with one BLAS/LAPACK thread (OpenBLAS, MKL, BLIS).

    The solver's work is many small batched products and ``eigh`` of m x m matrices: a
    multi-threaded BLAS only adds synchronisation to them, and under Dask (a thread per block,
    or a worker per core) its threads oversubscribe the cores. On the 2-core development
    machine under load (627 pairs, 46 steps of 16 days, 4 Dask blocks on 2 threads) a pixel
    took 9.5 ms with OpenBLAS's default threads and 2.1 ms with one. The limit is
    process-wide (BLAS has one thread pool), so concurrent blocks (Dask's threads) share it:
    the first to enter sets it, the last to leave restores the previous setting. Dask's
    worker processes run the same code, so they are limited the same way.
    """
    from threadpoolctl import threadpool_limits

    with _BLAS_LOCK:
        if _BLAS_STATE["users"] == 0:
            _BLAS_STATE["limiter"] = threadpool_limits(limits=1, user_api="blas")
        _BLAS_STATE["users"] = int(_BLAS_STATE["users"]) + 1  # type: ignore[call-overload]
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_STATE["users"] = int(_BLAS_STATE["users"]) - 1  # type: ignore[call-overload]
            if _BLAS_STATE["users"] == 0:
                limiter = _BLAS_STATE["limiter"]
                _BLAS_STATE["limiter"] = None
                limiter.restore_original_limits()  # type: ignore[union-attr]


def reg_trace(reg: np.ndarray) -> float:
    """``trace(R)``, the denominator of the relative lambdas; 1 when there is no penalty.

    With fewer steps than the order of the differences (one step, first differences) ``R`` is
    zero; the relative scale ``tr(N) / tr(R)`` must then stay ``tr(N)``, not blow up, or the
    tiny ridge that keeps the solves regular would outweigh the data.
    """
    tr = float(np.trace(reg))
    return tr if tr > 0 else 1.0


@dataclass(frozen=True)
class PenaltyBasis:
    """The penalty ``R`` in standard form, shared by all pixels.

    Attributes
    ----------
    reg : ndarray, shape (m, m)
        ``R = D^T D``.
    p : ndarray, shape (m, m - k)
        Basis of R's range scaled so that ``P^T R P = I``.
    z : ndarray, shape (m, k)
        Orthonormal basis of R's null space (not penalised).
    """

    reg: np.ndarray
    p: np.ndarray
    z: np.ndarray

    @classmethod
    def from_reg(cls, reg: np.ndarray) -> PenaltyBasis:
        r, q = np.linalg.eigh(reg)
        tol = max(float(r.max(initial=0.0)), 1.0) * 1e-10
        null = r <= tol
        return cls(reg=reg, p=q[:, ~null] / np.sqrt(r[~null]), z=q[:, null])


def outer_products(a: np.ndarray) -> sparse.csr_matrix:
    """Sparse ``(n, m*m)`` matrix whose row i is ``vec(A_i A_i^T)``."""
    n, m = a.shape
    rows, cols, vals = [], [], []
    for i in range(n):
        nz = np.flatnonzero(a[i])
        if nz.size == 0:
            continue
        rows.append(np.full(nz.size * nz.size, i))
        cols.append((nz[:, None] * m + nz[None, :]).ravel())
        vals.append(np.outer(a[i, nz], a[i, nz]).ravel())
    if not rows:
        return sparse.csr_matrix((n, m * m))
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, m * m)
    )


def normal_matrices(weights: np.ndarray, outer: sparse.csr_matrix, m: int) -> np.ndarray:
    """``A^T diag(w_p) A`` for every pixel p, shape (p, m, m)."""
    out = np.asarray(outer.T @ weights.T)  # (m*m, p)
    return np.ascontiguousarray(out.T).reshape(weights.shape[0], m, m)


def _reduced(n_mat: np.ndarray, basis: PenaltyBasis, scale: np.ndarray):
    """``F`` (p, m, mr), ``N~`` (p, mr, mr), ``(Z^T N Z)^-1`` (p, k, k)."""
    p_, z = basis.p, basis.z
    m, k = z.shape
    n_p = n_mat @ p_  # (p, m, mr)
    if k == 0:
        return np.broadcast_to(p_, n_p.shape), p_.T @ n_p, np.zeros((n_mat.shape[0], 0, 0))
    n_zz = z.T @ (n_mat @ z) + RIDGE * scale[:, None, None] * np.eye(k)
    n_zp = z.T @ n_p  # (p, k, mr)
    n_zz_inv = np.linalg.inv(n_zz)
    e = -n_zz_inv @ n_zp
    f = p_ + z @ e
    n_red = p_.T @ n_p + np.swapaxes(n_zp, 1, 2) @ e
    return f, 0.5 * (n_red + np.swapaxes(n_red, 1, 2)), n_zz_inv


def solve_grid(
    n_mat: np.ndarray,
    rhs: np.ndarray,
    weights: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    basis: PenaltyBasis,
    grid: tuple[float, ...],
    rule: str,
    resolution_lam: float,
    groups: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    """Choose lambda per pixel on ``grid`` (relative to ``tr(N)/tr(R)``) by ``rule``.

    Parameters
    ----------
    n_mat : ndarray, shape (p, m, m)
    rhs : ndarray, shape (p, 2, m)
        ``A^T W v`` for both components.
    weights : ndarray, shape (p, n)
    y : ndarray, shape (p, 2, n)
        Pair velocities, zero where invalid.
    a : ndarray, shape (n, m)
    basis : PenaltyBasis
    grid : tuple of float
        Relative lambdas; one value fixes lambda.
    rule : {"gcv", "discrepancy", "fixed"}
    resolution_lam : float
        Relative lambda at which the model resolution is taken.
    groups : sequence of ndarray, shape (K, m) each
        Averaging matrices ``G`` (row k: the time weights of the steps inside output step k,
        summing to one); none gives the steps themselves.

    Returns
    -------
    u : ndarray, shape (p, 2, m)
    var : list of ndarray, shape (p, K) each
        Per group, the posterior variances ``diag(G C G^T)`` of the averaged values (before
        inflation by the misfit), C the full posterior covariance of the steps.
    reduced_chi2 : ndarray, shape (p, 2)
    resolution : list of ndarray, shape (p, K) each
        Per group, ``diag(G Res G^+)``, ``Res = (N + lambda R)^-1 N`` the model resolution
        matrix and ``G^+`` the indicator of the steps inside each output step: the share of
        the averaged value that the data inside its own step determine (``diag(Res)`` for the
        steps themselves).
    lam : ndarray, shape (p,)
        The chosen relative lambda.
    """
    p, m, _ = n_mat.shape
    tr_reg = reg_trace(basis.reg)
    scale = np.trace(n_mat, axis1=1, axis2=2) / tr_reg
    scale = np.where(scale > 0, scale, 1.0)
    f, n_red, n_zz_inv = _reduced(n_mat, basis, scale)
    s, v = np.linalg.eigh(n_red)
    s = np.clip(s, 0.0, None)
    fv = f @ v  # (p, m, mr)
    b = rhs @ fv  # (p, 2, mr) = V^T F^T rhs
    z = basis.z
    k = z.shape[1]
    u_null = ((rhs @ z) @ n_zz_inv) @ z.T  # (p, 2, m); n_zz_inv symmetric
    n_obs = (weights > 0).sum(axis=1).astype(np.float64)
    # chi^2(lambda) = y'Wy - u0'b - sum((2 d - s d^2) b~^2): u0 is the unpenalised null-space
    # part, b~ = V'F'b, d = 1/(s + lambda); F'N Z = 0 and (FV)'N(FV) = diag(s) make the
    # cross terms vanish, so each lambda costs O(m) per pixel.
    yy = np.sum(weights[:, None, :] * y**2, axis=-1) - np.sum(u_null * rhs, axis=-1)  # (p, 2)
    b2 = b**2
    best_d = best_chi = None
    best_score = np.full(p, np.inf)
    best_dof = np.ones(p)
    best_lam = np.full(p, grid[0])
    for lam in grid:
        d = 1.0 / (s + (lam * scale)[:, None])  # (p, mr)
        chi = np.maximum(yy - np.einsum("pcj,pj->pc", b2, 2 * d - s * d**2), 0.0)  # (p, 2)
        chi_mean = chi.sum(axis=1) / 2.0
        dof = np.maximum(n_obs - (k + np.sum(s * d, axis=1)), 1e-6)
        if rule == "gcv":
            score = n_obs * chi_mean / dof**2
            # GCV among the lambdas whose misfit the stated errors can explain (chi2 <= n).
            score = np.where(chi_mean <= np.maximum(n_obs, 1.0), score, np.inf)
            take = (score < best_score) | (best_d is None)
            best_score = np.where(take, score, best_score)
        elif rule == "discrepancy" and best_d is not None:
            take = chi_mean <= dof
        else:
            take = np.ones(p, dtype=bool)
        if best_d is None:
            best_d, best_chi, best_dof = d, chi, dof
        else:
            best_d = np.where(take[:, None], d, best_d)
            best_chi = np.where(take[:, None], chi, best_chi)
            best_dof = np.where(take, dof, best_dof)
        best_lam = np.where(take, lam, best_lam)
    assert best_d is not None and best_chi is not None
    best_u = (b * best_d[:, None, :]) @ np.swapaxes(fv, 1, 2) + u_null
    d_res = 1.0 / (s + (resolution_lam * scale)[:, None])
    var_out, res_out = _group_moments(groups or (np.eye(m),), n_mat, fv, z, n_zz_inv, best_d, d_res)
    return best_u, var_out, best_chi / best_dof[:, None], res_out, best_lam


def _group_moments(
    groups: Sequence[np.ndarray],
    n_mat: np.ndarray,
    fv: np.ndarray,
    z: np.ndarray,
    n_zz_inv: np.ndarray,
    d: np.ndarray,
    d_res: np.ndarray,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per averaging matrix ``G``: posterior variances ``diag(G C G^T)`` (``d`` at the chosen
    lambda) and resolutions ``diag(G Res G^+)`` (``d_res`` at the resolution lambda)."""
    # C = FV diag(d) (FV)^T + Z Nzz^-1 Z^T; Res = C N at the resolution lambda.
    k = z.shape[1]
    fvt_n = np.swapaxes(n_mat @ fv, 1, 2)  # (p, mr, m) = (FV)^T N
    zt_n = z.T @ n_mat  # (p, k, m)
    var_out, res_out = [], []
    for g in groups:
        g_plus = (g > 0).T.astype(np.float64)  # (m, K)
        gfv = g @ fv  # (p, K, mr)
        gz = g @ z  # (K, k)
        var = np.einsum("pkj,pj->pk", gfv**2, d)
        var += np.einsum("ki,pil,kl->pk", gz, n_zz_inv, gz)
        res = np.einsum("pkj,pj,pjk->pk", gfv, d_res, fvt_n @ g_plus)
        if k:
            res += np.einsum("ki,pil,plk->pk", gz, n_zz_inv, zt_n @ g_plus)
        var_out.append(var)
        res_out.append(res)
    return var_out, res_out


def solve_fixed(n_mat: np.ndarray, rhs: np.ndarray, reg: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``(N + lam * tr(N)/tr(R) * R) u = rhs`` per pixel (relative ``lam``, shape (p,))."""
    m = n_mat.shape[1]
    scale = np.trace(n_mat, axis1=1, axis2=2) / reg_trace(reg)
    scale = np.where(scale > 0, scale, 1.0)
    mat = n_mat + (lam * scale)[:, None, None] * reg + (RIDGE * scale)[:, None, None] * np.eye(m)
    return np.swapaxes(np.linalg.solve(mat, np.swapaxes(rhs, 1, 2)), 1, 2)


def step_coverage(
    valid: np.ndarray, t1: np.ndarray, t2: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Days of each step inside a valid pair, and the first and last such day, per pixel.

    Parameters
    ----------
    valid : ndarray of bool, shape (p, n)
        Whether pair i has data at pixel p.
    t1, t2 : ndarray of datetime64, shape (n,)
        The pairs' acquisition times.
    edges : ndarray of datetime64[D], shape (m + 1,)
        Step edges.

    Returns
    -------
    days, first, last : ndarray, shape (p, m)
        Days covered; first and last covered day in days since ``edges[0]`` (NaN where none).
    """
    e = ((edges - edges[0]) / np.timedelta64(1, "D")).astype(np.float64)
    a = ((np.asarray(t1, "datetime64[s]") - edges[0]) / np.timedelta64(86400, "s")).astype(float)
    b = ((np.asarray(t2, "datetime64[s]") - edges[0]) / np.timedelta64(86400, "s")).astype(float)
    breaks = np.unique(np.concatenate([e, np.clip(a, e[0], e[-1]), np.clip(b, e[0], e[-1])]))
    s0, s1 = breaks[:-1], breaks[1:]
    mid = (s0 + s1) / 2
    inside = (a[:, None] < mid[None]) & (b[:, None] > mid[None])  # (n, E)
    covered = (valid.astype(np.float32) @ inside.astype(np.float32)) > 0  # (p, E)
    m = e.size - 1
    step_of = np.searchsorted(e, mid, side="right") - 1
    p = valid.shape[0]
    days = np.zeros((p, m))
    first = np.full((p, m), np.nan)
    last = np.full((p, m), np.nan)
    for j in range(m):
        sel = np.flatnonzero(step_of == j)
        if sel.size == 0:
            continue
        cov = covered[:, sel]
        days[:, j] = cov @ (s1[sel] - s0[sel])
        has = cov.any(axis=1)
        i_first = np.argmax(cov, axis=1)
        i_last = sel.size - 1 - np.argmax(cov[:, ::-1], axis=1)
        first[:, j] = np.where(has, s0[sel][i_first], np.nan)
        last[:, j] = np.where(has, s1[sel][i_last], np.nan)
    return days, first, last
