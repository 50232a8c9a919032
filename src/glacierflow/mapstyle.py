"""One map style for every map glacierflow draws: quick looks, annual maps, change maps, report.

The pieces here are shared by :mod:`glacierflow.plot`'s figure functions so that a pair's quick
look, a year's composite and the report read alike:

* **Speed on a logarithmic colour scale** (:func:`speed_norm`). Glacier speeds span three to four
  orders of magnitude in one scene (a few m/yr on the upper basins, kilometres per year at a
  tidewater front); on a linear scale everything under a fifth of the top is one colour. A log
  scale gives each factor of ten the same share of the colour map, so slow and fast ice read at
  once, as on ITS_LIVE's velocity maps (log scale, 1 to 10,000 m/yr). The floor is the
  product's noise (:func:`speed_floor`: the median one-sigma error on stable ground, rounded
  down to 1, 2 or 5 times a power of ten, never under :data:`MIN_SPEED_FLOOR_M_PER_YR`):
  speeds below it are not distinguishable from zero, and colouring them on a log scale would
  spread noise over decades of colour. The top is a round number above the 99th percentile
  (:func:`speed_top`). Speeds outside are drawn in the end colours (the colour bar's
  triangles). The colour map is viridis (perceptually uniform, colour-blind safe, readable in
  grey). Sun et al. (2017)'s maps of the same kind use a classed (stepped) speed scale; a log
  scale keeps that figure's readability at low speed without hiding change inside a class.
* **No tint where there is no data**: NaN nodes are fully transparent over the grey reference
  image (or the light-grey map background when there is none).
* **Arrows on valid ice only** (:func:`arrow_nodes`), about :data:`ARROWS_ACROSS` across the map
  whatever the grid, centred on their node, length proportional to speed with a key arrow
  (one spacing: the 95th percentile of the arrows' speeds, or the shared scale's top on maps
  drawn alike).
* **Map furniture**: a scale bar in round km, a north arrow pointing to true north (grid
  convergence from the CRS at the map centre), axes in km labelled with the CRS name (such as
  "WGS 84 / UTM zone 7N").

Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``), with a fixed
layout computed here (no layout engine: cheaper, and the map keeps its aspect exactly). The
background image is reduced to about the map's pixel size before drawing, so a quick look costs
the same for a 1,000-pixel crop and a full 10,000-pixel scene.

References
----------
Sun, Y., Jiang, L., Liu, L., Sun, Y., and Wang, H. (2017). Spatial-temporal characteristics of
glacier velocity in the Central Karakoram revealed with 1999-2003 Landsat-7 ETM+ pan images.
Remote Sensing, 9(10), 1064. https://doi.org/10.3390/rs9101064

Gardner, A. S., Fahnestock, M. A., and Scambos, T. A. (2022). ITS_LIVE regional glacier and ice
sheet surface velocities. NASA National Snow and Ice Data Center DAAC.
https://doi.org/10.5067/6II6VW8LLWJ7
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from affine import Affine
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patheffects import withStroke
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from glacierflow.errors import InputError

#: Resolution of saved figures, in dots per inch.
FIG_DPI = 150
#: Width of map figures, in inches.
FIG_WIDTH_IN = 9.0
#: Colour map of speed (perceptually uniform, colour-blind safe, readable in grey scale).
SPEED_CMAP = "viridis"
#: The speed scale's floor is never below this, m/yr.
MIN_SPEED_FLOOR_M_PER_YR = 1.0
#: The speed scale's top is a round number at or above this percentile of the valid speeds.
SPEED_TOP_PERCENTILE = 99.0
#: Opacity of the speed layer over an image: where the speed is within its one-sigma error
#: (not distinguishable from zero: the image shows through) and from three sigma upwards
#: (clearly moving: plain colour); linear in between.
SPEED_ALPHA_NOISE = 0.25
SPEED_ALPHA_MOVING = 0.85
#: About how many arrows the flow-arrow layer draws across the width of the map.
ARROWS_ACROSS = 30
#: Without outlines, arrows only where speed exceeds this many times its one-sigma error.
ARROW_MIN_SNR = 3.0
#: By default an arrow one spacing long stands for this percentile of the arrows' speeds; the
#: few faster ones are up to about twice as long (centred on their node, they stay within about
#: one spacing of it), while typical ice still gets an arrow longer than its head.
ARROW_REF_PERCENTILE = 95.0
#: Arrows shorter than this fraction of the arrow spacing are left out (the colour still
#: shows the speed), and so are arrows shorter than their head (:data:`ARROW_HEAD_LENGTH`):
#: a few pixels long, they show no direction.
MIN_ARROW_LENGTH = 0.12
#: Shaft width (fraction of the map's width) and head length (shaft widths) of the arrows.
ARROW_WIDTH = 0.0024
ARROW_HEAD_LENGTH = 2.8
#: Arrows shorter than this many head lengths keep their shape (shaft and head, about twice as
#: long as wide) and shrink as a whole, so that every drawn arrow points along its flow.
ARROW_MIN_SHAFT = 2.0

# Layout (inches): room for tick labels and axis labels left and below, title and arrow key on
# top, colour bar on the right.
_LEFT_IN, _BOTTOM_IN, _TOP_IN = 0.85, 0.65, 0.5
_BAR_PAD_IN, _BAR_WIDTH_IN, _BAR_LABELS_IN = 0.15, 0.18, 0.85
_MAX_MAP_HEIGHT_IN = 9.0


def nice(value: float) -> float:
    """A round number (1, 2 or 5 times a power of ten) close to ``value``."""
    if not value > 0 or not np.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    mantissa = value / 10**exponent
    step = 1.0 if mantissa < 1.5 else 2.0 if mantissa < 3.5 else 5.0 if mantissa < 7.5 else 10.0
    return step * 10**exponent


def _nice_down(value: float) -> float:
    """The largest of 1, 2, 5 times a power of ten not above ``value`` (> 0)."""
    exponent = math.floor(math.log10(value))
    for step in (5.0, 2.0, 1.0):
        if step * 10**exponent <= value * (1 + 1e-9):
            return step * 10**exponent
    return 10.0 ** (exponent - 1) * 5.0


def _nice_up(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten not below ``value`` (> 0)."""
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 5.0, 10.0):
        if step * 10**exponent >= value * (1 - 1e-9):
            return step * 10**exponent
    return 10.0 ** (exponent + 1)


