"""Two scenes on one grid: order them in time, put the later one on the earlier one's grid, crop.

The earlier scene is the reference; offsets are measured from it to the later (secondary) one.
When the two grids differ (CRS, pixel size, orientation or origin), the secondary is resampled
onto the reference grid: with cubic convolution for the image and nearest neighbour for the
valid mask. A secondary on the same lattice, merely shifted by whole pixels, is cut out instead
of resampled, so its values stay exact. Both scenes are then cropped to the bounding box of the
pixels valid in both, so downstream code never works on an empty margin.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from os import PathLike

import affine
import numpy as np
import rasterio.crs
import rasterio.warp
from rasterio.enums import Resampling
from rasterio.windows import Window

from glacierflow.errors import InputError, time_given_by
from glacierflow.limits import BYTES_PER_NODE, BYTES_PER_PIXEL, check_memory, check_separation
from glacierflow.scenes import Scene, header_window, read_header, read_scene

__all__ = ["Pair", "make_pair"]

_logger = logging.getLogger("glacierflow")

#: A scene file, or a scene already read.
SceneLike = str | PathLike[str] | Scene

#: Coordinates of two grids closer than this many pixels are taken as equal.
_GRID_TOL_PX = 1e-6


@dataclass(frozen=True, eq=False)
class Pair:
    """Two scenes of the same place on one grid, the earlier one first.

    Attributes
    ----------
    ref : Scene
        The earlier scene, cropped to the common area; its transform is the pair's grid.
    sec : Scene
        The later scene on the reference grid: same shape, CRS and transform as ``ref``.
    swapped : bool
        True if the later image was given first (and the order was corrected).
    reprojected : bool
        True if the secondary was resampled onto the reference grid; False if it was already
        on it or on the same lattice shifted by whole pixels.
    """

    ref: Scene
    sec: Scene
    swapped: bool
    reprojected: bool

    @property
    def dt_days(self) -> float:
        """Time from the reference to the secondary acquisition, in days of 86400 s (> 0)."""
        return (self.sec.acquired - self.ref.acquired).total_seconds() / 86400.0

    @property
    def valid(self) -> np.ndarray:
        """Bool mask of pixels valid in both scenes."""
        return self.ref.valid & self.sec.valid

    @property
    def crs(self) -> rasterio.crs.CRS | None:
        """The common CRS (the reference scene's)."""
        return self.ref.crs

    @property
    def transform(self) -> affine.Affine:
        """The common grid's geotransform, pixel to map metres."""
        return self.ref.transform

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the common grid."""
        return self.ref.shape


def make_pair(a: Scene, b: Scene, *, log: Callable[[str], None] | None = None) -> Pair:
    """Order two scenes in time and bring them onto the earlier scene's grid.

    Parameters
    ----------
    a, b : Scene
        The two scenes, in any order, each with a CRS (as :func:`~glacierflow.scenes.read_scene`
        guarantees).
    log : callable, optional
        Receives one-line notes (order swapped, secondary reprojected). Defaults to the
        ``"glacierflow"`` logger at INFO level.

    Returns
    -------
    Pair
        ``ref`` is the earlier scene, ``sec`` the later one on ``ref``'s grid, both cropped to
        the bounding box of the pixels valid in both (``ref.transform`` updated accordingly).

    Raises
    ------
    InputError
        If a scene has no CRS, both were acquired at the same time, or the scenes do not
        overlap by at least 2 x 2 valid pixels.
    """
    say = _logger.info if log is None else log
    for scene in (a, b):
        if scene.crs is None:
            raise InputError(
                "has no coordinate reference system; glacierflow needs georeferenced, "
                "map-projected images",
                scene.path,
            )
    if a.acquired == b.acquired:
        raise InputError(
            f"{a.path} and {b.path} were both acquired at {_iso(a)}; the velocity needs two "
            "different times (check ref_date / sec_date if you gave them)",
            key=("ref_date", "sec_date"),
        )
    check_separation(a.acquired, b.acquired, a.path)
    swapped = a.acquired > b.acquired
    if swapped:
        check_given_order(a, b)
    ref, sec = (b, a) if swapped else (a, b)
    if swapped:
        say(
            f"given the later image first ({sec.path.name}, {_iso(sec)}): using "
            f"{ref.path.name} ({_iso(ref)}) as reference and {sec.path.name} as secondary"
        )

    window, _ = _common_window(ref, sec)
    if window is None:
        raise InputError(_no_overlap(ref, sec))
    rows, cols = window.toslices()
    ref_valid = ref.valid[rows, cols]
    shift = _whole_pixel_shift(ref, sec)
    reprojected = shift is None
    if shift is None:
        sec_data, sec_valid = _reproject_onto(sec, ref, window)
        say(
            f"reprojected {sec.path.name} ({_grid_text(sec)}) onto the grid of "
            f"{ref.path.name} ({_grid_text(ref)})"
        )
    else:
        sec_data, sec_valid = _cut_shifted(sec, window, shift)

    both = ref_valid & sec_valid
    any_rows = np.flatnonzero(both.any(axis=1))
    any_cols = np.flatnonzero(both.any(axis=0))
    if any_rows.size == 0:
        raise InputError(_no_overlap(ref, sec, "their valid pixels do not overlap"))
    r0, r1 = int(any_rows[0]), int(any_rows[-1]) + 1
    c0, c1 = int(any_cols[0]), int(any_cols[-1]) + 1
    if r1 - r0 < 2 or c1 - c0 < 2:
        raise InputError(
            _no_overlap(
                ref,
                sec,
                f"their valid pixels share only {r1 - r0} x {c1 - c0} pixels; at least 2 x 2 "
                "are needed",
            )
        )
    crop = Window(window.col_off + c0, window.row_off + r0, c1 - c0, r1 - r0)
    transform = _window_transform(crop, ref.transform)
    rows, cols = crop.toslices()
    new_ref = replace(
        ref,
        data=np.ascontiguousarray(ref.data[rows, cols]),
        valid=np.ascontiguousarray(ref.valid[rows, cols]),
        transform=transform,
    )
    new_sec = replace(
        sec,
        data=np.ascontiguousarray(sec_data[r0:r1, c0:c1]),
        valid=np.ascontiguousarray(sec_valid[r0:r1, c0:c1]),
        crs=ref.crs,
        transform=transform,
    )
    return Pair(ref=new_ref, sec=new_sec, swapped=swapped, reprojected=reprojected)


def _window_transform(window: Window, transform: affine.Affine) -> affine.Affine:
    """Geotransform of ``window`` of a grid (``rasterio.windows.transform``, without the
    ``Affine * Affine`` that affine 3 deprecates)."""
    return transform @ affine.Affine.translation(window.col_off, window.row_off)


def check_given_order(a: Scene, b: Scene) -> None:
    """Refuse to reorder REF ``a`` after SEC ``b`` when both dates were given.

    Files given later image first are put in order (with a note) when a date from metadata
    (MTL, IDs, STAC) takes part; but two given dates (``ref_date``/``sec_date``, ``time_source
    == "option"``) that make REF the later image are most likely swapped, and reordering would
    reverse the flow. (A given date that contradicts the metadata has stopped the read
    already.)

    Raises
    ------
    InputError
        Naming both files and their dates.
    """
    if not a.time_source == b.time_source == "option":
        return
    raise InputError(
        f"REF's date ({_iso(a)}, from {_source(a, 'ref_date')}) is later than SEC's "
        f"({_iso(b)}, from {_source(b, 'sec_date')}): the velocity is measured from the earlier "
        "image, so these dates would reverse the flow. If they are swapped, swap ref_date and "
        f"sec_date; if {b.path.name} really is the earlier image, give it as REF",
        a.path,
        key=("ref_date", "sec_date"),
    )


def _source(scene: Scene, key: str) -> str:
    return key if scene.time_source == "option" else f"its {scene.time_source}"


def _iso(scene: Scene) -> str:
    return scene.acquired.isoformat().replace("+00:00", "Z")


def _grid_text(scene: Scene) -> str:
    crs = scene.crs.to_string() if scene.crs is not None else "no CRS"
    return f"{crs}, {scene.pixel_size_m:g} m, {scene.shape[1]} x {scene.shape[0]} px"


def _outline_px(shape: tuple[int, int], per_side: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Columns and rows of points along the outer edge of a raster of ``shape``, corners included.

    Densified because a straight image edge is curved in another projection.
    """
    h, w = shape
    t = np.linspace(0.0, 1.0, per_side + 1)
    cols = np.concatenate([t * w, np.full_like(t, w), (1 - t) * w, np.zeros_like(t)])
    rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), (1 - t) * h])
    return cols, rows


