"""Read one scene: the image as float32, its valid-pixel mask, georeferencing, time and sensor.

A scene must be a single-band raster GDAL can read, in a projected CRS with metre units: a local
file, a URL or a STAC item (:mod:`glacierflow.remote` opens it). Its acquisition time comes, in
this order, from an explicit argument, from a Landsat MTL metadata file beside it, or from a
Landsat or Sentinel-2 identifier in its file name (:mod:`glacierflow.acquisition` reads both).

:func:`read_area` reads only the part of a scene inside a longitude/latitude box: with two
full-scene COGs at URLs and a small area of interest, only that area's blocks travel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from os import PathLike
from pathlib import Path

import affine
import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
import rasterio.windows
from rasterio._err import CPLE_BaseError
from rasterio.enums import MaskFlags

from glacierflow import remote
from glacierflow.acquisition import (
    acquisition_from_mtl,
    acquisition_from_name,
    check_given_date,
    find_mtl,
)
from glacierflow.dates import DATE_HELP, as_utc, parse_datetime
from glacierflow.errors import InputError, NoAcquisitionTimeError

# acquisition_from_*, find_mtl and parse_datetime live in glacierflow.acquisition and
# glacierflow.dates; they stay importable from here, where scene readers look for them.
__all__ = [
    "Scene",
    "check_bbox",
    "acquisition_from_mtl",
    "acquisition_from_name",
    "file_fingerprint",
    "find_mtl",
    "parse_datetime",
    "read_area",
    "read_header",
    "read_preview",
    "read_raster_band",
    "read_scene",
    "window_of_bbox",
]

_NO_TIME_HELP = (
    "cannot find the acquisition time (no MTL file beside it, no Landsat or Sentinel-2 ID in its "
    "name)"
)


@dataclass(frozen=True, eq=False)
class Scene:
    """One single-band image with its georeferencing, acquisition time and sensor.

    ``eq=False``: scenes hold arrays, so two scenes compare (and hash) by identity.

    Attributes
    ----------
    path : Path
        The file the scene was read from.
    data : ndarray of float32, shape (rows, cols)
        Pixel values; 0 wherever ``valid`` is False (never NaN).
    valid : ndarray of bool, shape (rows, cols)
        True where the pixel holds data.
    crs : rasterio.crs.CRS or None
        The map CRS (projected, metres for scenes from :func:`read_scene`).
    transform : affine.Affine
        Pixel (col, row) to map (x, y) in metres, GDAL pixel-corner convention.
    acquired : datetime
        Acquisition time, timezone-aware UTC.
    sensor : str
        E.g. ``"Landsat 8 OLI"``, ``"Landsat 7 ETM+"``, ``"Sentinel-2A MSI"`` or ``"unknown"``.
    scene_id : str or None
        Landsat scene or product ID, or Sentinel-2 product (or granule) name, when found.
    time_source : str
        Where ``acquired`` came from: ``"option"``, ``"MTL"`` or ``"filename"``.
    file_offset_px : (int, int)
        Row and column, in the file, of the scene's first pixel: (0, 0) unless the scene is a
        window of its file (see :func:`header_window`).
    """

    path: Path
    data: np.ndarray
    valid: np.ndarray
    crs: rasterio.crs.CRS | None
    transform: affine.Affine
    acquired: datetime
    sensor: str
    scene_id: str | None
    time_source: str
    file_offset_px: tuple[int, int] = (0, 0)

    @property
    def pixel_size_m(self) -> float:
        """Size of a pixel along a row, in map units (metres): ``hypot(a, d)`` of the transform."""
        return float(math.hypot(self.transform.a, self.transform.d))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the image."""
        return self.data.shape  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Times


