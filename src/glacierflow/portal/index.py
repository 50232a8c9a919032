"""An in-memory SQLite index over a STAC catalog folder, rebuilt when the catalog changes.

The index reads the catalog the STAC way (root ``catalog.json`` -> ``child`` collections ->
``item`` links), keeps every document as JSON, and adds columns to search on: bounding boxes
(west, south, east, north in degrees; boxes with west > east cross the antimeridian), time
frames (seconds since 1970, UTC) and keywords. It also checks each item's files: an asset whose
file is missing, outside the catalog, of the wrong size, or (for the velocity GeoTIFF) not
readable makes the item *unavailable*, with the reason, instead of breaking a page later.

It never writes to the catalog. :meth:`CatalogIndex.refresh` compares a fingerprint of the
catalog's files (names, sizes, modification times) at most once per ``check_interval_s`` and
rebuilds the whole index when it differs; a rebuild is a fresh database swapped in under a lock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioIOError

from glacierflow.dates import parse_datetime
from glacierflow.errors import InputError
from glacierflow.portal.files import inside
from glacierflow.portal.meta import KEYWORD_GROUPS
from glacierflow.portal.params import lon_intervals

__all__ = ["CatalogIndex", "SearchQuery", "bbox_intersects", "parse_time"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE datasets (
    id TEXT PRIMARY KEY, title TEXT, search_text TEXT, href TEXT, doc TEXT,
    west REAL, south REAL, east REAL, north REAL, start_s REAL, end_s REAL
);
CREATE TABLE keywords (dataset_id TEXT, grp TEXT, keyword TEXT, keyword_lower TEXT);
CREATE INDEX keywords_lower ON keywords (keyword_lower);
CREATE TABLE items (
    dataset_id TEXT, id TEXT, kind TEXT, start TEXT, end TEXT, mid TEXT,
    start_s REAL, end_s REAL, mid_s REAL, year INTEGER,
    west REAL, south REAL, east REAL, north REAL,
    available INTEGER, problem TEXT, href TEXT, velocity_path TEXT, bands TEXT,
    assets TEXT, doc TEXT,
    PRIMARY KEY (dataset_id, id)
);
CREATE INDEX items_time ON items (start_s, end_s);
"""


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 time (``Z`` allowed; naive means UTC) as an aware UTC datetime, or None."""
    if not value:
        return None
    try:
        return parse_datetime(str(value))
    except InputError:
        return None


def bbox_intersects(a: Sequence[float | None], b: Sequence[float | None]) -> bool:
    """Whether two (west, south, east, north) boxes in degrees overlap (edges touching count).

    Boxes with west > east cross the antimeridian. A box with a missing value overlaps nothing.
    """
    if any(v is None for v in (*a, *b)):
        return False
    aw, as_, ae, an = (float(v) for v in a)  # type: ignore[arg-type]
    bw, bs, be, bn = (float(v) for v in b)  # type: ignore[arg-type]
    if as_ > bn or bs > an:
        return False
    return any(
        lo1 <= hi2 and lo2 <= hi1
        for lo1, hi1 in lon_intervals(aw, ae)
        for lo2, hi2 in lon_intervals(bw, be)
    )


def _sql_bbox(*values: float | None) -> int:
    return int(bbox_intersects(values[:4], values[4:]))


@dataclass(frozen=True)
class SearchQuery:
    """A dataset search; every given condition must hold.

    Attributes
    ----------
    text : str or None
        Words that must all appear in the title, description or keywords (any case).
    keyword : str or None
        A keyword the dataset must have exactly (any case).
    bbox : (west, south, east, north) or None
        Degrees; some item's box must overlap it.
    start, end : datetime or None
        Some item's time frame must overlap [start, end] (open where None).
    limit, offset : int
        Paging.
    """

    text: str | None = None
    keyword: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    limit: int = 50
    offset: int = 0


class CatalogIndex:
    """The searchable index of one catalog folder.

    Parameters
    ----------
    catalog_dir : str or PathLike
        A folder written by :func:`glacierflow.portal.catalog.publish` (has ``catalog.json``).
    check_interval_s : float
        Least time between two looks at the catalog for changes.

    Raises
    ------
    InputError
        If the folder has no ``catalog.json``.
    """

    def __init__(self, catalog_dir: str | PathLike[str], check_interval_s: float = 1.0) -> None:
        self.root = Path(catalog_dir).resolve()
        if not (self.root / "catalog.json").is_file():
            raise InputError(
                "no catalog.json here; make a catalog with glacierflow publish first", self.root
            )
        self.check_interval_s = check_interval_s
        self.problems: list[str] = []
        self.media_types: dict[str, str] = {}
        self.built_at: dt.datetime | None = None
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._fingerprint: str | None = None
        self._checked = 0.0
        self.refresh(force=True)

    # ---------------------------------------------------------------- change detection

    def fingerprint(self) -> str:
        """A digest of the names, sizes and modification times of the catalog's visible files."""
        digest = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                rel = os.path.relpath(path, self.root)
                digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def refresh(self, force: bool = False) -> bool:
        """Rebuild the index if the catalog changed (looked at once per check interval).

        Returns
        -------
        bool
            Whether the index was rebuilt.
        """
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval_s:
            return False
        with self._lock:
            if not force and now - self._checked < self.check_interval_s:
                return False
            self._checked = now
            fingerprint = self.fingerprint()
            if not force and fingerprint == self._fingerprint:
                return False
            conn, problems, media_types = self._build()
            old, self._conn = self._conn, conn
            self.media_types = media_types
            self._fingerprint, self.problems = fingerprint, problems
            self.built_at = dt.datetime.now(dt.UTC)
            if old is not None:
                old.close()
            for problem in problems:
                log.warning("catalog: %s", problem)
            return True

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            assert self._conn is not None
            yield self._conn

    # ---------------------------------------------------------------- building

    def _read_json(self, path: Path, problems: list[str]) -> dict[str, Any] | None:
        rel = self.relative(path)
        if rel is None:
            problems.append(f"{path}: link points outside the catalog; ignored")
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{rel}: unreadable STAC document ({exc})")
            return None
        if not isinstance(data, dict):
            problems.append(f"{rel}: not a STAC document (not a JSON object)")
            return None
        return data

    def relative(self, path: str | PathLike[str]) -> str | None:
        """``path`` relative to the catalog root ('/'-separated), or None if it is outside."""
        real = inside(self.root, path)
        return None if real is None else real.relative_to(self.root).as_posix()

    @staticmethod
    def _links(doc: dict[str, Any], rel: str, base: Path) -> list[Path]:
        links = doc.get("links") if isinstance(doc.get("links"), list) else []
        return [
            (base.parent / str(link["href"])).absolute()
            for link in links
            if isinstance(link, dict) and link.get("rel") == rel and link.get("href")
        ]

    def _build(self) -> tuple[sqlite3.Connection, list[str], dict[str, str]]:
        """A new database of the catalog, the problems found, and media types by file path."""
        problems: list[str] = []
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.create_function("bbox_hit", 8, _sql_bbox, deterministic=True)
        conn.executescript(_SCHEMA)
        root_path = self.root / "catalog.json"
        root = self._read_json(root_path, problems) or {}
        for coll_path in self._links(root, "child", root_path):
            coll = self._read_json(coll_path, problems)
            if coll is None:
                continue
            if coll.get("type") != "Collection" or not isinstance(coll.get("id"), str):
                problems.append(f"{self.relative(coll_path)}: not a STAC Collection; ignored")
                continue
            try:
                self._add_collection(conn, coll, coll_path, problems)
            except (KeyError, TypeError, ValueError, sqlite3.Error) as exc:
                problems.append(f"{self.relative(coll_path)}: malformed collection ({exc})")
        conn.commit()
        media_types = {}
        for (assets,) in conn.execute("SELECT assets FROM items"):
            for asset in json.loads(assets).values():
                if asset["path"] and isinstance(asset["type"], str):
                    media_types[asset["path"]] = asset["type"]
        return conn, problems, media_types

    def _add_collection(
        self, conn: sqlite3.Connection, coll: dict[str, Any], path: Path, problems: list[str]
    ) -> None:
        cid = coll["id"]
        if conn.execute("SELECT 1 FROM datasets WHERE id = ?", (cid,)).fetchone():
            problems.append(f"{self.relative(path)}: dataset id {cid!r} appears twice; ignored")
            return
        extent = coll.get("extent", {})
        bbox = (extent.get("spatial", {}).get("bbox") or [[None] * 4])[0]
        interval = (extent.get("temporal", {}).get("interval") or [[None, None]])[0]
        groups = coll.get("glacierflow:keywords") or {"other": coll.get("keywords", [])}
        words = [(g, str(k)) for g, ks in groups.items() for k in ks]
        if not groups.get("other") and coll.get("keywords"):
            grouped = {k for _, k in words}
            words += [("other", str(k)) for k in coll["keywords"] if str(k) not in grouped]
        search_text = " ".join(
            [str(coll.get("title", "")), str(coll.get("description", ""))] + [k for _, k in words]
        ).lower()
        start, end = (parse_time(t) for t in interval)
        conn.execute(
            "INSERT INTO datasets VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                cid,
                str(coll.get("title") or cid),
                search_text,
                self.relative(path),
                json.dumps(coll),
                *[None if v is None else float(v) for v in bbox[:4]],
                start.timestamp() if start else None,
                end.timestamp() if end else None,
            ),
        )
        conn.executemany(
            "INSERT INTO keywords VALUES (?,?,?,?)", [(cid, g, k, k.lower()) for g, k in words]
        )
        seen: set[str] = set()
        for item_path in self._links(coll, "item", path):
            row = self._item_row(cid, item_path, problems)
            if row["id"] in seen:
                problems.append(f"{row['href']}: item id {row['id']!r} appears twice; ignored")
                continue
            seen.add(row["id"])
            conn.execute(
                f"INSERT INTO items ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )

    def _item_row(self, cid: str, path: Path, problems: list[str]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "dataset_id": cid,
            "id": path.stem,
            "href": self.relative(path),
            "available": 0,
            "problem": None,
            "assets": "{}",
            "doc": "{}",
        }
        item_problems: list[str] = []
        doc = self._read_json(path, item_problems)
        if doc is None:
            row["problem"] = "the item's STAC document is missing or unreadable"
            problems.extend(item_problems)
            return row
        props = doc.get("properties") if isinstance(doc.get("properties"), dict) else {}
        row["id"] = str(doc.get("id") or path.stem)
        start = parse_time(props.get("start_datetime") or props.get("datetime"))
        end = parse_time(props.get("end_datetime") or props.get("datetime"))
        if start and end:
            mid = start + (end - start) / 2
            row.update(
                start=start.isoformat(),
                end=end.isoformat(),
                mid=mid.isoformat(),
                start_s=start.timestamp(),
                end_s=end.timestamp(),
                mid_s=mid.timestamp(),
                year=int(props.get("glacierflow:year") or mid.year),
            )
        bbox = doc.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4:
            row.update(zip(("west", "south", "east", "north"), map(float, bbox), strict=True))
        row["kind"] = str(props.get("glacierflow:kind") or "product")
        assets, velocity, bands, problem = self._check_assets(doc, path)
        row.update(
            assets=json.dumps(assets),
            velocity_path=velocity,
            bands=json.dumps(bands),
            doc=json.dumps(doc),
            available=int(problem is None and start is not None),
            problem=problem if start is not None else (problem or "the item has no dates"),
        )
        return row

    def _check_assets(
        self, doc: dict[str, Any], path: Path
    ) -> tuple[dict[str, Any], str | None, list[str], str | None]:
        """Assets with their catalog paths and availability; the velocity COG's path and bands."""
        assets: dict[str, Any] = {}
        velocity, bands, problem = None, [], None
        raw = doc.get("assets") if isinstance(doc.get("assets"), dict) else {}
        for key, asset in raw.items():
            if not isinstance(asset, dict) or not asset.get("href"):
                continue
            href = str(asset["href"])
            entry = {
                "key": key,
                "title": asset.get("title") or key,
                "type": asset.get("type"),
                "roles": asset.get("roles") or [],
                "size": asset.get("file:size"),
                "checksum": asset.get("file:checksum"),
                "path": None,
                "available": False,
                "problem": None,
            }
            rel = None if "://" in href else self.relative(path.parent / href)
            if rel is None:
                entry["problem"] = "the file is not inside the catalog"
            elif not (self.root / rel).is_file():
                entry["problem"] = "the file is missing"
            elif entry["size"] is not None and (self.root / rel).stat().st_size != entry["size"]:
                entry["problem"] = "the file's size differs from the record (changed or truncated)"
            else:
                entry["path"] = rel
                entry["available"] = True
            if key == "velocity" and entry["available"]:
                try:
                    with rasterio.open(self.root / rel) as src:
                        bands = [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)]
                except (RasterioIOError, OSError) as exc:
                    entry.update(available=False, problem=f"the GeoTIFF cannot be read ({exc})")
                else:
                    if "v" not in bands:
                        entry.update(available=False, problem="the GeoTIFF has no 'v' band")
                    else:
                        velocity = rel
            assets[key] = entry
        if "velocity" not in assets:
            problem = "the item has no velocity GeoTIFF"
        elif not assets["velocity"]["available"]:
            problem = f"velocity GeoTIFF unavailable: {assets['velocity']['problem']}"
        return assets, velocity, bands, problem

    # ---------------------------------------------------------------- queries

    def dataset_ids(self) -> list[str]:
        """Every dataset id, by title."""
        with self._db() as db:
            return [r["id"] for r in db.execute("SELECT id FROM datasets ORDER BY title, id")]

    def search(self, query: SearchQuery) -> tuple[int, list[dict[str, Any]]]:
        """Datasets matching ``query``, ordered by title.

        Returns
        -------
        total : int
            Number of matches before paging.
        collections : list of dict
            The matching STAC Collections (one page).
        """
        where, params = ["1"], []
        for word in (query.text or "").lower().split():
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("d.search_text LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        if query.keyword:
            where.append(
                "EXISTS (SELECT 1 FROM keywords k WHERE k.dataset_id = d.id "
                "AND k.keyword_lower = ?)"
            )
            params.append(query.keyword.strip().lower())
        item_where, item_params = [], []
        if query.bbox is not None:
            item_where.append("bbox_hit(i.west, i.south, i.east, i.north, ?, ?, ?, ?)")
            item_params += list(query.bbox)
        if query.start is not None:
            item_where.append("i.end_s >= ?")
            item_params.append(query.start.timestamp())
        if query.end is not None:
            item_where.append("i.start_s <= ?")
            item_params.append(query.end.timestamp())
        if item_where:
            where.append(
                "EXISTS (SELECT 1 FROM items i WHERE i.dataset_id = d.id AND "
                + " AND ".join(item_where)
                + ")"
            )
            params += item_params
        sql_where = " AND ".join(where)
        with self._db() as db:
            total = db.execute(f"SELECT COUNT(*) FROM datasets d WHERE {sql_where}", params)
            total = int(total.fetchone()[0])
            rows = db.execute(
                f"SELECT doc FROM datasets d WHERE {sql_where} ORDER BY d.title, d.id "
                "LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
        return total, [json.loads(r["doc"]) for r in rows]

    def collection(self, dataset_id: str) -> dict[str, Any] | None:
        """The STAC Collection of a dataset, or None."""
        with self._db() as db:
            row = db.execute("SELECT doc FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        return None if row is None else json.loads(row["doc"])

    def collection_asset(self, dataset_id: str, key: str) -> tuple[Path, str | None] | None:
        """The file of a dataset's Collection asset (e.g. a base layer) and its checksum.

        None when the dataset or asset does not exist, or its file is missing or outside the
        catalog.
        """
        with self._db() as db:
            row = db.execute(
                "SELECT href, doc FROM datasets WHERE id = ?", (dataset_id,)
            ).fetchone()
        if row is None:
            return None
        asset = (json.loads(row["doc"]).get("assets") or {}).get(key)
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            return None
        if "://" in asset["href"]:
            return None
        rel = self.relative((self.root / row["href"]).parent / asset["href"])
        if rel is None or not (self.root / rel).is_file():
            return None
        return self.root / rel, asset.get("file:checksum")

    def items(self, dataset_id: str, item_id: str | None = None) -> list[dict[str, Any]]:
        """The items of a dataset (or the one named), in time order, as index rows.

        Each row has ``id``, ``kind``, ``start``, ``end``, ``mid`` (ISO), ``year``, ``bbox``,
        ``available``, ``problem``, ``velocity_path`` (relative to the catalog), ``bands``,
        ``assets`` (by key, with ``path``, ``available``, ``size``, ``checksum``) and ``doc``
        (the STAC Item).
        """
        sql = "SELECT * FROM items WHERE dataset_id = ?"
        params: list[Any] = [dataset_id]
        if item_id is not None:
            sql += " AND id = ?"
            params.append(item_id)
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY mid_s IS NULL, mid_s, id", params).fetchall()
        out = []
        for r in rows:
            row = dict(r)
            row["bbox"] = [row.pop(k) for k in ("west", "south", "east", "north")]
            row["available"] = bool(row["available"])
            for key in ("assets", "bands", "doc"):
                row[key] = json.loads(row[key]) if row[key] else None
            out.append(row)
        return out

    def counts(self) -> dict[str, int]:
        """Numbers of datasets, items and unavailable items."""
        with self._db() as db:
            n_sets = db.execute("SELECT COUNT(*) FROM datasets").fetchone()[0]
            n_items, n_bad = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(1 - available), 0) FROM items"
            ).fetchone()
        return {"datasets": n_sets, "items": n_items, "unavailable_items": n_bad}

    def keywords(self) -> list[dict[str, Any]]:
        """Every keyword with its group and the number of datasets that have it."""
        with self._db() as db:
            rows = db.execute(
                "SELECT grp, keyword, COUNT(DISTINCT dataset_id) AS n FROM keywords "
                "GROUP BY grp, keyword ORDER BY grp, keyword"
            ).fetchall()
        order = {group: i for i, group in enumerate(KEYWORD_GROUPS)}
        found = [{"group": r["grp"], "keyword": r["keyword"], "datasets": r["n"]} for r in rows]
        return sorted(found, key=lambda k: (order.get(k["group"], len(order)), k["group"]))
