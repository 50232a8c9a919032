"""Network inversion: image-pair velocities to a velocity time series on regular steps.

The model
---------
Time is cut into regular steps (``freq``: calendar months, calendar or glaciological years,
or N days; :func:`time_steps`). The unknowns are the mean velocity ``u_j`` of every step, per
component. A pair acquired at ``t1`` and ``t2`` measures the mean velocity over its interval,
which is the time-weighted mean of the steps it spans (temporal closure)::

    v_i = sum_j A_ij u_j,      A_ij = days of [t1_i, t2_i] inside step j / (t2_i - t1_i)

so a long pair is the sum of the short steps it spans, in displacement; ``A`` is built once
(:func:`closure_matrix`) and shared by every pixel.

The estimate
------------
Per pixel, robust weighted least squares with a Tikhonov penalty on the first (or second)
differences of consecutive steps::

    minimise  sum_i w_i (v_i - A_i u)^2 + lambda * |D u|^2,   w_i = rho_i / sigma_i^2

``sigma_i^2 = (vx_error_i^2 + vy_error_i^2) / 2`` is the pair's stated error (m/yr), one weight
for both components, so one normal matrix per pixel serves ``vx`` and ``vy``. ``rho_i`` is
Tukey's biweight (c = 4.685) of the pair's normalised residual, the larger of the two
components' ``|r| / sigma``, over a robust scale ``s = max(1, 1.4826 * median)``; it is
updated over a few iterations (iteratively reweighted least squares), so an outlier pair
ends with weight zero while pairs that agree within their errors keep theirs. The fits that
judge the residuals use a light, fixed smoothing (``irls_lam``): weak enough to follow a
surge, strong enough that a lone outlier pair is not absorbed by a step only it covers.

How strong the smoothing is: lambda, from the data
--------------------------------------------------
``lambda`` is chosen per pixel, with the final robust weights, from a grid of values relative to
``trace(A^T W A) / trace(D^T D)``, by generalised cross-validation (GCV: the lambda that
minimises ``n chi^2 / (n - trace(H))^2``, ``chi^2 = sum_i w_i r_i^2``, ``H`` the influence
matrix), restricted to the lambdas whose misfit the pairs' stated errors can explain
(``chi^2 <= n``, the discrepancy principle's bound). Why both: GCV predicts left-out pairs
best and does not need the errors to be right, so it is the better choice on redundant
networks (on a dense synthetic network it halves the error of the discrepancy principle,
which over-smooths a seasonal cycle); but on small, nearly determined networks (four annual
pairs for four years) ``n - trace(H)`` goes to zero and GCV alone smooths a surge away; the
bound from the stated errors prevents that. When no lambda meets the bound (errors
understated) the smallest is used, so the data are honoured. ``lam="discrepancy"`` selects
the largest lambda meeting ``chi^2 <= n - trace(H)`` instead, and a number fixes lambda.

Honest gaps
-----------
A step is reported only where the data, not the smoothing, determine it: its data coverage is
positive and the diagonal of the model resolution matrix ``R = (A^T W A + lambda D^T D)^-1
A^T W A``, taken at the weakest lambda of the grid, is at least ``min_resolution`` (0.5 by
default: the pairs alone pin at least half of the step; a step reached only through long
pairs whose split between steps the network cannot tell is in the null space and has ~0).
Nor is a step reported whose 1-sigma error (rms of the components) exceeds both its speed
and twice (:data:`ERROR_RATIO`) the median stated error of the pixel's pairs: a value within
its error of zero that the pairs measure far better than the step says nothing the pairs do
not (a step only its sum with a neighbour pins: one 16-day pair split between two months).
Elsewhere ``vx``, ``vy``, ``v`` and the errors are NaN; the step's coverage
and pair count are still given, so a user sees why. Every step carries ``coverage_days``
(days of the step inside at least one valid pair), ``pair_count`` (valid pairs overlapping
it), ``first_date`` and ``last_date`` (the span of those days) and ``resolution``.

Coarse steps: averaged from fine ones
-------------------------------------
A step's value is the mean velocity over the whole step. Modelling a year as one unknown
would read a 16-day summer pair as that year's mean (seasonal aliasing: every short summer
or surge pair biases the year upwards). So steps longer than a month are not unknowns of
their own: the network is inverted on base steps (the requested edges refined by the
calendar months) and each requested step is the time-weighted mean of its base steps,
``u_k = sum_j G_kj u_j`` with ``G_kj`` = days of base step j / days of step k. Its error is
``sqrt(G C G^T)`` from the full posterior covariance ``C`` of the base steps (their errors are
correlated, so this is not the mean of their errors), and its resolution is
``diag(G Res G^+)`` (``Res`` the resolution matrix, ``G^+`` the indicator of the base steps
inside step k): the share of the step's mean that the data inside the step determine. Base
steps the data leave unresolved (a winter gap) are filled by the regularisation only; the
step's mean uses them, and is reported, only where that mean is itself resolved
(``resolution >= min_resolution``); ``resolved_days`` says how many of its days lie in
resolved base steps. The base is refined only where the network supports it (``base="auto"``:
at least half of the covered months resolved by the pair dates alone); a sparse network
(four year-long pairs) is inverted on the requested steps, the finest it resolves.
:func:`invert_series` returns several step sets (monthly and annual) from one inversion.

Errors
------
The 1-sigma error of a step is the square root of the diagonal of the posterior covariance
``(A^T W A + lambda D^T D)^-1`` (the regularisation read as a Gaussian smoothness prior),
multiplied per component by ``sqrt(chi^2 / dof)`` when the fit is worse than the stated errors
say (never by less than one).

Speed and memory
----------------
Pixels are solved in batches with NumPy's batched linear algebra. Normal matrices are built
as one product of the per-pixel weights with the pairs' sparse outer products ``A_i A_i^T``.
The whole lambda grid costs one eigendecomposition per pixel (standard form of the penalty,
:mod:`glacierflow.timeseries.solver`), not one inverse per lambda.
:func:`invert_cube` applies the inversion over an xarray cube chunked with Dask.

References
----------
.. [1] Charrier, L. et al. (2025). TICOI: an operational Python package to generate regular
   glacier velocity time series. The Cryosphere 19, 4555 (temporal closure, IRLS with
   Tukey's biweight).
.. [2] Morozov, V. A. (1966). On the solution of functional equations by the method of
   regularization. Soviet Math. Dokl. 7, 414-417 (discrepancy principle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from glacierflow.timeseries import solver
from glacierflow.timeseries.steps import data_steps, monthly_refined, step_count, time_steps

__all__ = [
    "InversionSettings",
    "MAX_STEPS",
    "OUTPUTS",
    "closure_matrix",
    "data_steps",
    "invert_pairs",
    "invert_series",
    "step_count",
    "time_steps",
]

#: Names of the per-step outputs of :func:`invert_pairs`, in order.
OUTPUTS = (
    "vx",
    "vy",
    "vx_error",
    "vy_error",
    "coverage_days",
    "pair_count",
    "first_date",
    "last_date",
    "resolution",
    "resolved_days",
)

TUKEY_C = 4.685
#: Bytes a batch of pixels may hold: ~16 float64 arrays of (pixels, pairs) are alive at once,
#: so a batch has at most ``BATCH_BYTES / (128 * pairs)`` pixels (65 for 2,000 pairs).
BATCH_BYTES = 16 * 2**20
#: Bytes of one (pixels, steps, steps) float64 array of a batch (the normal matrices, their
#: eigenvectors, the covariances: ~8 are alive at once), so a batch has at most
#: ``MATRIX_BYTES / (8 * steps^2)`` pixels.
MATRIX_BYTES = 32 * 2**20
#: Most steps (requested or monthly base) one inversion takes: a pixel's matrices grow with
#: the square of the steps (600 x 600 float64: 2.9 MB each, one eigendecomposition ~0.1 s).
MAX_STEPS = 600
#: A reported step's 1-sigma error (rms of the components, m/yr) may not exceed both its speed
#: and this many times the median stated error of the pixel's pairs: beyond, the data do not
#: determine the step (see "Honest gaps" in the module docstring).
ERROR_RATIO = 2.0
_DAY = np.timedelta64(1, "D")


@dataclass(frozen=True)
class InversionSettings:
    """How the network is inverted (see the module docstring).

    Attributes
    ----------
    regularisation : {"first", "second"}
        Order of the differences of consecutive steps that are penalised.
    lam : {"discrepancy", "gcv"} or float
        How lambda is chosen, or a fixed lambda relative to ``trace(A^T W A)/trace(D^T D)``.
    lam_grid : tuple of float
        Relative lambdas tried by the automatic choices.
    iterations : int
        Robust reweighting iterations after the first solve.
    min_resolution : float
        Smallest diagonal of the resolution matrix for a step to be reported, in [0, 1].
    batch_pixels : int
        Most pixels solved together; fewer when the pairs are many (:data:`BATCH_BYTES`).
    solver : {"eigen", "direct"}
        ``"eigen"`` (default): the reweighting iterations fit at the fixed relative lambda
        ``irls_lam`` (one linear solve each); lambda is chosen (GCV or discrepancy) once, with
        the final weights, for the whole grid from one eigendecomposition per pixel
        (:mod:`glacierflow.timeseries.solver`). ``"direct"``: the previous reference solver,
        lambda chosen at every iteration by one matrix inverse per lambda (7-8x slower and,
        on the benchmark networks, less accurate: a fit smoothed by a lambda that GCV chose
        among outliers hides them from the reweighting).
    irls_lam : float
        Relative lambda of the reweighting iterations (``"eigen"`` solver).
    pair_block : int
        Pairs whose outer products are held at once when building normal matrices.
    base : {"auto", "monthly", "steps"}
        Steps the network is inverted on (see "Coarse steps" in the module docstring):
        ``"monthly"`` refines steps longer than a month by the calendar months, ``"steps"``
        inverts on the requested steps themselves, ``"auto"`` (default) refines when the
        network supports it (at least ``base_support`` of the covered fine steps resolved).
    base_support : float
        Share of covered fine steps the network must resolve for ``"auto"`` to refine.
    """

    regularisation: str = "first"
    lam: str | float = "gcv"
    lam_grid: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, 2, 13))
    iterations: int = 4
    min_resolution: float = 0.5
    batch_pixels: int = 2048
    pair_block: int = 512
    solver: str = "eigen"
    irls_lam: float = 0.01
    base: str = "auto"
    base_support: float = 0.5

    def __post_init__(self) -> None:
        if self.regularisation not in ("first", "second"):
            raise ValueError(
                f"regularisation must be 'first' or 'second', got {self.regularisation!r}"
            )
        if isinstance(self.lam, str) and self.lam not in ("discrepancy", "gcv"):
            raise ValueError(f"lam must be 'discrepancy', 'gcv' or a number, got {self.lam!r}")
        if not isinstance(self.lam, str) and not float(self.lam) >= 0:
            raise ValueError(f"a fixed lam must be >= 0, got {self.lam!r}")
        if self.solver not in ("eigen", "direct"):
            raise ValueError(f"solver must be 'eigen' or 'direct', got {self.solver!r}")
        if self.base not in ("auto", "monthly", "steps"):
            raise ValueError(f"base must be 'auto', 'monthly' or 'steps', got {self.base!r}")
        if not 0 <= self.min_resolution <= 1:
            raise ValueError(f"min_resolution must lie in [0, 1], got {self.min_resolution}")
        if self.iterations < 0 or self.batch_pixels < 1 or self.pair_block < 1:
            raise ValueError("iterations must be >= 0, batch_pixels and pair_block >= 1")


# --------------------------------------------------------------------------------------------
# Steps and the closure matrix
# --------------------------------------------------------------------------------------------


def closure_matrix(t1: np.ndarray, t2: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of each pair's interval in each step: ``A[i, j]``, rows sum to 1 inside the steps.

    Parameters
    ----------
    t1, t2 : ndarray of datetime64, shape (n,)
        Acquisition times of the pairs' first and second images, ``t2 > t1``.
    edges : ndarray of datetime64, shape (m + 1,)

    Returns
    -------
    ndarray of float64, shape (n, m)
    """
    a = np.asarray(t1, "datetime64[s]").astype(np.float64)[:, None] / 86400.0
    b = np.asarray(t2, "datetime64[s]").astype(np.float64)[:, None] / 86400.0
    e = np.asarray(edges, "datetime64[s]").astype(np.float64) / 86400.0
    overlap = np.clip(np.minimum(b, e[None, 1:]) - np.maximum(a, e[None, :-1]), 0.0, None)
    return overlap / np.maximum(b - a, 1e-9)


