"""Base layers made from the data themselves: the reference image and a DEM's hillshade.

The portal works offline, so its map cannot fetch a base map from the internet. Instead,
``publish`` writes two optional greyscale Cloud-Optimized GeoTIFFs into the dataset's folder
(``base/reference.tif`` and ``base/hillshade.tif``), described as Collection assets
``reference_image`` and ``hillshade``, which the portal draws as tile layers under the speed:

reference image
    The scene the velocity was measured on (a pair's reference image, recorded in its
    ``ref_file`` tag), or the image given with ``reference_image``. It is cut to the products'
    extent plus a margin, contrast-stretched between its 2nd and 98th percentiles to grey
    levels 1-255 (0 is "no data", drawn transparent) and kept at its own resolution, coarsened
    only when it would exceed :data:`MAX_BASE_PX` pixels on a side.
hillshade
    Only when a DEM is given: the DEM warped (bilinear) onto a grid in the products' CRS and
    shaded for a light from the north-west (azimuth 315°, 45° above the horizon), the
    cartographic convention, as grey levels 1-255.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from glacierflow.errors import InputError
from glacierflow.portal.discover import ProductFacts

__all__ = [
    "BASE_LAYERS",
    "MAX_BASE_PX",
    "find_reference_image",
    "hillshade",
    "write_hillshade_cog",
    "write_reference_cog",
]

log = logging.getLogger(__name__)

#: Longest side of a base-layer COG, pixels (a whole Landsat scene at 15 m is ~16,000).
MAX_BASE_PX = 8192

#: Margin around the products' extent kept in a base layer, as a share of its size.
MARGIN = 0.05

#: Collection asset key, file name in the dataset folder and title of each base layer.
BASE_LAYERS = {
    "reference_image": ("base/reference.tif", "Reference image (greyscale COG)"),
    "hillshade": ("base/hillshade.tif", "Hillshade of the DEM (greyscale COG)"),
}


def find_reference_image(
    products: Sequence[ProductFacts], search: Iterable[str | PathLike[str]] = ()
) -> Path | None:
    """The reference scene of the first pair product whose ``ref_file`` can be found.

    ``ref_file`` holds the scene's file name; it is looked for beside the product, in the
    folders above it, in ``search`` and among the scenes bundled with glacierflow (the demo).
    """
    from glacierflow.demo import data_dir

    folders = [Path(f) for f in search] + [data_dir()]
    for product in products:
        name = product.tags.get("ref_file")
        if product.kind != "pair" or not isinstance(name, str) or not name:
            continue
        name = Path(name).name
        for folder in [*product.cog.parents, *folders]:
            if (folder / name).is_file():
                return folder / name
    return None


def _extent_in(crs: object, products: Sequence[ProductFacts]) -> tuple[float, ...]:
    """The products' union box in ``crs``, with :data:`MARGIN` around it."""
    boxes = [transform_bounds(p.crs_wkt, crs, *p.bounds, densify_pts=21) for p in products]
    left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, top = max(b[2] for b in boxes), max(b[3] for b in boxes)
    pad_x, pad_y = (right - left) * MARGIN, (top - bottom) * MARGIN
    return left - pad_x, bottom - pad_y, right + pad_x, top + pad_y


