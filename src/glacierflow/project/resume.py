"""Resuming: a fingerprint of what a pair's products depend on, and completion checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from glacierflow.project.config import Project
from glacierflow.project.plan import PairPlan
from glacierflow.settings import TrackSettings, leaves

#: Name of the marker written last into a pair's folder when its products are complete.
DONE_NAME = "done.json"

#: The settings as the project file named them before the settings tree, by dotted key: the
#: fingerprint keeps these names so that pair folders written before still resume.
LEGACY_NAMES = {
    "matching.chip_px": "chip_px",
    "matching.search_px": "search_px",
    "matching.step_px": "step_px",
    "matching.subpixel": "subpixel",
    "filtering.min_corr": "min_corr",
    "filtering.min_snr": "min_snr",
    "filtering.fill_holes": "fill_holes",
    "coreg.method": "coreg",
    "stable.ice_buffer_m": "ice_buffer_m",
    "stable.glacier_outlines": "glacier_outlines",
    "stable.stable_mask": "stable_mask",
}
#: Of those, the ones always in the fingerprint (the others only when set).
ALWAYS = tuple(list(LEGACY_NAMES)[:8])


def fingerprint(project: Project, plan: PairPlan) -> str:
    """A hash of everything a pair's products depend on: scenes, times, band, settings, grid.

    The settings enter as the project file named them before the settings tree (so that
    folders written then still resume), plus every other setting of the tree that differs
    from its default, by dotted key. ``matching.workers`` does not change a product.
    """
    grid = project.grid()
    content = {
        "ref": str(plan.ref.path),
        "sec": str(plan.sec.path),
        "ref_time": plan.ref.acquired.isoformat(),
        "sec_time": plan.sec.acquired.isoformat(),
        "band": project.band,
        "options": settings_fingerprint(project.track_settings),
        "grid": [grid.crs_wkt, list(grid.transform.to_gdal()), list(grid.shape)],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def settings_fingerprint(settings: TrackSettings) -> dict[str, Any]:
    """The settings a pair's products depend on, as JSON-ready values (see :func:`fingerprint`)."""
    values = {key: _leaf_value(settings, key) for key, _ in leaves()}
    filters = settings.filter_settings()
    values["filtering.min_corr"], values["filtering.min_snr"] = filters.min_corr, filters.min_snr
    options = {}
    for key, name in LEGACY_NAMES.items():
        if values[key] is not None or key in ALWAYS:
            options[name] = values[key]
    for key, leaf in leaves():
        if key in LEGACY_NAMES or key == "matching.workers":
            continue
        if not _same(values[key], leaf.default):
            options[key] = values[key]
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}


def _leaf_value(settings: TrackSettings, dotted: str) -> Any:
    group, _, leaf = dotted.partition(".")
    value = getattr(getattr(settings, group), leaf)
    return list(value) if isinstance(value, tuple) else value


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, np.ndarray) or isinstance(default, np.ndarray):
        return False
    return value == (list(default) if isinstance(default, tuple) else default)


def write_done(folder: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as the ``done.json`` marker of a pair's folder (atomically), last.

    Returns
    -------
    pathlib.Path
        The marker's path.
    """
    from glacierflow.atomic import atomic_write

    done = folder / DONE_NAME
    with atomic_write(done) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return done


def scene_inputs(plan: PairPlan) -> dict[str, Any]:
    """Fingerprints of the pair's two scene files (size, time, sampled content hash; see
    :func:`glacierflow.scenes.file_fingerprint`): a scene replaced at the same path changes
    them."""
    from glacierflow.scenes import file_fingerprint

    return {"ref": file_fingerprint(plan.ref.path), "sec": file_fingerprint(plan.sec.path)}


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def product_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of each of a pair's four products, by file name (for ``done.json``)."""
    from glacierflow.products import PRODUCT_NAMES

    return {name: file_sha256(folder / name) for name in sorted(PRODUCT_NAMES.values())}


def pair_problem(
    folder: Path, fingerprint: str | None = None, inputs: dict[str, Any] | None = None
) -> str | None:
    """Why ``folder`` does not hold a finished pair (None when it does).

    Finished: ``done.json`` names the same settings (``fingerprint``, when given) and, when it
    records them, the same scene files (``inputs``, when given) and the checksums of the four
    products, which must match the files. ``done.json`` written before checksums were
    recorded counts by the presence of the four products alone.
    """
    from glacierflow.products import PRODUCT_NAMES

    done = folder / DONE_NAME
    if not done.is_file():
        return "not finished"
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its done.json is unreadable"
    if not isinstance(record, dict):
        return "its done.json is unreadable"
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        return "the settings changed"
    if inputs is not None and "inputs" in record and record["inputs"] != inputs:
        return "a scene file changed"
    missing = [n for n in PRODUCT_NAMES.values() if not (folder / n).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    for name, sha in (record.get("checksums") or {}).items():
        path = folder / name
        if not path.is_file() or file_sha256(path) != sha:
            return f"{name} is damaged (checksum mismatch)"
    return None


def pair_is_complete(
    folder: Path, fingerprint: str | None = None, inputs: dict[str, Any] | None = None
) -> bool:
    """Whether ``folder`` holds a finished pair (see :func:`pair_problem`)."""
    return pair_problem(folder, fingerprint, inputs) is None


#: The list of the current plan's pairs in ``pairs/``: pair folders it does not name (from an
#: earlier plan) are neither composed nor published (see glacierflow.portal.discover).
PLAN_NAME = "plan.json"


def write_plan(folder: Path, pair_ids: list[str], *, only_if_there: bool = False) -> None:
    """Write ``pairs/plan.json`` listing the current pairs (atomically).

    ``only_if_there``: only when ``folder`` exists (folders of an earlier plan may be there; a
    fresh output folder gets its list with the composites, so a failure creates nothing).
    """
    from glacierflow import __version__
    from glacierflow.atomic import atomic_write

    if only_if_there and not folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pairs": list(pair_ids), "glacierflow_version": __version__}
    with atomic_write(folder / PLAN_NAME) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
