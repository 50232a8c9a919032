"""Quick-look pictures of velocity products.

Everything here takes an ``xarray.Dataset`` from :func:`glacierflow.velocity.velocity_dataset`
(and, optionally, a background image array) and draws with :class:`matplotlib.figure.Figure`
directly, never through ``pyplot``: no global figure state, no GUI backend, safe in threads and
servers. Only the final PNG is written, atomically, through
:func:`glacierflow.products.atomic_write`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import xarray as xr
from affine import Affine
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from glacierflow.errors import InputError

__all__ = ["quicklook", "quicklook_figure"]

#: Resolution of saved quick looks, in dots per inch.
QUICKLOOK_DPI = 150
#: Width of the quick-look figure, in inches.
QUICKLOOK_WIDTH_IN = 9.0
#: Colour map of the speed layer (perceptually uniform, readable in grey scale).
SPEED_CMAP = "viridis"
#: Opacity of the speed layer over a background image at zero speed and at the top colour.
SPEED_ALPHA_MIN = 0.3
SPEED_ALPHA_MAX = 0.8
#: Arrows for speeds below this fraction of the 95th percentile are not drawn.
MIN_ARROW_FRACTION = 0.25
#: About how many arrows the flow-arrow layer draws across the width of the map.
ARROWS_ACROSS = 30


def _extent(transform: Affine, height: int, width: int) -> tuple[float, float, float, float]:
    """``imshow`` extent (left, right, bottom, top) in map metres of a north-up grid."""
    if transform.b != 0 or transform.d != 0:
        raise InputError(
            "quick looks need a north-up grid (no rotation in the geotransform); reproject first"
        )
    left, top = transform.c, transform.f
    right = left + transform.a * width
    bottom = top + transform.e * height
    return left, right, bottom, top


def _stretch(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Background as float with NaN for missing data, and its 2nd and 98th percentiles."""
    data = np.ma.filled(np.ma.asarray(image, dtype=np.float64), np.nan)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return data, 0.0, 1.0
    lo, hi = np.percentile(finite, [2, 98])
    if not hi > lo:
        hi = lo + 1.0
    return data, float(lo), float(hi)


def _decimate(image: np.ndarray, max_px: int = 2400) -> tuple[np.ndarray, int]:
    """Every n-th pixel so that the image is at most ``max_px`` on a side (drawing speed)."""
    n = max(1, math.ceil(max(image.shape) / max_px))
    return image[::n, ::n], n


def _nice(value: float) -> float:
    """A round number (1, 2 or 5 times a power of ten) close to ``value``."""
    if not value > 0 or not np.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    mantissa = value / 10**exponent
    step = 1.0 if mantissa < 1.5 else 2.0 if mantissa < 3.5 else 5.0 if mantissa < 7.5 else 10.0
    return step * 10**exponent


def _date(value: object) -> str:
    """The date part of an ISO time attribute, or '?' when missing."""
    return str(value)[:10] if value else "?"


def _default_title(ds: xr.Dataset) -> str:
    attrs = ds.attrs
    ref_sensor = attrs.get("ref_sensor") or attrs.get("sensor")
    sec_sensor = attrs.get("sec_sensor") or ref_sensor
    if ref_sensor and sec_sensor and ref_sensor != sec_sensor:
        sensor = f"{ref_sensor} / {sec_sensor}"
    else:
        sensor = str(ref_sensor or "velocity")
    dt = attrs.get("dt_days")
    dt_text = f"  (Δt = {float(dt):g} days)" if dt is not None else ""
    return f"{sensor}  {_date(attrs.get('ref_time'))} → {_date(attrs.get('sec_time'))}{dt_text}"