# --------------------------------------------------------------------------------------------
# The speed scale
# --------------------------------------------------------------------------------------------


def _noise_m_per_yr(ds: xr.Dataset) -> float:
    """A product's typical one-sigma speed error: stable-ground median, else median v_error."""
    stable = ds.attrs.get("stable_v_error_median_m_per_yr")
    try:
        stable = float(stable)
    except (TypeError, ValueError):
        stable = float("nan")
    if np.isfinite(stable) and stable > 0:
        return stable
    if "v_error" in ds.data_vars:
        err = np.asarray(ds["v_error"].values, dtype=np.float64)
        err = err[np.isfinite(err) & (err > 0)]
        if err.size:
            return float(np.median(err))
    return float("nan")


def speed_floor(datasets: Iterable[xr.Dataset]) -> float:
    """Floor of the speed colour scale for maps of ``datasets`` drawn alike, m/yr.

    The median of the products' noise (each product's ``stable_v_error_median_m_per_yr``
    attribute, or the median of its ``v_error`` layer when that is absent), rounded down to 1, 2
    or 5 times a power of ten, and at least :data:`MIN_SPEED_FLOOR_M_PER_YR`. Speeds below it
    are not distinguishable from zero.
    """
    noise = [n for n in (_noise_m_per_yr(ds) for ds in datasets) if np.isfinite(n)]
    if not noise:
        return MIN_SPEED_FLOOR_M_PER_YR
    return max(MIN_SPEED_FLOOR_M_PER_YR, _nice_down(float(np.median(noise))))


def speed_top(datasets: Iterable[xr.Dataset], floor: float) -> float:
    """Top of the speed colour scale: a round number (1, 2, 5 x 10^k) at or above the
    :data:`SPEED_TOP_PERCENTILE` of all valid speeds, m/yr, and at least ten times ``floor``."""
    values = [np.asarray(ds["v"].values, dtype=np.float64).ravel() for ds in datasets]
    finite = np.concatenate(values) if values else np.array([])
    finite = finite[np.isfinite(finite)]
    top = float(np.percentile(finite, SPEED_TOP_PERCENTILE)) if finite.size else 0.0
    return max(_nice_up(top) if top > 0 else 0.0, 10.0 * floor)


