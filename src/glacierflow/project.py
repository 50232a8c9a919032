"""A project: many scenes, many pairs (resumable), annual composites and glacier analysis.

A project file (TOML) names the scenes, how to pair them, the common output grid, the matching
and filtering settings, the glacier outlines and the output folder;
:func:`run_project` processes every pair and then composes the annual products. See
``examples/karakoram_1999_2003.toml`` for a commented example and the README ("Projects and
annual maps") for the schema.

What lands in the output folder::

    pairs/YYYYMMDD_YYYYMMDD/   one folder per pair: velocity.tif, velocity.nc, quicklook.png,
                               summary.json (glacierflow.products.write_products) and done.json
    v_YYYY.tif, v_YYYY.png     one Cloud-Optimized GeoTIFF per period (bands vx, vy, v,
                               v_error, count) and its speed map
    velocity_cube.nc           all periods in one CF-1.8 NetCDF cube with a time axis
    glaciers/                  per-glacier statistics (CSV and GeoPackage), trends, profiles,
                               candidate surges (with outlines)
    figures/                   change maps, profiles, glacier time series
    report.html                one self-contained page: maps, tables, errors, settings

Resuming: a pair is complete when its ``done.json`` exists, names the same inputs and settings
(a fingerprint) and all four products are there. ``done.json`` is written last, after the four
products were renamed into place (they are written as one set), so a run killed at any moment
leaves every pair either complete or redone on the next run. Composites, tables, figures and
the report are recomputed from the pair products on every run; each file is written atomically.

Pairs run one after another, several at a time on local worker processes, or one task each on a
``dask.distributed`` cluster (:func:`run_project`); their products do not depend on which.

This module is orchestration: it reads the project file and scene headers and writes the
products through :mod:`glacierflow.products`; the computations live in :mod:`glacierflow.track`,
:mod:`glacierflow.stack`, :mod:`glacierflow.glaciers` and :mod:`glacierflow.plot`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from glacierflow import __version__
from glacierflow.errors import GlacierflowError, InputError
from glacierflow.track import ProgressSink

log = logging.getLogger("glacierflow")

__all__ = [
    "PairPlan",
    "Project",
    "ProjectResult",
    "SceneInfo",
    "compose_products",
    "find_scenes",
    "load_project",
    "plan_pairs",
    "run_project",
]

#: Name of the marker written last into a pair's folder when its products are complete.
DONE_NAME = "done.json"
#: The time-series cube of all periods.
CUBE_NAME = "velocity_cube.nc"
#: Layers of the annual GeoTIFFs, in band order (the portal reads them by these names).
ANNUAL_BANDS = ("vx", "vy", "v", "v_error", "count")
#: Scene file patterns scanned in a folder when the project gives none.
DEFAULT_PATTERNS = ("*.tif", "*.TIF", "*.tiff", "*.TIFF")
#: At most this many profile figures are drawn (all profiles are in profiles.csv).
MAX_PROFILE_FIGURES = 20

# --------------------------------------------------------------------------------------------
# Schema of the project file: allowed keys per table
# --------------------------------------------------------------------------------------------

_SCHEMA: dict[str, tuple[str, ...]] = {
    "": (
        "name",
        "output",
        "scenes",
        "pairs",
        "grid",
        "matching",
        "filtering",
        "outlines",
        "composites",
        "analysis",
        "transects",
    ),
    "scenes": ("folder", "pattern", "paths", "list", "band", "path_row", "dates"),
    "pairs": ("explicit", "min_days", "max_days", "same_path_row"),
    "grid": ("crs", "resolution_m", "bounds_lonlat", "bounds"),
    "matching": ("chip_px", "search_px", "step_px", "subpixel", "workers", "concurrent_pairs"),
    "filtering": ("min_corr", "min_snr", "fill_holes", "coreg", "ice_buffer_m"),
    "outlines": (
        "glaciers",
        "stable_mask",
        "id_field",
        "name_field",
        "centrelines",
        "centreline_where",
    ),
    "composites": ("periods", "assign"),
    "composites.periods": ("year", "start", "end"),
    "analysis": (
        "surge_factor",
        "surge_min_area_km2",
        "surge_min_speed_m_per_yr",
        "surge_n_sigma",
        "profile_spacing_m",
    ),
    "transects": ("name", "lonlat", "xy"),
}
# Tables whose keys are free (file names, attribute names).
_FREE_TABLES = ("scenes.dates", "outlines.centreline_where")


# --------------------------------------------------------------------------------------------
# Where a key sits in the file: line numbers for error messages
# --------------------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')(\s*\.\s*[A-Za-z0-9_\-]+)*\s*=")


class _Lines:
    """Line numbers of tables and keys in a TOML text (1-based), found by a light scan.

    tomllib gives no positions; this scan knows headers (``[a.b]``, ``[[a]]``, the n-th
    ``[[a]]`` being ``a.n``) and ``key =`` lines, which is all the messages need.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.where: dict[str, int] = {}
        counts: dict[str, int] = {}
        table = ""
        for number, line in enumerate(self.lines, start=1):
            header = _HEADER.match(line)
            if header and not line.lstrip().startswith("#"):
                name = header.group(2).replace('"', "").replace(" ", "")
                if header.group(1) == "[[":
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    table = f"{name}.{index}"
                    self.where.setdefault(name, number)
                else:
                    table = name
                self.where.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key and not line.lstrip().startswith("#"):
                name = line.split("=", 1)[0].strip().replace('"', "").replace("'", "")
                name = re.sub(r"\s*\.\s*", ".", name)
                self.where.setdefault(f"{table}.{name}" if table else name, number)

    def line(self, dotted: str) -> int | None:
        """Line of ``dotted`` (``"grid.resolution_m"``, ``"composites.periods.1.start"``), or of
        the closest enclosing table that is in the file."""
        parts = dotted.split(".")
        while parts:
            found = self.where.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        return None

    def line_containing(self, after: int | None, *needles: str) -> int | None:
        """First line at or after ``after`` that contains every needle."""
        start = (after or 1) - 1
        for number, line in enumerate(self.lines[start:], start=start + 1):
            if all(n in line for n in needles):
                return number
        return None


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transect:
    """A user-given line across (or along) a glacier, in lon/lat or in grid map metres."""

    name: str
    points: tuple[tuple[float, float], ...]
    lonlat: bool


