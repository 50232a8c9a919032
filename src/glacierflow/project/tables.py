"""The tables of a project file as pydantic models (everything but the tracking settings).

:mod:`glacierflow.project.config` validates a parsed TOML document into :class:`ProjectFile`
and turns pydantic's errors into one-line messages naming the file, the line and the key. The
``[matching]`` and ``[filtering]`` tables are kept as plain mappings here: they validate into
the one settings tree, :class:`glacierflow.settings.TrackSettings`.

Checks that concern one key raise :func:`problem` errors carrying that key, so the message
points at its line (``"period 2001 ends (...) before it starts (...)"`` at ``end``).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from glacierflow.stack import ASSIGN_RULES
from glacierflow.timeseries.settings import SeriesSettings

#: Scene file patterns scanned in a folder when the project gives none.
DEFAULT_PATTERNS = ("*.tif", "*.TIF", "*.tiff", "*.TIFF")


def problem(message: str, key: str | None = None) -> PydanticCustomError:
    """A validation error about ``key`` of the table being checked (the table itself if None);
    ``message`` is the whole sentence the user reads."""
    return PydanticCustomError("project", "{message}", {"message": message, "key": key or ""})


def _utc(value: Any) -> Any:
    """A TOML date, date-time or date text as an aware UTC datetime (others left to fail)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        from glacierflow.errors import InputError
        from glacierflow.scenes import parse_datetime

        try:
            return parse_datetime(value)
        except InputError:
            pass
    raise problem(f"must be a date such as 2001-07-21, got {value!r}")


def _globs(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise problem(f"pattern must be a glob or a list of globs, got {value!r}")


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _four_numbers(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value):
        if not all(math.isfinite(v) for v in value):
            raise problem(f"must be 4 finite numbers, got {value!r}")
        return tuple(float(v) for v in value)
    raise problem(f"must be 4 numbers, got {value!r}")


def _points(value: Any) -> Any:
    if (
        isinstance(value, list)
        and len(value) >= 2
        and all(isinstance(p, list) and len(p) == 2 and all(map(_is_number, p)) for p in value)
    ):
        return tuple((float(p[0]), float(p[1])) for p in value)
    raise problem(f"give two or more [x, y] points, got {value!r}")


#: A date: TOML date or date-time, or ISO text; aware UTC.
Day = Annotated[datetime, BeforeValidator(_utc)]
#: A box [xmin, ymin, xmax, ymax] (or west, south, east, north).
Box = Annotated[tuple[float, float, float, float], BeforeValidator(_four_numbers)]
#: Two or more [x, y] points.
Line = Annotated[tuple[tuple[float, float], ...], BeforeValidator(_points)]


class _Table(BaseModel):
    # strict: TOML has types; "32" is not a number and true is not 1.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ScenesTable(_Table):
    """``[scenes]``: where the images are (paths relative to the project file)."""

    folder: str | None = None
    pattern: Annotated[tuple[str, ...] | None, BeforeValidator(_globs)] = None
    paths: list[str] = []
    list_: str | None = Field(None, alias="list")
    band: int | None = Field(None, ge=1)
    path_row: Annotated[str | None, BeforeValidator(_text)] = None
    dates: dict[str, Day] = {}
    trust_dates: bool = False

    @model_validator(mode="after")
    def _somewhere(self) -> ScenesTable:
        if self.folder is None and not self.paths and self.list_ is None:
            raise problem("[scenes] needs folder, paths or list: where are the images?")
        if self.path_row is not None and self.wrs_path_row is None:
            raise problem(
                'path_row must be WRS path and row as PPPRRR, e.g. "148035", got '
                f"{self.path_row!r}",
                "path_row",
            )
        return self

    @property
    def patterns(self) -> tuple[str, ...]:
        """The file name patterns scanned in the folder."""
        return DEFAULT_PATTERNS if self.pattern is None else self.pattern

    @property
    def wrs_path_row(self) -> str | None:
        """``path_row`` as ``"PPPRRR"`` (None if not given or not a path/row)."""
        if self.path_row is None:
            return None
        text = str(self.path_row).replace("/", "").replace("_", "").zfill(6)
        return text if re.fullmatch(r"\d{6}", text) else None


def _pair_item(value: Any) -> Any:
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(s, str | date) for s in value)
    ):
        raise problem(
            'every explicit pair must be ["first", "second"] (dates, scene IDs or file names), '
            f"got {value!r}"
        )
    return tuple(s.isoformat() if isinstance(s, date) else s for s in value)


