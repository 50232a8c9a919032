"""From pair products on disk to cubes, point series, CSV and figures on disk.

:func:`load_inputs` reads what ``glacierflow timeseries`` is given: a project output folder
(its ``pairs/*/velocity.tif``), pair product folders or files (``velocity.tif``/``.nc``),
ITS_LIVE image-pair granules (``.nc``) and local Zarr cubes in ITS_LIVE's layout.
:func:`run_series` puts them on one grid, inverts every pixel
(:func:`glacierflow.timeseries.network.invert_cube`) and writes::

    pairs_cube.zarr, pairs_cube.nc          the pairs, ITS_LIVE cube layout
    velocity_series.zarr, velocity_series.nc   the inverted steps, ITS_LIVE cube layout
    points/point_N.csv                     steps at point N: start, end, v, v_error, coverage
    points/point_N_pairs.csv               the pairs at point N
    points/point_N.png                     pairs as bars over their spans, the series on top
    lines/<line_id>.csv                    the series along a centreline: distance_m, time,
                                           start, end, v, v_error, coverage_days, ...
    lines/<line_id>.png                    speed by distance (y) and time (x), the maps' scale

Files are written through :mod:`glacierflow.products` (atomic) and
:mod:`glacierflow.timeseries.figure`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from glacierflow.errors import InputError
from glacierflow.products import remove_stale_staging
from glacierflow.stack import Grid
from glacierflow.timeseries.cube import pairs_cube, series_cube
from glacierflow.timeseries.settings import SeriesSettings

__all__ = ["PointSeries", "SeriesResult", "load_inputs", "run_series", "series_text"]

PAIRS_CUBE = "pairs_cube"
#: Distance-time figures drawn at most (one per line; every line gets its CSV).
MAX_LINE_FIGURES = 20
SERIES_CUBE = "velocity_series"
_SUFFIX = {"zarr": ".zarr", "netcdf": ".nc"}


@dataclass
class PointSeries:
    """The series at one point: its pairs and steps (see :func:`network.series_at`)."""

    lon: float
    lat: float
    pairs: pd.DataFrame
    steps: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class SeriesResult:
    """What :func:`run_series` computed and wrote."""

    pairs: xr.Dataset
    series: xr.Dataset
    points: list[PointSeries] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    lines: pd.DataFrame | None = None


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and (
        path.suffix == ".zarr"
        or any((path / m).exists() for m in (".zgroup", ".zmetadata", "zarr.json"))
    )


def _pair_file(folder: Path) -> Path | None:
    for name in ("velocity.tif", "velocity.nc"):
        if (folder / name).is_file():
            return folder / name
    return None


_NOT_PAIRS = (
    "not a glacierflow pair product (velocity.tif/.nc) or cube (pairs_cube, velocity_series), "
    "nor an ITS_LIVE granule or cube"
)


def _netcdf(path: Path) -> tuple[str, xr.Dataset | None]:
    """What a ``.nc`` file holds: ``("product", ds)`` for a glacierflow pair product (it has
    ``dx``), ``("cube", None)`` for a cube (``mid_date`` layers: glacierflow's own or ITS_LIVE's),
    ``("granule", ds)`` for an ITS_LIVE granule (``img_pair_info``)."""
    from glacierflow.timeseries.itslive import read_itslive_granule

    try:
        with xr.open_dataset(path, engine="h5netcdf", decode_times=False) as ds:
            names = set(ds.variables)
            layered = "mid_date" in ds.dims
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read as NetCDF ({exc}); {_NOT_PAIRS}", path) from exc
    if "dx" in names:
        return "product", _pair_product(path)
    if layered and "acquisition_date_img1" in names:
        return "cube", None
    if "img_pair_info" in names:
        return "granule", read_itslive_granule(path)
    raise InputError(_NOT_PAIRS, path)


def _pair_product(path: Path) -> xr.Dataset:
    """A glacierflow pair product, refused (naming ``path``) when it is none (a scene)."""
    from glacierflow.products import read_product

    ds = read_product(path)
    lacks = [k for k in ("vx", "vy", "v_error") if k not in ds.variables]
    lacks += [k for k in ("ref_time", "sec_time", "crs_wkt", "transform") if k not in ds.attrs]
    if lacks:
        raise InputError(f"{_NOT_PAIRS} (it has no {', '.join(map(repr, lacks))})", path)
    return ds


def load_inputs(
    paths: Sequence[str | os.PathLike[str]], grid: Grid | None = None
) -> tuple[list[xr.Dataset], Grid | None]:
    """Read pair products, granules and cubes from ``paths``.

    Parameters
    ----------
    paths : sequence of path
        Project output folders (with ``pairs/``), pair product folders or files, ITS_LIVE
        granules (``.nc``) and Zarr cubes (folders).
    grid : Grid, optional
        The grid to subset Zarr cubes to; default: the grid of a project folder's
        ``velocity_cube.nc``, if any.

    Returns
    -------
    items : list of xarray.Dataset
        Pair products (flat attributes) and cubes (cube convention).
    grid : Grid or None
        ``grid``, or the project's grid found.

    Raises
    ------
    InputError
        For a path that is missing or none of the above.
    """
    from glacierflow.timeseries.itslive import read_itslive_cube

    items: list[xr.Dataset] = []
    zarrs: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise InputError("no such file or folder", path)
        if _is_zarr(path):
            zarrs.append(path)
        elif path.is_dir() and (path / "pairs").is_dir():
            found = [f for d in sorted((path / "pairs").iterdir()) if (f := _pair_file(d))]
            if not found:
                raise InputError("a project folder without pair products under pairs/", path)
            items.extend(_pair_product(f) for f in found)
            if grid is None and (path / "velocity_cube.nc").is_file():
                grid = _cube_grid(path / "velocity_cube.nc")
        elif path.is_dir():
            found_one = _pair_file(path)
            if found_one is None:
                raise InputError(
                    "not a project output folder (no pairs/), a pair folder (no velocity.tif) "
                    "or a Zarr cube",
                    path,
                )
            items.append(_pair_product(found_one))
        elif path.suffix.lower() in (".tif", ".tiff"):
            items.append(_pair_product(path))
        elif path.suffix.lower() in (".nc", ".nc4"):
            kind, ds = _netcdf(path)
            if ds is None:
                zarrs.append(path)  # a cube: read lazily, subset to the grid, like a Zarr one
            else:
                items.append(ds)
        else:
            raise InputError(
                f"{_NOT_PAIRS}: expected a .tif or .nc product, a .nc granule or cube, or a "
                "Zarr cube",
                path,
            )
    for path in zarrs:
        items.append(read_itslive_cube(path, bbox=_bbox_in(path, grid) if grid else None))
    return items, grid


def _cube_grid(path: Path) -> Grid:
    from affine import Affine

    with xr.open_dataset(path, engine="h5netcdf", decode_times=False) as ds:
        gt = [float(v) for v in str(ds.attrs["GeoTransform"]).split()]
        return Grid(str(ds.attrs["crs_wkt"]), Affine.from_gdal(*gt), (ds.sizes["y"], ds.sizes["x"]))


def _bbox_in(path: Path, grid: Grid) -> tuple[float, float, float, float]:
    """The grid's bounds in the CRS of the Zarr cube at ``path``."""
    from rasterio.warp import transform_bounds

    from glacierflow.timeseries.itslive import read_itslive_cube

    crs = read_itslive_cube(path).attrs["crs_wkt"]
    return tuple(transform_bounds(grid.crs_wkt, crs, *grid.bounds, densify_pts=21))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _date(value: Any) -> str:
    return "" if pd.isna(value) else f"{pd.Timestamp(value):%Y-%m-%d}"


