"""Outlier tests on a field of offsets, and the ``quality`` bit flags that record them.

Area-based matching returns an offset for almost every node, right or wrong. Wrong offsets come
from chips without a unique match: open water, melange, cloud, shadow, fresh snow, or ice that
moved further than the search range. Their peak correlation is *not* reliably low: on smooth
real texture a chance match of two unrelated 32 px chips peaks at a correlation of about 0.3 to
0.4 (0.6 to 0.7 for one chance match in twenty), so thresholds on the correlation peak remove
only the worst of them. What gives wrong offsets away is that they disagree with their
neighbours, while ice and rock move coherently over many chip widths. The tests, in the order
:func:`filter_offsets` applies them:

1. ``NO_MATCH``: the matcher gave no offset (nodata, no texture, peak on the search border).
2. ``LOW_CORR`` / ``LOW_SNR``: the correlation peak is below ``min_corr``, or does not stand
   above the mean absolute correlation of the rest of the surface by ``min_snr``.
3. ``MEDIAN_TEST``: the normalized median test of Westerweel & Scarano (2005) on each offset
   component against its 3 x 3 neighbours; and, from a pair's checks, a weak peak (below
   ``closure_weak_corr``) further than ``weak_stray_px`` from its 5 x 5 neighbours' median
   (:func:`glacierflow.plausibility.weak_strays`): nothing confirms it, and periodic texture
   returns home too.
4. ``SMALL_CLUSTER``: nodes are linked to neighbours whose offset agrees within a tolerance;
   groups of linked nodes smaller than ``min_cluster_nodes`` are removed. A field of chance
   matches breaks into tiny groups, a glacier is one large group (linked along flow even across
   a shear margin too steep for the tolerance).
5. ``FILLED``: optionally, small holes are filled by interpolation from their neighbours; the
   filled node keeps the bits that removed it, plus this one.

Three more tests catch what a neighbourhood cannot: *coherent* mismatches, where a whole patch of
chips agrees on a wrong offset (periodic crevasses seen one crevasse spacing away when the true
motion exceeds the search range; a smooth brightness ramp on snow; a drifting cloud edge). They
run before the median test, so that the fragments they leave fall to tests 3 and 4:

6. ``BACKMATCH``: the forward-backward check of the matcher
   (:mod:`glacierflow.matching.consistency`): the secondary chip at the position found, matched
   back onto the reference, lands more than ``max_closure_px`` from home (or not near it at all),
   at a node whose match is in doubt: a peak correlation below ``closure_weak_corr`` (the aliased
   matches of periodic crevasses peak at 0.34 to 0.52) or an offset more than
   ``closure_stray_px`` from the median of its 5 x 5 neighbours. A strong match that agrees with
   its neighbours is not judged by its closure: on streaked or faint texture a true match slides
   along the streaks both ways, and its closure measures that slop, not a mismatch. (A pair's
   checks, :func:`glacierflow.plausibility.closure_in_doubt`, pass only those closures; this
   filter judges every closure it is given.)
7. ``TOO_FAST``: the offset implies a speed above ``max_speed_m_per_yr``, physically implausible
   for glacier ice (the caller converts it to pixels for the pair, see
   :func:`max_offset_px`).
8. ``UPHILL``: with a DEM (``dem``), the node moves up the surface slope smoothed over about
   1 km, where that slope is significant (:mod:`glacierflow.flowdir`); ice flows down it at that
   scale.

Every node carries the OR of the flags that apply; ``quality == 0`` is a good, measured node.
Removed nodes become NaN; filled nodes hold interpolated values.

References
----------
.. [1] Westerweel, J. and Scarano, F. (2005). Universal outlier detection for PIV data.
   Experiments in Fluids 39, 1096-1100. doi:10.1007/s00348-005-0016-6
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntFlag
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Quality(IntFlag):
    """Bits of the ``quality`` layer; 0 is a good node."""

    NO_MATCH = 1
    LOW_CORR = 2
    LOW_SNR = 4
    MEDIAN_TEST = 8
    SMALL_CLUSTER = 16
    FILLED = 32
    BACKMATCH = 64
    TOO_FAST = 128
    UPHILL = 256


#: Integer type of the ``quality`` layer (nine bits are in use: uint8 no longer holds them).
QUALITY_DTYPE = np.uint16


#: CF ``flag_meanings`` words, in the order of :class:`Quality`'s bits.
FLAG_MEANINGS: dict[Quality, str] = {
    Quality.NO_MATCH: "no_match",
    Quality.LOW_CORR: "low_correlation",
    Quality.LOW_SNR: "low_snr",
    Quality.MEDIAN_TEST: "failed_normalized_median_test",
    Quality.SMALL_CLUSTER: "small_isolated_cluster",
    Quality.FILLED: "filled_by_interpolation",
    Quality.BACKMATCH: "failed_forward_backward_check",
    Quality.TOO_FAST: "implausibly_fast",
    Quality.UPHILL: "flows_uphill",
}

#: Default ``max_speed_m_per_yr``: about twice the fastest glacier speeds measured (Jakobshavn
#: Isbrae's terminus, about 17 km/yr in 2012; surge fronts reach similar speeds for weeks). A
#: faster offset is a mismatch, never ice.
MAX_SPEED_M_PER_YR = 40_000.0
#: Default ``max_closure_px``: a true match returns home within the sub-pixel noise of the two
#: estimates (on the real Yahtse pair: median 0.1 px; 95th percentile 0.2 px on stable rock,
#: 0.45 px on the crevassed, fast-deforming tongue). On that pair's nodes in doubt (see
#: :data:`CLOSURE_WEAK_CORR`), 0.6 px leaves 0.24 % of the fast ice flowing uphill, 0.65 px
#: 0.7 % (an aliased node of the neck then holds its cluster together).
MAX_CLOSURE_PX = 0.6
#: Default ``closure_weak_corr`` and ``closure_stray_px``: where the closure is judged. The
#: aliased matches of the crevassed Yahtse neck peak at 0.34 to 0.52; true matches of streaked
#: texture peak at 0.85 to 0.99 but, with SNRs of 1.3 to 2, close only within 0.5 to 1.5 px
#: (along the streaks). Judged at every checked node (SNR below 5), the check removes 7 % of
#: the clear lower tongue and 18 % of a streaked known field; judged only where the peak is weak
#: or the node strays from its neighbours, 3 % and 6 %, with as few uphill vectors.
CLOSURE_WEAK_CORR = 0.6
CLOSURE_STRAY_PX = 1.0


def quality_attrs() -> dict[str, object]:
    """CF attributes of the ``quality`` variable (``flag_masks``, ``flag_meanings``, ...)."""
    bits = ", ".join(f"{int(b)} = {m}" for b, m in FLAG_MEANINGS.items())
    return {
        "units": "1",
        "long_name": "quality bit flags, 0 = good measured node",
        "flag_masks": [int(b) for b in FLAG_MEANINGS],
        "flag_meanings": " ".join(FLAG_MEANINGS.values()),
        "description": (
            f"OR of bits: {bits}. A node with any bit set is NaN in vx, vy, v, v_error, dx and "
            f"dy, unless bit {int(Quality.FILLED)} is set too: then those values were "
            "interpolated from its neighbours, and the other bits say why it was removed. corr "
            "and snr keep the matcher's values everywhere."
        ),
    }


#: Default outlier thresholds (peak correlation, SNR) per correlator. Each correlator's peak has
#: its own scale: phase correlation peaks are low but sharp, NCC peaks high and broad. Chosen
#: near the 5th percentile of each method's values on clear real texture (the Yahtse pair).
METHOD_THRESHOLDS: dict[str, tuple[float, float]] = {
    "ncc": (0.3, 1.2),
    "phase": (0.1, 5.0),
    "orientation": (0.2, 3.0),
}


class FilterSettings(BaseModel):
    """Parameters of :func:`filter_offsets` (frozen and validated; see each field's help).

    ``min_corr`` and ``min_snr`` default to the thresholds of NCC (:data:`METHOD_THRESHOLDS`):
    0.3 is about the median peak of a chance match between unrelated 32 px chips of real Landsat
    texture, below which a peak cannot be told from chance. Near an SNR of 1 the whole surface is
    about as high as its peak (a flat, saturated or periodic chip) and the peak position is
    arbitrary; well-matched chips of strongly oriented texture (crevasse fields) reach only 1.3
    to 2, so the threshold stays low.

    ``min_cluster_nodes``: chips of neighbouring nodes overlap, so a single chance feature (an
    iceberg, a cloud edge) moves every node whose chip holds it: up to ``(chip_px /
    step_px)**2`` nodes (16 for 32 px chips every 8 px). A group no larger than one chip's
    footprint has no independent confirmation; :meth:`for_grid` sets it from the chip and step.
    ``cluster_tol_px``: two chance matches within a +/-16 px search agree within 2 px about
    once in a hundred.

    ``max_closure_px`` (:data:`MAX_CLOSURE_PX`), ``closure_weak_corr``, ``closure_stray_px``
    (:data:`CLOSURE_WEAK_CORR`), ``max_speed_m_per_yr``
    (:data:`MAX_SPEED_M_PER_YR`), ``dem`` and ``dem_min_slope``: the plausibility tests 6 to 8
    of the module docstring; ``inf`` switches the first two off, no ``dem`` the third.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_corr: float = Field(
        METHOD_THRESHOLDS["ncc"][0],
        ge=0,
        le=1,
        description="Lowest peak correlation kept (0 switches the test off).",
        allow_inf_nan=False,
    )
    min_snr: float = Field(
        METHOD_THRESHOLDS["ncc"][1],
        ge=0,
        description="Lowest correlation peak signal-to-noise ratio kept (0 switches the test off).",
        allow_inf_nan=False,
    )
    median_threshold: float = Field(
        2.0,
        gt=0,
        description="Normalized median test threshold (2 in Westerweel & Scarano 2005).",
        allow_inf_nan=False,
    )
    median_eps_px: float = Field(
        0.1,
        ge=0,
        description="Acceptable fluctuation of the normalized median test, pixels.",
        allow_inf_nan=False,
    )
    min_neighbours: int = Field(
        3, ge=1, description="Fewest valid 3 x 3 neighbours for the median test to judge a node."
    )
    cluster_tol_px: float = Field(
        2.0,
        ge=0,
        description="Neighbours whose offsets differ by at most this are linked, pixels.",
        allow_inf_nan=False,
    )
    cluster_tol_frac: float = Field(
        0.1,
        ge=0,
        description="... or by at most this fraction of the larger offset magnitude.",
        allow_inf_nan=False,
    )
    min_cluster_nodes: int = Field(16, ge=1, description="Smallest group of linked nodes kept.")
    fill_holes: bool = Field(
        False, description="Fill small holes by interpolation (flagged in the quality band)."
    )
    max_hole_nodes: int = Field(4, ge=1, description="Largest hole filled, in nodes.")
    max_closure_px: float = Field(
        MAX_CLOSURE_PX,
        gt=0,
        description="Largest forward-backward closure kept, pixels (inf: no test).",
    )
    closure_weak_corr: float = Field(
        CLOSURE_WEAK_CORR,
        ge=0,
        le=1,
        description="The closure is judged where the peak correlation is below this (1: at "
        "every checked node) ...",
        allow_inf_nan=False,
    )
    closure_stray_px: float = Field(
        CLOSURE_STRAY_PX,
        ge=0,
        description="... or where the offset lies further than this from its 5 x 5 neighbours' "
        "median, pixels.",
    )
    weak_stray_px: float = Field(
        2.0, ge=0, description="A weak peak this far from its 5 x 5 neighbours' median is "
        "removed (median test), pixels (inf: never).",
    )  # fmt: skip
    max_speed_m_per_yr: float = Field(
        MAX_SPEED_M_PER_YR,
        gt=0,
        description="Speeds above this are implausible for ice and flagged, m/yr (inf: no test).",
    )
    dem: Path | None = Field(
        None,
        description="DEM (any CRS, metres): flag nodes moving up its slope smoothed over ~1 km.",
    )
    dem_min_slope: float = Field(
        0.02,
        gt=0,
        allow_inf_nan=False,
        description="Smallest smoothed DEM slope (rise/run) at which flow direction is judged.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: Any) -> Any:
        # True is not a count or a threshold; pydantic would take it as 1.
        if isinstance(value, bool) and info.field_name not in ("fill_holes", "dem"):
            raise ValueError(f"must be a number, got {value!r}")
        return value

    @field_validator("min_neighbours")
    @classmethod
    def _neighbour_count(cls, value: int) -> int:
        if value > 8:
            raise ValueError(
                f"min_neighbours must be 1 to 8 (a node has 8 neighbours in its 3 x 3 "
                f"window), got {value}"
            )
        return value

    @classmethod
    def for_grid(cls, chip_px: int, step_px: int, **overrides: Any) -> FilterSettings:
        """Settings with ``min_cluster_nodes`` = nodes in one chip footprint (at least 4).

        Parameters
        ----------
        chip_px, step_px : int
            Chip side and node spacing, in pixels.
        **overrides
            Any other field.
        """
        footprint = math.ceil((chip_px / step_px) ** 2)
        return cls(**{"min_cluster_nodes": max(4, footprint), **overrides})

    def attrs(self) -> dict[str, float | int | str]:
        """The settings as product attributes (``filter_`` prefix)."""
        return {
            "filter_min_corr": float(self.min_corr),
            "filter_min_snr": float(self.min_snr),
            "filter_median_threshold": float(self.median_threshold),
            "filter_median_eps_px": float(self.median_eps_px),
            "filter_cluster_tol_px": float(self.cluster_tol_px),
            "filter_cluster_tol_frac": float(self.cluster_tol_frac),
            "filter_min_cluster_nodes": int(self.min_cluster_nodes),
            "filter_fill_holes": int(self.fill_holes),
            "filter_max_hole_nodes": int(self.max_hole_nodes),
            "filter_max_closure_px": float(self.max_closure_px),
            "filter_closure_weak_corr": float(self.closure_weak_corr),
            "filter_closure_stray_px": float(self.closure_stray_px),
            "filter_weak_stray_px": float(self.weak_stray_px),
            "filter_max_speed_m_per_yr": float(self.max_speed_m_per_yr),
            "filter_dem": self.dem.name if self.dem is not None else "none",
            "filter_dem_min_slope": float(self.dem_min_slope),
        }


def window_median(values: np.ndarray, half: int = 2) -> np.ndarray:
    """Median of the finite values in the ``(2 half + 1)^2`` window around every node (itself
    included); NaN where none is finite.

    Parameters
    ----------
    values : ndarray, shape (ny, nx)
        Values on the node grid (e.g. offsets, pixels), NaN where unused.
    half : int
        Half-width of the window, in nodes.
    """
    w = 2 * half + 1
    padded = np.pad(np.asarray(values, dtype=np.float64), half, constant_values=np.nan)
    return _nanmedian(sliding_window_view(padded, (w, w)).reshape(*np.shape(values), w * w))


def _neighbours(values: np.ndarray) -> np.ndarray:
    """The 8 neighbours of every node, shape ``values.shape + (8,)``; NaN beyond the grid."""
    padded = np.pad(np.asarray(values, dtype=np.float64), 1, constant_values=np.nan)
    windows = sliding_window_view(padded, (3, 3)).reshape(*values.shape, 9)
    return np.delete(windows, 4, axis=-1)


def _nanmedian(a: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN; NaN (without a warning) where none is finite.

    The values of ``np.nanmedian`` bit for bit (the middle value, or the mean of the two middle
    ones), from one sort of the short last axis: several times faster on node grids, where
    ``np.nanmedian`` goes through masked arrays.
    """
    a = np.asarray(a, dtype=np.float64)
    s = np.sort(a, axis=-1)  # NaN sort last
    k = (~np.isnan(a)).sum(axis=-1)
    lo = np.take_along_axis(s, (np.maximum(k - 1, 0) // 2)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(s, np.minimum(k // 2, a.shape[-1] - 1)[..., None], axis=-1)[..., 0]
    out = (lo + hi) / 2
    out[~np.isfinite(a).any(axis=-1)] = np.nan
    return out


def normalized_median_residual(
    u: np.ndarray, eps: float = 0.1, min_neighbours: int = 3
) -> np.ndarray:
    """Normalized residual of each node against its 3 x 3 neighbours (Westerweel & Scarano 2005).

    ``r = |u0 - um| / (rm + eps)`` with ``um`` the median of the 8 neighbours and ``rm`` the
    median of their residuals ``|ui - um|``: the local spread of the field sets the scale, so the
    test adapts to smooth rock and to sheared ice alike, and ``eps`` (the measurement noise)
    keeps it from rejecting noise-level deviations on perfectly uniform fields.

    Parameters
    ----------
    u : ndarray, shape (ny, nx)
        One component of the field (NaN where invalid), e.g. offsets in pixels.
    eps : float
        Acceptable fluctuation level, in the units of ``u``.
    min_neighbours : int
        Nodes with fewer valid neighbours get NaN (not judged).

    Returns
    -------
    ndarray of float64, shape (ny, nx)
        The normalized residual (dimensionless); NaN where ``u`` is NaN or too few neighbours.
    """
    u = np.asarray(u, dtype=np.float64)
    nb = _neighbours(u)
    um = _nanmedian(nb)
    rm = _nanmedian(np.abs(nb - um[..., None]))
    r = np.abs(u - um) / (rm + eps)
    r[np.isfinite(nb).sum(axis=-1) < min_neighbours] = np.nan
    return r


def median_test(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    threshold: float = 2.0,
    eps_px: float = 0.1,
    min_neighbours: int = 3,
) -> np.ndarray:
    """Nodes failing the normalized median test in either offset component.

    Parameters
    ----------
    dx_px, dy_px : ndarray, shape (ny, nx)
        Offsets in pixels, NaN where invalid.
    threshold : float
        Largest normalized residual accepted (2 in Westerweel & Scarano 2005).
    eps_px : float
        Acceptable fluctuation level, in pixels.
    min_neighbours : int
        Nodes with fewer valid neighbours are not judged (False).

    Returns
    -------
    ndarray of bool
        True where a valid node fails.
    """
    rx = normalized_median_residual(dx_px, eps_px, min_neighbours)
    ry = normalized_median_residual(dy_px, eps_px, min_neighbours)
    with np.errstate(invalid="ignore"):
        return (rx > threshold) | (ry > threshold)


def coherent_cluster_sizes(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    tol_px: float = 1.0,
    tol_frac: float = 0.1,
) -> np.ndarray:
    """Size of the group of mutually consistent nodes each node belongs to.

    Two 8-neighbours are linked when both are valid and their offsets differ by at most
    ``max(tol_px, tol_frac * max(|d1|, |d2|))``; a group is a connected component of these links.

    Parameters
    ----------
    dx_px, dy_px : ndarray, shape (ny, nx)
        Offsets in pixels, NaN where invalid.
    tol_px : float
        Absolute tolerance, in pixels.
    tol_frac : float
        Tolerance as a fraction of the offset magnitude.

    Returns
    -------
    ndarray of int, shape (ny, nx)
        Nodes in the group (1 for an isolated valid node); 0 where invalid.
    """
    from scipy.sparse import coo_matrix  # scipy only when filtering (a fast command line)
    from scipy.sparse.csgraph import connected_components

    dx = np.asarray(dx_px, dtype=np.float64)
    dy = np.asarray(dy_px, dtype=np.float64)
    ny, nx = dx.shape
    valid = np.isfinite(dx) & np.isfinite(dy)
    mag = np.hypot(dx, dy)
    index = np.arange(ny * nx).reshape(ny, nx)
    heads, tails = [], []
    for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = (slice(0, ny - di), slice(max(0, -dj), nx - max(0, dj)))
        b = (slice(di, ny), slice(max(0, dj), nx + min(0, dj)))
        diff = np.hypot(dx[a] - dx[b], dy[a] - dy[b])
        tol = np.maximum(tol_px, tol_frac * np.maximum(mag[a], mag[b]))
        with np.errstate(invalid="ignore"):
            link = valid[a] & valid[b] & (diff <= tol)
        heads.append(index[a][link])
        tails.append(index[b][link])
    h, t = np.concatenate(heads), np.concatenate(tails)
    graph = coo_matrix((np.ones(h.size, dtype=np.int8), (h, t)), shape=(ny * nx, ny * nx))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)[labels].reshape(ny, nx)
    return np.where(valid, sizes, 0)


def fill_small_holes(
    fields: list[np.ndarray], valid: np.ndarray, max_hole_nodes: int = 4
) -> tuple[list[np.ndarray], np.ndarray]:
    """Fill small enclosed holes by repeated averaging of valid 8-neighbours.

    A hole is a 4-connected group of invalid nodes of at most ``max_hole_nodes`` that does not
    touch the grid border. It is filled from its rim inwards: each pass gives every hole node
    with a valid (or already filled) neighbour the mean of those neighbours.

    Parameters
    ----------
    fields : list of ndarray, shape (ny, nx)
        Layers to fill (e.g. dx, dy, and a per-node error); filled in copies.
    valid : ndarray of bool
        Nodes holding a value.
    max_hole_nodes : int
        Largest hole filled.

    Returns
    -------
    filled_fields : list of ndarray
        Copies of ``fields`` with the holes filled.
    filled : ndarray of bool
        Nodes that were filled.
    """
    from scipy import ndimage

    labels, n = ndimage.label(~valid)
    if n == 0:
        return [np.array(f, dtype=np.float64) for f in fields], np.zeros_like(valid)
    sizes = np.bincount(labels.ravel())
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    small = sizes <= max_hole_nodes
    small[0] = False
    small[border] = False
    todo = small[labels]
    out = [np.where(valid, np.asarray(f, dtype=np.float64), np.nan) for f in fields]
    have = valid.copy()
    kernel = np.ones((3, 3))
    kernel[1, 1] = 0
    while todo.any():
        count = ndimage.convolve(have.astype(float), kernel, mode="constant")
        ready = todo & (count > 0)
        if not ready.any():  # cannot happen for enclosed holes; guards an endless loop
            break
        for f in out:
            total = ndimage.convolve(np.where(have, f, 0.0), kernel, mode="constant")
            f[ready] = total[ready] / count[ready]
        have |= ready
        todo &= ~ready
    return out, have & ~valid


@dataclass
class FilterResult:
    """Output of :func:`filter_offsets`.

    Attributes
    ----------
    dx_px, dy_px : ndarray of float64
        Offsets with removed nodes set to NaN, in pixels.
    quality : ndarray of uint16
        Bit flags (see :class:`Quality`).
    """

    dx_px: np.ndarray
    dy_px: np.ndarray
    quality: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """Nodes kept (finite offsets)."""
        return np.isfinite(self.dx_px) & np.isfinite(self.dy_px)

    def counts(self) -> dict[str, int]:
        """Nodes carrying each flag, keyed by flag meaning, plus ``good`` and ``total``."""
        out = {"total": int(self.quality.size), "good": int((self.quality == 0).sum())}
        for bit, meaning in FLAG_MEANINGS.items():
            out[meaning] = int(((self.quality & int(bit)) != 0).sum())
        return out


def filter_offsets(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    corr: np.ndarray,
    snr: np.ndarray,
    settings: FilterSettings | None = None,
    *,
    closure_px: np.ndarray | None = None,
    max_offset_px: float | None = None,
    downslope_px: tuple[np.ndarray, np.ndarray] | None = None,
    weak_stray: np.ndarray | None = None,
) -> FilterResult:
    """Run the removal tests 1 to 4 and 6 to 8 of the module docstring (hole filling is
    separate).

    Parameters
    ----------
    dx_px, dy_px : ndarray, shape (ny, nx)
        Offsets in pixels from the matcher, NaN where unmatched.
    corr, snr : ndarray, shape (ny, nx)
        Peak correlation and peak-to-mean-absolute-correlation ratio.
    settings : FilterSettings, optional
        Thresholds; defaults as documented there.
    closure_px : ndarray, shape (ny, nx), optional
        Forward-backward closure from the matcher (``MatchResult.closure_px``), pixels; NaN
        where not checked or not judged (a pair's checks pass the closures of nodes in doubt
        only: :func:`glacierflow.plausibility.closure_in_doubt`). Nodes beyond
        ``settings.max_closure_px`` get ``BACKMATCH``.
    max_offset_px : float, optional
        Largest plausible offset magnitude, pixels (``settings.max_speed_m_per_yr`` for the
        pair, :func:`max_offset_px`); longer ones get ``TOO_FAST``.
    downslope_px : (ndarray, ndarray), optional
        Unit vector down the smoothed surface slope at each node, in pixel axes (columns,
        rows), NaN where the slope is too gentle to judge (:mod:`glacierflow.flowdir`); nodes
        that move at least :data:`UPHILL_MIN_OFFSET_PX` against it get ``UPHILL``.
    weak_stray : ndarray of bool, shape (ny, nx), optional
        Nodes to flag ``MEDIAN_TEST`` whatever their 3 x 3 neighbours (see test 3).

    Returns
    -------
    FilterResult
        Filtered offsets and the ``quality`` flags. Fill holes afterwards with
        :func:`fill_small_holes` (and set :attr:`Quality.FILLED`), once the offsets are
        co-registered.
    """
    s = settings or FilterSettings()
    dx = np.array(dx_px, dtype=np.float64)
    dy = np.array(dy_px, dtype=np.float64)
    if not dx.shape == dy.shape == np.shape(corr) == np.shape(snr):
        raise ValueError(
            f"dx_px, dy_px, corr and snr must share one shape, got {dx.shape}, {dy.shape}, "
            f"{np.shape(corr)}, {np.shape(snr)}"
        )
    quality = np.zeros(dx.shape, dtype=QUALITY_DTYPE)
    matched = np.isfinite(dx) & np.isfinite(dy)
    quality[~matched] |= QUALITY_DTYPE(Quality.NO_MATCH)
    with np.errstate(invalid="ignore"):
        quality[matched & ~(np.asarray(corr) >= s.min_corr)] |= QUALITY_DTYPE(Quality.LOW_CORR)
        quality[matched & ~(np.asarray(snr) >= s.min_snr)] |= QUALITY_DTYPE(Quality.LOW_SNR)
    quality |= plausibility_flags(dx, dy, s, closure_px, max_offset_px, downslope_px)
    if weak_stray is not None:
        quality[matched & np.asarray(weak_stray, bool)] |= QUALITY_DTYPE(Quality.MEDIAN_TEST)

    def drop(mask: np.ndarray) -> None:
        dx[mask] = np.nan
        dy[mask] = np.nan

    drop(quality != 0)
    failed = median_test(dx, dy, s.median_threshold, s.median_eps_px, s.min_neighbours)
    quality[failed] |= QUALITY_DTYPE(Quality.MEDIAN_TEST)
    drop(failed)
    sizes = coherent_cluster_sizes(dx, dy, s.cluster_tol_px, s.cluster_tol_frac)
    isolated = (sizes > 0) & (sizes < s.min_cluster_nodes)
    quality[isolated] |= QUALITY_DTYPE(Quality.SMALL_CLUSTER)
    drop(isolated)
    return FilterResult(dx, dy, quality)


#: Offsets shorter than this (pixels) are not judged by the flow-direction test: their
#: direction is mostly noise (a sub-pixel offset on slow ice or rock).
UPHILL_MIN_OFFSET_PX = 1.0


def max_offset_px(max_speed_m_per_yr: float, pixel_size_m: float, dt_days: float) -> float:
    """The offset, in pixels, of a speed over a pair's time separation (365.25-day year).

    Parameters
    ----------
    max_speed_m_per_yr : float
        Speed, m/yr.
    pixel_size_m : float
        Image pixel size, metres.
    dt_days : float
        Time from the earlier to the later image, days.
    """
    return float(max_speed_m_per_yr) * float(dt_days) / 365.25 / float(pixel_size_m)


def plausibility_flags(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    settings: FilterSettings,
    closure_px: np.ndarray | None = None,
    max_offset_px: float | None = None,
    downslope_px: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The ``BACKMATCH``, ``TOO_FAST`` and ``UPHILL`` bits of matched nodes (tests 6 to 8).

    Parameters are those of :func:`filter_offsets`; returns the bits as :data:`QUALITY_DTYPE`.
    """
    dx = np.asarray(dx_px, dtype=np.float64)
    dy = np.asarray(dy_px, dtype=np.float64)
    matched = np.isfinite(dx) & np.isfinite(dy)
    out = np.zeros(dx.shape, dtype=QUALITY_DTYPE)
    with np.errstate(invalid="ignore"):
        if closure_px is not None:
            if np.shape(closure_px) != dx.shape:
                raise ValueError(f"closure_px must have the shape {dx.shape}")
            bad = matched & (np.asarray(closure_px) > settings.max_closure_px)
            out[bad] |= QUALITY_DTYPE(Quality.BACKMATCH)
        if max_offset_px is not None:
            out[matched & (np.hypot(dx, dy) > max_offset_px)] |= QUALITY_DTYPE(Quality.TOO_FAST)
        if downslope_px is not None:
            ux, uy = (np.asarray(a, dtype=np.float64) for a in downslope_px)
            if ux.shape != dx.shape or uy.shape != dx.shape:
                raise ValueError(f"downslope_px must hold two arrays of the shape {dx.shape}")
            along = dx * ux + dy * uy
            moving = np.hypot(dx, dy) >= UPHILL_MIN_OFFSET_PX
            # Uphill: more against the slope than across it (beyond 90 degrees from downhill).
            out[matched & moving & (along < 0)] |= QUALITY_DTYPE(Quality.UPHILL)
    return out


def fill_holes(
    dx: np.ndarray,
    dy: np.ndarray,
    sigma_px: np.ndarray,
    filt: FilterResult,
    fsettings: FilterSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 6: fill small enclosed holes by interpolation, flagged ``FILLED`` in
    ``filt.quality`` (changed in place); returns the filled ``dx``, ``dy`` and ``sigma_px``
    (stacked per-node errors, pixels: one row per error)."""
    (dx, dy, *sigmas), filled = fill_small_holes(
        [dx, dy, *sigma_px], filt.valid, fsettings.max_hole_nodes
    )
    sigma_px = np.stack(sigmas)
    # An interpolated value is less certain than a measured one: twice its neighbours'.
    sigma_px[:, filled] *= 2.0
    filt.quality[filled] |= QUALITY_DTYPE(Quality.FILLED)
    return dx, dy, sigma_px