class PairsTable(_Table):
    """``[pairs]``: explicit pairs, or the rules that pair scenes."""

    explicit: list[Annotated[tuple[str, str], BeforeValidator(_pair_item)]] | None = None
    min_days: float = Field(1.0, allow_inf_nan=False)
    max_days: float = Field(366.0 * 5, allow_inf_nan=False)
    same_path_row: bool = True

    @model_validator(mode="after")
    def _separations(self) -> PairsTable:
        if not self.min_days > 0:
            raise problem(
                "min_days must be positive (a pair needs time between its images), got "
                f"{self.min_days:g}",
                "min_days",
            )
        if self.max_days < self.min_days:
            raise problem(
                f"max_days ({self.max_days:g}) is below min_days ({self.min_days:g})", "max_days"
            )
        return self


class GridTable(_Table):
    """``[grid]``: the common output grid."""

    crs: str
    resolution_m: float = Field(gt=0, allow_inf_nan=False)
    bounds_lonlat: Box | None = None
    bounds: Box | None = None

    @model_validator(mode="after")
    def _bounds(self) -> GridTable:
        from pyproj import CRS

        try:
            crs = CRS.from_user_input(self.crs)
        except Exception as exc:  # pyproj raises CRSError and others for bad text
            raise problem(f"unknown CRS {self.crs!r} ({exc})", "crs") from None
        if not crs.is_projected:
            raise problem(
                f"the grid CRS must be projected in metres (e.g. UTM, EPSG:326NN), got {self.crs}",
                "crs",
            )
        if (self.bounds is None) == (self.bounds_lonlat is None):
            raise problem(
                "[grid] needs exactly one of bounds_lonlat = [west, south, east, north] "
                "(degrees) or bounds = [xmin, ymin, xmax, ymax] (grid CRS, metres)"
            )
        key = "bounds_lonlat" if self.bounds_lonlat is not None else "bounds"
        b = self.box
        if not (b[2] > b[0] and b[3] > b[1]):
            raise problem(
                "bounds must be [xmin, ymin, xmax, ymax] (west, south, east, north) with max > "
                f"min, got {list(b)}",
                key,
            )
        if key == "bounds_lonlat" and not (
            all(-180 <= v <= 180 for v in b[::2]) and all(-90 <= v <= 90 for v in b[1::2])
        ):
            raise problem(f"bounds_lonlat must be degrees, got {list(b)}", key)
        return self

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The bounds given: degrees with ``lonlat``, else metres of the grid CRS."""
        return self.bounds_lonlat if self.bounds_lonlat is not None else self.bounds  # type: ignore[return-value]

    @property
    def lonlat(self) -> bool:
        """Whether the bounds are longitudes and latitudes."""
        return self.bounds_lonlat is not None


class OutlinesTable(_Table):
    """``[outlines]``: glacier outlines, stable ground, centrelines (files)."""

    glaciers: str | None = None
    stable_mask: str | None = None
    id_field: str | None = None
    name_field: str | None = None
    centrelines: str | None = None
    centreline_where: dict[str, Any] = {}


def _calendar(value: Any) -> Any:
    if value == "calendar":
        return None
    if isinstance(value, list) and value and all(isinstance(p, dict) for p in value):
        return value
    raise problem(
        'periods must be "calendar" or a list of [[composites.periods]] tables with year, '
        "start and end"
    )


class PeriodTable(_Table):
    """One ``[[composites.periods]]``: a year's name and its span."""

    year: int
    start: Day
    end: Day

    @model_validator(mode="after")
    def _ordered(self) -> PeriodTable:
        if not self.end > self.start:
            raise problem(
                f"period {self.year} ends ({self.end:%Y-%m-%d}) before it starts "
                f"({self.start:%Y-%m-%d})",
                "end",
            )
        return self


