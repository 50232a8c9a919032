"""Composing: annual maps, the cube, glacier statistics, figures and the report."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from glacierflow import __version__
from glacierflow.project.config import Project
from glacierflow.project.plan import PairPlan

#: The time-series cube of all periods.
CUBE_NAME = "velocity_cube.nc"
#: Layers of the annual GeoTIFFs, in band order (the portal reads them by these names).
ANNUAL_BANDS = ("vx", "vy", "v", "v_error", "vx_error", "vy_error", "count")
#: At most this many profile figures are drawn (all profiles are in profiles.csv).
MAX_PROFILE_FIGURES = 20

# --------------------------------------------------------------------------------------------
# Composites, analysis, figures, report
# --------------------------------------------------------------------------------------------


@dataclass
class ProjectResult:
    """What :func:`run_project` did and wrote."""

    project: Project
    pairs: list[PairPlan]
    pair_dirs: dict[str, Path]
    processed: list[str]
    skipped: list[str]
    composites: list[xr.Dataset] = field(default_factory=list)
    annual_paths: dict[int, Path] = field(default_factory=dict)
    cube_path: Path | None = None
    glacier_stats: Any = None
    trends: Any = None
    profiles: Any = None
    surges: Any = None
    series: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    report_path: Path | None = None


def _periods(project: Project):
    from glacierflow.stack import Period

    if project.periods is None:
        return None
    return [Period(y, s, e) for y, s, e in project.periods]


def compose_products(
    project: Project,
    pair_dirs: dict[str, Path],
    *,
    report: bool = True,
    echo: Callable[[str], None] | None = None,
) -> ProjectResult:
    """Annual composites, cube, glacier analysis, figures and report from finished pairs.

    Reads every pair's ``velocity.tif``; writes (atomically) everything listed in the package
    docstring except the pair folders. Returns a :class:`ProjectResult` with ``processed`` and
    ``skipped`` empty (filled by :func:`run_project`).
    """
    from glacierflow import plot
    from glacierflow.outlines import glacier_table, read_outlines
    from glacierflow.products import read_product
    from glacierflow.stack import annual_composites

    say = echo or (lambda _msg: None)
    out = project.output
    out.mkdir(parents=True, exist_ok=True)
    grid = project.grid()
    products = {pid: read_product(folder / "velocity.tif") for pid, folder in pair_dirs.items()}
    composites = annual_composites(list(products.values()), grid, _periods(project), project.assign)
    result = ProjectResult(project, [], dict(pair_dirs), [], [], composites=composites)
    if not composites:
        raise project.error(
            "no pair falls in any composite period; check [composites] periods", "composites"
        )

    glaciers = None
    if project.glaciers is not None:
        outlines = read_outlines(project.glaciers, grid.crs_wkt)
        glaciers = glacier_table(
            outlines,
            id_field=project.id_field,
            name_field=project.name_field,
            source=project.glaciers,
        )
    _write_annual(project, result, glaciers, say)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    for before, after in zip(composites[:-1], composites[1:], strict=True):
        ya, yb = before.attrs["year"], after.attrs["year"]
        result.files[f"change_{ya}_{yb}"] = plot.save_figure(
            plot.change_map_figure(before, after, outlines=glaciers),
            figures / f"change_{ya}_{yb}.png",
        )
    if glaciers is not None:
        _glacier_analysis(project, result, glaciers, say)
    _profiles(project, result, grid.crs_wkt)
    if project.timeseries is not None:
        _timeseries(project, result, products, say)
    if report:
        _write_report(project, result, products)
    return result


def _write_annual(
    project: Project, result: ProjectResult, glaciers: Any, say: Callable[[str], None]
) -> None:
    """One COG and one speed map per period, then the cube of all periods."""
    from glacierflow import plot
    from glacierflow.products import write_cog, write_netcdf_cube
    from glacierflow.stack import cube_dataset

    out = project.output
    composites = result.composites
    vmax = plot.speed_scale(composites)
    for comp in composites:
        year = int(comp.attrs["year"])
        comp.attrs["project"] = project.name
        comp.attrs["glacierflow_version"] = __version__
        tif = write_cog(comp, out / f"v_{year}.tif", variables=list(ANNUAL_BANDS))
        result.annual_paths[year] = tif
        plot.save_figure(
            plot.annual_map_figure(comp, vmax=vmax, outlines=glaciers, title=composite_title(comp)),
            out / f"v_{year}.png",
        )
        say(
            f"  v_{year}.tif: {comp.attrs['pair_count']} pair(s), "
            f"{int((comp['count'].values > 0).sum())} cells with data, "
            f"{data_span_text(comp.attrs)}"
        )
    cube = cube_dataset(composites)
    result.cube_path = write_netcdf_cube(cube, out / CUBE_NAME)


def data_span_text(attrs: dict[str, Any]) -> str:
    """What a composite's data cover, as people read it: ``"data 2016-07-18 to 2016-08-03,
    16 of 366 days"`` (the period's dates when the attributes say nothing of the data)."""
    first, last = attrs.get("data_start_datetime"), attrs.get("data_end_datetime")
    if not first or not last:
        start, end = attrs.get("start_datetime", ""), attrs.get("end_datetime", "")
        return f"{str(start)[:10]} to {str(end)[:10]}"
    return f"data {str(first)[:10]} to {str(last)[:10]}, {attrs.get('coverage_text', '')}"