def _difference(m: int, order: str) -> np.ndarray:
    d = np.diff(np.eye(m), n=1 if order == "first" else 2, axis=0)
    return d.T @ d


# --------------------------------------------------------------------------------------------
# The batched solver
# --------------------------------------------------------------------------------------------


def _normal(weights: np.ndarray, a: np.ndarray, block: int) -> np.ndarray:
    """``A^T diag(w_p) A`` for every pixel p, accumulated over blocks of pairs."""
    p, n = weights.shape
    m = a.shape[1]
    out = np.zeros((p, m * m))
    for s in range(0, n, block):
        blk = a[s : s + block]
        outer = (blk[:, :, None] * blk[:, None, :]).reshape(blk.shape[0], m * m)
        out += weights[:, s : s + block] @ outer
    return out.reshape(p, m, m)


def _solve_all(
    n_mat: np.ndarray,
    rhs: np.ndarray,
    weights: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    reg: np.ndarray,
    settings: InversionSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve every pixel with lambda chosen per pixel; return u (p, 2, m), C, reduced chi2.

    ``y`` is (p, 2, n) (both components), ``rhs`` (p, 2, m), ``weights`` (p, n).
    """
    p, m, _ = n_mat.shape
    scale = np.trace(n_mat, axis1=1, axis2=2) / solver.reg_trace(reg)
    scale = np.where(scale > 0, scale, 1.0)
    ridge = 1e-10 * scale[:, None, None] * np.eye(m)
    n_obs = (weights > 0).sum(axis=1).astype(np.float64)
    grid = (float(settings.lam),) if not isinstance(settings.lam, str) else settings.lam_grid
    best_u = best_c = best_chi = None
    best_score = np.full(p, np.inf)
    best_dof = np.ones(p)
    a_t = np.ascontiguousarray(a.T)
    for lam in grid:
        mat = n_mat + (lam * scale)[:, None, None] * reg[None] + ridge
        c = np.linalg.inv(mat)
        u = rhs @ c  # c is symmetric
        resid = y - u @ a_t
        chi = np.sum(weights[:, None, :] * resid**2, axis=-1)  # (p, 2)
        chi_mean = chi.sum(axis=1) / 2.0
        tr_h = np.sum(c * n_mat, axis=(1, 2))
        dof = np.maximum(n_obs - tr_h, 1e-6)
        if settings.lam == "gcv":
            score = n_obs * chi_mean / dof**2
            # GCV, among the lambdas whose misfit the stated errors can explain (chi2 <= n);
            # on nearly determined networks GCV alone would smooth through a surge.
            score = np.where(chi_mean <= np.maximum(n_obs, 1.0), score, np.inf)
            take = (score < best_score) | (best_u is None)
            best_score = np.where(take, score, best_score)
        elif settings.lam == "discrepancy" and best_u is not None:
            # The largest lambda whose misfit stays within what the stated errors allow.
            take = chi_mean <= dof
        else:
            take = np.ones(p, dtype=bool)
        if best_u is None:
            best_u, best_c, best_chi, best_dof = u, c, chi, dof
        else:
            best_u = np.where(take[:, None, None], u, best_u)
            best_c = np.where(take[:, None, None], c, best_c)
            best_chi = np.where(take[:, None], chi, best_chi)
            best_dof = np.where(take, dof, best_dof)
    assert best_u is not None and best_c is not None and best_chi is not None
    return best_u, best_c, best_chi / best_dof[:, None]


def _tukey(z: np.ndarray) -> np.ndarray:
    return np.where(np.abs(z) < TUKEY_C, (1.0 - (z / TUKEY_C) ** 2) ** 2, 0.0)


def _reweight(
    y: np.ndarray, u: np.ndarray, a_t: np.ndarray, sig: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """Tukey's biweight of each pair's larger normalised residual over a robust scale."""
    z = np.max(np.abs(y - u @ a_t) / sig, axis=1)  # (p, n)
    zs = np.where(valid, z, np.nan)
    has = valid.any(axis=1)
    med = np.zeros(z.shape[0])
    if has.any():
        med[has] = np.nanmedian(zs[has], axis=1)
    s = np.maximum(1.0, 1.4826 * med)
    return _tukey(z / s[:, None])


def _invert_batch(
    vx: np.ndarray,
    vy: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    a: np.ndarray,
    basis: solver.PenaltyBasis,
    outer: Any,
    settings: InversionSettings,
    groups: Sequence[np.ndarray],
) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    """Invert one batch on the base steps; per averaging matrix in ``groups`` return
    ``(vx, vy, vx_error, vy_error, resolution)`` of the averaged steps, and the final weights."""
    valid = np.isfinite(vx) & np.isfinite(vy) & np.isfinite(sx) & np.isfinite(sy)
    valid &= (sx > 0) & (sy > 0)
    sx = np.where(valid, sx, 1.0)
    sy = np.where(valid, sy, 1.0)
    base_w = np.where(valid, 2.0 / (sx**2 + sy**2), 0.0)
    y = np.stack([np.where(valid, vx, 0.0), np.where(valid, vy, 0.0)], axis=1)  # (p, 2, n)
    sig = np.stack([sx, sy], axis=1)
    a_t = np.ascontiguousarray(a.T)
    if settings.solver == "direct":
        return _invert_batch_direct(y, sig, valid, base_w, a, basis.reg, settings, groups)
    fixed = not isinstance(settings.lam, str)
    grid = (float(settings.lam),) if fixed else settings.lam_grid
    rule = "fixed" if fixed else str(settings.lam)
    w = base_w
    m = a.shape[1]
    for it in range(settings.iterations + 1):
        n_mat = solver.normal_matrices(w, outer, m)
        rhs = (w[:, None, :] * y) @ a
        if it == settings.iterations:
            u, var, red_chi, resolution, _ = solver.solve_grid(
                n_mat, rhs, w, y, a, basis, grid, rule, min(settings.lam_grid), groups
            )
        else:  # reweighting: outliers are judged against a lightly smoothed fit
            u = solver.solve_fixed(n_mat, rhs, basis.reg, np.full(len(w), settings.irls_lam))
        if it == settings.iterations:
            break
        w = base_w * _reweight(y, u, a_t, sig, valid)
    return _per_group(u, var, red_chi, resolution, groups), w


def _invert_batch_direct(
    y: np.ndarray,
    sig: np.ndarray,
    valid: np.ndarray,
    base_w: np.ndarray,
    a: np.ndarray,
    reg: np.ndarray,
    settings: InversionSettings,
    groups: Sequence[np.ndarray],
) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    """The reference solver: lambda chosen at every iteration by one inverse per lambda."""
    w = base_w
    a_t = np.ascontiguousarray(a.T)
    for it in range(settings.iterations + 1):
        n_mat = _normal(w, a, settings.pair_block)
        rhs = (w[:, None, :] * y) @ a
        u, c, red_chi = _solve_all(n_mat, rhs, w, y, a, reg, settings)
        if it == settings.iterations:
            break
        w = base_w * _reweight(y, u, a_t, sig, valid)
    # Whether the data determine a step is judged with the weakest smoothing tried, so a
    # step is not called a gap because the truth happened to be smooth (large lambda).
    scale = np.trace(n_mat, axis1=1, axis2=2) / solver.reg_trace(reg)
    scale = np.where(scale > 0, scale, 1.0)[:, None, None]
    weakest = n_mat + scale * (min(settings.lam_grid) * reg + 1e-10 * np.eye(reg.shape[0]))
    res_mat = np.linalg.inv(weakest) @ n_mat
    var, resolution = [], []
    for g in groups:
        var.append(np.einsum("kj,pjl,kl->pk", g, c, g))
        resolution.append(np.einsum("kj,pjl,lk->pk", g, res_mat, (g > 0).T.astype(float)))
    return _per_group(u, var, red_chi, resolution, groups), w


def _per_group(
    u: np.ndarray,
    var: list[np.ndarray],
    red_chi: np.ndarray,
    resolution: list[np.ndarray],
    groups: Sequence[np.ndarray],
) -> list[tuple[np.ndarray, ...]]:
    """Averaged velocities, errors inflated by the misfit, resolution, per averaging matrix."""
    infl = np.sqrt(np.maximum(red_chi, 1.0))  # (p, 2)
    out = []
    for g, v, r in zip(groups, var, resolution, strict=True):
        ug = u @ g.T  # (p, 2, K)
        err = np.sqrt(np.clip(v, 0, None))[:, None, :] * infl[:, :, None]
        out.append((ug[:, 0], ug[:, 1], err[:, 0], err[:, 1], r))
    return out


def _averaging(edges: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``G`` (K, m): time weights of the base steps inside each step of ``edges`` (nested)."""
    k_of = np.searchsorted(edges, base[:-1], side="right") - 1
    days = (np.diff(base) / _DAY).astype(np.float64)
    g = np.zeros((edges.size - 1, base.size - 1))
    g[k_of, np.arange(base.size - 1)] = days
    return g / g.sum(axis=1, keepdims=True)


def _base_edges(
    sets: dict[str, np.ndarray], a_of: Any, reg_of: Any, settings: InversionSettings
) -> np.ndarray:
    """The steps the network is inverted on: the union of the requested edges, refined by the
    calendar months where a step is longer than a month and (``base="auto"``) the network
    resolves at least ``base_support`` of the covered fine steps."""
    union = np.unique(np.concatenate(list(sets.values())))
    if settings.base == "steps" or np.all(np.diff(union) <= 31 * _DAY):
        return union
    fine = monthly_refined(union)
    if settings.base == "monthly":
        return fine
    # Network-level test on the dates alone (equal weights), so every chunk of a cube
    # chooses the same base: diag((A'A + lam R)^-1 A'A) at the weakest smoothing.
    a = a_of(fine)
    n_mat = a.T @ a
    reg = reg_of(fine.size - 1)
    scale = max(np.trace(n_mat) / solver.reg_trace(reg), 1e-12)
    mat = n_mat + scale * (min(settings.lam_grid) * reg + 1e-10 * np.eye(reg.shape[0]))
    res = np.diag(np.linalg.solve(mat, n_mat))
    covered = a.sum(axis=0) > 0
    share = float(np.mean(res[covered] >= settings.min_resolution)) if covered.any() else 0.0
    return fine if share >= settings.base_support else union


def _check_size(sets: dict[str, np.ndarray]) -> None:
    most = max(step_count(np.unique(np.concatenate(list(sets.values())))))
    if most > MAX_STEPS:
        raise ValueError(
            f"{most} steps to solve for (at most {MAX_STEPS}: the matrices grow with their "
            "square); choose longer steps"
        )


def _reference_error(valid: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Per pixel, :data:`ERROR_RATIO` times the median stated error of its valid pairs (m/yr,
    rms of the components); inf where no pair is valid."""
    pair_err = np.where(valid, np.sqrt((sx**2 + sy**2) / 2), np.nan)
    has = valid.any(axis=1)
    ref = np.full(len(valid), np.inf)
    ref[has] = ERROR_RATIO * np.nanmedian(pair_err[has], axis=1)
    return ref


def invert_pairs(
    vx: np.ndarray,
    vy: np.ndarray,
    vx_error: np.ndarray,
    vy_error: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    edges: np.ndarray,
    settings: InversionSettings | None = None,
) -> dict[str, np.ndarray]:
    """Invert pair velocities into per-step velocities for every pixel (see module docstring).

    Parameters
    ----------
    vx, vy : ndarray, shape (..., n)
        Pair mean velocities, m/yr, map east and north; NaN where a pair has no data.
    vx_error, vy_error : ndarray, shape (..., n) or (n,)
        Their 1-sigma errors, m/yr.
    t1, t2 : ndarray of datetime64, shape (n,)
        Acquisition times of each pair's first and second image.
    edges : ndarray of datetime64[D], shape (m + 1,)
        Step edges (:func:`time_steps`). Pairs not wholly inside ``[edges[0], edges[-1]]``
        are left out.
    settings : InversionSettings, optional

    Returns
    -------
    dict of str to ndarray, shape (..., m)
        ``vx``, ``vy`` (m/yr, NaN where unresolved), ``vx_error``, ``vy_error`` (m/yr),
        ``coverage_days`` (days), ``pair_count``, ``first_date``, ``last_date``
        (datetime64[s], NaT where uncovered), ``resolution`` (model resolution of the step's
        value, 1) and ``resolved_days`` (days of the step in base steps the data resolve).
    """
    return invert_series(vx, vy, vx_error, vy_error, t1, t2, {"steps": edges}, settings)["steps"]


def invert_series(
    vx: np.ndarray,
    vy: np.ndarray,
    vx_error: np.ndarray,
    vy_error: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    steps: dict[str, np.ndarray],
    settings: InversionSettings | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Like :func:`invert_pairs` for several step sets from one inversion on a common base.

    Parameters
    ----------
    steps : dict of str to ndarray of datetime64[D]
        Named step edges, e.g. ``{"monthly": ..., "annual": ...}``, all with the same first
        and last edge.
    vx, vy, vx_error, vy_error, t1, t2, settings
        As for :func:`invert_pairs`.

    Returns
    -------
    dict of str to dict
        Per name, the outputs of :func:`invert_pairs` on those steps.
    """
    settings = settings or InversionSettings()
    vx = np.asarray(vx, dtype=np.float64)
    shape = vx.shape
    n = shape[-1]
    t1 = np.asarray(t1, "datetime64[s]")
    t2 = np.asarray(t2, "datetime64[s]")
    if t1.shape != (n,) or t2.shape != (n,):
        raise ValueError(f"t1 and t2 must have shape ({n},), got {t1.shape} and {t2.shape}")
    if np.any(t2 <= t1):
        raise ValueError("every pair must end after it starts (t2 > t1)")
    sets = {name: np.asarray(e, "datetime64[D]") for name, e in steps.items()}
    first = next(iter(sets.values()))
    if any(e[0] != first[0] or e[-1] != first[-1] for e in sets.values()):
        raise ValueError("every step set must have the same first and last edge")
    inside = (t1 >= first[0]) & (t2 <= first[-1])
    keep = np.flatnonzero(inside)
    t1k, t2k = t1[keep], t2[keep]
    order = 1 if settings.regularisation == "first" else 2

    def reg_of(m: int) -> np.ndarray:
        return _difference(m, settings.regularisation) if m > order else np.zeros((m, m))

    _check_size(sets)
    base = _base_edges(sets, lambda e: closure_matrix(t1k, t2k, e), reg_of, settings)
    m = base.size - 1
    a = closure_matrix(t1k, t2k, base)
    basis = solver.PenaltyBasis.from_reg(reg_of(m))
    outer = solver.outer_products(a)
    groups = [np.eye(m)] + [_averaging(e, base) for e in sets.values()]
    base_days = (np.diff(base) / _DAY).astype(np.float64)
    vy = np.broadcast_to(np.asarray(vy, dtype=np.float64), shape).reshape(-1, n)
    sx = np.broadcast_to(np.asarray(vx_error, dtype=np.float64), shape).reshape(-1, n)
    sy = np.broadcast_to(np.asarray(vy_error, dtype=np.float64), shape).reshape(-1, n)
    vx2 = vx.reshape(-1, n)
    p_total = vx2.shape[0]
    out = {
        name: {k: np.full((p_total, e.size - 1), np.nan) for k in OUTPUTS}
        for name, e in sets.items()
    }
    batch = max(1, min(settings.batch_pixels, BATCH_BYTES // max(1, 16 * 8 * keep.size)))
    batch = max(1, min(batch, MATRIX_BYTES // (8 * m * m)))
    with solver.single_threaded_blas():  # see there: 4.5x faster under Dask
        for s in range(0, p_total, batch):
            sl = slice(s, s + batch)
            bx, by = vx2[sl][:, keep], vy[sl][:, keep]
            bsx, bsy = sx[sl][:, keep], sy[sl][:, keep]
            per_group, _ = _invert_batch(bx, by, bsx, bsy, a, basis, outer, settings, groups)
            valid = np.isfinite(bx) & np.isfinite(by) & np.isfinite(bsx) & np.isfinite(bsy)
            ref_err = _reference_error(valid, bsx, bsy)
            base_cov = solver.step_coverage(valid, t1k, t2k, base)[0]
            fine_ok = (base_cov > 0) & (per_group[0][4] >= settings.min_resolution)
            for (name, e), g, (ux, uy, ex, ey, res) in zip(
                sets.items(), groups[1:], per_group[1:], strict=True
            ):
                days, first_d, last_d = solver.step_coverage(valid, t1k, t2k, e)
                count = valid.astype(np.float64) @ (closure_matrix(t1k, t2k, e) > 0)
                err = np.sqrt((ex**2 + ey**2) / 2)
                determined = err <= np.maximum(np.hypot(ux, uy), ref_err[:, None])
                ok = (days > 0) & (res >= settings.min_resolution) & determined
                o = out[name]
                for k, arr in (("vx", ux), ("vy", uy), ("vx_error", ex), ("vy_error", ey)):
                    o[k][sl] = np.where(ok, arr, np.nan)
                o["resolution"][sl] = np.where(days > 0, res, 0.0)
                o["resolved_days"][sl] = fine_ok @ ((g > 0).T * base_days[:, None])
                o["coverage_days"][sl] = days
                o["pair_count"][sl] = count
                o["first_date"][sl] = first_d
                o["last_date"][sl] = last_d
    return {name: _shaped(o, shape, sets[name]) for name, o in out.items()}


def _shaped(out: dict[str, np.ndarray], shape: tuple[int, ...], edges: np.ndarray) -> dict:
    m = edges.size - 1
    result: dict[str, np.ndarray] = {}
    for name, arr in out.items():
        arr = arr.reshape(*shape[:-1], m)
        if name in ("first_date", "last_date"):
            secs = np.where(np.isfinite(arr), np.round(arr * 86400.0), 0).astype(np.int64)
            dates = edges[0].astype("datetime64[s]") + secs.astype("timedelta64[s]")
            result[name] = np.where(np.isfinite(arr), dates, np.datetime64("NaT"))
        elif name == "pair_count":
            result[name] = arr.astype(np.int32)
        else:
            result[name] = arr
    return result
