"""The project file: TOML parsing and validation into a :class:`Project`."""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from glacierflow.errors import InputError

#: Scene file patterns scanned in a folder when the project gives none.
DEFAULT_PATTERNS = ("*.tif", "*.TIF", "*.tiff", "*.TIFF")

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
            path, lines, "filtering.min_corr", ft.get("min_corr", FilterSettings.min_corr)
        ),
        "min_snr": _number(
            path, lines, "filtering.min_snr", ft.get("min_snr", FilterSettings.min_snr)
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