def speed_norm(floor_m_per_yr: float, top_m_per_yr: float) -> LogNorm:
    """The logarithmic speed colour scale from ``floor`` to ``top`` (m/yr, both > 0)."""
    if not (floor_m_per_yr > 0 and top_m_per_yr > floor_m_per_yr):
        raise InputError(
            f"the speed scale needs 0 < floor < top, got {floor_m_per_yr} and {top_m_per_yr} m/yr"
        )
    return LogNorm(vmin=float(floor_m_per_yr), vmax=float(top_m_per_yr), clip=True)


def speed_ticks(norm: Normalize) -> list[float]:
    """Colour-bar ticks that read well: 1, 2, 5 x 10^k (or only the powers of ten over wide
    ranges) inside the scale, plus its ends."""
    lo, hi = float(norm.vmin), float(norm.vmax)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    steps = (1.0, 2.0, 5.0) if math.log10(hi / lo) <= 3.01 else (1.0,)
    ticks = {lo, hi}
    ticks.update(s * 10.0**e for e in decades for s in steps if lo <= s * 10.0**e <= hi)
    return sorted(ticks)


def _tick_text(value: float, _pos: object = None) -> str:
    return f"{value:.0f}" if value >= 1 else f"{value:g}"


def speed_rgba(
    v: np.ndarray, norm: Normalize, *, over_image: bool, v_error: np.ndarray | None = None
) -> np.ndarray:
    """Speed ``v`` (m/yr) as an RGBA image on ``norm``'s scale; NaN fully transparent.

    Over an image, the opacity tells how far the speed stands above its one-sigma error
    ``v_error`` (m/yr; the scale's floor where it is missing): :data:`SPEED_ALPHA_NOISE` at or
    below one sigma, so stable rock and noise let the image show through, rising linearly to
    :data:`SPEED_ALPHA_MOVING` at three sigma and above. Without an image, opaque.
    """
    v = np.asarray(v, dtype=np.float64)
    valid = np.isfinite(v)
    floor = float(norm.vmin)
    # Clip before the log: a speed of exactly 0 would otherwise be masked as "bad" and vanish.
    level = np.where(valid, np.maximum(v, floor), floor)
    rgba = colormaps[SPEED_CMAP](np.asarray(norm(level)))
    if over_image:
        err = np.full(v.shape, floor) if v_error is None else np.asarray(v_error, np.float64)
        err = np.where(np.isfinite(err) & (err > 0), err, floor)
        snr = level / err
        rgba[..., 3] = SPEED_ALPHA_NOISE + (SPEED_ALPHA_MOVING - SPEED_ALPHA_NOISE) * np.clip(
            (snr - 1.0) / 2.0, 0.0, 1.0
        )
    rgba[~valid] = 0.0
    return rgba


# --------------------------------------------------------------------------------------------
# Figure, axes and background
# --------------------------------------------------------------------------------------------


def extent(transform: Affine, height: int, width: int) -> tuple[float, float, float, float]:
    """``imshow`` extent (left, right, bottom, top) in map units of a north-up grid."""
    if transform.b != 0 or transform.d != 0:
        raise InputError(
            "maps need a north-up grid (no rotation in the geotransform); reproject first"
        )
    left, top = transform.c, transform.f
    right = left + transform.a * width
    bottom = top + transform.e * height
    return left, right, bottom, top


@dataclass(frozen=True)
class MapFrame:
    """A map figure: its axes, the colour-bar axes and the map's extent and size in pixels."""

    fig: Figure
    ax: Axes
    cax: Axes
    bounds: tuple[float, float, float, float]
    map_px: tuple[int, int]


