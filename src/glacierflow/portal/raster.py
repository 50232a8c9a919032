"""Read the published velocity GeoTIFFs: web map tiles of speed, the legend, point samples.

Tiles are 256 x 256 PNGs in the Web Mercator tile grid (``WebMercatorQuad``, as Leaflet and
most web maps use), read with rio-tiler. Speed ``v`` (m/yr) is drawn with one fixed,
perceptually uniform colour scale for a whole dataset (viridis from 0 to the dataset's
``glacierflow:speed_max_m_per_yr``; faster ice is clipped to the top colour), so that colours
mean the same speed in every year; missing values are transparent. Grid cells are shown as they
are (nearest neighbour), not smoothed.

A tile reads a bounded number of pixels at any zoom: only the part of the tile that the
product covers is rendered (a product a few kilometres wide is a handful of pixels of a z0
tile, not a full-resolution read of the whole world), and GDAL reads that part from the
GeoTIFF's overviews when the tile is coarser than the full-resolution grid (``publish`` writes
overviews into every velocity GeoTIFF of a catalog).
"""

from __future__ import annotations

import functools
import math
from os import PathLike
from typing import Any

import morecantile
import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rio_tiler.colormap import cmap
from rio_tiler.models import ImageData

__all__ = [
    "COLORMAP_NAME",
    "SAMPLED_BANDS",
    "TILE_PX",
    "legend",
    "legend_png",
    "render_grey_tile",
    "render_tile",
    "sample_point",
    "transparent_tile",
]

#: Side of a map tile, pixels.
TILE_PX = 256

#: The colour map of the speed layer.
COLORMAP_NAME = "viridis"

#: Bands a point query returns, when the product has them.
SAMPLED_BANDS = ("v", "vx", "vy", "v_error", "vx_error", "vy_error")


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
    warped = _warp_tile(path, z, x, y, band=band, resampling=Resampling.nearest, nodata=np.nan)
    if warped is None:
        return None
    part, (c0, r0, c1, r1) = warped
    part = part.astype(np.float32)
    data = np.ma.masked_all((1, TILE_PX, TILE_PX), dtype=np.float32)
    data[0, r0:r1, c0:c1] = np.ma.masked_invalid(part)
    if data.mask.all():
        return None
    img = ImageData(data)
    img.rescale(((0.0, float(vmax_m_per_yr)),))
    return img.render(img_format="PNG", colormap=_colormap())


def render_grey_tile(path: str | PathLike[str], z: int, x: int, y: int) -> bytes | None:
    """The tile (z, x, y) of a greyscale base layer (uint8, 0 = no data) as PNG, or None.

    Drawn bilinearly from the overview nearest the tile's pixel size; no data is transparent.
    """
    warped = _warp_tile(
        path, z, x, y, band=1, resampling=Resampling.bilinear, nodata=0, src_nodata=0
    )
    if warped is None:
        return None
    part, (c0, r0, c1, r1) = warped
    data = np.zeros((1, TILE_PX, TILE_PX), dtype=np.uint8)
    data[0, r0:r1, c0:c1] = part
    if not data.any():
        return None
    return ImageData(np.ma.MaskedArray(data, mask=data == 0)).render(img_format="PNG")


def _warp_tile(
    path: str | PathLike[str],
    z: int,
    x: int,
    y: int,
    *,
    band: int,
    resampling: Resampling,
    nodata: float,
    src_nodata: float | None = None,
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The part of tile (z, x, y) that a raster covers, warped from its nearest overview.

    Returns the warped pixels and where they sit in the tile (c0, r0, c1, r1), or None when
    the raster does not reach the tile. ``src_nodata`` None: the file's nodata, else NaN.
    """
    left, bottom, right, top = _tms().xy_bounds(x, y, z)
    px_m = (right - left) / TILE_PX
    with rasterio.open(path) as src:
        window = _covered_pixels(src, (left, bottom, right, top))
        if window is None:
            return None
        c0, r0, c1, r1 = window
        dst_transform = Affine(px_m, 0.0, left + c0 * px_m, 0.0, -px_m, top - r0 * px_m)
        level = _overview_level(src, dst_transform, c1 - c0, r1 - r0)
    with rasterio.open(path, overview_level=level) as src:
        if src_nodata is None:
            src_nodata = src.nodata if src.nodata is not None else float("nan")
        with WarpedVRT(
            src,
            crs=_MERCATOR,
            transform=dst_transform,
            width=c1 - c0,
            height=r1 - r0,
            resampling=resampling,
            src_nodata=src_nodata,
            nodata=nodata,
        ) as vrt:
            return vrt.read(band), window


@functools.cache
def _tms() -> morecantile.TileMatrixSet:
    return morecantile.tms.get("WebMercatorQuad")


_MERCATOR = CRS.from_epsg(3857)


def _covered_pixels(
    dataset: rasterio.io.DatasetReader, tile_bounds: tuple[float, float, float, float]
) -> tuple[int, int, int, int] | None:
    """Columns and rows (c0, r0, c1, r1) of the tile that the product's footprint covers.

    ``tile_bounds`` are Web Mercator metres. None when the product lies outside the tile; the
    whole tile when the footprint cannot be projected.
    """
    left, bottom, right, top = tile_bounds
    whole = (0, 0, TILE_PX, TILE_PX)
    if dataset.crs is None:
        return None
    try:
        foot = transform_bounds(dataset.crs, _MERCATOR, *dataset.bounds, densify_pts=21)
    except Exception:  # noqa: BLE001 - a footprint beyond Web Mercator: read the whole tile
        return whole
    if not all(math.isfinite(v) for v in foot):
        return whole
    px_m = (right - left) / TILE_PX
    c0 = max(math.floor((max(left, foot[0]) - left) / px_m), 0)
    c1 = min(math.ceil((min(right, foot[2]) - left) / px_m), TILE_PX)
    r0 = max(math.floor((top - min(top, foot[3])) / px_m), 0)
    r1 = min(math.ceil((top - max(bottom, foot[1])) / px_m), TILE_PX)
    if c1 <= c0 or r1 <= r0:
        return None
    return c0, r0, c1, r1


def _overview_level(
    src: rasterio.io.DatasetReader, dst_transform: Affine, width: int, height: int
) -> int | None:
    """The coarsest overview still at least as fine as the tile's pixels (None: full grid).

    As ``gdalwarp -ovr AUTO`` does, so that a tile reads about as many source pixels as it
    has, whatever the zoom.
    """
    factors = src.overviews(1)
    if not factors:
        return None
    right = dst_transform.c + dst_transform.a * width
    bottom = dst_transform.f + dst_transform.e * height
    try:
        box = transform_bounds(_MERCATOR, src.crs, dst_transform.c, bottom, right, dst_transform.f)
    except Exception:  # noqa: BLE001 - cannot tell: read the full grid
        return None
    needed = min((box[2] - box[0]) / width, (box[3] - box[1]) / height)
    cell = min(abs(src.transform.a), abs(src.transform.e))
    if not (math.isfinite(needed) and needed > 0):
        return None
    level = None
    for i, factor in enumerate(factors):
        if cell * factor <= needed:
            level = i
    return level


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
