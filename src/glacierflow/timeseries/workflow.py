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

Files are written through :mod:`glacierflow.products` (atomic) and
:mod:`glacierflow.timeseries.figure`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from glacierflow.errors import InputError
from glacierflow.stack import Grid
from glacierflow.timeseries.cube import pairs_cube, series_cube
from glacierflow.timeseries.settings import SeriesSettings

__all__ = ["PointSeries", "SeriesResult", "load_inputs", "run_series", "series_text"]

PAIRS_CUBE = "pairs_cube"
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


def _netcdf(path: Path) -> xr.Dataset:
    """A ``.nc`` file: a glacierflow pair product (it has ``dx``) or an ITS_LIVE granule."""
    from glacierflow.products import read_product
    from glacierflow.timeseries.itslive import read_itslive_granule

    try:
        with xr.open_dataset(path, engine="h5netcdf", decode_times=False) as ds:
            own = "dx" in ds.variables
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read as NetCDF ({exc})", path) from exc
    return read_product(path) if own else read_itslive_granule(path)


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
    from glacierflow.products import read_product
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
            items.extend(read_product(f) for f in found)
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
            items.append(read_product(found_one))
        elif path.suffix.lower() in (".tif", ".tiff"):
            items.append(read_product(path))
        elif path.suffix.lower() in (".nc", ".nc4"):
            items.append(_netcdf(path))
        else:
            raise InputError("expected a .tif or .nc product, a granule or a Zarr cube", path)
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


def run_series(
    inputs: Sequence[xr.Dataset | str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    settings: SeriesSettings | None = None,
    *,
    grid: Grid | None = None,
    echo: Callable[[str], None] | None = None,
) -> SeriesResult:
    """Invert pairs into a velocity time series; write the cubes and the point series.

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
    echo : callable, optional
        Receives progress lines and the point series' text.

    Returns
    -------
    SeriesResult

    Raises
    ------
    InputError
        When there is no pair, a path cannot be read or a point lies outside the grid.
    """
    from glacierflow.products import write_itslive_netcdf_cube, write_zarr_cube
    from glacierflow.timeseries.network import combine_pairs, invert_cube, series_at

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
    try:
        cube = combine_pairs(items, grid).load()
    except ValueError as exc:
        raise InputError(f"the pairs cannot be combined: {exc}", out) from exc
    say(f"time series: {cube.sizes['mid_date']} pair(s) on {cube.sizes['y']} x {cube.sizes['x']}")
    inversion = settings.inversion()
    series = invert_cube(cube, settings.freq, inversion).compute()
    result = SeriesResult(pairs=pairs_cube(cube), series=series_cube(series, cube))
    out.mkdir(parents=True, exist_ok=True)
    writers = {"zarr": write_zarr_cube, "netcdf": write_itslive_netcdf_cube}
    for fmt in settings.formats:
        for key, ds in ((PAIRS_CUBE, result.pairs), (SERIES_CUBE, result.series)):
            result.files[f"{key}_{fmt}"] = writers[fmt](ds, out / f"{key}{_SUFFIX[fmt]}")
    steps = result.series.sizes["mid_date"]
    say(
        f"  {SERIES_CUBE}: {steps} step(s) ({settings.freq}), "
        f"{result.series.attrs.get('steps_with_data', 0)} with data"
    )
    for i, (lon, lat) in enumerate(settings.points, start=1):
        try:
            pairs, steps_df = series_at(cube, lon, lat, settings.freq, inversion)
        except ValueError as exc:
            raise InputError(
                f"point {i} ({lon}, {lat}): {exc}; the grid covers {_lonlat_box(cube)}"
            ) from exc
        pairs["v_error"] = np.sqrt((pairs["vx_error"] ** 2 + pairs["vy_error"] ** 2) / 2)
        point = PointSeries(lon, lat, pairs, steps_df)
        _write_point(point, out / "points", f"point_{i}")
        result.points.append(point)
        say(series_text(point))
    return result