def _acquisition(
    path: Path, acquired: datetime | date | str | None, check: bool = True
) -> tuple[datetime, str, str | None, str]:
    """(time, sensor, scene_id, time_source) for an image; see :func:`read_scene`. A given
    time is checked against the metadata (:func:`glacierflow.acquisition.check_given_date`)
    when ``check``: on a header or whole-scene read, not on the window reads that follow one."""
    if acquired is not None:
        try:
            when = as_utc(acquired)
        except InputError as exc:
            raise InputError(
                f"the acquisition date given for this image ({acquired!r}) is not valid: "
                f"{DATE_HELP}",
                path,
            ) from exc
    mtl = None if remote.is_remote(path) else find_mtl(path)
    mtl_problem = ""
    if mtl is not None:
        try:
            t, sensor, scene_id = acquisition_from_mtl(mtl)
        except InputError as exc:
            mtl_problem = f" ({exc})"
        else:
            if acquired is not None:
                if check:
                    check_given_date(path, when, t, f"the MTL file {mtl}")
                return when, sensor, scene_id, "option"
            return t, sensor, scene_id, "MTL"
    from_name = acquisition_from_name(path.name)
    if from_name is not None:
        t, sensor, scene_id = from_name
        if acquired is not None:
            if check:
                check_given_date(path, when, t, f"the scene ID {scene_id} in the file name")
            return when, sensor, scene_id, "option"
        return t, sensor, scene_id, "filename"
    if acquired is not None:
        return when, "unknown", None, "option"
    raise NoAcquisitionTimeError.missing(
        _NO_TIME_HELP + mtl_problem, path, ("ref_date", "sec_date")
    )


# --------------------------------------------------------------------------------------------
# Reading


#: Bytes of each block :func:`file_fingerprint` hashes, and how many blocks it spreads out.
FINGERPRINT_BLOCK = 65536
FINGERPRINT_BLOCKS = 8


def file_fingerprint(path: str | PathLike[str]) -> dict[str, object]:
    """What identifies a file's content, cheaply: its size, its modification time and a SHA-256
    of a bounded sample (the header, :data:`FINGERPRINT_BLOCKS` blocks spread through the file
    and its end; about half a megabyte whatever the size).

    A file replaced at the same path, truncated or rewritten changes the fingerprint; reading
    it costs a ``stat`` and a few small reads.

    Returns
    -------
    dict
        ``size`` (bytes), ``mtime_ns`` and ``sample_sha256`` (hex).
    """
    if remote.is_remote(path):
        # A URL: what the server says of it (size, time, ETag), not its bytes.
        ident = remote.location(path).stat()
        return {"size": ident.st_size, "mtime_ns": ident.st_mtime_ns, "etag": ident.etag}
    p = Path(path)
    st = p.stat()
    digest = hashlib.sha256()
    size, block = st.st_size, FINGERPRINT_BLOCK
    starts = {0, max(0, size - block)}
    starts.update(size * k // (FINGERPRINT_BLOCKS + 1) for k in range(1, FINGERPRINT_BLOCKS + 1))
    with open(p, "rb") as fh:
        for start in sorted(starts):
            fh.seek(start)
            digest.update(fh.read(block))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample_sha256": digest.hexdigest()}


@contextlib.contextmanager
def read_errors(path: Path, what: str = "its pixels") -> Iterator[None]:
    """Turn GDAL's read errors inside the block (a truncated or corrupt file, a lost mount)
    into one :class:`InputError` naming ``path``."""
    try:
        yield
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as exc:
        # rasterio's "Read failed. See previous exception" keeps GDAL's reason as its cause.
        cause = exc.__cause__ or exc.__context__
        detail = " ".join(str(cause if "previous exception" in str(exc) and cause else exc).split())
        detail = detail[:200]
        raise InputError(
            f"cannot read {what} ({detail}): the file is truncated, corrupt or unreachable; "
            "download it again",
            path,
        ) from None


def read_scene(
    path: str | PathLike[str],
    *,
    band: int | None = None,
    acquired: datetime | date | str | None = None,
    sensor: str | None = None,
    window: rasterio.windows.Window | None = None,
) -> Scene:
    """Read one band of a georeferenced image, with its valid mask, time and sensor.

    Parameters
    ----------
    path : str or PathLike
        A raster GDAL can read (GeoTIFF, JPEG 2000, ...), in a projected CRS with metre units.
    band : int, optional
        1-based band to read; required when the file has more than one band.
    acquired : datetime, date or str, optional
        Acquisition time; overrides metadata and file name (``time_source = "option"``). A
        string is parsed with :func:`parse_datetime`; naive times are UTC. On another UTC day
        than the metadata's: :func:`glacierflow.acquisition.check_given_date` (not on windows).
    sensor : str, optional
        Overrides the sensor found in metadata or name.
    window : rasterio.windows.Window, optional
        Read only this part of the image (pixel rows and columns); the scene's transform is the
        window's. A window may hold no valid pixel; a whole image may not.

    Returns
    -------
    Scene
        ``data`` as float32 with 0 at invalid pixels. Pixels are invalid at the declared nodata
        value, at NaN or infinity, where the dataset's own mask (e.g. an internal mask band)
        says so, and at DN 0 for Landsat scenes and for integer images without declared nodata
        (the Landsat fill value).

    Raises
    ------
    InputError
        If the file is missing, is not a raster, has several bands and no ``band`` was chosen,
        has no CRS or a geographic or non-metre one, holds no valid pixel, or ``acquired``
        cannot be parsed.
    NoAcquisitionTimeError
        If no acquisition time is given or found.
    """
    remote.check_scheme(path)
    stac = remote.resolve_stac(path) if remote.is_stac(path) else None
    if stac is not None:
        path = stac.href
        remote.check_scheme(path)
    name = str(path)
    file_path = remote.location(path)
    if not remote.is_remote(name) and not name.startswith("/vsi") and not file_path.exists():
        raise InputError("file not found", file_path)
    opened = contextlib.ExitStack()
    try:
        with warnings.catch_warnings():
            # An image without georeferencing gets its own InputError below.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            dataset = opened.enter_context(remote.open_raster(name))
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"not a raster GeoTIFF GDAL can read: {exc}", file_path) from None
    with opened:
        crs = dataset.crs
        _check_crs(crs, file_path)
        band = _choose_band(dataset.count, band, file_path)
        if stac is not None and stac.acquired is not None and acquired is None:
            when, found_sensor, scene_id, time_source = (
                stac.acquired,
                stac.sensor,
                stac.scene_id,
                "STAC",
            )
        else:
            check = window is None or window is _NO_PIXEL
            when, found_sensor, scene_id, time_source = _acquisition(file_path, acquired, check)
        sensor_name = sensor if sensor is not None else found_sensor
        with read_errors(file_path):
            nodata = dataset.nodatavals[band - 1]
            flags = dataset.mask_flag_enums[band - 1]
            per_dataset = MaskFlags.per_dataset in flags or MaskFlags.alpha in flags
            raw, mask = remote.cached_window(dataset, name, band, window, masks=per_dataset)
            dataset_mask = mask > 0 if mask is not None else None
        transform = dataset.transform if window is None else dataset.window_transform(window)

    data = raw.astype(np.float32)
    valid = _valid_pixels(raw, data, nodata, sensor_name, dataset_mask)
    if window is None and not valid.any():
        raise InputError("holds no valid pixels (all nodata, NaN or Landsat fill 0)", file_path)
    data[~valid] = 0.0
    return Scene(
        path=file_path,
        data=data,
        valid=valid,
        crs=crs,
        transform=transform,
        acquired=when,
        sensor=sensor_name,
        scene_id=scene_id,
        time_source=time_source,
    )


