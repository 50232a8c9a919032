"""Read the published velocity GeoTIFFs: web map tiles of speed, the legend, point samples.

Tiles are 256 x 256 PNGs in the Web Mercator tile grid (``WebMercatorQuad``, as Leaflet and
most web maps use), read with rio-tiler. Speed ``v`` (m/yr) is drawn with one fixed,
perceptually uniform colour scale for a whole dataset (viridis from 0 to the dataset's
``glacierflow:speed_max_m_per_yr``; faster ice is clipped to the top colour), so that colours
mean the same speed in every year; missing values are transparent. Grid cells are shown as they
are (nearest neighbour), not smoothed.
"""

from __future__ import annotations

import functools
import math
from os import PathLike
from typing import Any

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.windows import Window
from rio_tiler.colormap import cmap
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData

__all__ = [
    "COLORMAP_NAME",
    "SAMPLED_BANDS",
    "TILE_PX",
    "legend",
    "legend_png",
    "render_tile",
    "sample_point",
    "transparent_tile",
]

#: Side of a map tile, pixels.
TILE_PX = 256

#: The colour map of the speed layer.
COLORMAP_NAME = "viridis"

#: Bands a point query returns, when the product has them.
SAMPLED_BANDS = ("v", "vx", "vy", "v_error")


@functools.cache
def _colormap() -> dict[int, tuple[int, int, int, int]]:
    return cmap.get(COLORMAP_NAME)


def _color_hex(index: int) -> str:
    r, g, b, _ = (int(c) for c in _colormap()[index])
    return f"#{r:02x}{g:02x}{b:02x}"


@functools.cache
def transparent_tile() -> bytes:
    """A fully transparent tile (for tiles outside a product's grid)."""
    data = np.ma.MaskedArray(np.zeros((1, TILE_PX, TILE_PX), np.uint8), mask=True)
    return ImageData(data).render(img_format="PNG")


def render_tile(
    path: str | PathLike[str], band: int, z: int, x: int, y: int, vmax_m_per_yr: float
) -> bytes | None:
    """The speed tile (z, x, y) of a velocity GeoTIFF as PNG bytes, or None if outside its grid.

    Parameters
    ----------
    path : str or PathLike
        The GeoTIFF.
    band : int
        1-based index of its ``v`` band (m/yr).
    z, x, y : int
        Web Mercator tile address.
    vmax_m_per_yr : float
        Speed drawn with the top colour of the scale (m/yr); 0 gets the bottom colour.

    Returns
    -------
    bytes or None
    """
    with Reader(str(path)) as src:
        try:
            img = src.tile(x, y, z, tilesize=TILE_PX, indexes=(band,), resampling_method="nearest")
        except TileOutsideBounds:
            return None
    img.rescale(((0.0, float(vmax_m_per_yr)),))
    return img.render(img_format="PNG", colormap=_colormap())


def legend(vmax_m_per_yr: float, stops: int = 11) -> dict[str, Any]:
    """The speed scale as evenly spaced (value, colour) stops, for drawing a legend.

    Parameters
    ----------
    vmax_m_per_yr : float
        Top of the scale, m/yr.
    stops : int
        Number of stops, at least 2.

    Returns
    -------
    dict
        ``colormap``, ``units``, ``vmin``, ``vmax``, ``stops`` (list of ``value``, ``color``)
        and ``clipped_above`` (speeds above ``vmax`` get the top colour).
    """
    stops = max(2, int(stops))
    values = np.linspace(0.0, float(vmax_m_per_yr), stops)
    return {
        "colormap": COLORMAP_NAME,
        "units": "m/yr",
        "vmin": 0.0,
        "vmax": float(vmax_m_per_yr),
        "clipped_above": True,
        "stops": [
            {"value": float(v), "color": _color_hex(round(255 * i / (stops - 1)))}
            for i, v in enumerate(values)
        ],
    }


@functools.cache
def legend_png(width: int = 256, height: int = 16) -> bytes:
    """The colour bar of the speed scale (left 0, right the maximum) as a PNG."""
    ramp = np.broadcast_to(np.linspace(0, 255, width).round().astype(np.uint8), (height, width))
    return ImageData(ramp[np.newaxis].copy()).render(img_format="PNG", colormap=_colormap())


@functools.cache
def _to_grid(crs_wkt: str) -> Transformer:
    return Transformer.from_crs("EPSG:4326", crs_wkt, always_xy=True)


def sample_point(
    path: str | PathLike[str], lon: float, lat: float, names: tuple[str, ...] = SAMPLED_BANDS
) -> dict[str, float | None] | None:
    """The values of the named bands at a longitude/latitude, or None outside the grid.

    The point is transformed into the GeoTIFF's CRS and the pixel containing it is read (no
    interpolation). NaN (no valid measurement) becomes None.

    Parameters
    ----------
    path : str or PathLike
        A velocity GeoTIFF with band descriptions.
    lon, lat : float
        Degrees, WGS 84.
    names : tuple of str
        Bands to read (those the file lacks are left out).

    Returns
    -------
    dict of str to float or None, or None
    """
    with rasterio.open(path) as src:
        x, y = _to_grid(src.crs.to_wkt()).transform(lon, lat)
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        col, row = ~src.transform * (x, y)
        row, col = math.floor(row), math.floor(col)
        if not (0 <= row < src.height and 0 <= col < src.width):
            return None
        descriptions = list(src.descriptions)
        wanted = [(n, descriptions.index(n) + 1) for n in names if n in descriptions]
        if not wanted:
            return {}
        data = src.read([i for _, i in wanted], window=Window(col, row, 1, 1))
    return {
        name: (float(value) if np.isfinite(value) else None)
        for (name, _), value in zip(wanted, data[:, 0, 0], strict=True)
    }