def composite_title(comp: xr.Dataset, place: str = "") -> str:
    """Title of a period's map: the data's span and the days of the period it covers (``"2016
    speed, data 2016-07-18 → 2016-08-03 (16 of 366 days covered)"``), the pairs."""
    a = comp.attrs
    pairs = int(a.get("pair_count", 0))
    span = data_span_text(a).replace(" to ", " → ", 1).replace(", ", " (", 1)
    if "(" in span:
        span += " covered)"
    return (
        f"{place + ': ' if place else ''}{a.get('year', '')} speed, {span}\n"
        f"{pairs} pair{'s' if pairs != 1 else ''}"
    )


def _timeseries(
    project: Project, result: ProjectResult, products: dict[str, Any], say: Callable[[str], None]
) -> None:
    """``[timeseries]``: the pairs (and ITS_LIVE inputs) inverted; cubes, point CSV/figures."""
    from glacierflow.timeseries.workflow import run_series

    assert project.timeseries is not None
    inputs = [*products.values(), *project.timeseries_inputs]
    series = run_series(
        inputs,
        project.output / "timeseries",
        project.timeseries,
        grid=project.grid(),
        centrelines=project.centrelines,
        centreline_where=project.centreline_where,
        spacing_m=project.analysis["profile_spacing_m"],
        echo=say,
    )
    result.series = series
    for key, path in series.files.items():
        result.files[f"timeseries_{key}"] = path
    for i, point in enumerate(series.points, start=1):
        result.files[f"series_point_{i}"] = point.files["png"]
        result.files[f"series_point_{i}_csv"] = point.files["csv"]


def _glacier_analysis(
    project: Project, result: ProjectResult, glaciers: Any, say: Callable[[str], None]
) -> None:
    """Per-glacier statistics, trends and candidate surges: tables, GeoPackage, figure."""
    from glacierflow import plot
    from glacierflow.glaciers import glacier_statistics, speed_trends
    from glacierflow.products import write_gpkg, write_table
    from glacierflow.surges import detect_surges

    gdir = project.output / "glaciers"
    gdir.mkdir(exist_ok=True)
    composites = result.composites
    stats = glacier_statistics(composites, glaciers)
    trends = speed_trends(stats)
    a = project.analysis
    surges = detect_surges(
        composites,
        glaciers,
        factor=a["surge_factor"],
        min_area_km2=a["surge_min_area_km2"],
        min_speed_m_per_yr=a["surge_min_speed_m_per_yr"],
        n_sigma=a["surge_n_sigma"],
    )
    result.glacier_stats, result.trends, result.surges = stats, trends, surges
    result.files["glacier_statistics"] = write_table(stats, gdir / "glacier_statistics.csv")
    result.files["glacier_trends"] = write_table(trends, gdir / "glacier_trends.csv")
    result.files["surges"] = write_table(surges, gdir / "surges.csv")
    result.files["glaciers_gpkg"] = write_gpkg(
        _glaciers_wide(glaciers, stats, trends, surges), gdir / "glaciers.gpkg"
    )
    if not stats.empty and np.isfinite(stats["v_mean"]).any():
        result.files["glacier_series"] = plot.save_figure(
            plot.glacier_series_figure(stats), project.output / "figures" / "glacier_speeds.png"
        )
    for _, row in surges.iterrows():
        say(
            f"  candidate surge: {row['name'] or row['glacier_id']} {row['year_from']} -> "
            f"{row['year_to']}: x{row['ratio_median']:.1f} over {row['reach_area_km2']:.1f} km2"
        )


