"""The one settings tree of a tracking run: every option, its unit, default and allowed values.

The command line, the project file and the Python API are three doors into this tree. Each
setting is written once, here or in the settings class of its stage (``MatchSettings`` in
:mod:`glacierflow.matching`, ``FilterSettings`` in :mod:`glacierflow.filters`), as a pydantic
field with its type, default, range and one-line help; the command line builds its options from
these fields (:mod:`glacierflow.cli.options`), a project file validates into them, and
:func:`glacierflow.track.track` takes a :class:`TrackSettings`.

::

    TrackSettings
      matching   MatchSettings        chip_px, search_px, step_px, method, subpixel, workers,
                                      pyramid_levels, retry_chip_px, retry_min_snr, ...
      prefilter  PrefilterSettings    method, highpass_sigma_px, wallis_window_px
      filtering  FilteringSettings    min_corr, min_snr (None: per correlator), fill_holes, ...
      coreg      CoregSettings        method
      stable     StableSettings       glacier_outlines, stable_mask, ice_buffer_m
      prior      PriorSettings        vx, vy
      tiling     TilingSettings       tile_nodes, scheduler, work_dir

Every leaf has a *short name*, unique in the tree: its field name, or the ``short`` its field
declares (``prefilter.method`` is ``prefilter``, ``coreg.method`` is ``coreg``, ``prior.vx`` is
``prior_vx``). Short names are the keyword shortcuts of :func:`~glacierflow.track.track`
(``track(ref, sec, chip_px=48, coreg="none")``) and, with ``-`` for ``_``, the command-line
flags (``--chip-px``, ``--coreg``).

Bad values raise :class:`~glacierflow.errors.SettingsError` naming the dotted key
(``matching.chip_px``), the problem and the allowed values, with "did you mean" for a misspelt
key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from glacierflow.coregister import COREG_METHODS
from glacierflow.errors import InputError, SettingsError
from glacierflow.filters import METHOD_THRESHOLDS, FilterSettings
from glacierflow.matching import METHODS, MatchSettings, make_grid
from glacierflow.prefilter import (
    HIGHPASS_SIGMA_PX,
    MAX_HIGHPASS_SIGMA_PX,
    MAX_WALLIS_WINDOW_PX,
    PREFILTERS,
    WALLIS_WINDOW_PX,
)

__all__ = [
    "COREG_CHOICES",
    "SHORTCUTS",
    "CoregSettings",
    "FilteringSettings",
    "PrefilterSettings",
    "PriorSettings",
    "StableSettings",
    "TilingSettings",
    "TrackSettings",
    "leaves",
    "settings_error",
]

#: Co-registration choices: the fitted surfaces of :mod:`glacierflow.coregister`, or ``"none"``.
COREG_CHOICES = (*COREG_METHODS, "none")
#: Pre-filters the tiled (from-the-files) matcher can apply window by window.
TILED_PREFILTERS = ("none", "highpass", "wallis")
#: Fewest nodes of the grid along each axis: the outlier tests judge a node by its 3 x 3
#: neighbours, and co-registration needs nodes spread over the image.
MIN_NODES_PER_AXIS = 3


def _short(name: str) -> dict[str, Any]:
    """``json_schema_extra`` giving a field its short name (keyword shortcut and CLI flag)."""
    return {"short": name}


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PrefilterSettings(_Group):
    """Image enhancement before matching (:mod:`glacierflow.prefilter`)."""

    method: Literal[PREFILTERS] = Field(  # type: ignore[valid-type]
        "none",
        description="Image enhancement before matching (nodata-aware).",
        json_schema_extra=_short("prefilter"),
    )
    highpass_sigma_px: float = Field(
        HIGHPASS_SIGMA_PX,
        gt=0,
        le=MAX_HIGHPASS_SIGMA_PX,
        allow_inf_nan=False,
        description="Gaussian sigma of the high-pass pre-filter, pixels.",
    )
    wallis_window_px: float = Field(
        WALLIS_WINDOW_PX,
        gt=0,
        le=MAX_WALLIS_WINDOW_PX,
        allow_inf_nan=False,
        description="Window of the Wallis pre-filter, pixels.",
    )


class FilteringSettings(FilterSettings):
    """The outlier filter of a tracking run: :class:`~glacierflow.filters.FilterSettings` whose
    thresholds and cluster size default to what suits the correlator and the grid.

    See :meth:`resolve` for the settings the filter then uses.
    """

    min_corr: float | None = Field(  # type: ignore[assignment]
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Lowest peak correlation kept [default: per method, "
        + ", ".join(f"{m} {c:g}" for m, (c, _) in METHOD_THRESHOLDS.items())
        + "].",
    )
    min_snr: float | None = Field(  # type: ignore[assignment]
        None,
        ge=0,
        allow_inf_nan=False,
        description="Lowest correlation peak signal-to-noise ratio kept [default: per method, "
        + ", ".join(f"{m} {s:g}" for m, (_, s) in METHOD_THRESHOLDS.items())
        + "].",
    )
    min_cluster_nodes: int | None = Field(  # type: ignore[assignment]
        None,
        ge=1,
        description="Smallest group of linked nodes kept [default: nodes in one chip "
        "footprint, (chip_px / step_px)^2, at least 4].",
    )

    def resolve(self, method: str, chip_px: int, step_px: int) -> FilterSettings:
        """The filter settings for a correlator and a grid, defaults filled in.

        Parameters
        ----------
        method : str
            Correlator; picks the default ``min_corr`` and ``min_snr``
            (:data:`~glacierflow.filters.METHOD_THRESHOLDS`).
        chip_px, step_px : int
            Chip side and node spacing, in pixels; give the default ``min_cluster_nodes``.
        """
        default_corr, default_snr = METHOD_THRESHOLDS.get(method, METHOD_THRESHOLDS["ncc"])
        given = {k: v for k, v in self.model_dump().items() if v is not None}
        return FilterSettings.for_grid(
            chip_px,
            step_px,
            **{"min_corr": default_corr, "min_snr": default_snr, **given},
        )


class CoregSettings(_Group):
    """Co-registration on stable ground (:mod:`glacierflow.coregister`)."""

    method: Literal[COREG_CHOICES] = Field(  # type: ignore[valid-type]
        "constant",
        description="Misregistration fitted on stable ground and removed (without outlines or "
        "mask: on the slowest quarter of the nodes).",
        json_schema_extra=_short("coreg"),
    )


class StableSettings(_Group):
    """Where stable (ice-free) ground is, for co-registration and the error model."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    glacier_outlines: Path | None = Field(
        None,
        description="Glacier outlines (e.g. RGI, any CRS): stable ground is everything off "
        "the ice.",
    )
    stable_mask: Path | np.ndarray | None = Field(
        None,
        description="Stable ground marked directly: polygons, or a raster whose non-zero cells "
        "are stable (in Python also a boolean array on the node grid).",
    )
    ice_buffer_m: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Growth of the glacier outlines, metres [default: half a chip plus one "
        "node step].",
    )

    def buffer_m(self, chip_px: int, step_px: int, pixel_size_m: float) -> float:
        """``ice_buffer_m``, or its default: half a chip plus one node step, in metres (no
        stable chip reaches the ice, with a node step to spare for outline errors)."""
        if self.ice_buffer_m is not None:
            return float(self.ice_buffer_m)
        return (chip_px / 2 + step_px) * pixel_size_m


