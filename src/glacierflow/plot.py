"""Quick-look pictures of velocity products.

Everything here takes an ``xarray.Dataset`` from :func:`glacierflow.velocity.velocity_dataset`
(and, optionally, a background image array) and draws with :class:`matplotlib.figure.Figure`
directly, never through ``pyplot``: no global figure state, no GUI backend, safe in threads and
servers. Only the final PNG is written, atomically, through
:func:`glacierflow.atomic.atomic_write`.
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

from glacierflow.atomic import atomic_write
from glacierflow.errors import InputError

__all__ = [
    "annual_map_figure",
    "change_map_figure",
    "glacier_series_figure",
    "profile_figure",
    "quicklook",
    "quicklook_figure",
    "save_figure",
    "speed_scale",
]

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
    _check_quicklook_inputs(ds, background, background_transform)
    transform = Affine.from_gdal(*[float(c) for c in ds.attrs["transform"]])
    v = np.asarray(ds["v"].values, dtype=np.float64)
    vx = np.asarray(ds["vx"].values, dtype=np.float64)
    vy = np.asarray(ds["vy"].values, dtype=np.float64)
    v_extent = _extent(transform, *v.shape)
    bg_extent = (
        _extent(background_transform, *np.shape(background)) if background is not None else None
    )
    left, right, bottom, top = bg_extent if bg_extent is not None else v_extent

    # Size the figure so that the map keeps its aspect: fixed width, height from the map plus
    # room for the title, the axis labels and the colour bar.
    map_width_in = QUICKLOOK_WIDTH_IN * 0.78
    height_in = float(np.clip(map_width_in * (top - bottom) / (right - left) + 1.3, 3.0, 14.0))
    fig = Figure(figsize=(QUICKLOOK_WIDTH_IN, height_in), dpi=QUICKLOOK_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor("0.85" if background is None else "black")
    if background is not None:
        _draw_background(ax, background, bg_extent)
    norm = _draw_speed_layer(ax, v, v_extent, over_image=background is not None)
    _draw_quicklook_arrows(ax, transform, v, vx, vy, right - left)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    _km_axes(ax)
    ax.set_title(title if title is not None else _default_title(ds), fontsize=11, loc="left")
    _speed_colourbar(fig, ax, norm)
    return fig


def _check_quicklook_inputs(
    ds: xr.Dataset, background: np.ndarray | None, background_transform: Affine | None
) -> None:
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


def _draw_background(ax, background: np.ndarray, extent) -> None:
    """The image in grey, stretched between its 2nd and 98th percentiles, under the map."""
    data, lo, hi = _stretch(background)
    data, _ = _decimate(data)
    ax.imshow(
        data,
        cmap="gray",
        vmin=lo,
        vmax=hi,
        extent=extent,
        origin="upper",
        interpolation="antialiased",
        zorder=0,
    )


def _draw_speed_layer(ax, v: np.ndarray, extent, *, over_image: bool) -> Normalize:
    """Speed in viridis from 0 to the 99th percentile (m/yr); returns the colour scale."""
    valid = np.isfinite(v)
    vmax = float(np.percentile(v[valid], 99)) if valid.any() else 1.0
    if not vmax > 0:
        vmax = 1.0
    norm = Normalize(vmin=0.0, vmax=vmax)
    cmap = colormaps[SPEED_CMAP].with_extremes(bad=(0, 0, 0, 0))
    if over_image:
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
        extent=extent,
        origin="upper",
        interpolation="nearest",
        zorder=1,
    )
    return norm


def _draw_quicklook_arrows(
    ax, transform: Affine, v: np.ndarray, vx: np.ndarray, vy: np.ndarray, width_m: float
) -> None:
    """Flow arrows on about :data:`ARROWS_ACROSS` nodes across, with a key arrow in m/yr."""
    arrows = np.isfinite(vx) & np.isfinite(vy)
    if not arrows.any():
        return
    ny, nx = v.shape
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
        q = _arrows(ax, gx[keep], gy[keep], vx[sub][keep], vy[sub][keep], scale, 0.6)
        _arrow_key(ax, q, _nice(speed_ref))


def _arrow_key(ax, q, key: float) -> None:
    """The key arrow above the map's top right corner, labelled in m/yr."""
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


