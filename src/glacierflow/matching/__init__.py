"""Correlators: arrays in, arrays out; no files, no CRS, no globals."""

from glacierflow.matching.core import (
    METHODS,
    MatchResult,
    MatchSettings,
    match,
    match_nodes,
    match_tile,
)
from glacierflow.matching.grid import NodeGrid, make_grid
from glacierflow.matching.subpixel import SUBPIXEL_METHODS, refine_peak

__all__ = [
    "METHODS",
    "SUBPIXEL_METHODS",
    "MatchResult",
    "MatchSettings",
    "NodeGrid",
    "make_grid",
    "match",
    "match_nodes",
    "match_tile",
    "refine_peak",
]