def _outline_in(scene: Scene, crs: rasterio.crs.CRS) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates, in ``crs``, of points along the edge of ``scene``; non-finite dropped."""
    cols, rows = _outline_px(scene.shape)
    xs, ys = scene.transform @ (cols, rows)
    if scene.crs != crs:
        xs, ys = rasterio.warp.transform(scene.crs, crs, xs, ys)
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def _common_window(ref: Scene, sec: Scene) -> tuple[Window | None, tuple[np.ndarray, np.ndarray]]:
    """Window of ``ref``'s grid covered by ``sec``'s extent (None if empty), and sec's outline.

    The outline is in ``ref``'s map coordinates, for error messages.
    """
    xs, ys = _outline_in(sec, ref.crs)
    if xs.size == 0:
        return None, (xs, ys)
    cols, rows = ~ref.transform @ (xs, ys)
    h, w = ref.shape
    # Rounded outwards, with a tolerance so that coinciding edges do not add a pixel.
    c0 = max(0, math.floor(np.min(cols) + _GRID_TOL_PX))
    c1 = min(w, math.ceil(np.max(cols) - _GRID_TOL_PX))
    r0 = max(0, math.floor(np.min(rows) + _GRID_TOL_PX))
    r1 = min(h, math.ceil(np.max(rows) - _GRID_TOL_PX))
    if c1 <= c0 or r1 <= r0:
        return None, (xs, ys)
    return Window(c0, r0, c1 - c0, r1 - r0), (xs, ys)


def _whole_pixel_shift(ref: Scene, sec: Scene) -> tuple[int, int] | None:
    """(rows, cols) position of ``sec``'s first pixel on ``ref``'s grid, if on the same lattice.

    None when the CRS, pixel size or orientation differ, or the origins are not a whole number
    of pixels apart: then ``sec`` has to be resampled.
    """
    if ref.crs != sec.crs:
        return None
    r, s = ref.transform, sec.transform
    tol = _GRID_TOL_PX * ref.pixel_size_m
    if any(
        abs(p - q) > tol for p, q in zip((r.a, r.b, r.d, r.e), (s.a, s.b, s.d, s.e), strict=True)
    ):
        return None
    col, row = ~r @ (s.c, s.f)
    if abs(col - round(col)) > _GRID_TOL_PX or abs(row - round(row)) > _GRID_TOL_PX:
        return None
    return int(round(row)), int(round(col))


def _cut_shifted(
    sec: Scene, window: Window, shift: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``sec``'s data and mask over ``window`` of the reference grid, for a whole-pixel shift."""
    h, w = int(window.height), int(window.width)
    data = np.zeros((h, w), dtype=np.float32)
    valid = np.zeros((h, w), dtype=bool)
    # Rows and columns of sec that fall in the window (window is inside sec's extent).
    r0 = int(window.row_off) - shift[0]
    c0 = int(window.col_off) - shift[1]
    src_r0, src_c0 = max(r0, 0), max(c0, 0)
    src_r1 = min(r0 + h, sec.shape[0])
    src_c1 = min(c0 + w, sec.shape[1])
    dst = np.s_[src_r0 - r0 : src_r1 - r0, src_c0 - c0 : src_c1 - c0]
    data[dst] = sec.data[src_r0:src_r1, src_c0:src_c1]
    valid[dst] = sec.valid[src_r0:src_r1, src_c0:src_c1]
    return data, valid