def quicklook_figure(
    ds: xr.Dataset,
    background: np.ndarray | None = None,
    background_transform: Affine | None = None,
    title: str | None = None,
) -> Figure:
    """Draw the speed map with flow arrows, optionally over the reference image.

    The speed ``v`` (m/yr) is a semi-transparent viridis layer with colour limits 0 to the 99th
    percentile of the valid nodes; arrows (``vx`` east, ``vy`` north) on about
    :data:`ARROWS_ACROSS` valid nodes across the width are scaled so that the 95th-percentile
    speed is about one arrow spacing long, with a key arrow giving the scale in m/yr. Axes are
    easting and northing in km, with equal aspect.

    Parameters
    ----------
    ds : xarray.Dataset
        A velocity product with ``v``, ``vx``, ``vy`` (m/yr) and ``attrs['transform']`` (node
        grid, GDAL order).
    background : ndarray, optional
        A 2-D image (such as the reference scene) drawn in grey under the speed layer, stretched
        between its 2nd and 98th percentiles; masked values and NaN are left blank.
    background_transform : affine.Affine, optional
        Geotransform of ``background`` (pixel to map metres); required with ``background``.
    title : str, optional
        The title; default: sensor, the two acquisition dates and the time between them in days.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, :data:`QUICKLOOK_WIDTH_IN` inches wide, not attached to ``pyplot``.
    """
    for name in ("v", "vx", "vy"):
        if name not in ds.data_vars:
            raise InputError(f"the dataset has no {name!r} variable to draw")
    if "transform" not in ds.attrs:
        raise InputError("the dataset has no 'transform' attribute; build it with velocity_dataset")
    if background is not None:
        if background_transform is None:
            raise InputError("a background image needs its background_transform")
        if np.ndim(background) != 2:
            raise InputError(f"the background must be 2-D, got shape {np.shape(background)}")

    transform = Affine.from_gdal(*[float(c) for c in ds.attrs["transform"]])
    v = np.asarray(ds["v"].values, dtype=np.float64)
    vx = np.asarray(ds["vx"].values, dtype=np.float64)
    vy = np.asarray(ds["vy"].values, dtype=np.float64)
    ny, nx = v.shape
    v_extent = _extent(transform, ny, nx)
    if background is not None:
        bg_extent = _extent(background_transform, *np.shape(background))
        left, right, bottom, top = bg_extent
    else:
        left, right, bottom, top = v_extent
    width_m, height_m = right - left, top - bottom

    # Size the figure so that the map keeps its aspect: fixed width, height from the map plus
    # room for the title, the axis labels and the colour bar.
    map_width_in = QUICKLOOK_WIDTH_IN * 0.78
    height_in = float(np.clip(map_width_in * height_m / width_m + 1.3, 3.0, 14.0))
    fig = Figure(figsize=(QUICKLOOK_WIDTH_IN, height_in), dpi=QUICKLOOK_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor("0.85" if background is None else "black")

    if background is not None:
        data, lo, hi = _stretch(background)
        data, _ = _decimate(data)
        ax.imshow(
            data,
            cmap="gray",
            vmin=lo,
            vmax=hi,
            extent=bg_extent,
            origin="upper",
            interpolation="antialiased",
            zorder=0,
        )

    valid = np.isfinite(v)
    vmax = float(np.percentile(v[valid], 99)) if valid.any() else 1.0
    if not vmax > 0:
        vmax = 1.0
    norm = Normalize(vmin=0.0, vmax=vmax)
    cmap = colormaps[SPEED_CMAP].with_extremes(bad=(0, 0, 0, 0))
    if background is not None:
        # Opacity grows with speed: slow ground lets the image show through, fast ice is
        # coloured plainly.
        alpha = SPEED_ALPHA_MIN + (SPEED_ALPHA_MAX - SPEED_ALPHA_MIN) * np.clip(
            np.nan_to_num(v / vmax), 0.0, 1.0
        )
    else:
        alpha = None
    ax.imshow(
        np.ma.masked_invalid(v),
        cmap=cmap,
        norm=norm,
        alpha=alpha,
        extent=v_extent,
        origin="upper",
        interpolation="nearest",
        zorder=1,
    )

    arrows = np.isfinite(vx) & np.isfinite(vy)
    if arrows.any():
        stride = max(1, round(width_m / (ARROWS_ACROSS * abs(transform.a))))
        rows = np.arange(stride // 2, ny, stride)
        cols = np.arange(stride // 2, nx, stride)
        sub = np.ix_(rows, cols)
        speed_ref = float(np.percentile(v[arrows], 95))
        # Arrows much shorter than their head are unreadable blobs: leave slow nodes arrowless.
        keep = arrows[sub] & (np.nan_to_num(v[sub]) >= MIN_ARROW_FRACTION * speed_ref)
        xs = transform.c + transform.a * (cols + 0.5)
        ys = transform.f + transform.e * (rows + 0.5)
        gx, gy = np.meshgrid(xs, ys)
        spacing_m = stride * abs(transform.a)
        if speed_ref > 0:
            # A 95th-percentile arrow is ~90 % of the arrow spacing (~3 % of the width): long
            # enough to read, short enough not to cross its neighbour.
            scale = speed_ref / (0.9 * spacing_m)  # (m/yr) per map metre of arrow
            q = ax.quiver(
                gx[keep],
                gy[keep],
                vx[sub][keep],
                vy[sub][keep],
                angles="xy",
                scale_units="xy",
                scale=scale,
                color="white",
                edgecolor="black",
                linewidth=0.6,
                width=0.0022,
                headwidth=3.5,
                headlength=3.5,
                headaxislength=3.2,
                minlength=0.5,
                zorder=3,
            )
            key = _nice(speed_ref)
            ax.quiverkey(
                q,
                0.86,
                1.015,
                key,
                f"{key:g} m/yr",
                labelpos="W",
                coordinates="axes",
                color="black",
                labelsep=0.08,
                fontproperties={"size": 8},
            )

    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    km = FuncFormatter(lambda value, _pos: f"{value / 1000:g}")
    ax.xaxis.set_major_formatter(km)
    ax.yaxis.set_major_formatter(km)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10]))
    ax.set_xlabel("easting (km)")
    ax.set_ylabel("northing (km)")
    ax.tick_params(labelsize=8)
    ax.set_title(title if title is not None else _default_title(ds), fontsize=11, loc="left")

    # The colour bar gets its own opaque mappable: the layer's transparency would wash it out.
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=colormaps[SPEED_CMAP]),
        ax=ax,
        extend="max",
        shrink=0.9,
        pad=0.02,
        fraction=0.04,
    )
    bar.set_label("speed (m/yr)")
    bar.ax.tick_params(labelsize=8)
    return fig


def quicklook(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    background: np.ndarray | None = None,
    background_transform: Affine | None = None,
    title: str | None = None,
) -> Path:
    """Save the quick look of :func:`quicklook_figure` as a PNG, atomically.

    Parameters
    ----------
    ds : xarray.Dataset
        A velocity product with ``v``, ``vx``, ``vy`` (m/yr).
    path : str or PathLike
        The PNG to write (replaced atomically if it exists).
    background : ndarray, optional
        A 2-D image drawn in grey under the speed map.
    background_transform : affine.Affine, optional
        Geotransform of ``background``; required with it.
    title : str, optional
        The title; default: sensor, acquisition dates and time between them in days.

    Returns
    -------
    pathlib.Path
        ``path``; the picture is :data:`QUICKLOOK_WIDTH_IN` x :data:`QUICKLOOK_DPI` pixels wide.
    """
    from glacierflow.products import atomic_write

    path = Path(path)
    fig = quicklook_figure(
        ds, background=background, background_transform=background_transform, title=title
    )
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=QUICKLOOK_DPI)
    return path