class PriorSettings(_Group):
    """A prior velocity field that centres each node's search window."""

    vx: Path | None = Field(
        None,
        description="Prior velocity east component (m/yr raster) to centre the search.",
        json_schema_extra=_short("prior_vx"),
    )
    vy: Path | None = Field(
        None,
        description="Prior velocity north component (m/yr raster).",
        json_schema_extra=_short("prior_vy"),
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> PriorSettings:
        if (self.vx is None) != (self.vy is None):
            given, missing = ("vx", "vy") if self.vy is None else ("vy", "vx")
            raise ValueError(
                f"{missing} must be given with prior.{given}: a prior velocity needs both "
                "components"
            )
        return self


class TilingSettings(_Group):
    """Tiled matching from the files, with bounded memory (:mod:`glacierflow.tiling`)."""

    tile_nodes: int | None = Field(
        None,
        ge=1,
        description="Match tile by tile from the files with bounded memory, about this many "
        "nodes per tile; a killed run resumes from its finished tiles.",
    )
    scheduler: str | None = Field(
        None,
        description="Address of a dask.distributed scheduler to run the tiles on (implies tiling).",
    )
    work_dir: Path | None = Field(
        None,
        description="Where finished tiles are kept [default: OUT/.glacierflow-work, removed "
        "at the end].",
    )

    @property
    def enabled(self) -> bool:
        """Whether any tiling option is set (which switches tiling on)."""
        return (
            self.tile_nodes is not None or self.scheduler is not None or self.work_dir is not None
        )


class TrackSettings(_Group):
    """Every setting of a tracking run; see the module docstring for the tree."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    matching: MatchSettings = Field(default_factory=MatchSettings, description="Matching.")
    prefilter: PrefilterSettings = Field(
        default_factory=PrefilterSettings, description="Pre-filter."
    )
    filtering: FilteringSettings = Field(
        default_factory=FilteringSettings, description="Outlier filter."
    )
    coreg: CoregSettings = Field(default_factory=CoregSettings, description="Co-registration.")
    stable: StableSettings = Field(default_factory=StableSettings, description="Stable ground.")
    prior: PriorSettings = Field(default_factory=PriorSettings, description="Prior velocity.")
    tiling: TilingSettings = Field(default_factory=TilingSettings, description="Tiled matching.")

    @model_validator(mode="after")
    def _tiling_can_do_it(self) -> TrackSettings:
        if self.tiling.enabled and not self.tiling_supported():
            raise SettingsError(
                "tiling",
                "settings: tiled processing (tiling.tile_nodes, tiling.scheduler, "
                "tiling.work_dir) supports every correlator with a prior velocity, a coarse pass "
                "and the high-pass or Wallis pre-filter, but not prefilter.method 'orientation' "
                "(use matching.method 'orientation') or second matches "
                "(matching.recheck_search_px); run untiled",
                allowed=TILED_PREFILTERS,
            )
        return self

    def tiling_supported(self) -> bool:
        """Whether tiled matching can do what these settings ask."""
        return (
            self.matching.method in METHODS
            and self.prefilter.method in TILED_PREFILTERS
            and not self.matching.recheck_search_px
        )

    def check_image(self, shape_px: tuple[int, int], path: str | Path | None = None) -> None:
        """Refuse settings that do not fit an image of ``shape_px`` (rows, columns), before
        any work: chips, search windows, retry chips and pre-filters larger than the image, or
        a node grid with fewer than :data:`MIN_NODES_PER_AXIS` nodes along an axis.

        Raises
        ------
        InputError
            Naming ``path``, the image size and the settings to change.
        """
        m, p = self.matching, self.prefilter
        rows, cols = (int(n) for n in shape_px)
        size = f"the image ({rows} x {cols} px)"
        try:
            grid = make_grid((rows, cols), chip_px=m.chip_px, search_px=m.search_px, step_px=1)
        except ValueError as exc:
            keys = ("matching.chip_px", "matching.search_px")
            raise InputError(str(exc), path, key=keys) from None
        span = min(grid.ny, grid.nx) - 1  # pixels between the first and last usable centres
        if span // m.step_px + 1 < MIN_NODES_PER_AXIS:
            raise InputError(
                f"{size} holds fewer than {MIN_NODES_PER_AXIS} nodes per axis with chip_px "
                f"{m.chip_px}, search_px {m.search_px} and step_px {m.step_px}; use a step_px "
                f"of at most {max(span // (MIN_NODES_PER_AXIS - 1), 1)} (or a smaller chip_px "
                "or search_px, or a larger image)",
                path,
                key=("matching.step_px", "matching.chip_px", "matching.search_px"),
            )
        # The default ladder of larger chips simply finds too few valid pixels in a small
        # image; other chips the user asked for must fit.
        default = type(m).model_fields["retry_chip_px"].default
        asked = () if m.retry_chip_px == default else m.retry_chip_px
        for chip in asked:
            if chip + 2 * m.search_px > min(rows, cols):
                raise InputError(
                    f"{size} is smaller than a retry chip with its search window ({chip} + "
                    f"2 x {m.search_px} px); use smaller retry_chip_px",
                    path,
                    key=("matching.retry_chip_px", "matching.search_px"),
                )
        filters = {"highpass": ("highpass_sigma_px", p.highpass_sigma_px)}
        filters["wallis"] = ("wallis_window_px", p.wallis_window_px)
        if p.method in filters and filters[p.method][1] > max(rows, cols):
            name, value = filters[p.method]
            raise InputError(
                f"{name} {value:g} is larger than {size}; use a smaller one",
                path,
                key=f"prefilter.{name}",
            )

    def filter_settings(self) -> FilterSettings:
        """The outlier filter's settings for this correlator and grid, defaults filled in."""
        m = self.matching
        return self.filtering.resolve(m.method, m.chip_px, m.step_px)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TrackSettings:
        """Settings from a nested mapping (``{"matching": {"chip_px": 48}}``), as a project
        file's tables give them; missing keys keep their defaults.

        Raises
        ------
        SettingsError
            For an unknown key (with "did you mean") or a value out of type or range, naming
            the dotted key.
        """
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise settings_error(exc, cls) from None

    def updated(self, changes: Mapping[str, Any] | None = None, **shortcuts: Any) -> TrackSettings:
        """A copy with some settings changed and everything validated again.

        Parameters
        ----------
        changes : mapping, optional
            Dotted keys (``"matching.chip_px"``) to new values.
        **shortcuts
            Short names (:data:`SHORTCUTS`: ``chip_px=48``, ``coreg="none"``) to new values.

        Raises
        ------
        SettingsError
            For an unknown name or an unusable value.
        """
        dotted = dict(changes or {})
        for name, value in shortcuts.items():
            dotted[_shortcut_key(name)] = value
        if not dotted:
            return self
        groups: dict[str, dict[str, Any]] = {}
        for key, value in dotted.items():
            group, _, leaf = key.partition(".")
            if group not in type(self).model_fields or not leaf:
                raise _unknown(key, [k for k, _ in leaves(type(self))])
            groups.setdefault(group, {})[leaf] = value
        data: dict[str, Any] = {name: getattr(self, name) for name in type(self).model_fields}
        for group, values in groups.items():
            data[group] = {**_fields_of(getattr(self, group)), **values}
        return type(self).from_mapping(data)


# --------------------------------------------------------------------------------------------
# The tree's leaves, short names, and errors


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One setting of the tree, for the command line and messages.

    Attributes
    ----------
    key : str
        Dotted key (``"matching.chip_px"``).
    short : str
        Short name: keyword shortcut, and with ``-`` for ``_`` the command-line flag.
    annotation : Any
        The field's type.
    default : Any
        The default value (None where a default is computed from other settings).
    description : str
        One-line help.
    """

    key: str
    short: str
    annotation: Any
    default: Any
    description: str


def _fields_of(obj: Any) -> dict[str, Any]:
    names = (
        type(obj).model_fields
        if isinstance(obj, BaseModel)
        else [f.name for f in dataclasses.fields(obj)]
    )
    return {name: getattr(obj, name) for name in names}


def _doc_help(cls: type) -> dict[str, str]:
    """First sentence of each attribute in a numpydoc ``Attributes`` section (for settings
    classes written as plain dataclasses)."""
    doc = (cls.__doc__ or "").expandtabs()
    lines = doc.splitlines()
    out: dict[str, str] = {}
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 4 and " : " in stripped:
            current = stripped.split(" : ")[0]
            out[current] = ""
        elif current and stripped and indent > 4 and "." not in out[current][-1:]:
            out[current] = f"{out[current]} {stripped}".strip()
        elif indent <= 4:
            current = None
    out = {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v).replace("``", "") for k, v in out.items()}
    return {k: v.split(". ")[0].rstrip(".") + "." if v else "" for k, v in out.items()}


def _group_leaves(prefix: str, cls: type) -> Iterator[Leaf]:
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            default = info.get_default(call_default_factory=True)
            yield Leaf(
                f"{prefix}{name}",
                str(extra.get("short", name)),
                info.annotation,
                default,
                info.description or "",
            )
        return
    hints = typing.get_type_hints(cls)
    helps = _doc_help(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        yield Leaf(f"{prefix}{f.name}", f.name, hints[f.name], default, helps.get(f.name, ""))


def leaves(cls: type[TrackSettings] = TrackSettings) -> list[tuple[str, Leaf]]:
    """Every leaf setting of the tree, as (dotted key, :class:`Leaf`), in tree order."""
    out = []
    for group, info in cls.model_fields.items():
        for leaf in _group_leaves(f"{group}.", info.annotation):
            out.append((leaf.key, leaf))
    return out


#: Leaves by dotted key.
LEAVES: dict[str, Leaf] = dict(leaves())
#: Old names still taken as keyword shortcuts, by the short name they stand for.
ALIASES = {"prefilter_sigma_px": "highpass_sigma_px"}
#: Keyword shortcuts (short names) to dotted keys.
SHORTCUTS: dict[str, str] = {leaf.short: key for key, leaf in LEAVES.items()}
if len(SHORTCUTS) != len(LEAVES):  # pragma: no cover - a programming error
    raise RuntimeError("two settings share one short name")


def _shortcut_key(name: str) -> str:
    if name in ALIASES:
        name = ALIASES[name]
    try:
        return SHORTCUTS[name]
    except KeyError:
        raise _unknown(name, [*SHORTCUTS, *ALIASES]) from None


def _unknown(key: str, known: list[str]) -> SettingsError:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, known, n=1) or difflib.get_close_matches(
        leaf, known, n=1
    )
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return SettingsError(key, f"is not a setting{hint}", allowed=known)


def _known_at(cls: type, loc: tuple) -> list[str]:
    """Field names of the settings class at ``loc`` (a pydantic error location)."""
    for part in loc:
        fields = getattr(cls, "model_fields", None)
        if not fields or part not in fields:
            break
        cls = fields[part].annotation
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return []


def _problem(err: Mapping[str, Any]) -> tuple[str, tuple | None]:
    """The message for one pydantic error, after the setting's name, and the allowed values."""
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    got = f", got {value!r}"
    if kind == "literal_error":
        allowed = tuple(
            a.strip(" '\"") for a in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")
        )
        return f"must be one of {', '.join(allowed)}{got}", allowed
    if kind == "greater_than_equal" and ctx.get("ge") == 1 and isinstance(value, int):
        return f"must be a positive whole number{got}", None
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
        bound = next(f"{w} {ctx[k]}" for k, w in words.items() if k in ctx)
        return f"must be {bound}{got}", None
    if kind.startswith("int_"):
        return f"must be a whole number{got}", None
    if kind.startswith("float_"):
        return f"must be a finite number{got}", None
    if kind.startswith("bool_"):
        return f"must be true or false{got}", None
    if kind == "finite_number":
        return f"must be a finite number{got}", None
    msg = str(err["msg"])
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        return msg, None
    return f"{msg[:1].lower()}{msg[1:]}{got}", None


def settings_error(
    exc: ValidationError, cls: type = TrackSettings, prefix: str = ""
) -> SettingsError:
    """The first problem of a pydantic validation error as a :class:`SettingsError`.

    Parameters
    ----------
    exc : pydantic.ValidationError
        From validating ``cls``.
    cls : type
        The settings class validated.
    prefix : str
        Dotted key of ``cls`` in the tree (``"matching."``), when it is a branch.
    """
    err = exc.errors()[0]
    raised = err.get("ctx", {}).get("error")
    if isinstance(raised, SettingsError):
        return raised
    loc = tuple(p for p in err["loc"] if isinstance(p, str))
    key = prefix + ".".join(loc)
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        known = _known_at(cls, loc[:-1])
        return _unknown(key, known)
    problem, allowed = _problem(err)
    # A check of a whole group (a dataclass's __post_init__, a model validator) that names one
    # of its fields first: the error is about that field.
    first, _, rest = problem.partition(" ")
    if loc and first == loc[-1] and rest:
        problem = rest  # a field's own check that names the field
    elif first in _known_at(cls, loc) and rest:
        key, problem = (f"{key}.{first}" if key else first), rest
    elif key not in LEAVES:
        problem = f"settings: {problem}"
    return SettingsError(key or "track", problem, allowed=allowed)
