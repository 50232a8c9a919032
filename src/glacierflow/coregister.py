"""Residual misregistration of a pair, fitted on stable ground and removed from all offsets.

Co-registration is an object that is first *fitted* on the offsets of stable, ice-free ground and
then *applied* to every node; its fitted parameters stay inspectable afterwards (the pattern of
xdem's ``coreg`` classes). Images from the same orbit and processing level are usually
misregistered by a fraction of a pixel; uncorrected, that fraction is a velocity bias of
``shift * pixel_size / dt`` everywhere, e.g. 0.24 px * 15 m / 16 days = 82 m/yr.

The fit is robust: nodes further than ``clip_sigma`` normalized median absolute deviations from
the median are left out and the fit repeated, so moving ice mistaken for stable ground or
mismatches on cloud do not drag it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NMAD_FACTOR = 1.4826
"""Scale from the median absolute deviation to a normal standard deviation."""


def nmad(values: np.ndarray) -> float:
    """Normalized median absolute deviation: a standard deviation robust to outliers."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(NMAD_FACTOR * np.median(np.abs(v - np.median(v))))


@dataclass
class ConstantShift:
    """A constant offset ``(dx, dy)`` in pixels between the two images.

    Attributes
    ----------
    clip_sigma : float
        Outlier threshold for the robust fit, in NMADs.
    min_nodes : int
        Fewest stable nodes a fit needs.
    dx_px, dy_px : float
        Fitted misregistration, right and down, in pixels (after :meth:`fit`).
    dx_err_px, dy_err_px : float
        One-sigma uncertainty of the fitted shift (NMAD / sqrt(n)), in pixels.
    n_nodes : int
        Stable nodes kept by the robust fit.
    """

    clip_sigma: float = 3.0
    min_nodes: int = 10
    dx_px: float = field(default=np.nan, init=False)
    dy_px: float = field(default=np.nan, init=False)
    dx_err_px: float = field(default=np.nan, init=False)
    dy_err_px: float = field(default=np.nan, init=False)
    n_nodes: int = field(default=0, init=False)

    def fit(self, dx_px: np.ndarray, dy_px: np.ndarray, stable: np.ndarray) -> ConstantShift:
        """Fit the shift on the stable nodes.

        Parameters
        ----------
        dx_px, dy_px : ndarray
            Offsets in pixels (NaN where invalid).
        stable : ndarray of bool
            Nodes on stable ground.

        Raises
        ------
        ValueError
            If fewer than ``min_nodes`` stable nodes hold an offset.
        """
        keep = stable & np.isfinite(dx_px) & np.isfinite(dy_px)
        if keep.sum() < self.min_nodes:
            raise ValueError(
                f"only {int(keep.sum())} stable nodes hold an offset; "
                f"co-registration needs at least {self.min_nodes}"
            )
        x, y = dx_px[keep].astype(np.float64), dy_px[keep].astype(np.float64)
        inl = np.ones(x.size, dtype=bool)
        for _ in range(5):
            mx, my = np.median(x[inl]), np.median(y[inl])
            sx = max(nmad(x[inl]), 1e-3)
            sy = max(nmad(y[inl]), 1e-3)
            new = (np.abs(x - mx) <= self.clip_sigma * sx) & (
                np.abs(y - my) <= self.clip_sigma * sy
            )
            if new.sum() < self.min_nodes or np.array_equal(new, inl):
                break
            inl = new
        n = int(inl.sum())
        self.dx_px = float(np.mean(x[inl]))
        self.dy_px = float(np.mean(y[inl]))
        self.dx_err_px = float(np.std(x[inl]) / np.sqrt(n))
        self.dy_err_px = float(np.std(y[inl]) / np.sqrt(n))
        self.n_nodes = n
        return self

    def apply(self, dx_px: np.ndarray, dy_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Remove the fitted shift from offsets (pixels); returns new arrays."""
        if not np.isfinite(self.dx_px):
            raise RuntimeError("fit the co-registration before applying it")
        return dx_px - np.float32(self.dx_px), dy_px - np.float32(self.dy_px)

    def attrs(self) -> dict[str, float | int | str]:
        """Fitted parameters as product attributes."""
        return {
            "coreg_method": "constant",
            "coreg_dx_px": self.dx_px,
            "coreg_dy_px": self.dy_px,
            "coreg_dx_err_px": self.dx_err_px,
            "coreg_dy_err_px": self.dy_err_px,
            "coreg_nodes": self.n_nodes,
        }