@dataclass(frozen=True)
class Project:
    """A parsed and checked project file. Paths are absolute.

    See the README section "Projects and annual maps" for every key; defaults are those of
    ``glacierflow track``.
    """

    path: Path
    text: str
    name: str
    output: Path
    scene_folder: Path | None
    scene_patterns: tuple[str, ...]
    scene_paths: tuple[Path, ...]
    scene_list: Path | None
    band: int | None
    path_row: str | None
    scene_dates: dict[str, datetime]
    explicit_pairs: tuple[tuple[str, str, int | None], ...]
    min_days: float
    max_days: float
    same_path_row: bool
    grid_crs: str
    resolution_m: float
    bounds: tuple[float, float, float, float]
    bounds_lonlat: bool
    matching: dict[str, Any]
    filtering: dict[str, Any]
    glaciers: Path | None
    stable_mask: Path | None
    id_field: str | None
    name_field: str | None
    centrelines: Path | None
    centreline_where: dict[str, Any]
    periods: tuple[tuple[int, datetime, datetime], ...] | None
    assign: str
    analysis: dict[str, float]
    transects: tuple[Transect, ...] = ()
    concurrent_pairs: int = 1
    _lines: _Lines | None = field(default=None, repr=False, compare=False)

    def line(self, dotted: str) -> int | None:
        """Line of a key in the project file, for messages."""
        return self._lines.line(dotted) if self._lines else None

    def error(self, problem: str, key: str | None = None, line: int | None = None) -> InputError:
        """An InputError naming the project file and the line of ``key``."""
        number = line if line is not None else (self.line(key) if key else None)
        where = f"line {number}: " if number else ""
        return InputError(f"{where}{problem}", self.path)

    def grid(self):
        """The common output grid (:class:`glacierflow.stack.Grid`)."""
        from glacierflow.stack import Grid

        return Grid.from_bounds(
            self.grid_crs,
            self.bounds,
            self.resolution_m,
            bounds_crs="EPSG:4326" if self.bounds_lonlat else None,
        )

    def track_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`glacierflow.track.track_pair` for every pair."""
        options: dict[str, Any] = {**self.matching, **self.filtering}
        if self.glaciers is not None:
            options["glacier_outlines"] = self.glaciers
        if self.stable_mask is not None:
            options["stable_mask"] = self.stable_mask
        return options


def _err(path: Path, lines: _Lines, key: str, problem: str) -> InputError:
    number = lines.line(key)
    return InputError(f"line {number}: {problem}" if number else problem, path)


def _check_keys(
    path: Path, lines: _Lines, table: dict, schema_key: str, where: str, label: str | None = None
) -> None:
    """Refuse keys of ``table`` that the schema does not know; ``where`` is the table's dotted
    path in the file (for the line), ``label`` how the message names it."""
    allowed = _SCHEMA[schema_key]
    for key in table:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        name = label or (f"[{where}]" if where else "the top level")
        raise _err(
            path,
            lines,
            f"{where}.{key}" if where else key,
            f"unknown key {key!r} in {name}{hint} Known keys: {', '.join(allowed)}",
        )


def _typed(path: Path, lines: _Lines, key: str, value: Any, kind: type | tuple, what: str) -> Any:
    if isinstance(value, bool) and kind is not bool and bool not in np.atleast_1d(kind):
        raise _err(path, lines, key, f"{key.split('.')[-1]} must be {what}, got {value!r}")
    if not isinstance(value, kind):
        raise _err(path, lines, key, f"{key.split('.')[-1]} must be {what}, got {value!r}")
    return value


def _number(path: Path, lines: _Lines, key: str, value: Any, *, positive: bool = False) -> float:
    _typed(path, lines, key, value, (int, float), "a number")
    if positive and not value > 0:
        raise _err(path, lines, key, f"{key.split('.')[-1]} must be positive, got {value!r}")
    return float(value)


def _date(path: Path, lines: _Lines, key: str, value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        from glacierflow.scenes import parse_datetime

        try:
            return parse_datetime(value)
        except InputError:
            pass
    raise _err(
        path, lines, key, f"{key.split('.')[-1]} must be a date such as 2001-07-21, got {value!r}"
    )


def _rel(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def load_project(path: str | PathLike[str]) -> Project:
    """Read and check a project file.

    Parameters
    ----------
    path : str or PathLike
        The TOML project file. Relative paths inside it are relative to its folder.

    Returns
    -------
    Project

    Raises
    ------
    InputError
        Naming the file and line: TOML syntax errors, unknown keys (with the closest known
        one), wrong types, missing required keys, impossible values (non-positive sizes or
        separations, ``max_days < min_days``, inverted bounds, periods that end before they
        start).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError("project file not found", path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", path) from None
    lines = _Lines(text)
    base = path.parent
    _check_keys(path, lines, data, "", "")
    for table in ("scenes", "pairs", "grid", "matching", "filtering", "outlines", "composites"):
        if table in data:
            _typed(path, lines, table, data[table], dict, f"a table [{table}]")
            _check_keys(path, lines, data[table], table, table)
    if "analysis" in data:
        _typed(path, lines, "analysis", data["analysis"], dict, "a table [analysis]")
        _check_keys(path, lines, data["analysis"], "analysis", "analysis")

    for required in ("scenes", "grid"):
        if required not in data:
            raise InputError(
                f"has no [{required}] table; see examples/karakoram_1999_2003.toml", path
            )

    # Output and name.
    name = str(_typed(path, lines, "name", data.get("name", path.stem), str, "a string"))
    output = _rel(base, _typed(path, lines, "output", data.get("output", path.stem), str, "a path"))

    # Scenes.
    sc = data["scenes"]
    folder = sc.get("folder")
    if folder is not None:
        folder = _rel(base, _typed(path, lines, "scenes.folder", folder, str, "a folder path"))
        if not folder.is_dir():
            raise _err(path, lines, "scenes.folder", f"scene folder {folder} does not exist")
    pattern = sc.get("pattern")
    if pattern is None:
        patterns = DEFAULT_PATTERNS
    elif isinstance(pattern, str):
        patterns = (pattern,)
    else:
        _typed(path, lines, "scenes.pattern", pattern, list, "a glob or a list of globs")
        patterns = tuple(str(p) for p in pattern)
    scene_paths: list[Path] = []
    for item in _typed(path, lines, "scenes.paths", sc.get("paths", []), list, "a list"):
        _typed(path, lines, "scenes.paths", item, str, "a list of file paths")
        p = _rel(base, item)
        if not p.is_file():
            number = lines.line_containing(lines.line("scenes.paths"), item)
            raise InputError(
                f"line {number or lines.line('scenes.paths')}: scene {item!r} not found "
                f"(looked for {p}); fix the path or remove it from scenes.paths",
                path,
            )
        scene_paths.append(p)
    scene_list = sc.get("list")
    if scene_list is not None:
        scene_list = _rel(base, _typed(path, lines, "scenes.list", scene_list, str, "a file path"))
        if not scene_list.is_file():
            raise _err(
                path,
                lines,
                "scenes.list",
                f"scene list {scene_list} not found; write one with glacierflow search",
            )
    if folder is None and not scene_paths and scene_list is None:
        raise _err(
            path, lines, "scenes", "[scenes] needs folder, paths or list: where are the images?"
        )
    band = sc.get("band")
    if band is not None:
        _typed(path, lines, "scenes.band", band, int, "a band number (1-based)")
        if band < 1:
            raise _err(path, lines, "scenes.band", f"band must be 1 or more, got {band}")
    path_row = sc.get("path_row")
    if path_row is not None:
        path_row = str(path_row).replace("/", "").replace("_", "").zfill(6)
        if not re.fullmatch(r"\d{6}", path_row):
            raise _err(
                path,
                lines,
                "scenes.path_row",
                'path_row must be WRS path and row as PPPRRR, e.g. "148035", got '
                f"{sc['path_row']!r}",
            )
    dates_table = sc.get("dates", {})
    _typed(path, lines, "scenes.dates", dates_table, dict, "a table of file name = date")
    scene_dates = {
        str(k): _date(path, lines, f"scenes.dates.{k}", v) for k, v in dates_table.items()
    }

    # Pairs.
    pr = data.get("pairs", {})
    explicit: list[tuple[str, str, int | None]] = []
    raw_explicit = pr.get("explicit")
    if raw_explicit is not None:
        _typed(path, lines, "pairs.explicit", raw_explicit, list, "a list of [first, second]")
        start = lines.line("pairs.explicit")
        for item in raw_explicit:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and all(isinstance(s, str | date) for s in item)
            ):
                raise _err(
                    path,
                    lines,
                    "pairs.explicit",
                    f'every explicit pair must be ["first", "second"] (dates, scene IDs or '
                    f"file names), got {item!r}",
                )
            a, b = (s.isoformat() if isinstance(s, date) else s for s in item)
            explicit.append((a, b, lines.line_containing(start, a, b) or start))
    min_days = _number(path, lines, "pairs.min_days", pr.get("min_days", 1), positive=False)
    if not min_days > 0:
        raise _err(
            path,
            lines,
            "pairs.min_days",
            f"min_days must be positive (a pair needs time between its images), got {min_days:g}",
        )
    max_days = _number(path, lines, "pairs.max_days", pr.get("max_days", 366 * 5))
    if max_days < min_days:
        raise _err(
            path,
            lines,
            "pairs.max_days",
            f"max_days ({max_days:g}) is below min_days ({min_days:g})",
        )
    same_path_row = _typed(
        path, lines, "pairs.same_path_row", pr.get("same_path_row", True), bool, "true or false"
    )

    # Grid.
    gr = data["grid"]
    for key in ("crs", "resolution_m"):
        if key not in gr:
            raise _err(path, lines, "grid", f"[grid] needs {key}")
    grid_crs = str(_typed(path, lines, "grid.crs", gr["crs"], str, 'a CRS such as "EPSG:32643"'))
    try:
        from pyproj import CRS

        crs = CRS.from_user_input(grid_crs)
    except Exception as exc:  # pyproj raises CRSError and others for bad text
        raise _err(path, lines, "grid.crs", f"unknown CRS {grid_crs!r} ({exc})") from None
    if not crs.is_projected:
        raise _err(
            path,
            lines,
            "grid.crs",
            f"the grid CRS must be projected in metres (e.g. UTM, EPSG:326NN), got {grid_crs}",
        )
    resolution_m = _number(path, lines, "grid.resolution_m", gr["resolution_m"], positive=True)
    if ("bounds" in gr) == ("bounds_lonlat" in gr):
        raise _err(
            path,
            lines,
            "grid",
            "[grid] needs exactly one of bounds_lonlat = [west, south, east, north] (degrees) "
            "or bounds = [xmin, ymin, xmax, ymax] (grid CRS, metres)",
        )
    bkey = "grid.bounds_lonlat" if "bounds_lonlat" in gr else "grid.bounds"
    braw = gr.get("bounds_lonlat", gr.get("bounds"))
    if not (
        isinstance(braw, list) and len(braw) == 4 and all(isinstance(b, int | float) for b in braw)
    ):
        raise _err(path, lines, bkey, f"{bkey.split('.')[-1]} must be 4 numbers, got {braw!r}")
    bounds = tuple(float(b) for b in braw)
    if not (bounds[2] > bounds[0] and bounds[3] > bounds[1]):
        raise _err(
            path,
            lines,
            bkey,
            f"bounds must be [xmin, ymin, xmax, ymax] (west, south, east, north) with max > min, "
            f"got {braw}",
        )
    if bkey == "grid.bounds_lonlat" and not (
        -180 <= bounds[0] <= 180
        and -180 <= bounds[2] <= 180
        and -90 <= bounds[1] <= 90
        and -90 <= bounds[3] <= 90
    ):
        raise _err(path, lines, bkey, f"bounds_lonlat must be degrees, got {braw}")

    # Matching and filtering.
    from glacierflow.filters import FilterSettings
    from glacierflow.track import COREG_CHOICES

    mt = data.get("matching", {})
    matching: dict[str, Any] = {}
    for key, default in (("chip_px", 32), ("search_px", 16), ("step_px", 8), ("workers", 1)):
        value = _typed(path, lines, f"matching.{key}", mt.get(key, default), int, "a whole number")
        if value < 1:
            raise _err(path, lines, f"matching.{key}", f"{key} must be 1 or more, got {value}")
        matching[key] = value
    concurrent_pairs = _typed(
        path,
        lines,
        "matching.concurrent_pairs",
        mt.get("concurrent_pairs", 1),
        int,
        "a whole number",
    )
    if concurrent_pairs < 1:
        raise _err(
            path,
            lines,
            "matching.concurrent_pairs",
            f"concurrent_pairs must be 1 or more, got {concurrent_pairs}",
        )
    matching["subpixel"] = str(
        _typed(path, lines, "matching.subpixel", mt.get("subpixel", "lanczos"), str, "a name")
    )
    if matching["subpixel"] not in ("lanczos", "cubic", "parabola", "gaussian"):
        raise _err(
            path,
            lines,
            "matching.subpixel",
            f"subpixel must be lanczos, cubic, parabola or gaussian, got {matching['subpixel']!r}",
        )
    ft = data.get("filtering", {})
    filtering: dict[str, Any] = {
        "min_corr": _number(
            path,
            lines,
            "filtering.min_corr",
            ft.get("min_corr", FilterSettings.model_fields["min_corr"].default),
        ),
        "min_snr": _number(
            path,
            lines,
            "filtering.min_snr",
            ft.get("min_snr", FilterSettings.model_fields["min_snr"].default),
        ),
        "fill_holes": _typed(
            path, lines, "filtering.fill_holes", ft.get("fill_holes", False), bool, "true or false"
        ),
        "coreg": _typed(path, lines, "filtering.coreg", ft.get("coreg", "constant"), str, "a name"),
    }
    if filtering["coreg"] not in COREG_CHOICES:
        raise _err(
            path,
            lines,
            "filtering.coreg",
            f"coreg must be one of {', '.join(COREG_CHOICES)}, got {filtering['coreg']!r}",
        )
    if "ice_buffer_m" in ft:
        filtering["ice_buffer_m"] = _number(
            path, lines, "filtering.ice_buffer_m", ft["ice_buffer_m"]
        )

    # Outlines.
    ol = data.get("outlines", {})

    def _file(key: str) -> Path | None:
        if key not in ol:
            return None
        p = _rel(base, _typed(path, lines, f"outlines.{key}", ol[key], str, "a file path"))
        if not p.exists():
            raise _err(path, lines, f"outlines.{key}", f"{key} file {p} not found")
        return p

    glaciers = _file("glaciers")
    stable_mask = _file("stable_mask")
    centrelines = _file("centrelines")
    where = ol.get("centreline_where", {})
    _typed(path, lines, "outlines.centreline_where", where, dict, "a table of attribute = value")
    id_field = ol.get("id_field")
    name_field = ol.get("name_field")

    # Composites.
    cp = data.get("composites", {})
    assign = str(
        _typed(path, lines, "composites.assign", cp.get("assign", "overlap"), str, "a rule")
    )
    from glacierflow.stack import ASSIGN_RULES

    if assign not in ASSIGN_RULES:
        raise _err(
            path,
            lines,
            "composites.assign",
            f"assign must be one of {', '.join(ASSIGN_RULES)}, got {assign!r}",
        )
    raw_periods = cp.get("periods", "calendar")
    periods: list[tuple[int, datetime, datetime]] | None
    if raw_periods == "calendar":
        periods = None
    elif (
        isinstance(raw_periods, list)
        and raw_periods
        and all(isinstance(p, dict) for p in raw_periods)
    ):
        periods = []
        for i, item in enumerate(raw_periods):
            key = f"composites.periods.{i}"
            _check_keys(path, lines, item, "composites.periods", key, f"period #{i + 1}")
            for need in ("year", "start", "end"):
                if need not in item:
                    raise _err(path, lines, key, f"period #{i + 1} needs year, start and end")
            year = _typed(path, lines, f"{key}.year", item["year"], int, "a year such as 1999")
            start = _date(path, lines, f"{key}.start", item["start"])
            end = _date(path, lines, f"{key}.end", item["end"])
            if not end > start:
                raise _err(
                    path,
                    lines,
                    f"{key}.end",
                    f"period {year} ends ({end:%Y-%m-%d}) before it starts ({start:%Y-%m-%d})",
                )
            if any(p[0] == year for p in periods):
                raise _err(path, lines, f"{key}.year", f"two periods are named {year}")
            periods.append((year, start, end))
    else:
        raise _err(
            path,
            lines,
            "composites.periods",
            'periods must be "calendar" or a list of [[composites.periods]] tables with year, '
            "start and end",
        )

    # Analysis.
    an = data.get("analysis", {})
    analysis = {
        "surge_factor": _number(
            path, lines, "analysis.surge_factor", an.get("surge_factor", 2.0), positive=True
        ),
        "surge_min_area_km2": _number(
            path, lines, "analysis.surge_min_area_km2", an.get("surge_min_area_km2", 0.5)
        ),
        "surge_min_speed_m_per_yr": _number(
            path,
            lines,
            "analysis.surge_min_speed_m_per_yr",
            an.get("surge_min_speed_m_per_yr", 10.0),
        ),
        "surge_n_sigma": _number(
            path, lines, "analysis.surge_n_sigma", an.get("surge_n_sigma", 3.0)
        ),
        "profile_spacing_m": _number(
            path,
            lines,
            "analysis.profile_spacing_m",
            an.get("profile_spacing_m", resolution_m),
            positive=True,
        ),
    }
    if not analysis["surge_factor"] > 1:
        raise _err(
            path,
            lines,
            "analysis.surge_factor",
            f"surge_factor must be above 1, got {analysis['surge_factor']:g}",
        )

    # Transects.
    transects = []
    raw_tr = data.get("transects", [])
    _typed(path, lines, "transects", raw_tr, list, "a list of [[transects]] tables")
    for i, item in enumerate(raw_tr):
        key = f"transects.{i}"
        _typed(path, lines, key, item, dict, "a [[transects]] table")
        _check_keys(path, lines, item, "transects", key, f"[[transects]] #{i + 1}")
        if ("lonlat" in item) == ("xy" in item):
            raise _err(path, lines, key, f"transect #{i + 1} needs exactly one of lonlat or xy")
        pts = item.get("lonlat", item.get("xy"))
        if not (
            isinstance(pts, list)
            and len(pts) >= 2
            and all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(c, int | float) for c in p)
                for p in pts
            )
        ):
            raise _err(
                path, lines, key, f"transect #{i + 1}: give two or more [x, y] points, got {pts!r}"
            )
        transects.append(
            Transect(
                name=str(item.get("name", f"transect {i + 1}")),
                points=tuple((float(p[0]), float(p[1])) for p in pts),
                lonlat="lonlat" in item,
            )
        )

    return Project(
        path=path,
        text=text,
        name=name,
        output=output,
        scene_folder=folder,
        scene_patterns=patterns,
        scene_paths=tuple(scene_paths),
        scene_list=scene_list,
        band=band,
        path_row=path_row,
        scene_dates=scene_dates,
        explicit_pairs=tuple(explicit),
        min_days=min_days,
        max_days=max_days,
        same_path_row=bool(same_path_row),
        grid_crs=grid_crs,
        resolution_m=resolution_m,
        bounds=bounds,  # type: ignore[arg-type]
        bounds_lonlat=bkey == "grid.bounds_lonlat",
        matching=matching,
        filtering=filtering,
        glaciers=glaciers,
        stable_mask=stable_mask,
        id_field=id_field,
        name_field=name_field,
        centrelines=centrelines,
        centreline_where=dict(where),
        periods=tuple(periods) if periods is not None else None,
        assign=assign,
        analysis=analysis,
        transects=tuple(transects),
        concurrent_pairs=concurrent_pairs,
        _lines=lines,
    )


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneInfo:
    """What a project needs to know of a scene before reading its pixels.

    Attributes
    ----------
    path : Path
    acquired : datetime
        Acquisition time, aware UTC.
    time_source : str
        ``"project"`` (``[scenes.dates]``), ``"MTL"`` or ``"filename"``.
    scene_id : str or None
        Landsat or Sentinel-2 identifier when known.
    path_row : str or None
        WRS-2 path and row, ``"PPPRRR"``, for Landsat scenes.
    crs_wkt : str
    bounds : tuple of float
        ``(left, bottom, right, top)`` in the scene's CRS.
    """

    path: Path
    acquired: datetime
    time_source: str
    scene_id: str | None
    path_row: str | None
    crs_wkt: str
    bounds: tuple[float, float, float, float]

    @property
    def label(self) -> str:
        """``YYYY-MM-DD (file name)``."""
        return f"{self.acquired:%Y-%m-%d} ({self.path.name})"


