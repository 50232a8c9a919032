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


def pair_is_complete(folder: Path, fingerprint: str | None = None) -> bool:
    """Whether ``folder`` holds a finished pair: ``done.json`` (with ``fingerprint``, when
    given) and all four products."""
    from glacierflow.products import PRODUCT_NAMES

    done = folder / DONE_NAME
    if not done.is_file():
        return False
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        return False
    return all((folder / name).is_file() for name in PRODUCT_NAMES.values())
