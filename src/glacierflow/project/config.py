"""The project file: a TOML document read, validated and turned into a :class:`Project`.

The tables of the file are pydantic models (:mod:`glacierflow.project.tables`); ``[matching]``
and ``[filtering]`` validate into the one settings tree,
:class:`glacierflow.settings.TrackSettings`, so their keys, defaults and allowed values are
those of ``glacierflow track``. Every error names the file, the line and the key, with the
closest known key for a misspelt one.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from glacierflow.errors import InputError
from glacierflow.limits import BYTES_PER_GRID_CELL, check_memory
from glacierflow.project.tables import DEFAULT_PATTERNS, ProjectFile, RunningTable
from glacierflow.settings import TrackSettings, leaves
from glacierflow.timeseries.settings import SeriesSettings

__all__ = ["DEFAULT_PATTERNS", "Project", "Transect", "load_project"]

#: Where the project file puts settings of the tree outside the table of their group:
#: project key -> dotted key of :class:`~glacierflow.settings.TrackSettings`.
FILE_KEYS = {
    "filtering.coreg": "coreg.method",
    "filtering.ice_buffer_m": "stable.ice_buffer_m",
    "outlines.glaciers": "stable.glacier_outlines",
    "outlines.stable_mask": "stable.stable_mask",
}
#: Tables of the file that hold settings of the tree, with the keys they add for the run.
TREE_TABLES = {"matching": tuple(RunningTable.model_fields), "filtering": ()}

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
# The project
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

    See the README section "Projects and annual maps" for every key. The tracking settings of
    every pair are :attr:`track_settings` (the tree of ``glacierflow track``, with its
    defaults); the rest describes the scenes, the pairing, the grid, the outlines, the
    composites and the analysis.
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
    track_settings: TrackSettings
    glaciers: Path | None
    id_field: str | None
    name_field: str | None
    centrelines: Path | None
    centreline_where: dict[str, Any]
    periods: tuple[tuple[int, datetime, datetime], ...] | None
    assign: str
    analysis: dict[str, float]
    transects: tuple[Transect, ...] = ()
    concurrent_pairs: int = 1
    timeseries: SeriesSettings | None = None
    timeseries_inputs: tuple[Path, ...] = ()
    trust_dates: bool = False
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

    def file_key(self, dotted: str) -> str:
        """How the project file names a setting of the tree (``"coreg.method"`` ->
        ``"[filtering] coreg"``), for messages."""
        return file_key(dotted)


def file_key(dotted: str) -> str:
    """The project file's name of a settings-tree key, as ``[table] key``."""
    inverse = {tree: key for key, tree in FILE_KEYS.items()}
    table, _, leaf = inverse.get(dotted, dotted).partition(".")
    return f"[{table}] {leaf}" if leaf else dotted


# --------------------------------------------------------------------------------------------
# Reading and checking
# --------------------------------------------------------------------------------------------


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
        start), files that are not there.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError("project file not found", path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"not a text file (byte {exc.start} is not UTF-8); give a TOML project file", path
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror or exc}", path) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", path) from None
    lines = _Lines(text)
    for required in ("scenes", "grid"):
        if not isinstance(data.get(required, {}), dict):
            break  # the validation below names the key and the type
        if required not in data:
            raise InputError(
                f"has no [{required}] table; see examples/karakoram_1999_2003.toml", path
            )
    _check_tree_tables(data, path, lines)
    try:
        spec = ProjectFile.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, path, lines) from None
    try:
        running = RunningTable.model_validate(
            {k: v for k, v in spec.matching.items() if k in RunningTable.model_fields}
        )
    except ValidationError as exc:
        raise _validation_error(exc, path, lines, under=("matching",)) from None
    files = _Files(path, lines)
    project = _project(path, text, lines, spec, running, files)
    _check_grid_size(project)
    return project