def series_text(point: PointSeries) -> str:
    """The series at a point as a few lines of text (what the command prints)."""
    steps = point.steps
    lines = [
        f"point {point.lon:.5f}, {point.lat:.5f}: {len(point.pairs)} pair(s) with data, "
        f"{int(np.isfinite(steps['v']).sum())} of {len(steps)} step(s) resolved"
    ]
    for _, s in steps.iterrows():
        value = (
            f"{s['v']:8.1f} ± {s['v_error']:.1f} m/yr"
            if np.isfinite(s["v"])
            else "     gap (not resolved)"
        )
        cover = (
            f"data {_date(s['first_date'])} to {_date(s['last_date'])}, "
            f"{s['coverage_days']:.0f} d, {int(s['pair_count'])} pair(s)"
            if s["coverage_days"] > 0
            else "no data"
        )
        lines.append(f"  {_date(s['start'])} to {_date(s['end'])}: {value}  ({cover})")
    return "\n".join(lines)


def _lonlat_box(cube: xr.Dataset) -> str:
    from rasterio.warp import transform_bounds

    x, y = cube["x"].values, cube["y"].values
    w, s, e, n = transform_bounds(
        cube.attrs["crs_wkt"], "EPSG:4326", x.min(), y.min(), x.max(), y.max(), densify_pts=21
    )
    return f"longitude {w:.4f} to {e:.4f}, latitude {s:.4f} to {n:.4f}"


