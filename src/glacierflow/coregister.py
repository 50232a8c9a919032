"""Residual misregistration of a pair, fitted on stable ground and removed from all offsets.

Co-registration is an object that is first *fitted* on the offsets of stable, ice-free ground and
then *applied* to every node; its fitted parameters stay inspectable afterwards (the pattern of
xdem's ``coreg`` classes). Images from the same orbit and processing level are usually
misregistered by a fraction of a pixel; uncorrected, that fraction is a velocity bias of
``shift * pixel_size / dt`` everywhere, e.g. 0.24 px * 15 m / 16 days = 82 m/yr. Attitude and
terrain errors can add a ramp across the scene: :class:`AffineShift` fits a plane and
:class:`Poly2Shift` a second-order surface to each offset component.

The fit is robust: nodes further than ``clip_sigma`` normalized median absolute deviations from
the current surface are left out and the fit repeated until the set of nodes settles, so moving
ice mistaken for stable ground or mismatches on cloud do not drag it.

Uncertainty: neighbouring nodes whose chips overlap share most of their pixels and so their
matching errors; ``nodes_per_sample`` (``(chip_px / step_px)**2`` for overlapping chips) says how
many nodes make one independent sample, and the parameter covariance of the least-squares fit is
scaled by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

NMAD_FACTOR = 1.4826
"""Scale from the median absolute deviation to a normal standard deviation."""

#: Names of the polynomial terms in ``u``, ``v`` (normalized column and row), by degree.
TERMS: dict[int, tuple[str, ...]] = {
    0: ("1",),
    1: ("1", "u", "v"),
    2: ("1", "u", "v", "u2", "uv", "v2"),
}


def nmad(values: np.ndarray) -> float:
    """Normalized median absolute deviation: a standard deviation robust to outliers."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(NMAD_FACTOR * np.median(np.abs(v - np.median(v))))


