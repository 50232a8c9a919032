"""Flow direction for the map: decimated velocity vectors on valid nodes, as GeoJSON points.

Each point is a grid node where the velocity is valid (finite ``vx``, ``vy``) and the motion
is measured (speed above twice its error ``v_error``, where the product has one), so no arrow
points a random way on still rock or open water. The grid is read coarsened to at most
:data:`MAX_NODES_PER_SIDE` nodes on a side (nearest node, not averaged). The direction is the
bearing of the flow on the ground (degrees clockwise from true north), computed by moving
each node a small step along (vx, vy) in the product's CRS and reprojecting both ends, so that
grid convergence is accounted for. The page draws the arrows, thinning them to the zoom.
"""

from __future__ import annotations

import functools
import math
import os
from os import PathLike
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling

__all__ = ["MAX_NODES_PER_SIDE", "SIGNIFICANCE", "flow_arrows"]

#: Nodes kept on the longer side of the grid (about 25,000 points at most).
MAX_NODES_PER_SIDE = 160

#: An arrow needs a speed at least this many times its error (where ``v_error`` exists).
SIGNIFICANCE = 2.0


def flow_arrows(path: str | PathLike[str]) -> dict[str, Any]:
    """The flow vectors of a velocity GeoTIFF as a GeoJSON FeatureCollection of points.

    Parameters
    ----------
    path : str or PathLike
        A velocity GeoTIFF with bands described ``vx``, ``vy`` (m/yr east and north) and
        optionally ``v_error``.

    Returns
    -------
    dict
        GeoJSON; each feature's properties are ``v`` (speed, m/yr) and ``bearing`` (degrees
        clockwise from true north). ``spacing_m`` gives the distance between the nodes read.
    """
    stat = os.stat(path)
    return _arrows(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _arrows(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    with rasterio.open(path) as src:
        names = list(src.descriptions)
        step = max(1, math.ceil(max(src.width, src.height) / MAX_NODES_PER_SIDE))
        shape = (max(1, src.height // step), max(1, src.width // step))
        wanted = [n for n in ("vx", "vy", "v_error") if n in names]
        if "vx" not in wanted or "vy" not in wanted:
            return {"type": "FeatureCollection", "features": [], "spacing_m": None}
        data = src.read(
            [names.index(n) + 1 for n in wanted], out_shape=shape, resampling=Resampling.nearest
        ).astype(np.float64)
        bands = dict(zip(wanted, data, strict=True))
        transform = src.transform @ Affine.scale(src.width / shape[1], src.height / shape[0])
        crs = src.crs.to_wkt()
    vx, vy = bands["vx"], bands["vy"]
    v = np.hypot(vx, vy)
    ok = np.isfinite(v) & (v > 0)
    if "v_error" in bands:
        err = bands["v_error"]
        ok &= np.isfinite(err) & (v > SIGNIFICANCE * err)
    rows, cols = np.nonzero(ok)
    xs, ys = transform @ (cols + 0.5, rows + 0.5)
    speed = v[rows, cols]
    # a step of a tenth of a node along the flow gives the direction on the ground
    reach = 0.1 * abs(transform.a) / np.maximum(speed, 1e-9)
    x2, y2 = xs + vx[rows, cols] * reach, ys + vy[rows, cols] * reach
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(xs, ys)
    lon2, lat2 = to_lonlat.transform(x2, y2)
    dlon = (np.asarray(lon2) - lon + 540.0) % 360.0 - 180.0
    bearing = np.degrees(np.arctan2(dlon * np.cos(np.radians(lat)), np.asarray(lat2) - lat))
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(a, 6), round(b, 6)]},
            "properties": {"v": round(s, 1), "bearing": round(d % 360.0, 1)},
        }
        for a, b, s, d in zip(
            np.asarray(lon).tolist(),
            np.asarray(lat).tolist(),
            speed.tolist(),
            bearing.tolist(),
            strict=True,
        )
    ]
    return {
        "type": "FeatureCollection",
        "features": features,
        "spacing_m": float(abs(transform.a)),
    }