class CompositesTable(_Table):
    """``[composites]``: the periods of the annual maps and how pairs are assigned to them."""

    periods: Annotated[list[PeriodTable] | None, BeforeValidator(_calendar)] = None
    assign: Literal[ASSIGN_RULES] = "overlap"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _distinct(self) -> CompositesTable:
        seen: set[int] = set()
        for i, period in enumerate(self.periods or []):
            if period.year in seen:
                raise problem(f"two periods are named {period.year}", f"periods.{i}.year")
            seen.add(period.year)
        return self

    @property
    def spans(self) -> tuple[tuple[int, datetime, datetime], ...] | None:
        """The periods as (year, start, end), or None for calendar years."""
        if self.periods is None:
            return None
        return tuple((p.year, p.start, p.end) for p in self.periods)


class AnalysisTable(_Table):
    """``[analysis]``: candidate surges and profile sampling."""

    surge_factor: float = Field(2.0, gt=1)
    surge_min_area_km2: float = 0.5
    surge_min_speed_m_per_yr: float = 10.0
    surge_n_sigma: float = 3.0
    profile_spacing_m: float | None = Field(None, gt=0)

    def values(self, default_spacing_m: float) -> dict[str, float]:
        """The analysis settings, ``profile_spacing_m`` defaulting to ``default_spacing_m``
        (the grid's cell size)."""
        values = self.model_dump()
        if values["profile_spacing_m"] is None:
            values["profile_spacing_m"] = float(default_spacing_m)
        return {k: float(v) for k, v in values.items()}


class RunningTable(_Table):
    """Keys of ``[matching]`` that are about running the project, not about matching."""

    concurrent_pairs: int = Field(1, ge=1)


class TransectTable(_Table):
    """One ``[[transects]]``: a named line in lon/lat or in grid metres."""

    name: str | None = None
    lonlat: Line | None = None
    xy: Line | None = None

    @model_validator(mode="after")
    def _one_line(self) -> TransectTable:
        if (self.lonlat is None) == (self.xy is None):
            raise problem("needs exactly one of lonlat or xy")
        return self


class TimeseriesTable(SeriesSettings):
    """``[timeseries]``: the network inversion run after the composites
    (:class:`~glacierflow.timeseries.settings.SeriesSettings`: ``freq``, ``regularisation``,
    ``lam``, ``min_resolution``, ``points``, ``formats``), plus ITS_LIVE granules or Zarr
    cubes to invert with the project's own pairs (``itslive``, paths relative to the file)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    itslive: Annotated[tuple[str, ...], BeforeValidator(_globs)] = ()

    def settings(self) -> SeriesSettings:
        """The series settings, without the extra inputs."""
        return SeriesSettings(**self.model_dump(exclude={"itslive"}))


class ProjectFile(_Table):
    """A whole project file; ``[matching]`` and ``[filtering]`` stay mappings (see module)."""

    name: str | None = None
    output: str | None = None
    scenes: ScenesTable
    pairs: PairsTable = PairsTable()
    grid: GridTable
    matching: dict[str, Any] = {}
    filtering: dict[str, Any] = {}
    outlines: OutlinesTable = OutlinesTable()
    composites: CompositesTable = CompositesTable()
    analysis: AnalysisTable = AnalysisTable()
    transects: list[TransectTable] = []
    timeseries: TimeseriesTable | None = None

    @model_validator(mode="after")
    def _points_on_grid(self) -> ProjectFile:
        """The ``[timeseries]`` points lie on the project grid (checked now, not after the
        pairs are tracked and inverted)."""
        if self.timeseries is None or not self.timeseries.points:
            return self
        from pyproj import Transformer
        from rasterio.warp import transform_bounds

        from glacierflow.stack import Grid

        g = self.grid
        grid = Grid.from_bounds(
            g.crs, g.box, g.resolution_m, bounds_crs="EPSG:4326" if g.lonlat else None
        )
        left, bottom, right, top = grid.bounds
        to_map = Transformer.from_crs("EPSG:4326", grid.crs_wkt, always_xy=True)
        for i, (lon, lat) in enumerate(self.timeseries.points, start=1):
            x, y = to_map.transform(lon, lat)
            if not (left <= x <= right and bottom <= y <= top):
                w, s, e, n = transform_bounds(grid.crs_wkt, "EPSG:4326", *grid.bounds)
                raise problem(
                    f"points: point {i} [{lon}, {lat}] lies outside the project grid, which "
                    f"covers longitude {w:.4f} to {e:.4f}, latitude {s:.4f} to {n:.4f}",
                    "timeseries.points",
                )
        return self
