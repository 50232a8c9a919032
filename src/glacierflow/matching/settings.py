"""Parameters of area-based matching: one frozen, validated settings object.

Allowed values (:data:`METHODS`, :data:`SUBPIXEL_METHODS`, :data:`NCC_KERNELS`), defaults and
units are written here once; the command line, the project file and the Python API build on them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from glacierflow.matching.ncc_tiles import GRID_TILE_SIDE, dense_is_faster

__all__ = [
    "MAX_CHIP_PX",
    "MAX_PYRAMID_LEVELS",
    "METHODS",
    "NCC_KERNELS",
    "REFINE_MODES",
    "SUBPIXEL_METHODS",
    "MatchSettings",
]

#: Correlators: masked normalized cross-correlation, phase correlation, orientation correlation.
METHODS = ("ncc", "phase", "orientation")
#: Sub-pixel peak estimators (see :func:`glacierflow.matching.subpixel.refine_peak`); ``"dft"``
#: works on cross-power spectra and needs ``method="phase"``.
SUBPIXEL_METHODS = ("lanczos", "cubic", "parabola", "gaussian", "dft")
#: Ways of computing NCC surfaces (see ``MatchSettings.ncc_kernel``).
NCC_KERNELS = ("auto", "fft", "dense")
#: Where the affine, centre-weighted refinement runs (see ``MatchSettings.refine``).
REFINE_MODES = ("auto", "all", "off")

_POSITIVE = ("chip_px", "search_px", "step_px", "batch_nodes", "workers", "pyramid_levels")

#: Largest chip side (first and retry chips), pixels: 61 km of Landsat panchromatic. Chips are
#: also checked against the image before any work (:meth:`TrackSettings.check_image`).
MAX_CHIP_PX = 4096
#: Most passes of the resolution pyramid (the coarsest at 1/32 of the resolution).
MAX_PYRAMID_LEVELS = 6


#: Largest displacement gradient (px/px) a node may report: beyond it the affine model of a
#: chip (and the correlator's search) is not trusted.
MAX_GRADIENT = 0.5
#: Largest distance (px) the refinement may move a node's offset from where it started.
MAX_MOVE_PX = 2.0


class MatchSettings(BaseModel):
    """Parameters of area-based matching (frozen: change one with ``model_copy(update=...)``).

    Attributes
    ----------
    chip_px : int
        Side of the reference chip, in pixels.
    search_px : int
        Largest offset searched in each direction around the search centre, in pixels.
    step_px : int
        Node spacing, in pixels.
    method : str
        Correlator, one of :data:`METHODS`: ``"ncc"`` (masked normalized cross-correlation,
        :mod:`.ncc`), ``"phase"`` (phase correlation, :mod:`.phase`; a node with nodata in its
        chip or windows is matched by masked NCC instead, as phase correlation has no exact
        masked form) or ``"orientation"`` (orientation correlation, :mod:`.orientation`; real
        images are turned into orientation images first).
    subpixel : str
        Peak estimator, one of :data:`SUBPIXEL_METHODS`; ``"dft"`` (maximum of the band-limited
        interpolation of the cross-power spectrum) needs ``method="phase"``.
    min_valid_fraction : float
        Smallest fraction of valid pixels in a reference chip for its node to be matched.
    batch_nodes : int, optional
        Nodes per tile, matched in one set of calls. By default (None) :attr:`tile_nodes` picks
        it for the NCC kernel in use: 256 for the FFT kernels (small tiles keep the working set
        in the CPU cache) and 4096 for the dense kernel (whose per-offset calls need large tiles
        to pay off), fewer (down to 1024) for searches wider than +/-32 px.
    ncc_kernel : str
        How NCC surfaces are computed, one of :data:`NCC_KERNELS`: ``"auto"`` picks by grid
        density (:func:`~glacierflow.matching.ncc_tiles.dense_is_faster`); ``"fft"`` uses block FFTs
        shared between neighbouring chips (one FFT per node where blocks do not pay);
        ``"dense"`` sums box-filtered products per offset. All give the same coefficients.
    workers : int
        Processes matching tiles in parallel (the caller's executor runs them; see
        :class:`glacierflow.execute.Executor`).
    pyramid_levels : int
        1: one pass. 2 or more: a first pass on images downsampled by 2 (with the same chip,
        search and step in coarse pixels, so twice the chip footprint and twice the reach, on a
        grid twice as coarse; recursively for more levels) centres each node's search window
        on the median-filtered coarse offset.
    fine_search_px : int
        Coarse to fine (with ``pyramid_levels`` 2 or more): the search radius of each finer
        pass around the centres found below it, pixels; the coarse passes then keep the chip's
        footprint and the search's reach (half the chip and search in coarse pixels, on a grid
        a quarter of the coarse chip apart), so a wide search costs a fraction of its dense
        work (:func:`~glacierflow.matching.pyramid.coarse_settings`). 0 (the default): every
        pass uses the full chip, search and step in its own pixels.
    retry_chip_px : tuple of int
        Texture-adaptive chips: larger chips to try, in order, at nodes where the first chip is
        weak (no offset, an SNR below ``retry_min_snr`` or a peak correlation below
        ``retry_below_corr``); a larger chip's match is kept where it is more reliable and the
        field shows no shear across it (:func:`~glacierflow.matching.match.adapt_chips`).
        Default ``(48, 64)``: faint or noisy texture gets more pixels, strong texture keeps the
        detail of ``chip_px``; ``()``: one chip for all.
    retry_min_snr : float
        Peak SNR (see :func:`~glacierflow.matching.peaks.peak_snr`) below which a node counts as
        weak for the retry; 0: SNR alone retries no node.
    retry_below_corr : float
        Peak correlation below which a node counts as weak (0.6: about where, at 5 % contrast and
        1 DN noise, the gross errors of 32 px chips start; 0: correlation alone retries none).
    refine : str
        Affine, centre-weighted least-squares refinement of the matches (:mod:`.strain`), one of
        :data:`REFINE_MODES`: ``"auto"`` where a node needs it (strain across
        the chip, an offset standing out from its neighbours, or a weak peak), ``"all"`` at
        every matched node, ``"off"`` never. Real images only (not with
        ``method="orientation"``).
    refine_px : float
        ``"auto"`` refines a node whose displacement changes by more than this across half its
        chip (strain times ``chip_px / 2``), or whose offset differs from its neighbours' median
        by more than this, px.
    refine_weak_corr : float
        Texture-adaptive windows: a refined node whose peak correlation is below this gets a
        wider Gaussian window, growing from ``chip_px / 5`` to ``chip_px / 2.5`` as its peak
        falls to 0.3 (faint or noisy texture gets more pixels, strong texture keeps detail), and
        ``"auto"`` also refines such nodes; 0: one window for all, no weak-peak refinement.
    recheck_search_px : int
        Search radius, pixels, of a second match (same chip and centre) at nodes whose match
        does not return home (closure above 0.5 px); the new match is kept only if it returns
        home; 0: none. In-memory runs only (tiled runs refuse it, like retries).
    backmatch_px : int
        Radius of the backward search of the forward-backward check
        (:mod:`~glacierflow.matching.consistency`), pixels: the secondary chip at the position
        found is matched back onto the reference within this many pixels of home; 0: no check.
        2 (the default) removes aliased matches of periodic crevasses (the Yahtse neck); the
        filter judges the closure only at nodes in doubt (:mod:`glacierflow.filters`, test 6).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    chip_px: int = Field(32, description="Side of the reference chip, pixels.")
    search_px: int = Field(
        16, description="Largest offset searched each way around the search centre, pixels."
    )
    step_px: int = Field(8, description="Node spacing of the output grid, pixels.")
    method: str = Field("ncc", description=f"Correlator, one of {METHODS}.")
    subpixel: str = Field(
        "lanczos",
        description=f"Sub-pixel peak estimator, one of {SUBPIXEL_METHODS} (dft: phase only).",
    )
    min_valid_fraction: float = Field(
        0.5, description="Smallest fraction (0-1] of valid pixels in a chip for a match."
    )
    batch_nodes: int | None = Field(
        None, description="Nodes per internal tile (default: chosen for the NCC kernel)."
    )
    ncc_kernel: str = Field("auto", description=f"NCC kernel, one of {NCC_KERNELS}.")
    workers: int = Field(1, description="Processes matching tiles in parallel.")
    pyramid_levels: int = Field(
        1, description="Passes at halved resolution centring the search (1: none)."
    )
    fine_search_px: int = Field(
        0,
        description="With pyramid_levels > 1: search radius of the finer passes around the "
        "coarse centres, pixels (0: the full search at every level).",
    )
    retry_chip_px: tuple[int, ...] = Field(
        (48, 64),
        description="Larger chips tried, in order, at weak nodes (texture-adaptive chips), "
        "pixels; each kept where its match is more reliable.",
    )
    retry_min_snr: float = Field(
        0.0, description="Peak SNR below which a node is retried (0: only unmatched nodes)."
    )
    retry_below_corr: float = Field(
        0.6,
        description="Peak correlation below which a node is retried with the larger chips, 0-1 "
        "(0: only failed nodes).",
    )
    refine: str = Field(
        "off",
        description=f"Affine centre-weighted refinement, one of {REFINE_MODES} (auto: where "
        "strain, a stray offset or a weak peak asks for it).",
    )
    refine_px: float = Field(
        0.8,
        description="auto: refine where the displacement changes by more than this across half "
        "a chip, or a node strays this far from its neighbours, px.",
    )
    refine_weak_corr: float = Field(
        0.0,
        description="Peak correlation below which refined windows widen (and auto refines the "
        "node), 0-1 (0: off).",
    )
    backmatch_px: int = Field(
        2,
        description="Backward search radius of the forward-backward check, pixels (0: none; "
        "2 catches aliased matches of periodic crevasses).",
    )
    recheck_search_px: int = Field(
        0,
        description="Search radius of a second match where the first does not return home, "
        "kept only if it does, pixels (0: none; in memory only).",
    )

    @field_validator(*_POSITIVE, mode="before")
    @classmethod
    def _positive_whole(cls, value: Any, info: Any) -> Any:
        if value is None and info.field_name == "batch_nodes":
            return value
        if isinstance(value, bool) or not _is_whole(value) or value < 1:
            raise ValueError(f"{info.field_name} must be a positive whole number, got {value!r}")
        return int(value)

    @field_validator("chip_px")
    @classmethod
    def _chip_size(cls, value: int) -> int:
        if value < 4:
            raise ValueError(f"chip_px must be at least 4 pixels, got {value}")
        if value > MAX_CHIP_PX:
            raise ValueError(f"chip_px must be at most {MAX_CHIP_PX} pixels, got {value}")
        return value

    @field_validator("pyramid_levels")
    @classmethod
    def _levels(cls, value: int) -> int:
        if value > MAX_PYRAMID_LEVELS:
            raise ValueError(
                f"pyramid_levels must be 1 to {MAX_PYRAMID_LEVELS} (1: no coarse pass; each "
                f"level halves the resolution), got {value}"
            )
        return value

    @field_validator("method", "subpixel", "ncc_kernel", "refine")
    @classmethod
    def _choice(cls, value: str, info: Any) -> str:
        allowed = {
            "method": METHODS,
            "subpixel": SUBPIXEL_METHODS,
            "ncc_kernel": NCC_KERNELS,
            "refine": REFINE_MODES,
        }
        if value not in allowed[info.field_name]:
            raise ValueError(
                f"{info.field_name} must be one of {allowed[info.field_name]}, got {value!r}"
            )
        return value

    @field_validator("min_valid_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError("min_valid_fraction must be in (0, 1]")
        return value

    @field_validator("retry_chip_px", mode="before")
    @classmethod
    def _retry_chips(cls, value: Any) -> tuple[int, ...]:
        retry = tuple(value)
        for chip in retry:
            if isinstance(chip, bool) or not _is_whole(chip) or chip < 4:
                raise ValueError(f"retry_chip_px must hold chip sizes of 4 px or more, got {retry}")
            if chip > MAX_CHIP_PX:
                raise ValueError(
                    f"retry_chip_px must hold chip sizes of at most {MAX_CHIP_PX} px, got {retry}"
                )
        return tuple(int(chip) for chip in retry)

    @field_validator("backmatch_px", mode="before")
    @classmethod
    def _backmatch(cls, value: Any) -> int:
        if isinstance(value, bool) or not _is_whole(value) or value < 0 or value == 1:
            raise ValueError(
                f"backmatch_px must be 0 (no forward-backward check) or a whole number of at "
                f"least 2 pixels, got {value!r}"
            )
        return int(value)

    @field_validator("fine_search_px", "recheck_search_px", mode="before")
    @classmethod
    def _radius(cls, value: Any, info: ValidationInfo) -> int:
        if isinstance(value, bool) or not _is_whole(value) or value < 0:
            zero = {
                "fine_search_px": "the full search at every level",
                "recheck_search_px": "no second match",
            }[info.field_name]
            raise ValueError(
                f"{info.field_name} must be 0 ({zero}) or a whole number of pixels, got {value!r}"
            )
        return int(value)

    @field_validator("retry_min_snr", "refine_weak_corr", "retry_below_corr")
    @classmethod
    def _snr(cls, value: float, info: Any) -> float:
        if not value >= 0 or not math.isfinite(value):
            raise ValueError(f"{info.field_name} must be zero or positive, got {value}")
        return value

    @field_validator("refine_weak_corr", "retry_below_corr")
    @classmethod
    def _weak(cls, value: float, info: Any) -> float:
        if value > 1:
            raise ValueError(f"{info.field_name} must be 0 to 1, got {value}")
        return value

    @field_validator("refine_px")
    @classmethod
    def _refine_px(cls, value: float) -> float:
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"refine_px must be positive, got {value}")
        return value

    @model_validator(mode="after")
    def _dft_needs_phase(self) -> MatchSettings:
        if self.subpixel == "dft" and self.method != "phase":
            raise ValueError(
                f"subpixel='dft' works on cross-power spectra: use it with method='phase', not "
                f"{self.method!r} (or choose 'lanczos')"
            )
        return self

    @model_validator(mode="after")
    def _fine_search_fits(self) -> MatchSettings:
        if self.fine_search_px > self.search_px:
            raise ValueError(
                f"fine_search_px ({self.fine_search_px}) must not exceed search_px "
                f"({self.search_px}): it narrows the search of the finer passes"
            )
        if self.fine_search_px and self.pyramid_levels > 1 and self.chip_px < 8:
            raise ValueError(
                f"fine_search_px needs chips of 8 px or more (the coarse pass halves them), "
                f"got chip_px {self.chip_px}"
            )
        return self

    @property
    def dense(self) -> bool:
        """Whether NCC tiles use the dense kernel (box-filtered products per offset)."""
        if self.method != "ncc" or self.ncc_kernel == "fft":
            return False
        return self.ncc_kernel == "dense" or dense_is_faster(
            self.chip_px, self.step_px, self.search_px
        )

    @property
    def tile_nodes(self) -> int:
        """Nodes per internal tile: ``batch_nodes``, or the kernel's own default."""
        if self.batch_nodes is not None:
            return int(self.batch_nodes)
        if not self.dense:
            return GRID_TILE_SIDE**2
        # 64 x 64 nodes up to a +/-32 px search (at most about 70 MB of surfaces), fewer for
        # larger ones: small tiles would repeat most of their pixels in the margins.
        k = 2 * self.search_px + 1
        return int(np.clip(4096 * (65 / k) ** 2, 1024, 4096))


def _is_whole(value: Any) -> bool:
    try:
        return math.isfinite(value) and int(value) == value
    except (TypeError, ValueError):
        return False
