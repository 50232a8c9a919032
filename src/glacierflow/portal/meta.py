"""The hand-written part of a dataset record: ``dataset.toml``.

A dataset record has two kinds of fields. What only people know (title, description, keywords,
references, providers, supporting projects, licence) is written once in a TOML file and read by
:func:`load_meta`. What the files know (extent, time frame, file size, projection, resolution,
formats) is never typed: :mod:`glacierflow.portal.catalog` computes it from the products.

A value that is not known yet is written as a string starting with ``TO BE FILLED`` (for example
``"TO BE FILLED: funding programme and grant number"``). :attr:`DatasetMeta.placeholders` lists
them, ``glacierflow publish`` warns about them (or refuses them with ``--strict``) and the portal
marks them on the dataset page, so that an unfinished record is never mistaken for a finished one.

See ``examples/karakoram_1999_2003_dataset.toml`` for a complete file.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import tomllib
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from glacierflow.errors import InputError

__all__ = [
    "KEYWORD_GROUPS",
    "PLACEHOLDER_PREFIX",
    "DatasetMeta",
    "Project",
    "Provider",
    "Reference",
    "is_placeholder",
    "load_meta",
]

#: Strings starting with this (any case) mark a field that still has to be filled in.
PLACEHOLDER_PREFIX = "TO BE FILLED"

#: Keyword groups of the seed record, in display order; other lower-case groups are allowed.
KEYWORD_GROUPS = ("theme", "discipline", "place", "time")

#: Roles a STAC provider may have.
PROVIDER_ROLES = ("licensor", "producer", "processor", "host")

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")
_GROUP_RE = re.compile(r"^[a-z][a-z_]{0,31}$")
_URL_RE = re.compile(r"^https?://[^\s/]+\S*$", re.IGNORECASE)

_TOP_KEYS = {
    "id": "a short name: lower-case letters, digits, '.', '_' and '-'",
    "title": "the dataset's title",
    "description": "what the data are, where, when and how they were made",
    "license": "an SPDX identifier such as 'CC-BY-4.0', or 'other'",
    "license_url": "where the licence text is",
    "doi": "the dataset's own DOI, once one is registered",
    "citation": "how to cite the dataset (built from creators, year, title if empty)",
    "creators": "people or groups who made the data, 'Family, Given' each",
    "publisher": "who publishes the dataset",
    "year": "year of publication, for the citation",
    "version": "version of the dataset",
    "accuracy": "a statement of the data's accuracy and how it was estimated",
    "lineage": "source images and processing",
    "contact": "an e-mail address or web page for questions",
    "keywords": "a table of keyword lists: theme, discipline, place, time",
    "references": "an array of tables with citation and doi",
    "providers": "an array of tables with name, roles, url, description",
    "projects": "an array of tables with name, funder, grant, url",
    "landing_page": "the dataset's public web page (https://...), cited when there is no DOI",
    "extent": "a table with bbox = [west, south, east, north] (degrees), start and end (dates)",
    "display": "a table with speed_max_m_per_yr",
}

_EXTENT_KEYS = ("bbox", "start", "end")


def is_placeholder(value: Any) -> bool:
    """Whether ``value`` is a string marked as still to be filled in."""
    return isinstance(value, str) and value.strip().upper().startswith(PLACEHOLDER_PREFIX)


@dataclass(frozen=True)
class Reference:
    """A publication to cite with the dataset."""

    citation: str
    doi: str | None = None


@dataclass(frozen=True)
class Provider:
    """An organisation that produced, processed, licensed or hosts the data (STAC provider)."""

    name: str
    roles: tuple[str, ...] = ()
    url: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Project:
    """A project or grant that supported the work."""

    name: str
    funder: str | None = None
    grant: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class DatasetMeta:
    """The hand-written fields of a dataset record, as read from ``dataset.toml``.

    Attributes
    ----------
    id, title, description : str
        Required. ``id`` names the dataset's folder in the catalog and its URL.
    keywords : dict of str to tuple of str
        Keyword lists by group (``theme``, ``discipline``, ``place``, ``time``, ...).
    speed_max_m_per_yr : float or None
        Top of the fixed colour scale of the speed map, m/yr; computed from the data if None.
    landing_page : str or None
        The dataset's public web page; the citation points there when there is no DOI.
    bbox : tuple of float or None
        The record's bounding box (west, south, east, north), degrees (WGS 84); west > east
        crosses the antimeridian. None: taken from the products when publishing.
    start, end : datetime.date or None
        The record's time frame (first and last day, inclusive). None: taken from the products'
        first and last acquisition dates when publishing.
    source : Path or None
        The TOML file it was read from.
    """

    id: str
    title: str
    description: str
    license: str = "other"
    license_url: str | None = None
    doi: str | None = None
    citation: str | None = None
    creators: tuple[str, ...] = ()
    publisher: str | None = None
    year: int | None = None
    version: str | None = None
    accuracy: str | None = None
    lineage: str | None = None
    contact: str | None = None
    keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)
    references: tuple[Reference, ...] = ()
    providers: tuple[Provider, ...] = ()
    projects: tuple[Project, ...] = ()
    speed_max_m_per_yr: float | None = None
    landing_page: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    source: Path | None = None

    @property
    def placeholders(self) -> list[str]:
        """Dotted names of the fields still marked ``TO BE FILLED``, in file order."""
        found: list[str] = []
        _collect_placeholders(self.raw_fields(), "", found)
        return found

    def raw_fields(self) -> dict[str, Any]:
        """The record as plain values (for serialising and for :attr:`placeholders`)."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "license": self.license,
            "license_url": self.license_url,
            "doi": self.doi,
            "citation": self.citation,
            "creators": list(self.creators),
            "publisher": self.publisher,
            "year": self.year,
            "version": self.version,
            "accuracy": self.accuracy,
            "lineage": self.lineage,
            "contact": self.contact,
            "keywords": {k: list(v) for k, v in self.keywords.items()},
            "references": [vars(r) for r in self.references],
            "providers": [dict(vars(p), roles=list(p.roles)) for p in self.providers],
            "projects": [vars(p) for p in self.projects],
            "landing_page": self.landing_page,
        }

    @property
    def all_keywords(self) -> list[str]:
        """Every keyword once, groups in display order, placeholders left out."""
        seen: dict[str, None] = {}
        for words in self.keywords.values():
            for word in words:
                if not is_placeholder(word):
                    seen.setdefault(word, None)
        return list(seen)