def _choose_band(count: int, band: int | None, file_path: Path) -> int:
    """The 1-based band to read: the only one, or ``band`` if the file has it."""
    if band is None:
        if count != 1:
            raise InputError(
                f"has {count} bands; choose one with band (1-based)", file_path, key="band"
            )
        return 1
    if not 1 <= band <= count:
        # Not "has 1 band": the setting's name standing alone is renamed in messages (--band).
        has = f"has {count} bands" if count != 1 else "is a single-band image"
        raise InputError(
            f"{has}; band {band} is out of range (1 to {count})",
            file_path,
            key="band",
        )
    return band


def _valid_pixels(
    raw: np.ndarray,
    data: np.ndarray,
    nodata: float | None,
    sensor_name: str,
    dataset_mask: np.ndarray | None,
) -> np.ndarray:
    """Pixels with a value: finite, not nodata, not Landsat fill 0, not masked by the file."""
    valid = np.isfinite(data)
    if nodata is not None and not math.isnan(nodata):
        # Compare in the file's own dtype: a float32 nodata such as -3.4028235e38 matches
        # exactly there, and a value the dtype cannot hold matches no pixel.
        valid &= raw != float(nodata)
    integer = np.issubdtype(raw.dtype, np.integer)
    if sensor_name.startswith("Landsat") or (integer and nodata is None):
        valid &= raw != 0
    if dataset_mask is not None:
        valid &= dataset_mask
    return valid