_PR_PRODUCT = re.compile(r"L[COTEM]\d{2}_[A-Z0-9]{4}_(\d{6})_\d{8}", re.IGNORECASE)
_PR_SCENE = re.compile(r"L[COTEM]\d(\d{6})\d{7}[A-Z]{3}\d{2}", re.IGNORECASE)


def wrs_path_row(scene_id: str | None) -> str | None:
    """WRS-2 path and row ``"PPPRRR"`` of a Landsat product or scene ID, else None."""
    if not scene_id:
        return None
    for rx in (_PR_PRODUCT, _PR_SCENE):
        m = rx.search(scene_id)
        if m:
            return m.group(1)
    return None


def _scene_time(project: Project, p: Path) -> tuple[datetime, str, str | None]:
    from glacierflow.scenes import acquisition_from_mtl, acquisition_from_name, find_mtl

    from_name = acquisition_from_name(p.name)
    scene_id = from_name[2] if from_name else None
    for key in (p.name, str(p)):
        if key in project.scene_dates:
            return project.scene_dates[key], "project", scene_id
    mtl = find_mtl(p)
    if mtl is not None:
        acquired, _sensor, mtl_id = acquisition_from_mtl(mtl)
        return acquired, "MTL", mtl_id or scene_id
    if from_name is not None:
        return from_name[0], "filename", scene_id
    number = project.line("scenes.dates") or project.line("scenes")
    raise InputError(
        f"cannot find the acquisition time of scene {p.name} (no MTL file beside it, no Landsat "
        f'or Sentinel-2 ID in its name); add it to the project file as [scenes.dates] "{p.name}" '
        f'= "YYYY-MM-DD"' + (f" (near line {number})" if number else ""),
        project.path,
    )