def _reproject_onto(sec: Scene, ref: Scene, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``sec`` onto ``window`` of ``ref``'s grid: cubic for data, nearest for the mask."""
    h, w = int(window.height), int(window.width)
    dst_transform = _window_transform(window, ref.transform)
    # NaN marks invalid source pixels, so that the cubic kernel leaves them out instead of
    # pulling the 0 fill value into neighbouring pixels.
    src = np.where(sec.valid, sec.data, np.float32(np.nan)).astype(np.float32)
    data = np.full((h, w), np.nan, dtype=np.float32)
    rasterio.warp.reproject(
        source=src,
        destination=data,
        src_transform=sec.transform,
        src_crs=sec.crs,
        src_nodata=np.nan,
        dst_transform=dst_transform,
        dst_crs=ref.crs,
        dst_nodata=np.nan,
        resampling=Resampling.cubic,
    )
    # The mask as 1/0 with 0 as nodata: pixels outside the source stay 0, that is invalid.
    mask = np.zeros((h, w), dtype=np.uint8)
    rasterio.warp.reproject(
        source=sec.valid.astype(np.uint8),
        destination=mask,
        src_transform=sec.transform,
        src_crs=sec.crs,
        src_nodata=0,
        dst_transform=dst_transform,
        dst_crs=ref.crs,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    valid = (mask == 1) & np.isfinite(data)
    data[~valid] = 0.0
    return data, valid


def _where(scene: Scene) -> str:
    """``"lon ..., lat ... (EPSG:..., name)"``: a scene's extent in degrees and its CRS."""
    from glacierflow.extent import crs_name, lonlat_text

    if scene.crs is None:
        return "an area without a CRS"
    return f"{lonlat_text(*_outline_in(scene, scene.crs), scene.crs)} ({crs_name(scene.crs)})"


def _no_overlap(ref: Scene, sec: Scene, detail: str = "") -> str:
    return (
        f"{ref.path} and {sec.path} do not overlap{f' ({detail})' if detail else ''}: "
        f"{ref.path.name} covers {_where(ref)}; {sec.path.name} covers {_where(sec)}"
    )


def _scene(src: SceneLike, date: datetime | str | None, band: int | None, key: str) -> Scene:
    """The scene ``src``, read unless it is one; a missing time is asked for as ``key``."""
    if isinstance(src, Scene):
        return src
    with time_given_by(key):
        return read_scene(src, band=band, acquired=date)


def load_pair_tiled(
    ref: str | PathLike[str],
    sec: str | PathLike[str],
    *,
    ref_date: datetime | str | None = None,
    sec_date: datetime | str | None = None,
    band: int | None = None,
) -> Pair:
    """Read the metadata of two scenes on one pixel lattice, earlier first, without their pixels.

    For tiled matching, which reads the pixels window by window. Both files must share CRS and
    pixel size and be offset by whole pixels (as scenes of one Landsat path/row or Sentinel-2
    tile are); the pair covers their overlap. Unlike :func:`load_pair`, nothing is reprojected.
    """
    with time_given_by("ref_date"):
        a = read_header(ref, band=band, acquired=ref_date)
    with time_given_by("sec_date"):
        b = read_header(sec, band=band, acquired=sec_date)
    if a.acquired == b.acquired:
        raise InputError(
            f"REF and SEC ({b.path}) were both acquired at {a.acquired.isoformat()}; the "
            "velocity needs two different times",
            a.path,
        )
    check_separation(a.acquired, b.acquired, a.path)
    swapped = a.acquired > b.acquired
    if swapped:
        check_given_order(a, b)
        a, b = b, a
        _logger.warning("given the later image first: using %s as reference", a.path.name)
    offset = lattice_offset(a, b)
    if offset is None:
        raise InputError(
            f"tiled processing needs both images on one pixel lattice (SEC {b.path.name} differs "
            "in CRS or pixel size, or is offset by a fraction of a pixel); reproject SEC onto REF "
            "first, or run untiled",
            a.path,
        )
    dr, dc = offset  # SEC's first pixel in REF's pixels
    r0, c0 = max(0, dr), max(0, dc)
    r1, c1 = min(a.shape[0], dr + b.shape[0]), min(a.shape[1], dc + b.shape[1])
    if r1 <= r0 or c1 <= c0:
        raise InputError(
            f"REF and SEC ({b.path.name}) do not overlap: {a.path.name} covers {_where(a)}; "
            f"{b.path.name} covers {_where(b)}",
            a.path,
        )
    if (r0, c0, r1, c1) != (0, 0, *a.shape) or b.shape != a.shape:
        a = header_window(a, r0, c0, r1 - r0, c1 - c0)
        # One transform for both (SEC's own equals it up to rounding of the offsets).
        b = dataclasses.replace(
            header_window(b, r0 - dr, c0 - dc, r1 - r0, c1 - c0), transform=a.transform
        )
    return Pair(ref=a, sec=b, swapped=swapped, reprojected=False)


def lattice_offset(a: Scene, b: Scene) -> tuple[int, int] | None:
    """Whole-pixel offset (rows, cols) of ``b``'s first pixel in ``a``, or None when the two are
    not on one pixel lattice (CRS, pixel size, rotation or a fractional offset differ)."""
    ta, tb = a.transform, b.transform
    if a.crs != b.crs or (ta.a, ta.b, ta.d, ta.e) != (tb.a, tb.b, tb.d, tb.e) or ta.b or ta.d:
        return None
    dc, dr = (tb.c - ta.c) / ta.a, (tb.f - ta.f) / ta.e
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        return None
    return int(round(dr)), int(round(dc))


def load_pair(
    ref: SceneLike,
    sec: SceneLike,
    *,
    ref_date: datetime | str | None = None,
    sec_date: datetime | str | None = None,
    band: int | None = None,
) -> Pair:
    """Read two scenes and put them on one grid, earlier first.

    Parameters
    ----------
    ref, sec : str, PathLike or Scene
        The two images (either order; the earlier becomes the reference).
    ref_date, sec_date : datetime or str, optional
        Acquisition times that override the metadata (ISO 8601).
    band : int, optional
        Band to read from multi-band files (1-based).
    """
    check_pixel_memory(ref, sec, band, ref_date, sec_date)
    a = _scene(ref, ref_date, band, "ref_date")
    b = _scene(sec, sec_date, band, "sec_date")
    pair = make_pair(a, b, log=_logger.warning)
    if not pair.valid.any():
        raise InputError(f"REF and SEC share no valid pixel (SEC: {pair.sec.path})", pair.ref.path)
    return pair


def check_node_memory(
    pair: Pair, grid_shape: tuple[int, int], step_px: int, coarse_pass: bool = False
) -> None:
    """Refuse a node grid whose dense layers would not fit in memory, before matching (with
    the half-resolution scenes of a tiled pyramid's coarse pass, ``coarse_pass``). Raises an
    :class:`InputError` naming the grid, the estimate and the memory available."""
    ny, nx = grid_shape
    need = ny * nx * BYTES_PER_NODE
    if coarse_pass:
        rows, cols = pair.ref.shape
        need += rows * cols / 4 * BYTES_PER_PIXEL
    check_memory(
        need,
        f"a node grid of {ny:,} x {nx:,} nodes (step {step_px} px)",
        "use a larger step_px or a smaller part of the scenes",
        path=pair.ref.path,
        key="matching.step_px",
    )


def check_pixel_memory(
    ref: SceneLike,
    sec: SceneLike,
    band: int | None,
    ref_date: datetime | str | None,
    sec_date: datetime | str | None,
) -> None:
    """Refuse two files too large to hold in memory for untiled matching, before reading."""
    if isinstance(ref, Scene) or isinstance(sec, Scene):
        return
    try:
        heads = [read_header(ref, band=band, acquired=ref_date)]
        heads.append(read_header(sec, band=band, acquired=sec_date))
    except InputError:
        return  # the reader gives the full error
    pixels = sum(h.shape[0] * h.shape[1] for h in heads)
    check_memory(
        pixels * BYTES_PER_PIXEL,
        f"matching two images of {heads[0].shape[0]:,} x {heads[0].shape[1]:,} pixels in memory",
        "match tile by tile (tiling.tile_nodes) or crop the scenes",
        path=heads[0].path,
        key="tiling.tile_nodes",
    )