def read_header(
    path: str | PathLike[str],
    *,
    band: int | None = None,
    acquired: datetime | date | str | None = None,
    sensor: str | None = None,
) -> Scene:
    """Read a scene's metadata without its pixels.

    The same checks, time and sensor as :func:`read_scene`, but ``data`` and ``valid`` are
    zero-cost broadcast views of the image's shape (all 0 and all True): for tiled processing,
    which reads the pixels window by window. Do not pickle them (that would materialise them).
    """
    head = read_scene(path, band=band, acquired=acquired, sensor=sensor, window=_NO_PIXEL)
    # The image itself: a STAC item's asset, not the item (local paths as given: /vsi... names).
    image = head.path if remote.is_remote(head.path) or remote.is_stac(path) else path
    with read_errors(head.path), remote.open_raster(image) as ds:
        shape, transform = ds.shape, ds.transform
    return Scene(
        path=head.path,
        data=np.broadcast_to(np.float32(0.0), shape),
        valid=np.broadcast_to(True, shape),
        crs=head.crs,
        transform=transform,
        acquired=head.acquired,
        sensor=head.sensor,
        scene_id=head.scene_id,
        time_source=head.time_source,
    )


#: An empty window: read_header runs read_scene's checks without reading a block.
_NO_PIXEL = rasterio.windows.Window(0, 0, 0, 0)


def header_window(scene: Scene, row0: int, col0: int, rows: int, cols: int) -> Scene:
    """The header (from :func:`read_header`) of a window of a scene, in pixels of the scene.

    Its transform is the window's and ``file_offset_px`` says where it starts in the file, so
    that windowed reads of the new header read the right pixels.
    """
    r0, c0 = scene.file_offset_px
    return dataclasses.replace(
        scene,
        data=np.broadcast_to(np.float32(0.0), (rows, cols)),
        valid=np.broadcast_to(True, (rows, cols)),
        transform=scene.transform @ affine.Affine.translation(col0, row0),
        file_offset_px=(r0 + row0, c0 + col0),
    )


