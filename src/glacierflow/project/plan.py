"""Pair planning: which scenes pair up, explicit pairs or the pairing rules."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from glacierflow.errors import InputError
from glacierflow.limits import check_separation
from glacierflow.project.config import Project
from glacierflow.project.discovery import SceneInfo, find_scenes

# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairPlan:
    """One pair to process: two scenes, earlier first, and its output folder name."""

    ref: SceneInfo
    sec: SceneInfo
    pair_id: str

    @property
    def dt_days(self) -> float:
        """Separation, days."""
        return (self.sec.acquired - self.ref.acquired).total_seconds() / 86400.0


def _resolve(
    project: Project, scenes: Sequence[SceneInfo], token: str, line: int | None
) -> SceneInfo:
    """The scene named by a date, a scene ID or a file name."""
    text = token.strip()
    matches: list[SceneInfo] = []
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        matches = [s for s in scenes if f"{s.acquired:%Y-%m-%d}" == text]
    if not matches:
        matches = [
            s
            for s in scenes
            if s.path.name == text
            or str(s.path) == text
            or (s.scene_id or "").upper() == text.upper()
            or (len(text) >= 8 and text.upper() in s.path.name.upper())
        ]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(s.label for s in scenes[:12]) + (" ..." if len(scenes) > 12 else "")
    if not matches:
        raise project.error(
            f"pair scene {token!r} matches no scene (by date, scene ID or file name); the "
            f"scenes are {known}",
            line=line,
        )
    raise project.error(
        f"pair scene {token!r} matches {len(matches)} scenes "
        f"({', '.join(s.label for s in matches)}); name it by file name or scene ID",
        line=line,
    )


def _pair_id(ref: SceneInfo, sec: SceneInfo) -> str:
    return f"{ref.acquired:%Y%m%d}_{sec.acquired:%Y%m%d}"


def _check_dates(
    project: Project, ref: SceneInfo, sec: SceneInfo, line: int | None, key: str | None = None
) -> None:
    """Refuse a pair whose dates make no physical sense, naming its line (see
    :func:`glacierflow.limits.check_separation`)."""
    try:
        check_separation(ref.acquired, sec.acquired, key=None)
    except InputError as exc:
        raise project.error(f"pair {ref.label} -> {sec.label}: {exc.problem}", key, line) from None


def plan_pairs(project: Project, scenes: Sequence[SceneInfo] | None = None) -> list[PairPlan]:
    """The pairs to process: ``[pairs] explicit`` in the given order, else the pairing rules.

    Rules pair every two scenes (earlier first) whose separation lies in ``[min_days,
    max_days]`` and, with ``same_path_row``, that share a WRS path/row (scenes without one pair
    with each other only).

    Raises
    ------
    InputError
        For an explicit pair whose second scene is not later than the first (negative or zero
        separation) or that names an unknown scene, naming the line; when no pair results.
    """
    scenes = list(scenes) if scenes is not None else find_scenes(project)
    plans: list[PairPlan] = []
    if project.explicit_pairs:
        for a, b, line in project.explicit_pairs:
            ref = _resolve(project, scenes, a, line)
            sec = _resolve(project, scenes, b, line)
            dt = (sec.acquired - ref.acquired).total_seconds() / 86400.0
            if dt == 0:
                raise project.error(
                    f"pair {ref.label} -> {sec.label} has zero separation: both scenes were "
                    "acquired at the same time; pair scenes of different dates",
                    line=line,
                )
            if dt < 0:
                raise project.error(
                    f"pair {ref.label} -> {sec.label} has a negative separation ({dt:.0f} "
                    "days): the first scene must be the earlier one; swap them",
                    line=line,
                )
            _check_dates(project, ref, sec, line)
            plans.append(PairPlan(ref, sec, _pair_id(ref, sec)))
    else:
        for i, ref in enumerate(scenes):
            for sec in scenes[i + 1 :]:
                dt = (sec.acquired - ref.acquired).total_seconds() / 86400.0
                if not (project.min_days <= dt <= project.max_days) or dt <= 0:
                    continue
                if project.same_path_row and ref.path_row != sec.path_row:
                    continue
                _check_dates(project, ref, sec, None, "pairs")
                plans.append(PairPlan(ref, sec, _pair_id(ref, sec)))
    if not plans:
        raise project.error(
            f"no pair: {len(scenes)} scene(s) ({', '.join(s.label for s in scenes[:8])}) give no "
            f"two {'on one path/row ' if project.same_path_row else ''}between "
            f"{project.min_days:g} and {project.max_days:g} days apart; widen [pairs] or list "
            "pairs in [pairs] explicit",
            "pairs",
        )
    seen: dict[str, int] = {}
    out = []
    for plan in plans:
        n = seen.get(plan.pair_id, 0)
        seen[plan.pair_id] = n + 1
        if n:
            suffix = plan.ref.path_row or str(n + 1)
            plan = dataclasses.replace(plan, pair_id=f"{plan.pair_id}_{suffix}")
        out.append(plan)
    return out
