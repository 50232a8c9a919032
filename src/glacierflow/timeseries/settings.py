"""Settings of a velocity time series: one definition for the three doors.

:class:`SeriesSettings` is what ``glacierflow timeseries`` builds its options from (its fields'
types, defaults and help), what the ``[timeseries]`` table of a project file validates into
(:class:`glacierflow.project.tables.TimeseriesTable`) and what
:func:`glacierflow.timeseries.workflow.run_series` takes.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from glacierflow.timeseries.inversion import InversionSettings

__all__ = ["FORMATS", "SeriesSettings", "parse_freq", "parse_lam"]

#: File formats of the cubes written.
FORMATS = ("zarr", "netcdf")

_ANNUAL = re.compile(r"^annual(-\d{2}-\d{2})?$")


def _problem(message: str) -> PydanticCustomError:
    # The error type the project file's messages render as one sentence at the key's line
    # (glacierflow.project.tables.problem).
    return PydanticCustomError("project", "{message}", {"message": message, "key": ""})


def parse_freq(value: Any) -> str | int:
    """``"monthly"``, ``"annual"``, ``"annual-MM-DD"`` or a number of days (text or int).

    Raises
    ------
    ValueError
        Naming the allowed values.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return int(value)
    text = str(value).strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if text == "monthly" or text == "annual":
        return text
    if _ANNUAL.match(text):
        month, day = int(text[7:9]), int(text[10:12])
        try:
            date(2001, month, day)  # a day of every year: not 29 February
        except ValueError:
            raise ValueError(
                "must name a day of every year in annual-MM-DD (a month 01-12, a day of that "
                f"month, not 02-29, e.g. annual-07-01), got {value!r}"
            ) from None
        return text
    raise ValueError(
        'must be "monthly", "annual", "annual-MM-DD" (years from that day) or a whole number '
        f"of days, got {value!r}"
    )


def parse_lam(value: Any) -> str | float:
    """``"gcv"``, ``"discrepancy"`` or a non-negative number (text or number).

    Raises
    ------
    ValueError
        Naming the allowed values.
    """
    if isinstance(value, str) and value.strip() in ("gcv", "discrepancy"):
        return value.strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not (number >= 0 and math.isfinite(number)):
        raise ValueError(f'must be "gcv", "discrepancy" or a finite number >= 0, got {value!r}')
    return number


def _pairs_of_numbers(value: Any) -> Any:
    if isinstance(value, list | tuple) and all(
        isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
        for p in value
    ):
        points = tuple((float(p[0]), float(p[1])) for p in value)
        for i, (lon, lat) in enumerate(points, start=1):
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise _problem(
                    f"must be [longitude, latitude] in degrees (longitude -180 to 180, latitude "
                    f"-90 to 90); point {i} is {[p for p in value][i - 1]!r}"
                )
        return points
    raise _problem(f"must be a list of [longitude, latitude] pairs (degrees), got {value!r}")


def _formats(value: Any) -> Any:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or any(v not in FORMATS for v in items):
        raise _problem(f'must name "zarr", "netcdf" or both, got {value!r}')
    return tuple(dict.fromkeys(items))


class SeriesSettings(BaseModel):
    """How pairs become a velocity time series, and what is written.

    See :mod:`glacierflow.timeseries.inversion` for the inversion's model and choices.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    freq: str | int = Field(
        "monthly",
        description='Steps of the series: "monthly", "annual", "annual-MM-DD" (years from '
        "that day) or a number of days.",
    )
    regularisation: Literal["first", "second"] = Field(
        "first", description="Differences of consecutive steps that are penalised (order)."
    )
    lam: str | float = Field(
        "gcv",
        description='Strength of the temporal regularisation: "gcv" (generalised '
        'cross-validation within the pairs\' stated errors), "discrepancy", or a fixed number '
        "relative to the data's weight.",
    )
    min_resolution: float = Field(
        0.5,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Smallest share of a step the pairs alone must determine for it to be "
        "reported (model resolution); below it the step is a gap (NaN).",
    )
    points: Annotated[tuple[tuple[float, float], ...], BeforeValidator(_pairs_of_numbers)] = Field(
        (), description="Points [longitude, latitude] (degrees) whose series are plotted."
    )
    formats: Annotated[tuple[Literal[FORMATS], ...], BeforeValidator(_formats)] = Field(  # type: ignore[valid-type]
        FORMATS, description="Formats of the cubes written: zarr, netcdf or both."
    )

    @field_validator("freq", mode="before")
    @classmethod
    def _freq(cls, value: Any) -> Any:
        try:
            return parse_freq(value)
        except ValueError as exc:
            raise _problem(str(exc)) from None

    @field_validator("min_resolution", mode="before")
    @classmethod
    def _min_resolution(cls, value: Any) -> Any:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and not 0 <= value <= 1:  # NaN too
            raise _problem(f"must be a number from 0 to 1, got {value!r}")
        return value

    @field_validator("lam", mode="before")
    @classmethod
    def _lam(cls, value: Any) -> Any:
        try:
            return parse_lam(value)
        except ValueError as exc:
            raise _problem(str(exc)) from None

    def inversion(self) -> InversionSettings:
        """The :class:`~glacierflow.timeseries.inversion.InversionSettings` of these settings."""
        return InversionSettings(
            regularisation=self.regularisation,
            lam=self.lam,
            min_resolution=self.min_resolution,
        )
