"""Correlators: arrays in, arrays out; no files, no CRS, no globals.

``settings`` (:class:`MatchSettings`, allowed values), ``match`` (a whole pair, tasks run by a
caller's executor), ``nodes`` (a set or tile of nodes), ``peaks`` (peak search, SNR),
``pyramid`` (the coarse pass's images and fields), the kernels ``ncc``, ``phase`` and
``orientation`` (with the orientation image), ``subpixel``, ``grid`` and ``stats``.
"""

from glacierflow.matching.grid import NodeGrid, make_grid
from glacierflow.matching.match import MatchResult, TaskRunner, match
from glacierflow.matching.nodes import match_nodes, match_tile
from glacierflow.matching.settings import (
    MAX_CHIP_PX,
    MAX_PYRAMID_LEVELS,
    METHODS,
    NCC_KERNELS,
    SUBPIXEL_METHODS,
    MatchSettings,
)
from glacierflow.matching.subpixel import refine_peak

__all__ = [
    "MAX_CHIP_PX",
    "MAX_PYRAMID_LEVELS",
    "METHODS",
    "NCC_KERNELS",
    "SUBPIXEL_METHODS",
    "MatchResult",
    "MatchSettings",
    "NodeGrid",
    "TaskRunner",
    "make_grid",
    "match",
    "match_nodes",
    "match_tile",
    "refine_peak",
]