def read_preview(
    path: str | PathLike[str], *, band: int | None = None, max_side_px: int = 2048
) -> tuple[np.ndarray, affine.Affine]:
    """A decimated view of a scene for pictures, at most ``max_side_px`` on its longer side.

    Returns the float32 image (NaN at nodata) and its geotransform. Reads overviews when the
    file has them, so a full scene costs a fraction of a full read.
    """
    with read_errors(Path(str(path))), remote.open_raster(path) as ds:
        b = band or 1
        factor = max(1, int(np.ceil(max(ds.shape) / max_side_px)))
        shape = (max(1, ds.height // factor), max(1, ds.width // factor))
        data = ds.read(b, out_shape=shape, masked=True).astype(np.float32).filled(np.nan)
        transform = ds.transform @ affine.Affine.scale(ds.width / shape[1], ds.height / shape[0])
    return data, transform


def read_raster_band(
    path: str | PathLike[str], *, band: int = 1, what: str = "raster"
) -> tuple[np.ndarray, affine.Affine, rasterio.crs.CRS]:
    """One band of a georeferenced raster as float64, NaN where it has no value.

    Parameters
    ----------
    path : str or PathLike
        Any raster GDAL reads (GeoTIFF, VRT, ...), local or a GDAL URL.
    band : int
        The band, 1-based.
    what : str
        What the raster is, for error messages ("prior vx raster").

    Returns
    -------
    data : ndarray of float64
        The band, NaN at nodata and masked cells.
    transform : affine.Affine
        Pixel (col, row) to map (x, y) transform.
    crs : rasterio.crs.CRS
        The raster's CRS.

    Raises
    ------
    InputError
        If the raster cannot be read or has no CRS.
    """
    try:
        opened = contextlib.ExitStack()
        ds = opened.enter_context(remote.open_raster(path))
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read the {what}: {exc}", path) from None
    with opened:
        if ds.crs is None or not ds.crs.to_wkt():
            raise InputError(f"the {what} has no CRS", path)
        with read_errors(Path(path), f"the {what}"):
            data = ds.read(band, masked=True).astype(np.float64).filled(np.nan)
        return data, ds.transform, ds.crs


def _check_crs(crs: rasterio.crs.CRS | None, path: Path) -> None:
    if crs is None or not crs.to_wkt():
        raise InputError(
            "has no coordinate reference system; glacierflow needs georeferenced, map-projected "
            "images",
            path,
        )
    if crs.is_geographic:
        raise InputError(
            f"is in a geographic CRS ({crs.to_string()}, degrees); reproject it to a projected "
            "CRS in metres (e.g. UTM) first, for example with gdalwarp -t_srs EPSG:326NN",
            path,
        )
    try:
        units, factor = crs.linear_units_factor
    except rasterio.errors.CRSError:
        raise InputError(
            f"has a CRS without linear units ({crs.to_string()}); reproject it to a projected "
            "CRS in metres (e.g. UTM) first",
            path,
        ) from None
    if not math.isclose(factor, 1.0, rel_tol=1e-9):
        raise InputError(
            f"has map units of {units} ({factor} m); reproject it to a projected CRS in metres "
            "(e.g. UTM) first",
            path,
        )


# --------------------------------------------------------------------------------------------
# Areas of interest


def window_of_bbox(
    crs: rasterio.crs.CRS,
    transform: affine.Affine,
    shape: tuple[int, int],
    bbox_deg: tuple[float, float, float, float],
) -> rasterio.windows.Window | None:
    """The pixel window of a raster covering a longitude/latitude box (None if outside).

    Parameters
    ----------
    crs, transform, shape
        The raster's CRS, geotransform and (rows, cols).
    bbox_deg : (west, south, east, north)
        The box in degrees (WGS 84 longitude and latitude).

    Returns
    -------
    Window or None
        Whole pixels, rounded outwards, clipped to the raster.
    """
    import rasterio.warp  # loaded when an area is read, not with every scene

    west, south, east, north = bbox_deg
    left, bottom, right, top = rasterio.warp.transform_bounds(
        "EPSG:4326", crs, west, south, east, north, densify_pts=21
    )
    xs, ys = [left, right, right, left], [top, top, bottom, bottom]
    cols, rows = ~transform @ (np.array(xs), np.array(ys))
    c0, c1 = max(0, int(np.floor(cols.min()))), min(shape[1], int(np.ceil(cols.max())))
    r0, r1 = max(0, int(np.floor(rows.min()))), min(shape[0], int(np.ceil(rows.max())))
    if c1 - c0 < 2 or r1 - r0 < 2:
        return None
    return rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)


def check_bbox(bbox_deg: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The box as four floats, west < east and south < north within -180..180 and -90..90."""
    try:
        west, south, east, north = (float(v) for v in bbox_deg)
    except (TypeError, ValueError):
        raise InputError(
            f"bbox must be four numbers W S E N in degrees, got {bbox_deg!r}"
        ) from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise InputError(
            f"bbox {west:g} {south:g} {east:g} {north:g} is not W S E N in degrees with "
            "west < east (-180..180) and south < north (-90..90)"
        )
    return west, south, east, north


def read_area(
    path: str | PathLike[str],
    bbox_deg: tuple[float, float, float, float],
    *,
    band: int | None = None,
    acquired: datetime | str | None = None,
) -> Scene:
    """Read only the part of a scene inside a longitude/latitude box.

    Parameters
    ----------
    path : str or PathLike
        A local file, a URL or a STAC item (see :mod:`glacierflow.remote`).
    bbox_deg : (west, south, east, north)
        The area of interest in degrees (WGS 84).
    band : int, optional
        1-based band of a multi-band file.
    acquired : datetime or str, optional
        Acquisition time overriding the metadata.

    Returns
    -------
    Scene
        The window of the scene covering the box (its transform the window's), with the time,
        sensor and ID of the whole scene; pass two of them to :func:`glacierflow.track.track`.

    Raises
    ------
    InputError
        If the box does not overlap the scene, or as :func:`read_scene`.
    """
    box = check_bbox(bbox_deg)
    head = read_header(path, band=band, acquired=acquired)
    window = window_of_bbox(head.crs, head.transform, head.shape, box)
    if window is None:
        raise InputError(
            f"the area of interest {' '.join(f'{v:g}' for v in box)} (W S E N degrees) does not "
            "overlap this scene",
            head.path,
        )
    part = read_scene(
        head.path, band=band, acquired=head.acquired, sensor=head.sensor, window=window
    )
    if not part.valid.any():
        raise InputError("holds no valid pixel inside the area of interest", head.path)
    return dataclasses.replace(
        part,
        scene_id=head.scene_id,
        time_source=head.time_source,
        file_offset_px=(int(window.row_off), int(window.col_off)),
    )