def _list_files(project: Project) -> list[Path]:
    files: list[Path] = list(project.scene_paths)
    if project.scene_list is not None:
        files += _files_from_list(project)
    elif project.scene_folder is not None:
        for pattern in project.scene_patterns:
            files += sorted(p for p in project.scene_folder.glob(pattern) if p.is_file())
    unique: dict[Path, None] = {}
    for p in files:
        unique.setdefault(p.resolve(), None)
    return list(unique)


def _files_from_list(project: Project) -> list[Path]:
    """Local files of the scenes in a scene list (CSV of glacierflow search)."""
    import csv

    assert project.scene_list is not None
    folder = project.scene_folder or project.scene_list.parent
    candidates = [
        p for pattern in project.scene_patterns for p in folder.glob(pattern) if p.is_file()
    ]
    out = []
    with open(project.scene_list, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "scene_id" not in reader.fieldnames:
            raise InputError(
                "a scene list needs a scene_id column (write it with glacierflow search)",
                project.scene_list,
            )
        for number, row in enumerate(reader, start=2):
            sid = (row.get("scene_id") or "").strip()
            if not sid:
                continue
            found = sorted(p for p in candidates if sid.upper() in p.name.upper())
            if not found:
                href = row.get("pan_href") or row.get("href") or ""
                raise InputError(
                    f"line {number}: scene {sid} has no file in {folder} matching "
                    f"{', '.join(project.scene_patterns)}"
                    + (f"; download it from {href}" if href else "")
                    + ", or remove the line",
                    project.scene_list,
                )
            out.append(found[0])
    return out


def find_scenes(project: Project) -> list[SceneInfo]:
    """The project's scenes that overlap the output grid, in time order, with their metadata.

    Reads each file's header (CRS, bounds) and its acquisition time (``[scenes.dates]``, an
    MTL file beside it, or the Landsat/Sentinel-2 ID in its name), keeps the WRS path/row of
    ``scenes.path_row`` when given, and drops (with a warning) scenes that do not reach the
    grid.

    Raises
    ------
    InputError
        If no scene is found, a file is not a readable georeferenced raster, a time is
        missing, or the grid covers none of the scenes (naming the grid's line).
    """
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.warp import transform_bounds

    files = _list_files(project)
    if not files:
        where = project.scene_folder or project.scene_list
        raise project.error(
            f"no scene found in {where} matching {', '.join(project.scene_patterns)}", "scenes"
        )
    grid = project.grid()
    scenes = []
    for p in files:
        try:
            with rasterio.open(p) as src:
                if src.crs is None:
                    raise InputError("scene has no CRS; glacierflow needs georeferenced images", p)
                crs_wkt = src.crs.to_wkt()
                bounds = tuple(float(b) for b in src.bounds)
        except RasterioIOError as exc:
            raise InputError(f"scene is not a raster GDAL can read ({exc})", p) from None
        acquired, source, scene_id = _scene_time(project, p)
        scenes.append(
            SceneInfo(
                path=p,
                acquired=acquired,
                time_source=source,
                scene_id=scene_id,
                path_row=wrs_path_row(scene_id),
                crs_wkt=crs_wkt,
                bounds=bounds,  # type: ignore[arg-type]
            )
        )
    if project.path_row is not None:
        kept = [s for s in scenes if s.path_row == project.path_row]
        if not kept:
            found = sorted({s.path_row or "unknown" for s in scenes})
            raise project.error(
                f"no scene is on WRS path/row {project.path_row}; the scenes are on "
                f"{', '.join(found)}",
                "scenes.path_row",
            )
        scenes = kept
    overlapping = []
    for s in scenes:
        gx0, gy0, gx1, gy1 = transform_bounds(grid.crs_wkt, s.crs_wkt, *grid.bounds, densify_pts=21)
        sx0, sy0, sx1, sy1 = s.bounds
        if gx0 < sx1 and sx0 < gx1 and gy0 < sy1 and sy0 < gy1:
            overlapping.append(s)
        else:
            log.warning("scene %s does not reach the output grid: left out", s.path.name)
    if not overlapping:
        gw, gs, ge, gn = transform_bounds(grid.crs_wkt, "EPSG:4326", *grid.bounds, densify_pts=21)
        parts = []
        for s in scenes[:4]:
            w, so, e, n = transform_bounds(s.crs_wkt, "EPSG:4326", *s.bounds, densify_pts=21)
            parts.append(f"{s.path.name}: {w:.2f}..{e:.2f} E, {so:.2f}..{n:.2f} N")
        key = "grid.bounds_lonlat" if project.bounds_lonlat else "grid.bounds"
        raise project.error(
            f"the grid covers no scene: the grid spans {gw:.2f}..{ge:.2f} E, {gs:.2f}..{gn:.2f} N, "
            f"the scenes {'; '.join(parts)}{' ...' if len(scenes) > 4 else ''}; fix the grid "
            "bounds (or its CRS) or give scenes of this area",
            key,
        )
    overlapping.sort(key=lambda s: (s.acquired, str(s.path)))
    return overlapping


# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairPlan:
    """One pair to process: two scenes, earlier first, and its output folder name."""

    ref: SceneInfo
    sec: SceneInfo
    pair_id: str

    @property
    def dt_days(self) -> float:
        """Separation, days."""
        return (self.sec.acquired - self.ref.acquired).total_seconds() / 86400.0


def _resolve(
    project: Project, scenes: Sequence[SceneInfo], token: str, line: int | None
) -> SceneInfo:
    """The scene named by a date, a scene ID or a file name."""
    text = token.strip()
    matches: list[SceneInfo] = []
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        matches = [s for s in scenes if f"{s.acquired:%Y-%m-%d}" == text]
    if not matches:
        matches = [
            s
            for s in scenes
            if s.path.name == text
            or str(s.path) == text
            or (s.scene_id or "").upper() == text.upper()
            or (len(text) >= 8 and text.upper() in s.path.name.upper())
        ]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(s.label for s in scenes[:12]) + (" ..." if len(scenes) > 12 else "")
    if not matches:
        raise project.error(
            f"pair scene {token!r} matches no scene (by date, scene ID or file name); the "
            f"scenes are {known}",
            line=line,
        )
    raise project.error(
        f"pair scene {token!r} matches {len(matches)} scenes "
        f"({', '.join(s.label for s in matches)}); name it by file name or scene ID",
        line=line,
    )


def _pair_id(ref: SceneInfo, sec: SceneInfo) -> str:
    return f"{ref.acquired:%Y%m%d}_{sec.acquired:%Y%m%d}"


def plan_pairs(project: Project, scenes: Sequence[SceneInfo] | None = None) -> list[PairPlan]:
    """The pairs to process: ``[pairs] explicit`` in the given order, else the pairing rules.

    Rules pair every two scenes (earlier first) whose separation lies in ``[min_days,
    max_days]`` and, with ``same_path_row``, that share a WRS path/row (scenes without one pair
    with each other only).

    Raises
    ------
    InputError
        For an explicit pair whose second scene is not later than the first (negative or zero
        separation) or that names an unknown scene, naming the line; when no pair results.
    """
    scenes = list(scenes) if scenes is not None else find_scenes(project)
    plans: list[PairPlan] = []
    if project.explicit_pairs:
        for a, b, line in project.explicit_pairs:
            ref = _resolve(project, scenes, a, line)
            sec = _resolve(project, scenes, b, line)
            dt = (sec.acquired - ref.acquired).total_seconds() / 86400.0
            if dt == 0:
                raise project.error(
                    f"pair {ref.label} -> {sec.label} has zero separation: both scenes were "
                    "acquired at the same time; pair scenes of different dates",
                    line=line,
                )
            if dt < 0:
                raise project.error(
                    f"pair {ref.label} -> {sec.label} has a negative separation ({dt:.0f} "
                    "days): the first scene must be the earlier one; swap them",
                    line=line,
                )
            plans.append(PairPlan(ref, sec, _pair_id(ref, sec)))
    else:
        for i, ref in enumerate(scenes):
            for sec in scenes[i + 1 :]:
                dt = (sec.acquired - ref.acquired).total_seconds() / 86400.0
                if not (project.min_days <= dt <= project.max_days) or dt <= 0:
                    continue
                if project.same_path_row and ref.path_row != sec.path_row:
                    continue
                plans.append(PairPlan(ref, sec, _pair_id(ref, sec)))
    if not plans:
        raise project.error(
            f"no pair: {len(scenes)} scene(s) ({', '.join(s.label for s in scenes[:8])}) give no "
            f"two {'on one path/row ' if project.same_path_row else ''}between "
            f"{project.min_days:g} and {project.max_days:g} days apart; widen [pairs] or list "
            "pairs in [pairs] explicit",
            "pairs",
        )
    seen: dict[str, int] = {}
    out = []
    for plan in plans:
        n = seen.get(plan.pair_id, 0)
        seen[plan.pair_id] = n + 1
        if n:
            suffix = plan.ref.path_row or str(n + 1)
            plan = dataclasses.replace(plan, pair_id=f"{plan.pair_id}_{suffix}")
        out.append(plan)
    return out


# --------------------------------------------------------------------------------------------
# Processing one pair (resumable)
# --------------------------------------------------------------------------------------------


def _fingerprint(project: Project, plan: PairPlan) -> str:
    """A hash of everything a pair's products depend on."""
    grid = project.grid()
    options = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in project.track_options().items()
    }
    options.pop("workers", None)  # threads do not change the result
    content = {
        "ref": str(plan.ref.path),
        "sec": str(plan.sec.path),
        "ref_time": plan.ref.acquired.isoformat(),
        "sec_time": plan.sec.acquired.isoformat(),
        "band": project.band,
        "options": options,
        "grid": [grid.crs_wkt, list(grid.transform.to_gdal()), list(grid.shape)],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def pair_is_complete(folder: Path, fingerprint: str | None = None) -> bool:
    """Whether ``folder`` holds a finished pair: ``done.json`` (with ``fingerprint``, when
    given) and all four products."""
    from glacierflow.products import PRODUCT_NAMES

    done = folder / DONE_NAME
    if not done.is_file():
        return False
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        return False
    return all((folder / name).is_file() for name in PRODUCT_NAMES.values())


def _crop(scene, grid, margin_px: int):
    """The part of a scene that covers the grid, with ``margin_px`` pixels to spare."""
    import math

    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    x0, y0, x1, y1 = transform_bounds(grid.crs_wkt, scene.crs, *grid.bounds, densify_pts=21)
    win = from_bounds(x0, y0, x1, y1, transform=scene.transform)
    rows, cols = scene.shape
    r0 = max(0, math.floor(win.row_off) - margin_px)
    c0 = max(0, math.floor(win.col_off) - margin_px)
    r1 = min(rows, math.ceil(win.row_off + win.height) + margin_px)
    c1 = min(cols, math.ceil(win.col_off + win.width) + margin_px)
    if r1 - r0 <= 0 or c1 - c0 <= 0:
        raise InputError("the scene does not reach the output grid", scene.path)
    if (r0, c0, r1, c1) == (0, 0, rows, cols):
        return scene
    return dataclasses.replace(
        scene,
        data=scene.data[r0:r1, c0:c1].copy(),
        valid=scene.valid[r0:r1, c0:c1].copy(),
        transform=scene.transform @ scene.transform.translation(c0, r0),
    )


def process_pair(
    project: Project,
    plan: PairPlan,
    folder: Path,
    workers: int | None = None,
    *,
    progress: bool | None | ProgressSink = False,
) -> xr.Dataset:
    """Track one pair (cropped to the grid) and write its products, then ``done.json``.

    Parameters
    ----------
    project : Project
        The project: grid, band, matching and filtering settings.
    plan : PairPlan
        The pair.
    folder : Path
        The pair's output folder; leftovers of a killed run there are removed first.
    workers : int, optional
        Matching processes; overrides ``[matching] workers`` (the result does not depend on it).
    progress : bool or None
        A progress bar over the pair's nodes: True always, False never, None when stderr is a
        terminal.

    Returns
    -------
    xarray.Dataset
        The pair product.
    """
    from glacierflow.pair import make_pair
    from glacierflow.products import PRODUCT_NAMES, atomic_write, write_products
    from glacierflow.scenes import read_scene
    from glacierflow.track import track_pair

    folder.mkdir(parents=True, exist_ok=True)
    # Leftovers of a killed run: stale marker and hidden temporaries of the atomic writers.
    (folder / DONE_NAME).unlink(missing_ok=True)
    for leftover in folder.glob(".*"):
        if ".staged-" in leftover.name or ".tmp-" in leftover.name:
            leftover.unlink(missing_ok=True)
    grid = project.grid()
    opts = project.track_options()
    if workers is not None:
        opts["workers"] = workers
    margin = opts["chip_px"] + opts["search_px"] + opts["step_px"]
    ref = _crop(
        read_scene(plan.ref.path, band=project.band, acquired=plan.ref.acquired), grid, margin
    )
    sec = _crop(
        read_scene(plan.sec.path, band=project.band, acquired=plan.sec.acquired), grid, margin
    )
    pair = make_pair(ref, sec, log=log.warning)
    if not pair.valid.any():
        raise InputError(
            f"the scenes share no valid pixel inside the grid (SEC: {sec.path})", ref.path
        )
    ds = track_pair(pair, progress=progress, **opts)
    ds.attrs["pair_id"] = plan.pair_id
    ds.attrs["project"] = project.name
    write_products(ds, folder, background=pair.ref.data, background_transform=pair.transform)
    record = {
        "pair": plan.pair_id,
        "ref": str(plan.ref.path),
        "sec": str(plan.sec.path),
        "ref_time": plan.ref.acquired.isoformat(),
        "sec_time": plan.sec.acquired.isoformat(),
        "fingerprint": _fingerprint(project, plan),
        "products": sorted(PRODUCT_NAMES.values()),
        "glacierflow_version": __version__,
    }
    with atomic_write(folder / DONE_NAME) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return ds


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
    files: dict[str, Path] = field(default_factory=dict)
    report_path: Path | None = None


def _periods(project: Project):
    from glacierflow.stack import Period

    if project.periods is None:
        return None
    return [Period(y, s, e) for y, s, e in project.periods]


def _write_netcdf_cube(cube: xr.Dataset, path: Path) -> Path:
    """The cube as CF-1.8 NetCDF-4 with a grid mapping, atomically."""
    from pyproj import CRS

    from glacierflow.products import atomic_write

    out = cube.copy()
    crs = CRS.from_wkt(cube.attrs["crs_wkt"])
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out.attrs = {
        "Conventions": "CF-1.8",
        "title": cube.attrs["title"],
        "source": f"glacierflow {__version__}: pair products combined per period",
        "history": f"{now}: written by glacierflow {__version__}",
        "years": list(cube.attrs["years"]),
        "composite_assign": cube.attrs.get("composite_assign", ""),
        "composite_weights": cube.attrs.get("composite_weights", ""),
        "composite_v_error": cube.attrs.get("composite_v_error", ""),
        "crs_wkt": cube.attrs["crs_wkt"],
        "GeoTransform": " ".join(repr(float(c)) for c in cube.attrs["transform"]),
    }
    out["x"].attrs.update(
        standard_name="projection_x_coordinate", long_name="x (easting)", units="m", axis="X"
    )
    out["y"].attrs.update(
        standard_name="projection_y_coordinate", long_name="y (northing)", units="m", axis="Y"
    )
    out["time"].attrs.update(axis="T", long_name="middle of the period")
    encoding: dict[str, dict[str, Any]] = {
        "x": {"_FillValue": None},
        "y": {"_FillValue": None},
        "time": {
            "units": "days since 1970-01-01 00:00:00",
            "calendar": "standard",
            "dtype": "float64",
        },
        "time_bnds": {
            "units": "days since 1970-01-01 00:00:00",
            "calendar": "standard",
            "dtype": "float64",
        },
    }
    for name in ("v", "vx", "vy", "v_error", "count"):
        out[name].attrs["grid_mapping"] = "spatial_ref"
        integer = name == "count"
        encoding[name] = {
            "_FillValue": None if integer else np.float32(np.nan),
            "dtype": "int16" if integer else "float32",
            "zlib": True,
            "complevel": 4,
            "shuffle": True,
        }
    gm = {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in crs.to_cf().items()}
    gm.update(
        crs_wkt=crs.to_wkt(), spatial_ref=crs.to_wkt(), GeoTransform=out.attrs["GeoTransform"]
    )
    out["spatial_ref"] = xr.DataArray(np.int32(0), attrs=gm)
    with atomic_write(path) as tmp:
        out.to_netcdf(tmp, engine="h5netcdf", format="NETCDF4", encoding=encoding)
    return path


def _write_table(df, path: Path) -> Path:
    from glacierflow.products import atomic_write

    with atomic_write(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.7g")
    return path


def _write_gpkg(gdf, path: Path) -> Path:
    from glacierflow.products import atomic_write

    with atomic_write(path) as tmp, warnings.catch_warnings():
        # The temporary name does not end in .gpkg; the final one does.
        warnings.filterwarnings("ignore", message=".*extension should be 'gpkg'")
        gdf.to_file(tmp, driver="GPKG", layer=path.stem)
    return path


def compose_products(
    project: Project,
    pair_dirs: dict[str, Path],
    *,
    report: bool = True,
    echo: Callable[[str], None] | None = None,
) -> ProjectResult:
    """Annual composites, cube, glacier analysis, figures and report from finished pairs.

    Reads every pair's ``velocity.tif``; writes (atomically) everything listed in the module
    docstring except the pair folders. Returns a :class:`ProjectResult` with ``processed`` and
    ``skipped`` empty (filled by :func:`run_project`).
    """
    from glacierflow import plot
    from glacierflow.glaciers import (
        detect_surges,
        glacier_statistics,
        glacier_table,
        read_lines,
        read_outlines,
        sample_profiles,
        speed_trends,
    )
    from glacierflow.products import read_product, write_cog
    from glacierflow.stack import annual_composites, cube_dataset

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

    outlines = None
    glaciers = None
    if project.glaciers is not None:
        outlines = read_outlines(project.glaciers, grid.crs_wkt)
        glaciers = glacier_table(
            outlines,
            id_field=project.id_field,
            name_field=project.name_field,
            source=project.glaciers,
        )
    vmax = plot.speed_scale(composites)
    for comp in composites:
        year = int(comp.attrs["year"])
        comp.attrs["project"] = project.name
        comp.attrs["glacierflow_version"] = __version__
        tif = write_cog(comp, out / f"v_{year}.tif", variables=list(ANNUAL_BANDS))
        result.annual_paths[year] = tif
        plot.save_figure(
            plot.annual_map_figure(comp, vmax=vmax, outlines=glaciers), out / f"v_{year}.png"
        )
        say(
            f"  v_{year}.tif: {comp.attrs['pair_count']} pair(s), "
            f"{int((comp['count'].values > 0).sum())} cells with data"
        )
    cube = cube_dataset(composites)
    result.cube_path = _write_netcdf_cube(cube, out / CUBE_NAME)

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    for before, after in zip(composites[:-1], composites[1:], strict=True):
        ya, yb = before.attrs["year"], after.attrs["year"]
        result.files[f"change_{ya}_{yb}"] = plot.save_figure(
            plot.change_map_figure(before, after, outlines=glaciers),
            figures / f"change_{ya}_{yb}.png",
        )

    gdir = out / "glaciers"
    if glaciers is not None:
        gdir.mkdir(exist_ok=True)
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
        result.files["glacier_statistics"] = _write_table(stats, gdir / "glacier_statistics.csv")
        result.files["glacier_trends"] = _write_table(trends, gdir / "glacier_trends.csv")
        result.files["surges"] = _write_table(surges, gdir / "surges.csv")
        wide = glaciers.copy()
        for year, grp in stats.groupby("year"):
            g = grp.set_index("glacier_id")
            for col in ("v_mean", "v_mean_error", "v_median", "v_max", "valid_fraction"):
                wide[f"{col}_{year}"] = wide["glacier_id"].map(g[col]).to_numpy()
        t = trends.set_index("glacier_id")
        for col in ("trend", "trend_error", "trend_percent_per_yr"):
            wide[col] = wide["glacier_id"].map(t[col]).to_numpy()
        wide["surge_candidate"] = wide["glacier_id"].isin(set(surges["glacier_id"])).astype(int)
        result.files["glaciers_gpkg"] = _write_gpkg(wide, gdir / "glaciers.gpkg")
        if not stats.empty and np.isfinite(stats["v_mean"]).any():
            result.files["glacier_series"] = plot.save_figure(
                plot.glacier_series_figure(stats), figures / "glacier_speeds.png"
            )
        for _, row in surges.iterrows():
            say(
                f"  candidate surge: {row['name'] or row['glacier_id']} {row['year_from']} -> "
                f"{row['year_to']}: x{row['ratio_median']:.1f} over {row['reach_area_km2']:.1f} km2"
            )

    lines_frames = []
    if project.centrelines is not None:
        lines_frames.append(
            (read_lines(project.centrelines, grid.crs_wkt, where=project.centreline_where), False)
        )
    if project.transects:
        lines_frames.append((_transect_lines(project, grid.crs_wkt), True))
    profile_frames = []
    drawn = 0
    for lines, across in lines_frames:
        prof = sample_profiles(composites, lines, project.analysis["profile_spacing_m"])
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
        gdir.mkdir(exist_ok=True)
        result.files["profiles"] = _write_table(result.profiles, gdir / "profiles.csv")

    if report:
        from glacierflow.products import atomic_write
        from glacierflow.report import render_report

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
            composites=composites,
            images=images,
            stats=result.glacier_stats,
            trends=result.trends,
            surges=result.surges,
            grid_text=grid_text,
        )
        result.report_path = out / "report.html"
        with atomic_write(result.report_path) as tmp:
            tmp.write_text(html, encoding="utf-8")
    return result


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


# --------------------------------------------------------------------------------------------
# Running many pairs: one after another, on local processes or on a Dask cluster
# --------------------------------------------------------------------------------------------


def _track_one(
    project: Project,
    plan: PairPlan,
    folder: Path,
    workers: int | None,
    progress: bool | None | ProgressSink,
) -> dict[str, float]:
    """Process one pair; what its progress line says (small, to send back from a worker)."""
    t0 = time.perf_counter()
    ds = process_pair(project, plan, folder, workers=workers, progress=progress)
    v = ds["v"].values
    return {
        "valid": float(np.isfinite(v).mean()),
        "nodes": int(v.size),
        "stable_vx": float(ds.attrs.get("stable_vx_nmad_m_per_yr", float("nan"))),
        "stable_vy": float(ds.attrs.get("stable_vy_nmad_m_per_yr", float("nan"))),
        "seconds": time.perf_counter() - t0,
    }


PairOutcome = tuple[int, dict[str, float] | None, BaseException | None]
"""Index of a pair in the plan, its summary (None if it failed) and its error (None if not)."""


def _run_pairs(
    project: Project,
    jobs: list[tuple[int, PairPlan, Path]],
    *,
    workers: int | None,
    concurrent_pairs: int,
    scheduler: str | None,
    progress: bool | None,
) -> Iterator[PairOutcome]:
    """Process pairs here, on local processes or on a Dask scheduler; yield them as they finish.

    One after another (``concurrent_pairs`` 1, no scheduler), the first error is raised at once,
    so no later pair starts. Concurrently, the first error cancels the pairs not yet started;
    pairs already running finish (and stay finished) and are yielded, with the error, before
    the generator ends.
    """
    if not jobs:
        return
    if scheduler:
        yield from _run_pairs_dask(project, jobs, scheduler)
        return
    if concurrent_pairs == 1 or len(jobs) == 1:
        if concurrent_pairs > 1:
            workers = workers or os.cpu_count() or 1
        for i, plan, folder in jobs:
            yield i, _track_one(project, plan, folder, workers, progress), None
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    n = min(concurrent_pairs, len(jobs))
    per_pair = max(1, (workers or os.cpu_count() or 1) // n)
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    show = bool(progress) or (progress is None and sys.stderr.isatty())
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ProcessPoolExecutor(n, mp_context=ctx))
        bars = _PairBars(stack.enter_context(ctx.Manager()).Queue(), n) if show else None
        futures = {
            pool.submit(
                _track_one,
                project,
                plan,
                folder,
                per_pair,
                False if bars is None else _QueueProgress(bars.queue, i),
            ): i
            for i, plan, folder in jobs
        }
        failed = False
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            if bars is not None:
                bars.drain()
            for fut in finished:
                if bars is not None:
                    bars.close(futures[fut])
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None and not failed:
                    failed = True
                    for other in futures:
                        other.cancel()  # only those not started; running pairs finish
                yield futures[fut], None if exc is not None else fut.result(), exc


class _QueueProgress(ProgressSink):
    """Sends one pair's node counts from its worker process to the main process's bars."""

    def __init__(self, queue: Any, index: int) -> None:
        self.queue, self.index = queue, index

    def start(self, total_nodes: int) -> None:
        self.queue.put((self.index, "start", total_nodes))

    def update(self, nodes: int) -> None:
        self.queue.put((self.index, "update", nodes))


class _PairBars:
    """One node progress bar per running pair, below the overall pairs bar."""

    def __init__(self, queue: Any, slots: int) -> None:
        self.queue = queue
        self.free = list(range(1, slots + 1))
        self.bars: dict[int, Any] = {}

    def drain(self) -> None:
        from tqdm.auto import tqdm

        while not self.queue.empty():
            index, kind, value = self.queue.get()
            if kind == "start":
                self.close(index)
                self.bars[index] = tqdm(
                    total=value,
                    unit="node",
                    desc=f"pair {index + 1}",
                    position=self.free.pop(0) if self.free else None,
                    leave=False,
                )
            elif index in self.bars:
                self.bars[index].update(value)

    def close(self, index: int) -> None:
        bar = self.bars.pop(index, None)
        if bar is not None:
            if bar.pos:
                self.free.append(abs(bar.pos))
            bar.refresh()  # the final count, which the bar's rate limit may not have shown
            bar.close()


def _run_pairs_dask(
    project: Project, jobs: list[tuple[int, PairPlan, Path]], scheduler: str
) -> Iterator[PairOutcome]:
    """One task per pair on a ``dask.distributed`` scheduler, one matching process each."""
    from distributed import Client, as_completed

    try:
        client = Client(scheduler)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"cannot reach the dask scheduler at {scheduler!r} ({exc}); start it, fix the "
            "address, or run without --scheduler (and DASK_SCHEDULER_ADDRESS)"
        ) from exc
    with client:
        futures = {
            client.submit(_track_one, project, plan, folder, 1, False, pure=False): i
            for i, plan, folder in jobs
        }
        for fut in as_completed(list(futures)):
            if fut.status == "error":
                # Pairs not started are cancelled; running ones still finish on their workers.
                client.cancel([f for f in futures if not f.done()])
                yield futures[fut], None, fut.exception()
                return
            if fut.status == "finished":
                yield futures[fut], fut.result(), None