def _design(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    cols = [np.ones_like(u)]
    if degree >= 1:
        cols += [u, v]
    if degree >= 2:
        cols += [u * u, u * v, v * v]
    return np.stack(cols, axis=-1)


def node_coordinates(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Column and row index of every node of a grid of ``shape`` (default fit coordinates)."""
    rows, cols = np.indices(shape, dtype=np.float64)
    return cols, rows


@dataclass
class PolynomialShift:
    """A misregistration surface ``dx(col, row)``, ``dy(col, row)`` in pixels.

    Each offset component is a polynomial of degree :attr:`degree` in the normalized coordinates
    ``u = (col - centre_col) / scale``, ``v = (row - centre_row) / scale`` (terms
    :data:`TERMS`), where ``col``, ``row`` are whatever coordinates :meth:`fit` was given (image
    pixels in :func:`glacierflow.track.track_pair`, node indices by default), ``centre_*`` the
    middle of the fitted grid and ``scale`` half its larger side.

    Attributes
    ----------
    clip_sigma : float
        Outlier threshold for the robust fit, in NMADs of the residuals.
    min_nodes : int
        Fewest stable nodes a fit needs (at least twice the number of terms is enforced too).
    nodes_per_sample : float
        Nodes that make one independent error sample (chip overlap), >= 1.
    coef_dx_px, coef_dy_px : ndarray
        Fitted coefficients per term, in pixels (after :meth:`fit`).
    coef_dx_err_px, coef_dy_err_px : ndarray
        Their one-sigma uncertainties, in pixels.
    centre_col, centre_row, scale : float
        Normalization of the coordinates.
    n_candidates : int
        Stable nodes with an offset offered to the fit.
    n_nodes : int
        Stable nodes kept by the robust fit.
    residual_nmad_px : tuple of float
        NMAD of the kept nodes' residuals in x and y, in pixels.
    """

    degree: ClassVar[int] = 0
    method: ClassVar[str] = "polynomial"

    clip_sigma: float = 3.0
    min_nodes: int = 10
    nodes_per_sample: float = 1.0
    coef_dx_px: np.ndarray = field(default_factory=lambda: np.array([]), init=False)
    coef_dy_px: np.ndarray = field(default_factory=lambda: np.array([]), init=False)
    coef_dx_err_px: np.ndarray = field(default_factory=lambda: np.array([]), init=False)
    coef_dy_err_px: np.ndarray = field(default_factory=lambda: np.array([]), init=False)
    centre_col: float = field(default=np.nan, init=False)
    centre_row: float = field(default=np.nan, init=False)
    scale: float = field(default=np.nan, init=False)
    n_candidates: int = field(default=0, init=False)
    n_nodes: int = field(default=0, init=False)
    residual_nmad_px: tuple[float, float] = field(default=(np.nan, np.nan), init=False)
    cov_dx_px2: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), init=False, repr=False)
    cov_dy_px2: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), init=False, repr=False)

    @property
    def fitted(self) -> bool:
        """True once :meth:`fit` has run."""
        return self.coef_dx_px.size > 0

    def _uv(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (cols - self.centre_col) / self.scale, (rows - self.centre_row) / self.scale

    def fit(
        self,
        dx_px: np.ndarray,
        dy_px: np.ndarray,
        stable: np.ndarray,
        cols: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> PolynomialShift:
        """Fit the surface on the stable nodes.

        Parameters
        ----------
        dx_px, dy_px : ndarray
            Offsets in pixels (NaN where invalid).
        stable : ndarray of bool
            Nodes on stable ground.
        cols, rows : ndarray, optional
            Coordinates of the nodes (same shape), e.g. image columns and rows in pixels;
            default node indices.

        Raises
        ------
        ValueError
            If fewer than ``min_nodes`` stable nodes hold an offset.
        """
        dx_px = np.asarray(dx_px, dtype=np.float64)
        dy_px = np.asarray(dy_px, dtype=np.float64)
        if cols is None or rows is None:
            cols, rows = node_coordinates(dx_px.shape)
        cols = np.asarray(cols, dtype=np.float64)
        rows = np.asarray(rows, dtype=np.float64)
        if not dx_px.shape == dy_px.shape == np.shape(stable) == cols.shape == rows.shape:
            raise ValueError("dx_px, dy_px, stable, cols and rows must share one shape")
        if self.nodes_per_sample < 1:
            raise ValueError(f"nodes_per_sample must be >= 1, got {self.nodes_per_sample}")
        n_terms = len(TERMS[self.degree])
        need = max(self.min_nodes, 2 * n_terms)
        keep = np.asarray(stable, dtype=bool) & np.isfinite(dx_px) & np.isfinite(dy_px)
        if keep.sum() < need:
            raise ValueError(
                f"only {int(keep.sum())} stable nodes hold an offset; "
                f"a {self.method} co-registration needs at least {need}"
            )
        self.centre_col = float((np.nanmin(cols) + np.nanmax(cols)) / 2)
        self.centre_row = float((np.nanmin(rows) + np.nanmax(rows)) / 2)
        extent = max(np.nanmax(cols) - np.nanmin(cols), np.nanmax(rows) - np.nanmin(rows))
        self.scale = float(extent / 2) if extent > 0 else 1.0
        u, v = self._uv(cols[keep], rows[keep])
        a = _design(u, v, self.degree)
        x, y = dx_px[keep], dy_px[keep]
        # Start from the median offset: robust to any minority of moving or mismatched nodes,
        # where a first least-squares surface could already be dragged by them.
        rx, ry = x - np.median(x), y - np.median(y)
        inl = self._inliers(rx, ry, np.ones(x.size, dtype=bool))
        for _ in range(20):
            cx, *_ = np.linalg.lstsq(a[inl], x[inl], rcond=None)
            cy, *_ = np.linalg.lstsq(a[inl], y[inl], rcond=None)
            new = self._inliers(x - a @ cx, y - a @ cy, inl)
            if new.sum() < need or np.array_equal(new, inl):
                break
            inl = new
        cx, *_ = np.linalg.lstsq(a[inl], x[inl], rcond=None)
        cy, *_ = np.linalg.lstsq(a[inl], y[inl], rcond=None)
        n = int(inl.sum())
        ai = a[inl]
        cov = np.linalg.pinv(ai.T @ ai) * self.nodes_per_sample
        res_x, res_y = x[inl] - ai @ cx, y[inl] - ai @ cy
        dof = max(n - n_terms, 1)
        var_x, var_y = float(res_x @ res_x) / dof, float(res_y @ res_y) / dof
        self.coef_dx_px, self.coef_dy_px = cx, cy
        self.cov_dx_px2, self.cov_dy_px2 = cov * var_x, cov * var_y
        self.coef_dx_err_px = np.sqrt(np.diag(self.cov_dx_px2))
        self.coef_dy_err_px = np.sqrt(np.diag(self.cov_dy_px2))
        self.n_candidates = int(x.size)
        self.n_nodes = n
        self.residual_nmad_px = (nmad(res_x), nmad(res_y))
        return self

    def _inliers(self, rx: np.ndarray, ry: np.ndarray, current: np.ndarray) -> np.ndarray:
        # The floor keeps a near-perfect fit (synthetic data) from rejecting everything.
        sx = max(nmad(rx[current]), 1e-3)
        sy = max(nmad(ry[current]), 1e-3)
        mx, my = np.median(rx[current]), np.median(ry[current])
        return (np.abs(rx - mx) <= self.clip_sigma * sx) & (np.abs(ry - my) <= self.clip_sigma * sy)

    def correction(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fitted misregistration at ``cols``, ``rows``, in pixels."""
        if not self.fitted:
            raise RuntimeError("fit the co-registration before applying it")
        u, v = self._uv(np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64))
        a = _design(u, v, self.degree)
        return a @ self.coef_dx_px, a @ self.coef_dy_px

    def correction_error(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """One-sigma uncertainty of the fitted correction at ``cols``, ``rows``, in pixels.

        From the full parameter covariance (``a C a^T`` for the node's terms ``a``), as the RMS
        of the x and y components, to go with an isotropic per-component error.
        """
        if not self.fitted:
            raise RuntimeError("fit the co-registration first")
        u, v = self._uv(np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64))
        a = _design(u, v, self.degree)
        var_x = np.einsum("...i,ij,...j->...", a, self.cov_dx_px2, a)
        var_y = np.einsum("...i,ij,...j->...", a, self.cov_dy_px2, a)
        return np.sqrt((var_x + var_y) / 2)

    def apply(
        self,
        dx_px: np.ndarray,
        dy_px: np.ndarray,
        cols: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Remove the fitted surface from offsets (pixels); returns new float32 arrays."""
        if cols is None or rows is None:
            cols, rows = node_coordinates(np.shape(dx_px))
        cx, cy = self.correction(cols, rows)
        return (
            (np.asarray(dx_px, dtype=np.float64) - cx).astype(np.float32),
            (np.asarray(dy_px, dtype=np.float64) - cy).astype(np.float32),
        )

    def attrs(self) -> dict[str, float | int | str | list[float]]:
        """Fitted parameters and their uncertainties as product attributes."""
        return {
            "coreg_method": self.method,
            "coreg_dx_px": float(self.coef_dx_px[0]),
            "coreg_dy_px": float(self.coef_dy_px[0]),
            "coreg_dx_err_px": float(self.coef_dx_err_px[0]),
            "coreg_dy_err_px": float(self.coef_dy_err_px[0]),
            "coreg_terms": " ".join(TERMS[self.degree]),
            "coreg_dx_coef_px": [float(c) for c in self.coef_dx_px],
            "coreg_dy_coef_px": [float(c) for c in self.coef_dy_px],
            "coreg_dx_coef_err_px": [float(c) for c in self.coef_dx_err_px],
            "coreg_dy_coef_err_px": [float(c) for c in self.coef_dy_err_px],
            "coreg_centre_col_px": self.centre_col,
            "coreg_centre_row_px": self.centre_row,
            "coreg_scale_px": self.scale,
            "coreg_definition": (
                "correction subtracted from dx (dy): sum of coreg_dx_coef_px (coreg_dy_coef_px) "
                "times coreg_terms in u = (column - coreg_centre_col_px) / coreg_scale_px, "
                "v = (row - coreg_centre_row_px) / coreg_scale_px, image pixels; "
                "coreg_dx_px, coreg_dy_px: the correction at the centre"
            ),
            "coreg_nodes": self.n_nodes,
            "coreg_candidate_nodes": self.n_candidates,
            "coreg_nodes_per_sample": float(self.nodes_per_sample),
            "coreg_residual_dx_nmad_px": self.residual_nmad_px[0],
            "coreg_residual_dy_nmad_px": self.residual_nmad_px[1],
        }


@dataclass
class ConstantShift(PolynomialShift):
    """A constant offset ``(dx, dy)`` in pixels between the two images.

    :attr:`dx_px`, :attr:`dy_px` are the fitted shift (right and down, pixels) and
    :attr:`dx_err_px`, :attr:`dy_err_px` their one-sigma uncertainties.
    """

    degree: ClassVar[int] = 0
    method: ClassVar[str] = "constant"

    @property
    def dx_px(self) -> float:
        """Fitted shift to the right, in pixels (NaN before :meth:`fit`)."""
        return float(self.coef_dx_px[0]) if self.fitted else float("nan")

    @property
    def dy_px(self) -> float:
        """Fitted shift down, in pixels (NaN before :meth:`fit`)."""
        return float(self.coef_dy_px[0]) if self.fitted else float("nan")

    @property
    def dx_err_px(self) -> float:
        """One-sigma uncertainty of :attr:`dx_px`, in pixels."""
        return float(self.coef_dx_err_px[0]) if self.fitted else float("nan")

    @property
    def dy_err_px(self) -> float:
        """One-sigma uncertainty of :attr:`dy_px`, in pixels."""
        return float(self.coef_dy_err_px[0]) if self.fitted else float("nan")


@dataclass
class AffineShift(PolynomialShift):
    """A plane per offset component: constant shift plus a linear ramp across the image."""

    degree: ClassVar[int] = 1
    method: ClassVar[str] = "affine"


@dataclass
class Poly2Shift(PolynomialShift):
    """A second-order polynomial surface per offset component."""

    degree: ClassVar[int] = 2
    method: ClassVar[str] = "poly2"


#: Co-registration classes by the name the command line and :func:`make_coreg` use.
COREG_METHODS: dict[str, type[PolynomialShift]] = {
    "constant": ConstantShift,
    "affine": AffineShift,
    "poly2": Poly2Shift,
}


def make_coreg(method: str, **kwargs: float) -> PolynomialShift:
    """A co-registration object by name: ``"constant"``, ``"affine"`` or ``"poly2"``."""
    try:
        cls = COREG_METHODS[method]
    except KeyError:
        raise ValueError(
            f"co-registration must be one of {sorted(COREG_METHODS)} or 'none', got {method!r}"
        ) from None
    return cls(**kwargs)


def _nanmedian(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=-1)`` bit for bit, for rows holding a value, from one sort of
    the short last axis (several times faster than the masked-array path it takes)."""
    s = np.sort(a, axis=-1)  # NaN sort last
    k = (~np.isnan(a)).sum(axis=-1)
    lo = np.take_along_axis(s, (np.maximum(k - 1, 0) // 2)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(s, np.minimum(k // 2, a.shape[-1] - 1)[..., None], axis=-1)[..., 0]
    return (lo + hi) / 2


def slowest_nodes(
    dx_px: np.ndarray, dy_px: np.ndarray, fraction: float = 0.25, window_nodes: int = 5
) -> np.ndarray:
    """The ``fraction`` of valid nodes in the slowest neighbourhoods.

    The fallback for stable ground when no outlines are given: on a scene that is not mostly
    ice, the slowest quarter of nodes is mostly rock, plus slow ice near margins and divides.
    Slow ice biases the fit by a fraction of its speed in the flow direction; outlines are
    better whenever they exist.

    Nodes are ranked by the median offset magnitude of the ``window_nodes`` x ``window_nodes``
    nodes around them, not by their own: picking nodes by their own small offset would pick the
    ones whose matching error happens to be small, and the scatter of stable ground (which
    calibrates the error model) would come out too small.

    Parameters
    ----------
    dx_px, dy_px : ndarray
        Offsets in pixels, NaN where invalid.
    fraction : float
        Fraction of the valid nodes to return, in (0, 1].
    window_nodes : int
        Side of the neighbourhood, in nodes (odd; 5 spans more than one 32 px chip at 8 px
        steps, so the neighbourhood's error is nearly independent of the node's own).

    Returns
    -------
    ndarray of bool
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    mag = np.hypot(np.asarray(dx_px, dtype=np.float64), np.asarray(dy_px, dtype=np.float64))
    ok = np.isfinite(mag)
    if not ok.any():
        return ok
    h = window_nodes // 2
    padded = np.pad(mag, h, constant_values=np.nan)
    windows = sliding_window_view(padded, (2 * h + 1, 2 * h + 1))[ok]
    local = np.full(mag.shape, np.nan)
    local[ok] = _nanmedian(windows.reshape(windows.shape[0], -1))
    return ok & (local <= np.quantile(local[ok], fraction))


def fit_on_slowest(
    coreg: PolynomialShift,
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    cols: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    fraction: float = 0.25,
    iterations: int = 3,
) -> np.ndarray:
    """Fit ``coreg`` on the slowest ``fraction`` of nodes, re-picking them after each fit.

    A misregistration makes still rock look as if it moved; re-picking the slowest nodes on the
    corrected offsets lets the selection follow the rock rather than ice that happens to cancel
    the misregistration.

    Returns
    -------
    ndarray of bool
        The nodes of the last selection (the stable ground used).
    """
    if cols is None or rows is None:
        cols, rows = node_coordinates(np.shape(dx_px))
    stable = slowest_nodes(dx_px, dy_px, fraction)
    for i in range(iterations):
        coreg.fit(dx_px, dy_px, stable, cols, rows)
        if i == iterations - 1:
            break
        new = slowest_nodes(*coreg.apply(dx_px, dy_px, cols, rows), fraction)
        if np.array_equal(new, stable):
            break
        stable = new
    return stable
