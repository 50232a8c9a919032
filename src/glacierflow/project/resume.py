"""Resuming: a fingerprint of what a pair's products depend on, and completion checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from glacierflow.project.config import Project
from glacierflow.project.plan import PairPlan

#: Name of the marker written last into a pair's folder when its products are complete.
DONE_NAME = "done.json"

# --------------------------------------------------------------------------------------------
# Processing one pair (resumable)
# --------------------------------------------------------------------------------------------


def _fingerprint(project: Project, plan: PairPlan) -> str:
    """A hash of everything a pair's products depend on."""
    grid = project.grid()
    options = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in project.track_options().items()
    }
    options.pop("workers", None)  # threads do not change the result
    content = {
        "ref": str(plan.ref.path),
        "sec": str(plan.sec.path),
        "ref_time": plan.ref.acquired.isoformat(),
        "sec_time": plan.sec.acquired.isoformat(),
        "band": project.band,
        "options": options,
        "grid": [grid.crs_wkt, list(grid.transform.to_gdal()), list(grid.shape)],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


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
