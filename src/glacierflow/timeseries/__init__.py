"""Velocity time series: network inversion of image pairs, ITS_LIVE exchange, point series."""

from glacierflow.timeseries.inversion import (
    InversionSettings,
    closure_matrix,
    invert_pairs,
    time_steps,
)

__all__ = ["InversionSettings", "closure_matrix", "invert_pairs", "time_steps"]