def _check_grid_size(project: Project) -> None:
    """Refuse an output grid too large for the machine's memory, naming its line."""
    key = "grid.resolution_m"
    try:
        rows, cols = project.grid().shape
    except (ValueError, OverflowError, ZeroDivisionError) as exc:
        raise project.error(f"resolution_m and bounds give no usable grid: {exc}", key) from None
    try:
        check_memory(
            float(rows) * float(cols) * BYTES_PER_GRID_CELL,
            f"an output grid of {rows:,} x {cols:,} cells of {project.resolution_m:g} m",
            "choose a coarser resolution_m or smaller bounds",
        )
    except InputError as exc:
        raise project.error(exc.problem, key) from None


def _project(
    path: Path,
    text: str,
    lines: _Lines,
    spec: ProjectFile,
    running: RunningTable,
    files: _Files,
) -> Project:
    """The :class:`Project` of a validated file (its paths resolved and checked)."""
    sc, pr, gr, ol = spec.scenes, spec.pairs, spec.grid, spec.outlines
    glaciers = files.existing("outlines.glaciers", ol.glaciers)
    stable_mask = files.existing("outlines.stable_mask", ol.stable_mask)
    start = lines.line("pairs.explicit")
    explicit = tuple(
        (a, b, lines.line_containing(start, a, b) or start) for a, b in pr.explicit or ()
    )
    return Project(
        path=path,
        text=text,
        name=spec.name if spec.name is not None else path.stem,
        output=files.rel(spec.output if spec.output is not None else path.stem),
        scene_folder=files.folder("scenes.folder", sc.folder),
        scene_patterns=sc.patterns,
        scene_paths=tuple(files.scene(p) for p in sc.paths),
        scene_list=files.scene_list(sc.list_),
        band=sc.band,
        path_row=sc.wrs_path_row,
        scene_dates=dict(sc.dates),
        trust_dates=sc.trust_dates,
        explicit_pairs=explicit,
        min_days=pr.min_days,
        max_days=pr.max_days,
        same_path_row=pr.same_path_row,
        grid_crs=gr.crs,
        resolution_m=gr.resolution_m,
        bounds=gr.box,
        bounds_lonlat=gr.lonlat,
        track_settings=_track_settings(spec, glaciers, stable_mask, path, lines),
        glaciers=glaciers,
        id_field=ol.id_field,
        name_field=ol.name_field,
        centrelines=files.existing("outlines.centrelines", ol.centrelines),
        centreline_where=dict(ol.centreline_where),
        periods=spec.composites.spans,
        assign=spec.composites.assign,
        analysis=spec.analysis.values(default_spacing_m=gr.resolution_m),
        transects=tuple(
            Transect(
                name=t.name if t.name is not None else f"transect {i + 1}",
                points=t.lonlat if t.lonlat is not None else t.xy,  # type: ignore[arg-type]
                lonlat=t.lonlat is not None,
            )
            for i, t in enumerate(spec.transects)
        ),
        concurrent_pairs=running.concurrent_pairs,
        timeseries=spec.timeseries.settings() if spec.timeseries is not None else None,
        timeseries_inputs=tuple(
            files.itslive(v) for v in (spec.timeseries.itslive if spec.timeseries else ())
        ),
        _lines=lines,
    )