def run_project(
    project: Project | str | PathLike[str],
    *,
    workers: int | None = None,
    concurrent_pairs: int | None = None,
    scheduler: str | None = None,
    report: bool = True,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> ProjectResult:
    """Process every pair of a project (skipping complete ones), then compose the products.

    Pairs run one after another, several at a time on local worker processes
    (``concurrent_pairs``), or as one task each on a ``dask.distributed`` cluster
    (``scheduler``). The products are the same either way, value for value, and the progress
    lines and the result list the pairs in plan order. Composites are made once every pair is
    done.

    Parameters
    ----------
    project : Project or path
        A loaded project or the path of its TOML file.
    workers : int, optional
        Matching processes; overrides ``[matching] workers`` (the result does not depend on it).
        With ``concurrent_pairs`` above 1, the processes of the whole run (default: the number
        of CPUs), shared out between the pairs running at once (at least one each).
    concurrent_pairs : int, optional
        How many pairs run at once on local processes; overrides ``[matching]
        concurrent_pairs`` (default 1: one after another, in this process).
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler (default: ``DASK_SCHEDULER_ADDRESS``, if
        set) to run the pairs on, one task and one matching process per pair; its workers must
        see the scene files and the output folder at the same paths.
    report : bool
        Write ``report.html``.
    progress : bool or None
        Progress bars on stderr (over the pairs and, one pair at a time, over each pair's
        nodes): True always, False never, None when stderr is a terminal.
    echo : callable, optional
        Receives one line of progress per step (the CLI prints them).

    Returns
    -------
    ProjectResult

    Raises
    ------
    GlacierflowError
        The first error of a pair, in plan order (the same as a sequential run gives); the
        pairs that finished are kept, so a rerun resumes.
    """
    from tqdm.auto import tqdm

    if not isinstance(project, Project):
        project = load_project(project)
    concurrent_pairs = project.concurrent_pairs if concurrent_pairs is None else concurrent_pairs
    if concurrent_pairs < 1:
        raise InputError(f"concurrent_pairs must be 1 or more, got {concurrent_pairs}")
    if scheduler is None:
        scheduler = os.environ.get("DASK_SCHEDULER_ADDRESS") or None

    def say(msg: str) -> None:
        if echo is not None:
            with tqdm.external_write_mode():
                echo(msg)

    plans = plan_pairs(project)
    say(f"{project.name}: {len(plans)} pair(s) -> {project.output}")
    pair_dirs: dict[str, Path] = {}
    heads: list[str] = []
    lines: dict[int, str] = {}
    jobs: list[tuple[int, PairPlan, Path]] = []
    for i, plan in enumerate(plans):
        folder = project.output / "pairs" / plan.pair_id
        pair_dirs[plan.pair_id] = folder
        heads.append(
            f"pair {i + 1}/{len(plans)} {plan.ref.acquired:%Y-%m-%d} -> "
            f"{plan.sec.acquired:%Y-%m-%d} ({plan.dt_days:.0f} d)"
        )
        if pair_is_complete(folder, _fingerprint(project, plan)):
            lines[i] = f"{heads[i]}: complete, kept"
        else:
            jobs.append((i, plan, folder))

    next_line = 0

    def say_in_order() -> None:
        nonlocal next_line
        while next_line in lines:
            say(lines.pop(next_line))
            next_line += 1

    done: set[int] = set()
    errors: dict[int, BaseException] = {}
    with tqdm(
        total=len(plans),
        initial=len(plans) - len(jobs),
        unit="pair",
        desc="pairs",
        disable=(not progress) if progress is not None else None,
    ) as bar:
        say_in_order()
        outcomes = _run_pairs(
            project,
            jobs,
            workers=workers,
            concurrent_pairs=concurrent_pairs,
            scheduler=scheduler,
            progress=progress,
        )
        for i, summary, error in outcomes:
            bar.update(1)
            if error is not None or summary is None:
                errors[i] = error or GlacierflowError(f"pair {plans[i].pair_id} gave no result")
                lines[i] = f"{heads[i]}: failed"
            else:
                done.add(i)
                lines[i] = (
                    f"{heads[i]}: tracked, {summary['valid']:.0%} of {summary['nodes']} nodes "
                    f"valid, stable ground NMAD vx {summary['stable_vx']:.1f} vy "
                    f"{summary['stable_vy']:.1f} m/yr ({summary['seconds']:.1f} s)"
                )
            say_in_order()
    if errors:
        # Concurrent pairs only (one after another, the error is raised as it happens): say
        # which pairs finished, then raise the error the sequential run would have raised.
        for i in sorted(lines):
            say(lines[i])
        raise errors[min(errors)]
    processed = [plan.pair_id for i, plan in enumerate(plans) if i in done]
    skipped = [plan.pair_id for i, plan in enumerate(plans) if i not in done]
    say("composites:")
    result = compose_products(project, pair_dirs, report=report, echo=say)
    result.pairs, result.processed, result.skipped = plans, processed, skipped
    if result.report_path is not None:
        say(f"report: {result.report_path}")
    return result