def map_frame(
    bounds: tuple[float, float, float, float], crs_wkt: str | None, title: str
) -> MapFrame:
    """A figure :data:`FIG_WIDTH_IN` wide holding a map of ``bounds`` (left, right, bottom, top,
    map units) at its true aspect, with CRS-labelled km axes, title and room for a colour bar."""
    left, right, bottom, top = bounds
    aspect = (top - bottom) / (right - left)
    map_w = FIG_WIDTH_IN - _LEFT_IN - _BAR_PAD_IN - _BAR_WIDTH_IN - _BAR_LABELS_IN
    map_h = map_w * aspect
    if map_h > _MAX_MAP_HEIGHT_IN:  # tall maps: narrower rather than taller
        map_h = _MAX_MAP_HEIGHT_IN
        map_w = map_h / aspect
    map_h = max(map_h, 0.5)
    fig_h = map_h + _BOTTOM_IN + _TOP_IN
    fig = Figure(figsize=(FIG_WIDTH_IN, fig_h), dpi=FIG_DPI)
    ax = fig.add_axes(
        (_LEFT_IN / FIG_WIDTH_IN, _BOTTOM_IN / fig_h, map_w / FIG_WIDTH_IN, map_h / fig_h)
    )
    cax = fig.add_axes(
        (
            (_LEFT_IN + map_w + _BAR_PAD_IN) / FIG_WIDTH_IN,
            (_BOTTOM_IN + 0.05 * map_h) / fig_h,
            _BAR_WIDTH_IN / FIG_WIDTH_IN,
            0.9 * map_h / fig_h,
        )
    )
    ax.set_facecolor("0.85")
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal", adjustable="box")
    _label_axes(ax, crs_wkt)
    ax.set_title(title, fontsize=10.5, loc="left")
    return MapFrame(fig, ax, cax, bounds, (round(map_w * FIG_DPI), round(map_h * FIG_DPI)))


def _crs(crs_wkt: str | None):
    """The pyproj CRS of ``crs_wkt``, or None when empty or unreadable."""
    if not crs_wkt:
        return None
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(crs_wkt)
    except CRSError:
        return None


def crs_name(crs_wkt: str | None) -> str:
    """The CRS's name as EPSG writes it (such as "WGS 84 / UTM zone 7N"), or ""."""
    crs = _crs(crs_wkt)
    if crs is None:
        return ""
    name = crs.name or ""
    if name.lower() in ("", "unknown", "unnamed"):
        epsg = crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else ""
    return name