class _Files:
    """Paths of the project file, relative to its folder, checked to exist."""

    def __init__(self, path: Path, lines: _Lines) -> None:
        self.path, self.lines, self.base = path, lines, path.parent

    def rel(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def error(self, key: str, problem: str) -> InputError:
        return _error(self.path, self.lines.line(key), problem)

    def folder(self, key: str, value: str | None) -> Path | None:
        if value is None:
            return None
        p = self.rel(value)
        if not p.is_dir():
            raise self.error(key, f"scene folder {p} does not exist")
        return p

    def scene(self, value: str) -> Path:
        from glacierflow import remote

        if remote.is_remote(value):  # a URL: read window by window when the pair runs
            return remote.location(value)  # type: ignore[return-value]
        p = self.rel(value)
        if not p.is_file():
            start = self.lines.line("scenes.paths")
            raise _error(
                self.path,
                self.lines.line_containing(start, value) or start,
                f"scene {value!r} not found (looked for {p}); fix the path or remove it from "
                "scenes.paths",
            )
        return p

    def scene_list(self, value: str | None) -> Path | None:
        if value is None:
            return None
        p = self.rel(value)
        if not p.is_file():
            raise self.error(
                "scenes.list", f"scene list {p} not found; write one with glacierflow search"
            )
        return p

    def itslive(self, value: str) -> Path:
        p = self.rel(value)
        if not p.exists():
            start = self.lines.line("timeseries.itslive")
            raise _error(
                self.path,
                self.lines.line_containing(start, value) or start,
                f"ITS_LIVE granule or cube {value!r} not found (looked for {p})",
            )
        return p

    def existing(self, key: str, value: str | None) -> Path | None:
        if value is None:
            return None
        p = self.rel(value)
        if not p.exists():
            raise self.error(key, f"{key.rsplit('.', 1)[-1]} file {p} not found")
        return p


def _error(path: Path, line: int | None, problem: str) -> InputError:
    return InputError(f"line {line}: {problem}" if line else problem, path)


# --------------------------------------------------------------------------------------------
# The tracking settings: [matching] and [filtering] into the settings tree
# --------------------------------------------------------------------------------------------


def _tree_fields(group: str) -> list[str]:
    """The settings of one group of the tree (``"matching"``), by their leaf names."""
    return [key.split(".", 1)[1] for key, _ in leaves() if key.startswith(f"{group}.")]


def _table_keys(table: str) -> list[str]:
    """The keys a tree table of the project file may hold."""
    moved = [k.split(".", 1)[1] for k in FILE_KEYS if k.startswith(f"{table}.")]
    return [*_tree_fields(table), *moved, *TREE_TABLES[table]]


def _check_tree_tables(data: dict[str, Any], path: Path, lines: _Lines) -> None:
    """Refuse unknown keys of ``[matching]`` and ``[filtering]``, and values of the wrong TOML
    type (``"32"`` or ``true`` for a size): the tree would convert them."""
    tree = dict(leaves())
    for table in TREE_TABLES:
        values = data.get(table, {})
        if not isinstance(values, dict):
            continue  # the validation names the type
        known = _table_keys(table)
        for key, value in values.items():
            where = lines.line(f"{table}.{key}")
            if key not in known:
                raise _error(path, where, _unknown(key, f"[{table}]", known))
            leaf = tree.get(FILE_KEYS.get(f"{table}.{key}", f"{table}.{key}"))
            wrong = None if leaf is None else _toml_type_problem(value, leaf.annotation)
            if wrong:
                raise _error(path, where, f"{key} {wrong}")


def _toml_type_problem(value: Any, annotation: Any) -> str | None:
    """Why a TOML value cannot be a setting of this type (None if it can)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        problems = [_toml_type_problem(value, kind) for kind in kinds]
        return None if None in problems else problems[0]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    checks: list[tuple[bool, bool, str]] = [
        (annotation is bool, isinstance(value, bool), "true or false"),
        (annotation is int, number and isinstance(value, int), "a whole number"),
        (annotation is float, number, "a number"),
        (annotation is str or origin is Literal, isinstance(value, str), "text (in quotes)"),
        (annotation is Path, isinstance(value, str), "a file path (in quotes)"),
    ]
    for applies, ok, what in checks:
        if applies:
            return None if ok else f"must be {what}, got {value!r}"
    if origin is tuple:
        if isinstance(value, list) and all(_toml_type_problem(v, args[0]) is None for v in value):
            return None
        return f"must be a list, got {value!r}"
    return None


def _track_settings(
    spec: ProjectFile, glaciers: Path | None, stable_mask: Path | None, path: Path, lines: _Lines
) -> TrackSettings:
    """``[matching]``, ``[filtering]`` and the outlines as one :class:`TrackSettings`."""
    tree: dict[str, dict[str, Any]] = {
        "matching": {k: v for k, v in spec.matching.items() if k not in TREE_TABLES["matching"]},
        "filtering": {},
    }
    given = {f"filtering.{k}": v for k, v in spec.filtering.items()}
    given.update({"outlines.glaciers": glaciers, "outlines.stable_mask": stable_mask})
    for key, value in given.items():
        if value is None and key.startswith("outlines."):
            continue
        group, _, leaf = FILE_KEYS.get(key, key).partition(".")
        tree.setdefault(group, {})[leaf] = value
    try:
        return TrackSettings.from_mapping(tree)
    except InputError as exc:
        key = exc.key or ""
        problem = exc.problem.removeprefix(f"{key} ")
        table_key = {tree: k for k, tree in FILE_KEYS.items()}.get(key, key)
        name = table_key.rsplit(".", 1)[-1]
        if key in dict(leaves()):
            return_line = lines.line(table_key)
            raise _error(path, return_line, f"{name} {problem}") from None
        raise _error(path, None, problem) from None


# --------------------------------------------------------------------------------------------
# pydantic's errors as one line naming the line and the key
# --------------------------------------------------------------------------------------------


def _unknown(key: str, where: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r} in {where}{hint} Known keys: {', '.join(known)}"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The table model at a location of :class:`ProjectFile` (None for free tables)."""
    import typing

    model: Any = ProjectFile
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return None
        ann = fields[part].annotation
        for _ in range(3):  # unwrap Optional[...] and list[...]
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                break
            ann = args[0] if args else ann
        model = ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _label(loc: tuple) -> str:
    """How a message names the table at ``loc``."""
    if loc and isinstance(loc[-1], int):
        kind = {"periods": "period", "transects": "[[transects]]"}.get(str(loc[-2]), str(loc[-2]))
        return f"{kind} #{loc[-1] + 1}"
    return f"[{'.'.join(map(str, loc))}]" if loc else "the top level"


_BOUNDS = {"gt": "positive", "ge": "{} or more", "lt": "below {}", "le": "{} or less"}


def _phrase(err: dict[str, Any]) -> str:
    """What is wrong with a value, after its name (``"must be positive, got -60"``)."""
    kind, ctx, got = err["type"], err.get("ctx", {}), f", got {err.get('input')!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(k for k in ("gt", "ge", "lt", "le") if k in ctx)
        text = _BOUNDS[bound].format(ctx[bound])
        if bound == "gt" and ctx[bound] != 0:
            text = f"above {ctx[bound]:g}"
        return f"must be {text}{got}"
    words = {
        "int_type": "a whole number",
        "float_type": "a number",
        "finite_number": "a finite number",
        "bool_type": "true or false",
        "string_type": "text (in quotes)",
        "list_type": "a list",
        "dict_type": "a table",
        "model_type": "a table",
        "model_attributes_type": "a table",
        "datetime_type": "a date such as 2001-07-21",
    }
    if kind in words:
        return f"must be {words[kind]}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}{got}"
    return f"{err['msg']}{got}"


def _validation_error(
    exc: ValidationError, path: Path, lines: _Lines, under: tuple[str, ...] = ()
) -> InputError:
    """The first problem of a validation error as an InputError naming line and key (unknown
    keys first: a misspelt key also leaves the right one missing)."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = (*under, *err["loc"])
    kind = err["type"]
    if kind == "project" and err["ctx"].get("key"):
        loc = (*loc, *err["ctx"]["key"].split("."))
    dotted = ".".join(map(str, loc))
    name = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = [f.alias or n for n, f in model.model_fields.items()] if model else []
        return _error(path, lines.line(dotted), _unknown(name, _label(loc[:-1]), known))
    if kind == "missing":
        where = _label(loc[:-1])
        if loc[:-1] and isinstance(loc[-2], int) and str(loc[-3]) == "periods":
            return _error(path, lines.line(dotted), f"{where} needs year, start and end")
        return _error(path, lines.line(dotted), f"{where} needs {name}")
    if kind == "project":
        message = err["ctx"]["message"]
        if re.match(r"(must|needs|give) ", message):
            label = _label(loc) if not loc or isinstance(loc[-1], int) else name
            if len(loc) > 1 and isinstance(loc[-2], int):
                label = f"{_label(loc[:-1])} {name}"
            joint = ": " if message.startswith("give") else " "
            message = f"{label}{joint}{message}"
        return _error(path, lines.line(dotted), message)
    return _error(path, lines.line(dotted), f"{name} {_phrase(err)}")
