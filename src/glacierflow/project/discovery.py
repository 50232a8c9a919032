"""Scene discovery: the project's scene files, their acquisition times and footprints."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from glacierflow.errors import InputError
from glacierflow.project.config import Project

# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------

log = logging.getLogger("glacierflow")


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
    """(time, source, scene ID) of scene ``p`` as the user named it (a symbolic link keeps its
    own name; its target's name and folder are looked at after it)."""
    from glacierflow.remote import is_remote
    from glacierflow.scenes import acquisition_from_mtl, acquisition_from_name, find_mtl

    names = [p] if is_remote(p) else list(dict.fromkeys([p, p.resolve()]))
    from_name = next((f for f in map(acquisition_from_name, (q.name for q in names)) if f), None)
    scene_id = from_name[2] if from_name else None
    given = next(
        (
            (k, project.scene_dates[k])
            for q in names
            for k in (q.name, str(q))
            if k in project.scene_dates
        ),
        None,
    )
    mtl = (
        next((m for m in map(find_mtl, names) if m is not None), None) if not is_remote(p) else None
    )
    found: tuple[datetime, str] | None = None
    if mtl is not None:
        acquired, _sensor, mtl_id = acquisition_from_mtl(mtl)
        scene_id = mtl_id or scene_id
        found = (acquired, f"its MTL file {mtl}")
    elif from_name is not None:
        found = (from_name[0], f"the scene ID {from_name[2]} in its name")
    if given is not None:
        if found is not None:
            _check_given_date(project, p, given, found)
        return given[1], "project", scene_id
    if found is not None:
        return found[0], "MTL" if mtl is not None else "filename", scene_id
    number = project.line("scenes.dates") or project.line("scenes")
    raise InputError(
        f"cannot find the acquisition time of scene {p.name} (no MTL file beside it, no Landsat "
        f'or Sentinel-2 ID in its name); add it to the project file as [scenes.dates] "{p.name}" '
        f'= "YYYY-MM-DD"' + (f" (near line {number})" if number else ""),
        project.path,
    )


def _check_given_date(
    project: Project, p: Path, given: tuple[str, datetime], found: tuple[datetime, str]
) -> None:
    """Stop when a ``[scenes.dates]`` date falls on another UTC day than the scene's metadata
    (unless ``[scenes] trust_dates``, then warn)."""
    (key, day), (when, source) = given, found
    if day.astimezone(UTC).date() == when.astimezone(UTC).date():
        return
    text = (
        f'[scenes.dates] "{key}" = {day:%Y-%m-%d}, but {source} says {when:%Y-%m-%d %H:%M:%S} UTC'
    )
    if project.trust_dates:
        log.warning("%s: %s; using the given date ([scenes] trust_dates)", project.path, text)
        return
    start = project.line("scenes.dates")
    lines = project._lines
    number = (lines.line_containing(start, f'"{key}"') if lines else None) or start
    raise project.error(
        f"{text} (scene {p}): they must fall on the same UTC day. Fix the date (a wrong one "
        "scales or reverses the flow), or set [scenes] trust_dates = true to use it anyway",
        line=number,
    )


#: Names of the files glacierflow writes into a project's output folder and pair folders.
_OWN_PRODUCT = re.compile(r"(v_\d{4}|velocity|velocity_cube|quicklook)\.(tif|tiff|nc|png)", re.I)
#: Folders of a project's output folder that hold only glacierflow's own files.
_OWN_FOLDERS = ("pairs", "glaciers", "figures")


def own_product(project: Project, p: Path) -> bool:
    """Whether ``p`` is one of the project's own products (by its place and name): a file in
    the output folder's ``pairs/``, ``glaciers/`` or ``figures/``, or a ``v_YYYY.tif``,
    ``velocity.tif`` ... in the output folder itself (which may be the scene folder)."""
    from glacierflow.remote import is_remote

    if is_remote(p):
        return False
    out, q = project.output.resolve(), p.resolve()
    if any(q.is_relative_to(out / d) for d in _OWN_FOLDERS):
        return True
    return q.parent == out and _OWN_PRODUCT.fullmatch(q.name) is not None


def _list_files(project: Project) -> list[Path]:
    """The scene files, as the user named them (each file once, the first name it was met
    by), without the project's own products."""
    files: list[Path] = list(project.scene_paths)
    if project.scene_list is not None:
        files += _files_from_list(project)
    elif project.scene_folder is not None:
        for pattern in project.scene_patterns:
            files += sorted(p for p in project.scene_folder.glob(pattern) if p.is_file())
    unique: dict[Path, Path] = {}
    for p in files:
        unique.setdefault(p.resolve(), p)
    own = [p for p in unique.values() if own_product(project, p)]
    if own:
        log.info(
            "left out %d of glacierflow's own products among the scenes (%s%s)",
            len(own),
            ", ".join(p.name for p in own[:3]),
            " ..." if len(own) > 3 else "",
        )
    return [p for p in unique.values() if p not in own]


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
    grid. glacierflow's own products are never scenes: those in the output folder (by name,
    :func:`own_product`) and any GeoTIFF tagged ``glacierflow_version`` are left out, so a
    project whose output folder is its scene folder can run again. A ``[scenes.dates]`` date
    is looked up by the name the user gave the file (a symbolic link's own name), then by its
    target's; on another UTC day than the scene's MTL file or ID it stops the run (naming the
    line, both dates and the metadata's source) unless ``[scenes] trust_dates``.

    Raises
    ------
    InputError
        If no scene is found, a file is not a readable georeferenced raster, a time is
        missing or contradicts the metadata, or the grid covers none of the scenes (naming
        the grid's line).
    """
    from rasterio.errors import RasterioIOError
    from rasterio.warp import transform_bounds

    from glacierflow.remote import open_raster

    files = _list_files(project)
    where = project.scene_folder or project.scene_list
    nothing = f"no scene found in {where} matching {', '.join(project.scene_patterns)}"
    if not files:
        raise project.error(nothing, "scenes")
    grid = project.grid()
    scenes = []
    for p in files:
        try:
            with open_raster(p) as src:
                if "glacierflow_version" in src.tags():  # a product, wherever it was put
                    log.info("%s is a glacierflow product, not a scene: left out", p)
                    continue
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
    if not scenes:
        raise project.error(f"{nothing} (only glacierflow products)", "scenes")
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