def _km_axes(ax) -> None:
    """Equal aspect, easting and northing labelled in km."""
    ax.set_aspect("equal")
    km = FuncFormatter(lambda value, _pos: f"{value / 1000:g}")
    ax.xaxis.set_major_formatter(km)
    ax.yaxis.set_major_formatter(km)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10]))
    ax.set_xlabel("easting (km)")
    ax.set_ylabel("northing (km)")
    ax.tick_params(labelsize=8)


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
    fig = quicklook_figure(
        ds, background=background, background_transform=background_transform, title=title
    )
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Period composites: speed maps on a common scale, change maps, profiles, glacier time series
# --------------------------------------------------------------------------------------------

#: Colour map of speed differences (diverging, blue slower, red faster).
CHANGE_CMAP = "RdBu_r"
#: Colours of successive years in profile and time-series plots (colour-blind safe, Okabe-Ito).
YEAR_COLOURS = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)


def _map_axes(transform: Affine, shape: tuple[int, int], title: str) -> tuple[Figure, object]:
    """A figure sized to the map's aspect, with km-labelled easting/northing axes."""
    left, right, bottom, top = _extent(transform, *shape)
    width_m, height_m = right - left, top - bottom
    map_width_in = QUICKLOOK_WIDTH_IN * 0.78
    height_in = float(np.clip(map_width_in * height_m / width_m + 1.3, 3.0, 14.0))
    fig = Figure(figsize=(QUICKLOOK_WIDTH_IN, height_in), dpi=QUICKLOOK_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor("0.85")
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    _km_axes(ax)
    ax.set_title(title, fontsize=11, loc="left")
    return fig, ax


def _draw_outlines(ax, outlines) -> None:
    """Outline polygons (a GeoSeries/GeoDataFrame in the map's CRS) as thin dark lines."""
    if outlines is None:
        return
    geoms = outlines.geometry if hasattr(outlines, "geometry") else outlines
    for geom in geoms:
        if geom is None or geom.is_empty:
            continue
        polys = geom.geoms if hasattr(geom, "geoms") else [geom]
        for poly in polys:
            if not hasattr(poly, "exterior"):
                continue
            x, y = poly.exterior.xy
            ax.plot(x, y, color="black", linewidth=0.7, zorder=4)


def speed_scale(composites, percentile: float = 99.0) -> float:
    """A common top of the speed colour scale: a round number near the ``percentile`` of all
    valid speeds of ``composites`` (m/yr)."""
    values = [np.asarray(ds["v"].values, dtype=np.float64) for ds in composites]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if not finite.size:
        return 1.0
    return _nice(float(np.percentile(finite, percentile)))


def annual_map_figure(
    ds: xr.Dataset,
    *,
    vmax: float,
    outlines=None,
    title: str | None = None,
    arrows_per_width: int = ARROWS_ACROSS,
) -> Figure:
    """Speed map of one period composite on a fixed colour scale, with flow arrows.

    Maps of several years drawn with the same ``vmax`` share colours and arrow lengths (an
    arrow of length one arrow spacing is ``vmax / 2``), so they can be compared by eye.

    Parameters
    ----------
    ds : xarray.Dataset
        A composite (``v``, ``vx``, ``vy`` in m/yr, ``count``, attrs ``transform``, ``year``).
    vmax : float
        Top of the colour scale, m/yr (:func:`speed_scale`).
    outlines : geopandas.GeoDataFrame or GeoSeries, optional
        Glacier outlines in the map's CRS, drawn as thin lines.
    title : str, optional
        Default: the year, the period's dates and the number of pairs.
    arrows_per_width : int
        About how many arrows across the map.

    Returns
    -------
    matplotlib.figure.Figure
    """
    transform = Affine.from_gdal(*[float(c) for c in ds.attrs["transform"]])
    v = np.asarray(ds["v"].values, dtype=np.float64)
    vx = np.asarray(ds["vx"].values, dtype=np.float64)
    vy = np.asarray(ds["vy"].values, dtype=np.float64)
    ny, nx = v.shape
    if title is None:
        pairs = int(ds.attrs.get("pair_count", 0))
        title = (
            f"{ds.attrs.get('year', '')}: speed, {_date(ds.attrs.get('start_datetime'))} to "
            f"{_date(ds.attrs.get('end_datetime'))} ({pairs} pair{'s' if pairs != 1 else ''})"
        )
    fig, ax = _map_axes(transform, (ny, nx), title)
    norm = Normalize(vmin=0.0, vmax=float(vmax))
    cmap = colormaps[SPEED_CMAP].with_extremes(bad=(0, 0, 0, 0))
    ax.imshow(
        np.ma.masked_invalid(v),
        cmap=cmap,
        norm=norm,
        extent=_extent(transform, ny, nx),
        origin="upper",
        interpolation="nearest",
        zorder=1,
    )
    _draw_outlines(ax, outlines)
    ok = np.isfinite(vx) & np.isfinite(vy)
    if ok.any() and vmax > 0:
        stride = max(1, round(nx / arrows_per_width))
        rows = np.arange(stride // 2, ny, stride)
        cols = np.arange(stride // 2, nx, stride)
        sub = np.ix_(rows, cols)
        keep = ok[sub] & (np.nan_to_num(v[sub]) >= 0.1 * vmax)
        gx, gy = np.meshgrid(
            transform.c + transform.a * (cols + 0.5), transform.f + transform.e * (rows + 0.5)
        )
        spacing_m = stride * abs(transform.a)
        scale = (vmax / 2) / spacing_m
        q = _arrows(ax, gx[keep], gy[keep], vx[sub][keep], vy[sub][keep], scale, 0.5)
        _arrow_key(ax, q, _nice(vmax / 2))
    _speed_colourbar(fig, ax, norm)
    return fig


def change_map_figure(
    before: xr.Dataset,
    after: xr.Dataset,
    *,
    limit: float | None = None,
    outlines=None,
    title: str | None = None,
) -> Figure:
    """Map of the change in speed from one composite to a later one on the same grid.

    Colours show ``v_after - v_before`` (m/yr) on a diverging scale symmetric about zero
    (red faster, blue slower); cells where the change is within twice its one-sigma error
    (``hypot`` of the two ``v_error``) are drawn faded, so only significant change stands out.

    Parameters
    ----------
    before, after : xarray.Dataset
        Composites on one grid.
    limit : float, optional
        Half-range of the colour scale, m/yr; default a round number near the 99th
        percentile of the absolute change.
    outlines : geopandas.GeoDataFrame or GeoSeries, optional
        Glacier outlines in the map's CRS.
    title : str, optional
        Default: "Speed change YEAR_A to YEAR_B".

    Returns
    -------
    matplotlib.figure.Figure
    """
    transform = Affine.from_gdal(*[float(c) for c in after.attrs["transform"]])
    va = np.asarray(before["v"].values, dtype=np.float64)
    vb = np.asarray(after["v"].values, dtype=np.float64)
    if va.shape != vb.shape:
        raise InputError(f"composites on different grids: {va.shape} and {vb.shape}")
    diff = vb - va
    sigma = np.hypot(
        np.asarray(before["v_error"].values, dtype=np.float64),
        np.asarray(after["v_error"].values, dtype=np.float64),
    )
    finite = np.isfinite(diff)
    if limit is None:
        limit = _nice(float(np.percentile(np.abs(diff[finite]), 99))) if finite.any() else 1.0
    ya, yb = before.attrs.get("year", "?"), after.attrs.get("year", "?")
    fig, ax = _map_axes(
        transform, diff.shape, title or f"Speed change {ya} to {yb} (later minus earlier)"
    )
    # Darker than the faded (insignificant) colours near zero, so "no data" stands apart.
    ax.set_facecolor("0.45")
    norm = Normalize(vmin=-float(limit), vmax=float(limit))
    cmap = colormaps[CHANGE_CMAP].with_extremes(bad=(0, 0, 0, 0))
    extent = _extent(transform, *diff.shape)
    with np.errstate(invalid="ignore"):
        significant = np.abs(diff) > 2 * sigma
    alpha = np.where(significant, 1.0, 0.35)
    ax.imshow(
        np.ma.masked_invalid(diff),
        cmap=cmap,
        norm=norm,
        alpha=alpha,
        extent=extent,
        origin="upper",
        interpolation="nearest",
        zorder=1,
    )
    _draw_outlines(ax, outlines)
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=colormaps[CHANGE_CMAP]),
        ax=ax,
        extend="both",
        shrink=0.9,
        pad=0.02,
        fraction=0.04,
    )
    bar.set_label(f"speed change {yb} − {ya} (m/yr); pale: within 2σ, dark grey: no data")
    bar.ax.tick_params(labelsize=8)
    return fig


def profile_figure(profile, *, title: str | None = None, across: bool = False) -> Figure:
    """Speed along one line (centreline or transect), one curve per year, with ±1σ bands.

    Parameters
    ----------
    profile : pandas.DataFrame
        Rows of :func:`glacierflow.glaciers.sample_profiles` for one ``line_id``.
    title : str, optional
        Default: the line's name or id.
    across : bool
        A transect (x axis "distance across") rather than a centreline ("distance from the
        line's start", down-glacier for OGGM centrelines).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if profile.empty:
        raise InputError("the profile holds no samples")
    fig = Figure(figsize=(QUICKLOOK_WIDTH_IN, 4.2), dpi=QUICKLOOK_DPI, layout="constrained")
    ax = fig.add_subplot()
    for i, (year, grp) in enumerate(profile.groupby("year", sort=True)):
        colour = YEAR_COLOURS[i % len(YEAR_COLOURS)]
        d_km = grp["distance_m"].to_numpy(float) / 1000.0
        v = grp["v"].to_numpy(float)
        err = grp["v_error"].to_numpy(float)
        ax.fill_between(d_km, v - err, v + err, color=colour, alpha=0.2, linewidth=0)
        ax.plot(d_km, v, color=colour, linewidth=1.4, label=str(year))
    ax.set_xlabel(
        "distance across the transect (km)"
        if across
        else "distance along the line from its start (km)"
    )
    ax.set_ylabel("speed (m/yr)")
    ax.set_ylim(bottom=0)
    ax.grid(True, color="0.9", linewidth=0.6)
    ax.tick_params(labelsize=8)
    ax.legend(title="year", fontsize=8, title_fontsize=8, ncols=min(6, profile["year"].nunique()))
    first = profile.iloc[0]
    label = str(first["name"] or first["line_id"])
    ax.set_title(title or f"{label}: speed profile (shaded: ±1σ)", fontsize=11, loc="left")
    return fig


def glacier_series_figure(stats, *, max_glaciers: int = 8, title: str | None = None) -> Figure:
    """Mean speed of the largest glaciers per period, with one-sigma error bars.

    Parameters
    ----------
    stats : pandas.DataFrame
        From :func:`glacierflow.glaciers.glacier_statistics`.
    max_glaciers : int
        Draw at most this many glaciers, the largest by area.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if stats.empty:
        raise InputError("no glacier statistics to draw")
    fig = Figure(figsize=(QUICKLOOK_WIDTH_IN, 4.6), dpi=QUICKLOOK_DPI, layout="constrained")
    ax = fig.add_subplot()
    areas = stats.groupby("glacier_id")["area_km2"].first().sort_values(ascending=False)
    for i, gid in enumerate(areas.index[:max_glaciers]):
        grp = stats[stats["glacier_id"] == gid].sort_values("year")
        name = str(grp["name"].iloc[0] or "")
        label = f"{name} ({gid})" if name else str(gid)
        ax.errorbar(
            grp["year"],
            grp["v_mean"],
            yerr=grp["v_mean_error"],
            marker="o",
            markersize=4,
            capsize=3,
            linewidth=1.2,
            color=YEAR_COLOURS[i % len(YEAR_COLOURS)],
            label=label,
        )
    ax.set_xlabel("year (period)")
    ax.set_ylabel("mean speed over the glacier (m/yr)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.grid(True, color="0.9", linewidth=0.6)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        title or "Mean glacier speed per period (error bars: ±1σ)", fontsize=11, loc="left"
    )
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Save a figure as PNG at :data:`QUICKLOOK_DPI`, atomically."""
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=QUICKLOOK_DPI)
    return path


def _arrows(ax, x, y, u, v, scale: float, edge_width: float):
    """White flow arrows with a black edge, ``scale`` (m/yr) per map metre of arrow."""
    return ax.quiver(
        x,
        y,
        u,
        v,
        angles="xy",
        scale_units="xy",
        scale=scale,
        color="white",
        edgecolor="black",
        linewidth=edge_width,
        width=0.0022,
        headwidth=3.5,
        headlength=3.5,
        headaxislength=3.2,
        minlength=0.5,
        zorder=3,
    )


def _speed_colourbar(fig, ax, norm) -> None:
    """Opaque speed colour bar in m/yr (its own mappable: a layer's transparency would wash
    it out)."""
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