def _glaciers_wide(glaciers: Any, stats: Any, trends: Any, surges: Any) -> Any:
    """The outlines with one column per statistic and year, the trends and a surge flag."""
    wide = glaciers.copy()
    for year, grp in stats.groupby("year"):
        g = grp.set_index("glacier_id")
        for col in ("v_mean", "v_mean_error", "v_median", "v_max", "valid_fraction"):
            wide[f"{col}_{year}"] = wide["glacier_id"].map(g[col]).to_numpy()
    t = trends.set_index("glacier_id")
    for col in ("trend", "trend_error", "trend_percent_per_yr"):
        wide[col] = wide["glacier_id"].map(t[col]).to_numpy()
    wide["surge_candidate"] = wide["glacier_id"].isin(set(surges["glacier_id"])).astype(int)
    return wide


def _profiles(project: Project, result: ProjectResult, crs_wkt: str) -> None:
    """Speed profiles along the centrelines and the transects: a table and a few figures."""
    from glacierflow import plot
    from glacierflow.glaciers import sample_profiles
    from glacierflow.outlines import read_lines
    from glacierflow.products import write_table

    lines_frames = []
    if project.centrelines is not None:
        lines_frames.append(
            (read_lines(project.centrelines, crs_wkt, where=project.centreline_where), False)
        )
    if project.transects:
        lines_frames.append((_transect_lines(project, crs_wkt), True))
    figures = project.output / "figures"
    profile_frames = []
    drawn = 0
    for lines, across in lines_frames:
        prof = sample_profiles(result.composites, lines, project.analysis["profile_spacing_m"])
        if prof.empty:
            continue
        prof["kind"] = "transect" if across else "centreline"
        profile_frames.append(prof)
        for line_id, grp in prof.groupby("line_id", sort=False):
            if drawn >= MAX_PROFILE_FIGURES or not np.isfinite(grp["v"]).any():
                continue
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(line_id))
            result.files[f"profile_{safe}"] = plot.save_figure(
                plot.profile_figure(grp, across=across), figures / f"profile_{safe}.png"
            )
            drawn += 1
    if profile_frames:
        import pandas as pd

        result.profiles = pd.concat(profile_frames, ignore_index=True)
        gdir = project.output / "glaciers"
        gdir.mkdir(exist_ok=True)
        result.files["profiles"] = write_table(result.profiles, gdir / "profiles.csv")


def _write_report(project: Project, result: ProjectResult, products: dict[str, Any]) -> None:
    """``report.html``: every figure, table and the settings on one page."""
    from glacierflow.atomic import atomic_write
    from glacierflow.report import render_report

    out = project.output
    grid = project.grid()
    images = {f"map_{y}": (out / f"v_{y}.png").read_bytes() for y in result.annual_paths}
    images.update({k: v.read_bytes() for k, v in result.files.items() if v.suffix == ".png"})
    x0, y0, x1, y1 = grid.bounds
    grid_text = (
        f"{project.grid_crs}, {grid.resolution_m:g} m cells, {grid.shape[1]} x "
        f"{grid.shape[0]}, x {x0:.0f} to {x1:.0f} m, y {y0:.0f} to {y1:.0f} m"
    )
    html = render_report(
        project_name=project.name,
        settings_text=project.text,
        pairs=products,
        composites=result.composites,
        images=images,
        stats=result.glacier_stats,
        trends=result.trends,
        surges=result.surges,
        grid_text=grid_text,
    )
    result.report_path = out / "report.html"
    with atomic_write(result.report_path) as tmp:
        tmp.write_text(html, encoding="utf-8")


def _transect_lines(project: Project, crs_wkt: str):
    import geopandas as gpd
    from pyproj import Transformer
    from shapely.geometry import LineString

    to_grid = Transformer.from_crs("EPSG:4326", crs_wkt, always_xy=True)
    geoms = []
    for t in project.transects:
        pts = [to_grid.transform(x, y) if t.lonlat else (x, y) for x, y in t.points]
        geoms.append(LineString(pts))
    return gpd.GeoDataFrame(
        {
            "line_id": [re.sub(r"\s+", "_", t.name) for t in project.transects],
            "name": [t.name for t in project.transects],
        },
        geometry=geoms,
        crs=crs_wkt,
    )