def _collect_placeholders(value: Any, name: str, found: list[str]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _collect_placeholders(sub, f"{name}.{key}" if name else str(key), found)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _collect_placeholders(sub, f"{name}[{i}]", found)
    elif is_placeholder(value):
        found.append(name)


# --------------------------------------------------------------------------------------------
# Reading and checking
# --------------------------------------------------------------------------------------------


class _Checker:
    """Typed access to a parsed TOML table; every error names the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, problem: str) -> InputError:
        return InputError(problem, self.path)

    def text(self, table: dict, key: str, where: str, required: bool = False) -> str | None:
        value = table.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise self.fail(f"{where}{key} is missing or empty; write it as a string")
            return None
        if not isinstance(value, str):
            raise self.fail(f"{where}{key} must be a string, not {type(value).__name__}")
        return value.strip()

    def texts(self, table: dict, key: str, where: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where}{key} must be a list of strings")
        return tuple(v.strip() for v in value if v.strip())

    def tables(self, data: dict, key: str) -> list[dict]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(f"{key} must be an array of tables: write each as [[{key}]]")
        return value


def load_meta(path: str | PathLike[str]) -> DatasetMeta:
    """Read and check a ``dataset.toml``.

    Parameters
    ----------
    path : str or PathLike
        The TOML file.

    Returns
    -------
    DatasetMeta

    Raises
    ------
    InputError
        If the file is missing, is not TOML, has an unknown key (a typo, usually), lacks a
        required field, or has a value of the wrong kind; the message names the field.
    """
    path = Path(path)
    data = _read_toml(path)
    check = _Checker(path)
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        known = ", ".join(sorted(_TOP_KEYS))
        raise check.fail(f"unknown field(s) {', '.join(unknown)}; known fields are {known}")

    dataset_id = check.text(data, "id", "", required=True)
    if not _ID_RE.match(dataset_id):
        raise check.fail(f"id {dataset_id!r} is not allowed; use {_TOP_KEYS['id']} (at most 100)")
    license_ = check.text(data, "license", "") or "other"
    doi = check.text(data, "doi", "")
    if doi and not is_placeholder(doi) and not _DOI_RE.match(doi):
        raise check.fail(f"doi {doi!r} is not a DOI like '10.1234/abcd'; leave it out if none")
    year = data.get("year")
    if year is not None and (not isinstance(year, int) or not 1900 <= year <= 2200):
        raise check.fail(f"year must be a whole number such as 2017, not {year!r}")

    keywords = _keywords(check, data)
    references = _references(check, data)
    providers = _providers(check, data)
    projects = _projects(check, data)
    vmax = _speed_max(check, data)
    bbox, start, end = _extent(check, data.get("extent", {}))
    landing_page = check.text(data, "landing_page", "")
    if landing_page and not is_placeholder(landing_page) and not _URL_RE.match(landing_page):
        raise check.fail(f"landing_page {landing_page!r} is not a web address (https://...)")

    return DatasetMeta(
        id=dataset_id,
        title=check.text(data, "title", "", required=True),
        description=check.text(data, "description", "", required=True),
        license=license_,
        license_url=check.text(data, "license_url", ""),
        doi=doi,
        citation=check.text(data, "citation", ""),
        creators=check.texts(data, "creators", ""),
        publisher=check.text(data, "publisher", ""),
        year=year,
        version=check.text(data, "version", ""),
        accuracy=check.text(data, "accuracy", ""),
        lineage=check.text(data, "lineage", ""),
        contact=check.text(data, "contact", ""),
        keywords=keywords,
        references=references,
        providers=providers,
        projects=projects,
        speed_max_m_per_yr=None if vmax is None else float(vmax),
        landing_page=landing_page,
        bbox=bbox,
        start=start,
        end=end,
        source=path,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML table of a dataset file; a missing file or bad TOML is an InputError."""
    if not path.is_file():
        raise InputError("no such dataset file; write one like examples/*dataset.toml", path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a valid TOML file ({exc})", path) from exc


def _keywords(check: _Checker, data: dict) -> dict[str, tuple[str, ...]]:
    """``[keywords]``: the known groups first, in their order, then any others by name."""
    keywords_table = data.get("keywords", {})
    if not isinstance(keywords_table, dict):
        raise check.fail("keywords must be a table: [keywords] then theme = [...], ...")
    keywords: dict[str, tuple[str, ...]] = {}
    for group in [*KEYWORD_GROUPS, *sorted(set(keywords_table) - set(KEYWORD_GROUPS))]:
        if group not in keywords_table:
            continue
        if not _GROUP_RE.match(group):
            raise check.fail(f"keyword group {group!r}: use lower-case letters and '_'")
        keywords[group] = check.texts(keywords_table, group, "keywords.")
    return keywords


def _references(check: _Checker, data: dict) -> tuple[Reference, ...]:
    """``[[references]]``: a citation each, and a DOI when there is one."""
    references = []
    for i, table in enumerate(check.tables(data, "references")):
        where = f"references[{i}]."
        ref_doi = check.text(table, "doi", where)
        if ref_doi and not is_placeholder(ref_doi) and not _DOI_RE.match(ref_doi):
            raise check.fail(f"{where}doi {ref_doi!r} is not a DOI like '10.1234/abcd'")
        references.append(Reference(check.text(table, "citation", where, True), ref_doi))
    return tuple(references)


def _providers(check: _Checker, data: dict) -> tuple[Provider, ...]:
    """``[[providers]]``: a name each, roles among :data:`PROVIDER_ROLES`."""
    providers = []
    for i, table in enumerate(check.tables(data, "providers")):
        where = f"providers[{i}]."
        roles = check.texts(table, "roles", where)
        bad = [r for r in roles if r not in PROVIDER_ROLES]
        if bad:
            raise check.fail(f"{where}roles {bad} unknown; use some of {list(PROVIDER_ROLES)}")
        providers.append(
            Provider(
                name=check.text(table, "name", where, True),
                roles=roles,
                url=check.text(table, "url", where),
                description=check.text(table, "description", where),
            )
        )
    return tuple(providers)


def _projects(check: _Checker, data: dict) -> tuple[Project, ...]:
    """``[[projects]]``: a name each, and a funder, grant and web page when known."""
    return tuple(
        Project(
            name=check.text(table, "name", f"projects[{i}].", True),
            funder=check.text(table, "funder", f"projects[{i}]."),
            grant=check.text(table, "grant", f"projects[{i}]."),
            url=check.text(table, "url", f"projects[{i}]."),
        )
        for i, table in enumerate(check.tables(data, "projects"))
    )


def _speed_max(check: _Checker, data: dict) -> float | int | None:
    """``display.speed_max_m_per_yr``: a positive number, m/yr, or None."""
    display = data.get("display", {})
    vmax = display.get("speed_max_m_per_yr") if isinstance(display, dict) else None
    if vmax is not None and (
        isinstance(vmax, bool) or not isinstance(vmax, int | float) or not 0 < vmax < 1e6
    ):
        raise check.fail(f"display.speed_max_m_per_yr must be a positive number, not {vmax!r}")
    return vmax


def _date(check: _Checker, value: Any, key: str) -> dt.date | None:
    """A TOML date (``1999-01-01``), datetime or ISO string as a date."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise check.fail(f"extent.{key} must be a date such as 1999-01-01, not {value!r}")


def _extent(
    check: _Checker, table: Any
) -> tuple[tuple[float, float, float, float] | None, dt.date | None, dt.date | None]:
    """The ``[extent]`` table: bounding box (degrees) and time frame (dates), each optional."""
    if not isinstance(table, dict):
        raise check.fail("extent must be a table: [extent] then bbox = [...], start, end")
    unknown = sorted(set(table) - set(_EXTENT_KEYS))
    if unknown:
        raise check.fail(f"unknown extent field(s) {', '.join(unknown)}; known: bbox, start, end")
    bbox = table.get("bbox")
    if bbox is not None:
        numbers = (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
            and all(math.isfinite(v) for v in bbox)
        )
        if not numbers:
            raise check.fail(
                f"extent.bbox must be [west, south, east, north] in degrees, not {bbox!r}"
            )
        west, south, east, north = (float(v) for v in bbox)
        if not (-180 <= west <= 180 and -180 <= east <= 180):
            raise check.fail(f"extent.bbox longitudes must lie in -180..180 degrees: {bbox}")
        if not -90 <= south < north <= 90:
            raise check.fail(f"extent.bbox needs -90 <= south < north <= 90 degrees: {bbox}")
        bbox = (west, south, east, north)
    start = _date(check, table.get("start"), "start")
    end = _date(check, table.get("end"), "end")
    if start and end and end < start:
        raise check.fail(f"extent.end {end} is before extent.start {start}")
    return bbox, start, end