def _label_axes(ax: Axes, crs_wkt: str | None) -> None:
    """Equal-aspect axes: easting and northing in km, the CRS named in the x label."""
    crs = _crs(crs_wkt)
    name = crs_name(crs_wkt)
    suffix = f", {name}" if name else ""
    if crs is not None and crs.is_geographic:
        ax.set_xlabel(f"longitude (°){suffix}")
        ax.set_ylabel("latitude (°)")
    else:
        km = FuncFormatter(lambda value, _pos: f"{value / 1000:g}")
        ax.xaxis.set_major_formatter(km)
        ax.yaxis.set_major_formatter(km)
        ax.set_xlabel(f"easting (km){suffix}")
        ax.set_ylabel("northing (km)")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10]))
    ax.tick_params(labelsize=8)


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks, ignoring NaN (NaN where a block has no value)."""
    if factor <= 1:
        return image
    ny, nx = image.shape[0] // factor, image.shape[1] // factor
    if ny == 0 or nx == 0:
        return image
    blocks = image[: ny * factor, : nx * factor].reshape(ny, factor, nx, factor)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=(1, 3))
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def background_grey(image: np.ndarray, map_px: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The image reduced to about the map's pixels and stretched to grey levels in [0, 1].

    The image is averaged in blocks of ``factor`` x ``factor`` pixels, the largest factor that
    keeps at least as many pixels as the map has across (``map_px`` = width, height), then
    stretched linearly between its 2nd and 98th percentiles. Masked values and NaN stay NaN.

    Returns
    -------
    grey : ndarray of float32
        Grey levels in [0, 1], NaN where the image has no value.
    factor : int
        The block size, pixels of ``image`` per pixel of ``grey`` along each axis.
    """
    data = np.ma.filled(np.ma.asarray(image, dtype=np.float32), np.nan)
    factor = max(1, min(data.shape[1] // max(map_px[0], 1), data.shape[0] // max(map_px[1], 1)))
    data = _block_mean(data, factor).astype(np.float32)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return data, factor
    lo, hi = np.percentile(finite, [2, 98])
    if not hi > lo:
        hi = lo + 1.0
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0), factor


def draw_background(frame: MapFrame, image: np.ndarray, transform: Affine) -> None:
    """The image in grey (see :func:`background_grey`) under the map; no value: transparent."""
    grey, factor = background_grey(image, frame.map_px)
    # 8-bit RGBA: a quarter of the float data to resample; alpha 0 where there is no value.
    rgba = np.empty(grey.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = np.round(255 * np.nan_to_num(grey))[..., None]
    rgba[..., 3] = np.where(np.isfinite(grey), 255, 0)
    left, top = transform.c, transform.f
    ny, nx = grey.shape
    bounds = (left, left + transform.a * factor * nx, top + transform.e * factor * ny, top)
    frame.ax.imshow(
        rgba, extent=bounds, origin="upper", interpolation="antialiased", zorder=0, resample=True
    )


def draw_speed(frame: MapFrame, ds: xr.Dataset, transform: Affine, norm, *, over_image: bool):
    """The speed layer of ``ds`` on its node grid (see :func:`speed_rgba`)."""
    v = np.asarray(ds["v"].values, dtype=np.float64)
    err = ds["v_error"].values if "v_error" in ds.data_vars else None
    return frame.ax.imshow(
        speed_rgba(v, norm, over_image=over_image, v_error=err),
        extent=extent(transform, *np.shape(v)),
        origin="upper",
        interpolation="nearest",
        zorder=1,
    )


def speed_colourbar(frame: MapFrame, norm: Normalize, label: str = "speed (m/yr)") -> None:
    """The opaque speed colour bar with ticks in m/yr that read well (10, 100, 1000)."""
    bar = frame.fig.colorbar(
        ScalarMappable(norm=norm, cmap=colormaps[SPEED_CMAP]), cax=frame.cax, extend="both"
    )
    if isinstance(norm, LogNorm):
        bar.ax.yaxis.set_major_locator(FixedLocator(speed_ticks(norm)))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(_tick_text))
        bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.set_label(label, fontsize=9)
    bar.ax.tick_params(labelsize=8)


# --------------------------------------------------------------------------------------------
# Arrows
# --------------------------------------------------------------------------------------------


def inside_outlines(outlines, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where the points (map units, same CRS as ``outlines``) lie inside any polygon."""
    import shapely

    geoms = outlines.geometry if hasattr(outlines, "geometry") else outlines
    parts = [g for g in geoms if g is not None and not g.is_empty]
    if not parts:
        return np.zeros(np.shape(x), dtype=bool)
    union = shapely.union_all(parts)
    return shapely.contains_xy(union, np.asarray(x, float), np.asarray(y, float))


def arrow_nodes(
    ds: xr.Dataset, transform: Affine, *, outlines=None, floor_m_per_yr: float = 0.0
) -> np.ndarray:
    """Nodes that may carry a flow arrow: measured, good and on ice.

    A node qualifies when ``vx``, ``vy`` and ``v`` are finite, its ``quality`` is 0 (when the
    layer exists; filled and flagged nodes carry no arrow), its ``count`` is positive (when the
    layer exists), and it is on ice: inside ``outlines`` when given, otherwise moving faster
    than :data:`ARROW_MIN_SNR` times its ``v_error`` (or than that many times
    ``floor_m_per_yr`` where there is no error), which keeps arrows off stable rock, water and
    noise.
    """
    v = np.asarray(ds["v"].values, dtype=np.float64)
    ok = (
        np.isfinite(v)
        & np.isfinite(np.asarray(ds["vx"].values, dtype=np.float64))
        & np.isfinite(np.asarray(ds["vy"].values, dtype=np.float64))
    )
    if "quality" in ds.data_vars:
        ok &= np.nan_to_num(np.asarray(ds["quality"].values, dtype=np.float64), nan=1.0) == 0
    if "count" in ds.data_vars:
        ok &= np.nan_to_num(np.asarray(ds["count"].values, dtype=np.float64)) > 0
    if outlines is not None:
        ny, nx = v.shape
        cols, rows = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5)
        x, y = transform @ (cols, rows)
        ok &= inside_outlines(outlines, x, y)
    else:
        err = (
            np.asarray(ds["v_error"].values, dtype=np.float64)
            if "v_error" in ds.data_vars
            else np.full(v.shape, np.nan)
        )
        err = np.where(np.isfinite(err), err, floor_m_per_yr)
        with np.errstate(invalid="ignore"):
            ok &= v > ARROW_MIN_SNR * err
    return ok


def draw_arrows(
    frame: MapFrame,
    ds: xr.Dataset,
    transform: Affine,
    candidates: np.ndarray,
    *,
    ref_speed: float | None = None,
    across: int = ARROWS_ACROSS,
):
    """Flow arrows on about ``across`` of the ``candidates`` nodes across the map.

    Arrows (``vx`` east, ``vy`` north, m/yr) are centred on their node and scaled so that
    ``ref_speed`` (default: the :data:`ARROW_REF_PERCENTILE` of the drawn nodes' speeds) is one
    arrow spacing long; a key arrow of a round speed sits above the map. Returns the positions
    (x, y, map units) of the arrows drawn.
    """
    left, right, _, _ = frame.bounds
    node_m = abs(transform.a)
    stride = max(1, round((right - left) / (max(across, 1) * node_m)))
    ny, nx = candidates.shape
    rows = np.arange(stride // 2, ny, stride)
    cols = np.arange(stride // 2, nx, stride)
    sub = np.ix_(rows, cols)
    v = np.asarray(ds["v"].values, dtype=np.float64)[sub]
    keep = candidates[sub]
    if not keep.any():
        return np.empty(0), np.empty(0)
    if ref_speed is None:
        ref_speed = float(np.percentile(v[keep], ARROW_REF_PERCENTILE))
    if not ref_speed > 0:
        return np.empty(0), np.empty(0)
    spacing_m = stride * node_m
    head_m = ARROW_HEAD_LENGTH * ARROW_WIDTH * (right - left)
    keep &= v >= max(MIN_ARROW_LENGTH, head_m / spacing_m) * ref_speed
    gx, gy = np.meshgrid(
        transform.c + transform.a * (cols + 0.5), transform.f + transform.e * (rows + 0.5)
    )
    vx = np.asarray(ds["vx"].values, dtype=np.float64)[sub]
    vy = np.asarray(ds["vy"].values, dtype=np.float64)[sub]
    q = frame.ax.quiver(
        gx[keep],
        gy[keep],
        vx[keep],
        vy[keep],
        angles="xy",
        scale_units="xy",
        scale=ref_speed / spacing_m,  # (m/yr) per map metre of arrow
        pivot="middle",
        color="white",
        edgecolor="black",
        linewidth=0.5,
        width=ARROW_WIDTH,
        # Arrows shorter than two heads (minshaft x headlength) are whole arrows scaled down,
        # not matplotlib's shaftless head: with minshaft 1 that head is a triangle about as
        # wide as long, which reads as pointing any way (often west). minlength 0: no dots.
        headwidth=3.0,
        headlength=ARROW_HEAD_LENGTH,
        headaxislength=2.5,
        minshaft=ARROW_MIN_SHAFT,
        minlength=0.0,
        zorder=3,
        gid="flow-arrows",
    )
    key = nice(ref_speed / 2)
    frame.ax.quiverkey(
        q,
        0.97,
        1.02,
        key,
        f"{key:g} m/yr",
        labelpos="W",
        coordinates="axes",
        color="black",
        labelsep=0.06,
        fontproperties={"size": 8},
    )
    return gx[keep], gy[keep]


# --------------------------------------------------------------------------------------------
# Scale bar and north arrow
# --------------------------------------------------------------------------------------------


def add_scale_bar(frame: MapFrame, crs_wkt: str | None) -> AnchoredSizeBar | None:
    """A scale bar of a round length (about a fifth of the map width) in the lower left corner;
    none on a geographic (degree) grid."""
    crs = _crs(crs_wkt)
    if crs is not None and crs.is_geographic:
        return None
    left, right, _, _ = frame.bounds
    length_m = _nice_down((right - left) / 5)
    label = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    bar = AnchoredSizeBar(
        frame.ax.transData,
        length_m,
        label,
        loc="lower left",
        pad=0.4,
        borderpad=0.6,
        sep=3,
        frameon=True,
        size_vertical=0,
        color="black",
        fontproperties=FontProperties(size=8),
    )
    bar.patch.set(facecolor="white", alpha=0.8, edgecolor="none")
    bar.size_bar.get_children()[0].set_linewidth(2.5)
    bar.set_gid("scale-bar")
    bar.set_zorder(5)
    frame.ax.add_artist(bar)
    return bar


def grid_convergence_deg(crs_wkt: str | None, x: float, y: float) -> float:
    """Angle from grid north to true north at map point (x, y), degrees clockwise (0 when the
    CRS is unknown or geographic).

    On UTM it is a fraction of a degree near the central meridian and grows towards the zone's
    edges; on polar stereographic grids it equals the longitude difference from the central
    meridian and can be anything.
    """
    crs = _crs(crs_wkt)
    if crs is None or crs.is_geographic:
        return 0.0
    from pyproj import Transformer

    to_geo = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lon, lat = to_geo.transform(x, y)
    # A step towards the pole along the meridian, back on the grid.
    step = -0.01 if lat > 89.99 else 0.01
    x2, y2 = to_geo.transform(lon, lat + step, direction="INVERSE")
    dx, dy = (x2 - x) * np.sign(step), (y2 - y) * np.sign(step)
    if not (np.isfinite(dx) and np.isfinite(dy)):
        return 0.0
    return float(np.degrees(np.arctan2(dx, dy)))


def add_north_arrow(frame: MapFrame, crs_wkt: str | None) -> float:
    """An arrow labelled "N" in the upper right corner, pointing to true north at the map
    centre; returns its angle from grid north, degrees clockwise."""
    left, right, bottom, top = frame.bounds
    angle = grid_convergence_deg(crs_wkt, (left + right) / 2, (bottom + top) / 2)
    length_pt = 22.0
    sin, cos = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    head = (0.955, 0.86)
    halo = [withStroke(linewidth=3, foreground="white")]
    arrow = frame.ax.annotate(
        "",
        xy=head,
        xycoords="axes fraction",
        xytext=(-length_pt * sin, -length_pt * cos),
        textcoords="offset points",
        arrowprops={
            "arrowstyle": "-|>,head_length=0.6,head_width=0.3",
            "color": "black",
            "linewidth": 1.6,
            "path_effects": halo,
        },
        zorder=5,
    )
    arrow.set_gid("north-arrow")
    label = frame.ax.annotate(
        "N",
        xy=head,
        xycoords="axes fraction",
        xytext=(7 * sin, 7 * cos),
        textcoords="offset points",
        ha="center",
        va="center",
        fontsize=10,
        fontweight="bold",
        path_effects=halo,
        zorder=5,
    )
    label.set_gid("north-arrow-label")
    return angle


def finish_map(frame: MapFrame, crs_wkt: str | None) -> None:
    """Scale bar and north arrow."""
    add_scale_bar(frame, crs_wkt)
    add_north_arrow(frame, crs_wkt)


# --------------------------------------------------------------------------------------------
# Titles
# --------------------------------------------------------------------------------------------


def date_text(value: object) -> str:
    """The date part of an ISO time attribute, or '?' when missing."""
    return str(value)[:10] if value else "?"


def days_text(dt_days: float) -> str:
    """A time span for titles: "16 days", "1 day", "0.5 days"."""
    if abs(dt_days - round(dt_days)) < 0.05:
        n = round(dt_days)
        return f"{n} day" if n == 1 else f"{n} days"
    return f"{dt_days:.1f} days"


def place_name(attrs: dict) -> str:
    """A place or project name from a product's attributes ("" when there is none)."""
    for key in ("site_name", "site", "glacier_name", "project"):
        value = attrs.get(key)
        if value:
            return str(value)
    return ""


def span_days(labels: Sequence[str]) -> list[float]:
    """Days between the dates of pair labels "YYYY-MM-DD/YYYY-MM-DD" (unreadable ones skipped)."""
    out = []
    for label in labels:
        try:
            start, end = (np.datetime64(p[:10], "D") for p in str(label).split("/"))
        except ValueError:
            continue
        out.append(float((end - start) / np.timedelta64(1, "D")))
    return out
