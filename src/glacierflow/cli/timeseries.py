"""``glacierflow timeseries``: pairs (own, ITS_LIVE granules, a Zarr cube) to a velocity series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from glacierflow.cli.paths import out_option
from glacierflow.timeseries.settings import FORMATS, SeriesSettings, parse_freq, parse_lam


def _field_option(name: str, *decls: str, **overrides: Any) -> Any:
    """A click option for a field of :class:`SeriesSettings`: its default and help."""
    field = SeriesSettings.model_fields[name]
    kwargs: dict[str, Any] = {
        "default": field.default,
        "show_default": True,
        "help": field.description,
        **overrides,
    }
    return click.option(*(decls or (f"--{name.replace('_', '-')}",)), name, **kwargs)


def _converted(parse: Any) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _lonlat(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    points = []
    for text in value:
        parts = text.replace(" ", "").split(",")
        try:
            lon, lat = (float(p) for p in parts)
        except ValueError:
            raise click.BadParameter(f"expected LON,LAT in degrees, got {text!r}") from None
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise click.BadParameter(f"{text!r} is not a longitude, latitude in degrees")
        points.append((lon, lat))
    return tuple(points)


def _where(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    where: dict[str, Any] = {}
    for text in value:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {text!r}")
        try:
            where[key.strip()] = int(raw)
        except ValueError:
            try:
                where[key.strip()] = float(raw)
            except ValueError:
                where[key.strip()] = raw
    return where


#: The flag of each field of :class:`SeriesSettings`, for messages.
_FLAGS = {"points": "--at", "formats": "--format"}


def _settings(values: dict[str, Any]) -> SeriesSettings:
    """The settings of the options, validated by the model; a refusal names the flag."""
    from pydantic import ValidationError

    try:
        return SeriesSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        flag = _FLAGS.get(name, f"--{name.replace('_', '-')}")
        message = err["ctx"]["message"] if err["type"] == "project" else err["msg"]
        raise click.BadParameter(
            f"{message}, got {err['input']!r}" if err["type"] != "project" else message,
            param_hint=f"'{flag}'",
        ) from None


@click.command("timeseries")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@out_option("out_dir", "Output folder for the cubes and the point series.", required=True)
@_field_option("freq", metavar="monthly|annual|annual-MM-DD|N", callback=_converted(parse_freq))
@_field_option("regularisation", type=click.Choice(["first", "second"]))
@_field_option("lam", metavar="gcv|discrepancy|NUMBER", callback=_converted(parse_lam))
@_field_option("min_resolution", type=click.FloatRange(0, 1))
@_field_option(
    "points",
    "--at",
    multiple=True,
    default=(),
    show_default=False,
    metavar="LON,LAT",
    callback=_lonlat,
    help="A point (degrees) whose series is printed and written as CSV and a figure; repeatable.",
)
@_field_option(
    "formats",
    "--format",
    multiple=True,
    type=click.Choice(FORMATS),
    show_default=False,
    help="Format of the cubes written; repeatable [default: zarr and netcdf].",
)
@click.option(
    "--centrelines",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Centrelines (a vector file of lines, e.g. OGGM's): the series along each is written "
    "as CSV and a distance-time figure.",
)
@click.option(
    "--centreline-where",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_where,
    help="Keep only the centrelines whose attribute KEY equals VALUE (e.g. MAIN=1); repeatable.",
)
@click.option(
    "--spacing-m",
    type=click.FloatRange(min=0, min_open=True),
    help="Distance between samples along a centreline, metres [default: the cell size].",
)
def command(
    inputs: tuple[Path, ...],
    out_dir: Path,
    centrelines: Path | None,
    centreline_where: dict[str, Any],
    spacing_m: float | None,
    **values: Any,
) -> None:
    """Invert image pairs into a velocity time series on regular steps.

    INPUTS are project output folders (their pairs/), pair product folders or files
    (velocity.tif or .nc), ITS_LIVE image-pair granules (.nc) and local Zarr cubes in
    ITS_LIVE's layout, in any mix; they are put on one grid (the project's, else the first
    input's). Written to OUT: pairs_cube and velocity_series as Zarr and NetCDF with ITS_LIVE's
    names, for each --at point its steps (CSV), its pairs (CSV) and a figure, and for each
    centreline its series by distance and step (lines/, CSV) and a distance-time figure.

    \b
    Examples:
      glacierflow timeseries out/ -o out/timeseries --freq monthly --at -141.33,60.17
      glacierflow timeseries out/ granules/*.nc -o series --freq 16 --format zarr
      glacierflow timeseries cube.zarr -o series --centrelines lines.shp --centreline-where MAIN=1
    """
    from glacierflow.timeseries.workflow import run_series

    if not values["formats"]:
        values["formats"] = FORMATS
    result = run_series(
        list(inputs),
        out_dir,
        _settings(values),
        centrelines=centrelines,
        centreline_where=centreline_where,
        spacing_m=spacing_m,
        echo=click.echo,
    )
    cubes = ", ".join(p.name for k, p in result.files.items() if not k.startswith("line_"))
    lines = result.lines["line_id"].nunique() if result.lines is not None else 0
    click.echo(
        f"done: {cubes}, {len(result.points)} point series and {lines} line series in {out_dir}"
    )