def _stretch(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Grey levels 1-255 between the 2nd and 98th percentiles of the valid pixels; 0 elsewhere."""
    out = np.zeros(data.shape, np.uint8)
    if not valid.any():
        return out
    low, high = np.percentile(data[valid], (2, 98))
    scale = 254.0 / max(float(high - low), 1e-9)
    out[valid] = (1 + np.clip((data[valid] - low) * scale, 0, 254)).round().astype(np.uint8)
    return out


def _write_grey_cog(grey: np.ndarray, crs: object, transform: Affine, dst: Path) -> None:
    """A uint8 greyscale COG (nodata 0) with averaged overviews."""
    profile = dict(
        driver="GTiff",
        width=grey.shape[1],
        height=grey.shape[0],
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform,
        nodata=0,
    )
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(grey, 1)
            tmp.set_band_description(1, "grey")
        with mem.open() as tmp:
            rasterio.shutil.copy(
                tmp,
                dst,
                driver="COG",
                blocksize=256,
                compress="DEFLATE",
                overviews="IGNORE_EXISTING",
                overview_resampling="AVERAGE",
            )


def write_reference_cog(
    image: str | PathLike[str], products: Sequence[ProductFacts], dst: str | PathLike[str]
) -> Path:
    """Write the reference image, cut to the products and stretched, as a greyscale COG.

    Parameters
    ----------
    image : str or PathLike
        A single-band (or first-band) georeferenced image, e.g. a Landsat band 8 GeoTIFF.
    products : sequence of ProductFacts
        The products it lies under.
    dst : str or PathLike
        The COG to write.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        When the image cannot be read, has no CRS or does not overlap the products.
    """
    image, dst = Path(image), Path(dst)
    try:
        with rasterio.open(image) as src:
            if src.crs is None:
                raise InputError("the reference image has no CRS; it cannot be placed", image)
            box = _extent_in(src.crs, products)
            window = from_bounds(*box, transform=src.transform)
            window = window.intersection(rasterio.windows.Window(0, 0, src.width, src.height))
            window = window.round_offsets().round_lengths()
            step = max(1, math.ceil(max(window.width, window.height) / MAX_BASE_PX))
            shape = (max(1, window.height // step), max(1, window.width // step))
            data = src.read(1, window=window, out_shape=shape, masked=True)
            data = data.astype(np.float64)
            transform = src.window_transform(window) @ Affine.scale(
                window.width / shape[1], window.height / shape[0]
            )
            crs = src.crs
    except rasterio.errors.WindowError as exc:
        raise InputError("the reference image does not overlap the products", image) from exc
    except RasterioIOError as exc:
        raise InputError(f"cannot read the reference image ({exc})", image) from exc
    valid = ~np.ma.getmaskarray(data) & np.isfinite(data.filled(np.nan)) & (data.filled(0) > 0)
    if not valid.any():
        raise InputError("the reference image has no data over the products", image)
    _write_grey_cog(_stretch(data.filled(0), valid), crs, transform, dst)
    return dst


def hillshade(
    elevation_m: np.ndarray,
    pixel_m: float,
    azimuth_deg: float = 315.0,
    altitude_deg: float = 45.0,
) -> np.ndarray:
    """Shaded relief in [0, 1] of a north-up elevation grid (Horn's gradients, Lambert shading).

    Parameters
    ----------
    elevation_m : ndarray
        Elevations, metres, rows from north to south; NaN where unknown.
    pixel_m : float
        Grid spacing, metres.
    azimuth_deg, altitude_deg : float
        Direction the light comes from (degrees clockwise from north) and its height.
    """
    z = np.asarray(elevation_m, dtype=np.float64)
    dz_dy, dz_dx = np.gradient(z, pixel_m)
    # rows grow southwards: the northward slope is -dz/drow
    slope = np.arctan(np.hypot(dz_dx, dz_dy))
    aspect = np.arctan2(-dz_dx, dz_dy)  # direction of steepest descent, clockwise from north
    az, alt = math.radians(azimuth_deg), math.radians(altitude_deg)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(shade, 0.0, 1.0)


def write_hillshade_cog(
    dem: str | PathLike[str], products: Sequence[ProductFacts], dst: str | PathLike[str]
) -> Path:
    """Write the hillshade of ``dem`` over the products as a greyscale COG (products' CRS).

    The DEM is warped bilinearly onto a north-up grid in the first product's CRS, at the DEM's
    own resolution (or coarser, at most :data:`MAX_BASE_PX` on a side).

    Raises
    ------
    InputError
        When the DEM cannot be read or does not cover the products.
    """
    dem, dst = Path(dem), Path(dst)
    crs = products[0].crs_wkt
    left, bottom, right, top = _extent_in(crs, products)
    try:
        with rasterio.open(dem) as src:
            if src.crs is None:
                raise InputError("the DEM has no CRS; it cannot be placed", dem)
            native = transform_bounds(src.crs, crs, *src.bounds, densify_pts=21)
            px_native = (native[2] - native[0]) / src.width
            pixel = max(px_native, (right - left) / MAX_BASE_PX, (top - bottom) / MAX_BASE_PX)
            width = max(1, math.ceil((right - left) / pixel))
            height = max(1, math.ceil((top - bottom) / pixel))
            transform = Affine(pixel, 0.0, left, 0.0, -pixel, top)
            nodata = src.nodata if src.nodata is not None else -32768.0
            with WarpedVRT(
                src,
                crs=crs,
                transform=transform,
                width=width,
                height=height,
                resampling=Resampling.bilinear,
                src_nodata=nodata,
                nodata=np.nan,
                dtype="float32",
            ) as vrt:
                z = vrt.read(1).astype(np.float64)
    except RasterioIOError as exc:
        raise InputError(f"cannot read the DEM ({exc})", dem) from exc
    valid = np.isfinite(z)
    if valid.mean() < 0.5:
        raise InputError(
            f"the DEM covers {100 * valid.mean():.0f}% of the products' extent; give a DEM "
            "that covers them",
            dem,
        )
    shade = hillshade(np.where(valid, z, np.nanmedian(z)), pixel)
    grey = np.where(valid, 1 + np.round(shade * 254), 0).astype(np.uint8)
    _write_grey_cog(grey, crs, transform, dst)
    return dst


def add_base_layers(
    collection: object,
    dataset_dir: Path,
    products: Sequence[ProductFacts],
    reference_image: str | PathLike[str] | None = None,
    dem: str | PathLike[str] | None = None,
    search: Iterable[str | PathLike[str]] = (),
) -> int:
    """Write the base layers into ``dataset_dir/base`` and add them as Collection assets.

    Parameters
    ----------
    collection : pystac.Collection
        The dataset's Collection (its folder is ``dataset_dir``).
    dataset_dir : Path
        Where the dataset is being written.
    products : sequence of ProductFacts
    reference_image : path, optional
        The image to draw under the speed; default the first pair's reference scene
        (:func:`find_reference_image`). No reference layer when none is found.
    dem : path, optional
        A DEM for the hillshade layer; none without it.
    search : iterable of path
        More folders to look for the reference scene in.

    Returns
    -------
    int
        Bytes written.
    """
    import pystac
    from pystac.extensions.file import FileExtension

    from glacierflow.portal.discover import sha256_multihash

    image = Path(reference_image) if reference_image else find_reference_image(products, search)
    if reference_image and not Path(reference_image).is_file():
        raise InputError("no such reference image; check the path", reference_image)
    if image is None:
        log.info("no reference image found for the products: no base image layer")
    sources = {"reference_image": image, "hillshade": Path(dem) if dem else None}
    writers = {"reference_image": write_reference_cog, "hillshade": write_hillshade_cog}
    total = 0
    for key, source in sources.items():
        if source is None:
            continue
        if not source.is_file():
            raise InputError(f"no such {key.replace('_', ' ')}; check the path", source)
        rel, title = BASE_LAYERS[key]
        target = dataset_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        writers[key](source, products, target)
        asset = pystac.Asset(
            href=f"./{rel}",
            title=title,
            description=f"Made from {source.name} for the portal's map.",
            media_type=pystac.MediaType.COG,
            roles=["visual", "basemap"],
        )
        collection.add_asset(key, asset)  # type: ignore[attr-defined]
        size = target.stat().st_size
        FileExtension.ext(asset, add_if_missing=True).apply(
            size=size, checksum=sha256_multihash(target)
        )
        total += size
    return total