def _point_title(point: PointSeries) -> str:
    p = point.pairs
    span = (
        f"data {_date(p['date1'].min())} to {_date(p['date2'].max())}, {len(p)} pair(s)"
        if len(p)
        else "no pair has data here"
    )
    return f"{point.lon:.4f}, {point.lat:.4f}: {span}"


def _write_point(point: PointSeries, folder: Path, name: str) -> None:
    from glacierflow.atomic import atomic_write
    from glacierflow.timeseries.figure import series_figure, write_series_csv

    folder.mkdir(parents=True, exist_ok=True)
    point.files["csv"] = write_series_csv(folder / f"{name}.csv", point.steps)
    point.files["pairs_csv"] = write_series_csv(folder / f"{name}_pairs.csv", point.pairs)
    fig = series_figure(point.pairs, point.steps, title=_point_title(point))
    point.files["png"] = folder / f"{name}.png"
    with atomic_write(point.files["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=110, pil_kwargs={"compress_level": 2})


def spill_store(out: Path, pid: int | None = None) -> Path:
    """Where a lazily read cube's series is spilled while the cubes are written: a hidden
    temporary of process ``pid`` (default this one), named as
    :func:`glacierflow.products.remove_stale_staging` recognises, so that a run killed midway
    leaves nothing behind once the next run starts."""
    return out / f".{SERIES_CUBE}.tmp-{os.getpid() if pid is None else pid}-blocks.zarr"


def run_series(
    inputs: Sequence[xr.Dataset | str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    settings: SeriesSettings | None = None,
    *,
    grid: Grid | None = None,
    centrelines: str | os.PathLike[str] | None = None,
    centreline_where: dict[str, Any] | None = None,
    spacing_m: float | None = None,
    echo: Callable[[str], None] | None = None,
) -> SeriesResult:
    """Invert pairs into a velocity time series; write the cubes, point and line series.

    A cube read lazily (a Zarr cube) is inverted block by block (Dask) and the series is
    written chunk by chunk, so memory stays bounded by the blocks, not by the cube; pairs in
    memory (pair products, granules) are inverted in memory.

    Parameters
    ----------
    inputs : sequence of xarray.Dataset or path
        Pair products and cubes in memory, or paths (:func:`load_inputs`).
    out_dir : path
        Output folder (created); see the module docstring for what is written.
    settings : SeriesSettings, optional
        Steps, regularisation, points, formats.
    grid : Grid, optional
        The common grid; default a project folder's, else the first input's.
    centrelines : path, optional
        Centrelines (or any lines) whose series are written as CSV and distance-time figures
        (:func:`glacierflow.outlines.read_lines`).
    centreline_where : dict, optional
        Keep only lines whose attributes equal these values (``{"MAIN": 1}``).
    spacing_m : float, optional
        Distance between samples along a line, metres; default the cell size.
    echo : callable, optional
        Receives progress lines and the point series' text.

    Returns
    -------
    SeriesResult
        For a lazy run, ``series`` is the written cube opened lazily.

    Raises
    ------
    InputError
        When there is no pair, a path cannot be read or a point lies outside the grid.
    """
    from glacierflow.timeseries.network import combine_pairs, invert_cube

    settings = settings or SeriesSettings()
    say = echo or (lambda _msg: None)
    out = Path(out_dir)
    paths = [i for i in inputs if not isinstance(i, xr.Dataset)]
    items = [i for i in inputs if isinstance(i, xr.Dataset)]
    if paths:
        loaded, grid = load_inputs(paths, grid)
        items += loaded
    if not items:
        raise InputError("no pair to invert: give pair products, granules or a cube", out)
    items, dropped = unique_pairs(items)
    if dropped:
        say(
            f"time series: {dropped} duplicate pair(s) left out (same acquisition times, "
            "scenes or sensors, and grid as another input)"
        )
    try:
        cube = combine_pairs(items, grid)
    except ValueError as exc:
        raise InputError(f"the pairs cannot be combined: {exc}", out) from exc
    lazy = cube["vx"].chunks is not None
    cube = cube if lazy else cube.load()
    _check_points(cube, settings)
    edges = series_steps(cube, settings)
    say(
        f"time series: {cube.sizes['mid_date']} pair(s) on {cube.sizes['y']} x {cube.sizes['x']}"
        + (", inverted block by block" if lazy else "")
    )
    series = invert_cube(cube, edges, settings.inversion())
    series.attrs["freq"] = str(settings.freq)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)  # spill stores and temporaries of runs that were killed
    spill = spill_store(out)
    try:
        series = _spilled(series, spill) if lazy else series.compute()
        result = SeriesResult(pairs=pairs_cube(cube), series=series_cube(series, cube))
        _write_cubes(result, out, settings, lazy)
        _points(result, cube, settings, out, say)
        if centrelines is not None:
            _lines(result, centrelines, centreline_where, spacing_m, out, say)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    if lazy:
        fmt = "zarr" if "zarr" in settings.formats else "netcdf"
        result.series = xr.open_dataset(
            result.files[f"{SERIES_CUBE}_{fmt}"],
            engine="zarr" if fmt == "zarr" else "h5netcdf",
            chunks={},
        )
    return result


def _grid_key(ds: xr.Dataset) -> tuple[Any, ...]:
    """The grid of ``ds`` comparable across formats (the same CRS written as WKT1 or WKT2)."""
    from pyproj import CRS

    wkt = str(ds.attrs.get("crs_wkt", ""))
    try:
        crs = CRS.from_user_input(wkt)
        crs_key: Any = crs.to_epsg() or crs.to_wkt()
    except Exception:  # pyproj raises CRSError and others for bad text: compare the text
        crs_key = wkt
    t = ds.attrs.get("transform", ())
    t = t.strip("[]").split(",") if isinstance(t, str) else t
    return (crs_key, tuple(round(float(v), 6) for v in t), ds.sizes.get("y"), ds.sizes.get("x"))


def _pair_keys(ds: xr.Dataset) -> list[tuple[Any, ...]]:
    """Per pair of ``ds`` (a pair product, or each layer of a cube): acquisition times, scene
    ids (else sensors) and grid, what makes two inputs the same pair."""
    grid = _grid_key(ds)
    if "mid_date" not in ds.dims:
        a = ds.attrs
        who = tuple(str(a.get(f"{k}_scene_id") or a.get(f"{k}_sensor", "")) for k in ("ref", "sec"))
        times = tuple(str(pd.Timestamp(a.get(k))) for k in ("ref_time", "sec_time"))
        return [(*times, *who, *grid)]
    t1 = ds["acquisition_date_img1"].values.astype("datetime64[s]")
    t2 = ds["acquisition_date_img2"].values.astype("datetime64[s]")
    sats = [
        [str(v) for v in ds[n].values] if n in ds.variables else [""] * t1.size
        for n in ("satellite_img1", "satellite_img2")
    ]
    return [(str(a), str(b), s1, s2, *grid) for a, b, s1, s2 in zip(t1, t2, *sats, strict=True)]


def unique_pairs(items: Sequence[xr.Dataset]) -> tuple[list[xr.Dataset], int]:
    """``items`` without pairs given twice (the same pair as ``velocity.tif`` and
    ``velocity.nc``, a cube and its own pairs): the first of each is kept.

    Two pairs are the same when their acquisition times, scene ids (sensors where no scene id
    is known) and grid (CRS, transform, shape) are. Returns the items and the count left out.
    """
    seen: set[tuple[Any, ...]] = set()
    kept: list[xr.Dataset] = []
    dropped = 0
    for ds in items:
        keys = _pair_keys(ds)
        new = [i for i, k in enumerate(keys) if k not in seen and not seen.add(k)]
        dropped += len(keys) - len(new)
        if len(new) == len(keys):
            kept.append(ds)
        elif new:  # a cube some of whose layers were given before
            kept.append(ds.isel(mid_date=new))
    return kept, dropped


def _check_points(cube: xr.Dataset, settings: SeriesSettings) -> None:
    """Refuse, before inverting, a point of ``settings.points`` off the combined grid."""
    from pyproj import Transformer

    if not settings.points:
        return
    to_map = Transformer.from_crs("EPSG:4326", cube.attrs["crs_wkt"], always_xy=True)
    xs, ys = cube["x"].values, cube["y"].values
    half_x = abs(float(xs[1] - xs[0])) / 2 if xs.size > 1 else 0.0
    half_y = abs(float(ys[1] - ys[0])) / 2 if ys.size > 1 else 0.0
    for i, (lon, lat) in enumerate(settings.points, start=1):
        x, y = to_map.transform(lon, lat)
        inside = xs.min() - half_x <= x <= xs.max() + half_x
        if not (inside and ys.min() - half_y <= y <= ys.max() + half_y):
            raise InputError(
                f"point {i} ({lon}, {lat}) lies outside the grid; the grid covers "
                f"{_lonlat_box(cube)}"
            )


def series_steps(cube: xr.Dataset, settings: SeriesSettings) -> np.ndarray:
    """The step edges of the series of ``cube``: ``settings.freq`` over the data only, from the
    first to the last acquisition (:func:`~glacierflow.timeseries.inversion.data_steps`).

    Raises
    ------
    SettingsError
        (key ``freq``) when the steps, or the monthly base the inversion refines them to, are
        more than :data:`~glacierflow.timeseries.inversion.MAX_STEPS`: the normal matrices
        would not fit in memory (their size grows with the square of the steps).
    """
    from glacierflow.errors import SettingsError
    from glacierflow.timeseries.inversion import MAX_STEPS, data_steps, step_count

    t1 = cube["acquisition_date_img1"].values.astype("datetime64[s]")
    t2 = cube["acquisition_date_img2"].values.astype("datetime64[s]")
    edges = data_steps(t1.min(), t2.max(), settings.freq)
    steps, base = step_count(edges)
    if max(steps, base) > MAX_STEPS:
        raise SettingsError(
            "freq",
            f"{settings.freq!r} gives {steps} step(s) ({base} monthly base step(s)) over the "
            f"data {_date(t1.min())} to {_date(t2.max())}; at most {MAX_STEPS} fit in memory "
            "(the inversion's matrices grow with their square): choose longer steps or fewer "
            "years of pairs",
        )
    return edges


def _spilled(series: xr.Dataset, store: Path) -> xr.Dataset:
    """Compute a Dask-backed series block by block into a Zarr store; open it lazily.

    One pass of the inversion writes every variable (they share the blocks); what follows
    (the ITS_LIVE layout's per-step summaries, the cubes written, the line samples) reads the
    store chunk by chunk instead of recomputing the inversion.
    """
    series = series.copy()
    encoding = {
        name: {"units": "seconds since 1970-01-01", "dtype": "int64"}
        for name in ("first_date", "last_date", "time_bnds")
    }
    for var in series.variables.values():
        var.encoding = {}
    series.to_zarr(store, mode="w", encoding=encoding, consolidated=True, zarr_format=2)
    opened = xr.open_zarr(store, consolidated=True)
    opened["time_bnds"] = opened["time_bnds"].load()
    return opened


def _uniform_chunks(ds: xr.Dataset) -> xr.Dataset:
    """Regular Dask chunks (Zarr needs them), about 16 MB per float32 layer chunk."""
    chunks = {"mid_date": min(ds.sizes["mid_date"], 250), "y": 128, "x": 128}
    out = ds.chunk({k: min(v, ds.sizes[k]) for k, v in chunks.items()})
    for var in out.variables.values():
        var.encoding = {}
    return out


def _write_cubes(result: SeriesResult, out: Path, settings: SeriesSettings, lazy: bool) -> None:
    from glacierflow.products import write_itslive_netcdf_cube, write_zarr_cube

    if lazy:
        result.pairs = _uniform_chunks(result.pairs)
        result.series = _uniform_chunks(result.series)
    writers = {"zarr": write_zarr_cube, "netcdf": write_itslive_netcdf_cube}
    for fmt in settings.formats:
        for key, ds in ((PAIRS_CUBE, result.pairs), (SERIES_CUBE, result.series)):
            result.files[f"{key}_{fmt}"] = writers[fmt](ds, out / f"{key}{_SUFFIX[fmt]}")


def _points(
    result: SeriesResult,
    cube: xr.Dataset,
    settings: SeriesSettings,
    out: Path,
    say: Callable[[str], None],
) -> None:
    """The series at each of ``settings.points``: CSV, pairs CSV, figure, text."""
    from glacierflow.timeseries.network import series_at

    attrs = result.series.attrs
    steps = result.series.sizes["mid_date"]
    resolved = int(attrs.get("steps_resolved", 0))
    covered = int(attrs.get("steps_with_data", 0))
    say(
        f"  {SERIES_CUBE}: {steps} step(s) ({settings.freq}), {resolved} with a value at some "
        f"pixel, {covered - resolved} covered by pairs but unresolved everywhere, "
        f"{steps - covered} without data"
    )
    edges = result.series["acquisition_date_img1"].values.astype("datetime64[D]")
    edges = np.append(edges, result.series["acquisition_date_img2"].values[-1:].astype(edges.dtype))
    for i, (lon, lat) in enumerate(settings.points, start=1):
        try:
            pairs, steps_df = series_at(cube, lon, lat, edges, settings.inversion())
        except ValueError as exc:
            raise InputError(
                f"point {i} ({lon}, {lat}): {exc}; the grid covers {_lonlat_box(cube)}"
            ) from exc
        pairs["v_error"] = np.sqrt((pairs["vx_error"] ** 2 + pairs["vy_error"] ** 2) / 2)
        point = PointSeries(lon, lat, pairs, steps_df)
        _write_point(point, out / "points", f"point_{i}")
        result.points.append(point)
        say(series_text(point))


def _lines(
    result: SeriesResult,
    path: str | os.PathLike[str],
    where: dict[str, Any] | None,
    spacing_m: float | None,
    out: Path,
    say: Callable[[str], None],
) -> None:
    """The series along each line: ``lines/<id>.csv`` and a distance-time figure."""
    from glacierflow.atomic import atomic_write
    from glacierflow.outlines import read_lines
    from glacierflow.timeseries.figure import hovmoller_figure, write_series_csv
    from glacierflow.timeseries.profiles import sample_series_profiles

    lines = read_lines(path, result.series.attrs["crs_wkt"], where=where)
    try:
        table = sample_series_profiles(result.series, lines, spacing_m)
    except ValueError as exc:
        raise InputError(str(exc), Path(path)) from exc
    folder = out / "lines"
    drawn = 0
    for line_id, grp in table.groupby("line_id", sort=False):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(line_id))
        folder.mkdir(parents=True, exist_ok=True)
        result.files[f"line_{safe}_csv"] = write_series_csv(folder / f"{safe}.csv", grp)
        if drawn < MAX_LINE_FIGURES and np.isfinite(grp["v"]).any():
            name = str(grp["name"].iloc[0] or "")
            title = (
                f"{name + ' ' if name and name != 'nan' else ''}{line_id}: speed along the "
                f"line, {settings_text(result)}"
            )
            png = folder / f"{safe}.png"
            with atomic_write(png) as tmp:
                hovmoller_figure(grp, title).savefig(
                    tmp, format="png", dpi=110, pil_kwargs={"compress_level": 2}
                )
            result.files[f"line_{safe}_png"] = png
            drawn += 1
    result.lines = table
    say(
        f"  lines: {table['line_id'].nunique() if len(table) else 0} of {len(lines)} line(s) "
        f"on the grid, written to {folder}"
    )


def settings_text(result: SeriesResult) -> str:
    """``"N steps, data YYYY-MM-DD to YYYY-MM-DD"`` for figure titles."""
    attrs = result.series.attrs
    span = ""
    if "data_start_datetime" in attrs:
        span = f", data {attrs['data_start_datetime'][:10]} to {attrs['data_end_datetime'][:10]}"
    return f"{result.series.sizes['mid_date']} steps{span}"
