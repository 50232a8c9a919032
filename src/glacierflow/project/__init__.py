"""A project: many scenes, many pairs (resumable), annual composites and glacier analysis.

A project file (TOML) names the scenes, how to pair them, the common output grid, the matching
and filtering settings, the glacier outlines and the output folder;
:func:`run_project` processes every pair and then composes the annual products. See
``examples/karakoram_1999_2003.toml`` for a commented example and the README ("Projects and
annual maps") for the schema.

What lands in the output folder::

    pairs/YYYYMMDD_YYYYMMDD/   one folder per pair: velocity.tif, velocity.nc, quicklook.png,
                               summary.json (glacierflow.products.write_products) and done.json
    v_YYYY.tif, v_YYYY.png     one Cloud-Optimized GeoTIFF per period (bands vx, vy, v,
                               v_error, vx_error, vy_error, count) and its speed map
    velocity_cube.nc           all periods in one CF-1.8 NetCDF cube with a time axis
    glaciers/                  per-glacier statistics (CSV and GeoPackage), trends, profiles,
                               candidate surges (with outlines)
    figures/                   change maps, profiles, glacier time series
    report.html                one self-contained page: maps, tables, errors, settings

Resuming: a pair is complete when its ``done.json`` exists, names the same inputs and settings
(a fingerprint), the same scene files (size, time and a hash of a sample of their bytes) and
all four products are there with the checksums it recorded; a damaged product or a scene
replaced at the same path gets the pair tracked again, with a one-line notice.
``pairs/plan.json`` lists the current plan's pairs: folders of an earlier plan are neither
composed nor published. ``done.json`` is written last, after the four
products were renamed into place (they are written as one set), so a run killed at any moment
leaves every pair either complete or redone on the next run. Composites, tables, figures and
the report are recomputed from the pair products on every run; each file is written atomically.

Pairs run one after another, several at a time on local worker processes, or one task each on a
``dask.distributed`` cluster (:func:`run_project`); their products do not depend on which.

The package, one module per job: :mod:`~glacierflow.project.config` (the project file),
:mod:`~glacierflow.project.discovery` (scenes), :mod:`~glacierflow.project.plan` (pairs),
:mod:`~glacierflow.project.resume` (fingerprints, completion),
:mod:`~glacierflow.project.compose` (annual maps, cube, statistics, figures, report) and
:mod:`~glacierflow.project.run` (the runner). It is orchestration: it reads the project file and
scene headers and writes the products through :mod:`glacierflow.products`; the computations
live in :mod:`glacierflow.track`, :mod:`glacierflow.stack`, :mod:`glacierflow.glaciers` and
:mod:`glacierflow.plot`.
"""

from glacierflow.project.compose import (
    ANNUAL_BANDS,
    CUBE_NAME,
    MAX_PROFILE_FIGURES,
    ProjectResult,
    compose_products,
)
from glacierflow.project.config import DEFAULT_PATTERNS, Project, Transect, load_project
from glacierflow.project.discovery import SceneInfo, find_scenes, wrs_path_row
from glacierflow.project.plan import PairPlan, plan_pairs
from glacierflow.project.resume import DONE_NAME, pair_is_complete
from glacierflow.project.run import process_pair, run_project

__all__ = [
    "ANNUAL_BANDS",
    "CUBE_NAME",
    "DEFAULT_PATTERNS",
    "DONE_NAME",
    "MAX_PROFILE_FIGURES",
    "PairPlan",
    "Project",
    "ProjectResult",
    "SceneInfo",
    "Transect",
    "compose_products",
    "find_scenes",
    "load_project",
    "pair_is_complete",
    "plan_pairs",
    "process_pair",
    "run_project",
    "wrs_path_row",
]
