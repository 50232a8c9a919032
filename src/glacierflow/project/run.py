"""Running a project: one pair (cropped, tracked, written), many pairs here, on local
processes or on a Dask cluster, then the composites."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from glacierflow import __version__
from glacierflow.acquisition import trusting_given_dates
from glacierflow.errors import GlacierflowError, InputError
from glacierflow.execute import Executor, available_cpus
from glacierflow.limits import check_writable_folder
from glacierflow.progress import ProgressSink, QueueSink, TaskBars
from glacierflow.project.compose import ProjectResult, compose_products
from glacierflow.project.config import Project, file_key, load_project
from glacierflow.project.plan import PairPlan, plan_pairs
from glacierflow.project.resume import (
    DONE_NAME,
    fingerprint,
    pair_problem,
    product_checksums,
    scene_inputs,
    write_done,
    write_plan,
)

log = logging.getLogger("glacierflow")


def _read_cropped(path, band: int | None, acquired, grid, margin_px: int):
    """Read only the part of a scene that covers the grid, with ``margin_px`` pixels to spare
    (a URL's other blocks never travel)."""
    import math

    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    from glacierflow.scenes import read_header, read_scene

    head = read_header(path, band=band, acquired=acquired)
    x0, y0, x1, y1 = transform_bounds(grid.crs_wkt, head.crs, *grid.bounds, densify_pts=21)
    win = from_bounds(x0, y0, x1, y1, transform=head.transform)
    rows, cols = head.shape
    r0 = max(0, math.floor(win.row_off) - margin_px)
    c0 = max(0, math.floor(win.col_off) - margin_px)
    r1 = min(rows, math.ceil(win.row_off + win.height) + margin_px)
    c1 = min(cols, math.ceil(win.col_off + win.width) + margin_px)
    if r1 - r0 <= 0 or c1 - c0 <= 0:
        raise InputError("the scene does not reach the output grid", head.path)
    window = None if (r0, c0, r1, c1) == (0, 0, rows, cols) else Window(c0, r0, c1 - c0, r1 - r0)
    return read_scene(head.path, band=band, acquired=acquired, window=window)


def process_pair(
    project: Project,
    plan: PairPlan,
    folder: Path,
    workers: int | None = None,
    *,
    progress: bool | None | ProgressSink = False,
) -> xr.Dataset:
    """Track one pair (cropped to the grid) and write its products, then ``done.json``.

    Parameters
    ----------
    project : Project
        The project: grid, band, matching and filtering settings.
    plan : PairPlan
        The pair.
    folder : Path
        The pair's output folder; leftovers of a killed run there are removed first.
    workers : int, optional
        Matching processes; overrides ``[matching] workers`` (the result does not depend on it).
    progress : bool or None
        A progress bar over the pair's nodes: True always, False never, None when stderr is a
        terminal.

    Returns
    -------
    xarray.Dataset
        The pair product.
    """
    from glacierflow.pair import make_pair
    from glacierflow.products import PRODUCT_NAMES, remove_stale_staging, write_products
    from glacierflow.track import track_pair

    folder.mkdir(parents=True, exist_ok=True)
    # Leftovers of a killed run: stale marker and hidden temporaries of the atomic writers.
    (folder / DONE_NAME).unlink(missing_ok=True)
    remove_stale_staging(folder)
    for leftover in folder.glob(".*"):
        if (".staged-" in leftover.name or ".tmp-" in leftover.name) and leftover.is_file():
            leftover.unlink(missing_ok=True)
    grid = project.grid()
    settings = project.track_settings
    if workers is not None:
        settings = settings.updated(workers=workers)
    m = settings.matching
    margin = m.chip_px + m.search_px + m.step_px
    with trusting_given_dates(project.trust_dates):  # checked by discovery already
        ref = _read_cropped(plan.ref.path, project.band, plan.ref.acquired, grid, margin)
        sec = _read_cropped(plan.sec.path, project.band, plan.sec.acquired, grid, margin)
    pair = make_pair(ref, sec, log=log.warning)
    if not pair.valid.any():
        raise InputError(
            f"the scenes share no valid pixel inside the grid (SEC: {sec.path})", ref.path
        )
    ds = track_pair(pair, settings, progress=progress)
    ds.attrs["pair_id"] = plan.pair_id
    ds.attrs["project"] = project.name
    write_products(ds, folder, background=pair.ref.data, background_transform=pair.transform)
    record = {
        "pair": plan.pair_id,
        "ref": str(plan.ref.path),
        "sec": str(plan.sec.path),
        "ref_time": plan.ref.acquired.isoformat(),
        "sec_time": plan.sec.acquired.isoformat(),
        "fingerprint": fingerprint(project, plan),
        "products": sorted(PRODUCT_NAMES.values()),
        "inputs": scene_inputs(plan),
        "checksums": product_checksums(folder),
        "glacierflow_version": __version__,
    }
    write_done(folder, record)
    return ds


# --------------------------------------------------------------------------------------------
# Running many pairs: one after another, on local processes or on a Dask cluster
# --------------------------------------------------------------------------------------------


def _track_one(
    project: Project,
    plan: PairPlan,
    folder: Path,
    workers: int | None,
    progress: bool | None | ProgressSink,
) -> dict[str, float]:
    """Process one pair; what its progress line says (small, to send back from a worker)."""
    t0 = time.perf_counter()
    ds = process_pair(project, plan, folder, workers=workers, progress=progress)
    v = ds["v"].values
    return {
        "valid": float(np.isfinite(v).mean()),
        "nodes": int(v.size),
        "stable_vx": float(ds.attrs.get("stable_vx_nmad_m_per_yr", float("nan"))),
        "stable_vy": float(ds.attrs.get("stable_vy_nmad_m_per_yr", float("nan"))),
        "seconds": time.perf_counter() - t0,
    }


PairOutcome = tuple[int, dict[str, float] | None, BaseException | None]
"""Index of a pair in the plan, its summary (None if it failed) and its error (None if not)."""


def _run_pairs(
    project: Project,
    jobs: list[tuple[int, PairPlan, Path]],
    *,
    workers: int | None,
    concurrent_pairs: int,
    scheduler: str | None,
    progress: bool | None,
) -> Iterator[PairOutcome]:
    """Process pairs here, on local processes or on a Dask scheduler; yield them as they finish.

    One after another (``concurrent_pairs`` 1, no scheduler), the first error is raised at once,
    so no later pair starts. Concurrently, the first error cancels the pairs not yet started;
    pairs already running finish (and stay finished) and are yielded, with the error, before
    the generator ends.
    """
    if not jobs:
        return
    if scheduler:
        yield from _run_pairs_dask(project, jobs, scheduler)
        return
    if concurrent_pairs == 1 or len(jobs) == 1:
        if concurrent_pairs > 1:
            workers = workers or available_cpus()
        for i, plan, folder in jobs:
            yield i, _track_one(project, plan, folder, workers, progress), None
        return
    yield from _run_pairs_local(
        project, jobs, workers=workers, concurrent_pairs=concurrent_pairs, progress=progress
    )


def _run_pairs_local(
    project: Project,
    jobs: list[tuple[int, PairPlan, Path]],
    *,
    workers: int | None,
    concurrent_pairs: int,
    progress: bool | None,
) -> Iterator[PairOutcome]:
    """Several pairs at a time on local worker processes, each with its share of ``workers``."""
    n = min(concurrent_pairs, len(jobs))
    per_pair = max(1, (workers or available_cpus()) // n)
    show = bool(progress) or (progress is None and sys.stderr.isatty())
    with contextlib.ExitStack() as stack:
        ex = stack.enter_context(Executor(workers=n))
        bars = TaskBars(stack.enter_context(_manager()).Queue(), n, "pair") if show else None
        futures = {
            ex.submit(
                _track_one,
                project,
                plan,
                folder,
                per_pair,
                False if bars is None else QueueSink(bars.queue, i),
            ): i
            for i, plan, folder in jobs
        }
        failed = False
        pending = set(futures)
        while pending:
            finished, pending = ex.wait(pending, timeout_s=0.2)
            if bars is not None:
                bars.drain()
            for fut in finished:
                if bars is not None:
                    bars.close(futures[fut])
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None and not failed:
                    failed = True
                    for other in futures:
                        other.cancel()  # only those not started; running pairs finish
                yield futures[fut], None if exc is not None else fut.result(), exc


def _manager() -> Any:
    """A multiprocessing manager (its queue carries node counts from the worker processes)."""
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn").Manager()


def _run_pairs_dask(
    project: Project, jobs: list[tuple[int, PairPlan, Path]], scheduler: str
) -> Iterator[PairOutcome]:
    """One task per pair on a ``dask.distributed`` scheduler, one matching process each."""
    with Executor(scheduler=scheduler) as ex:
        futures = {
            ex.submit(_track_one, project, plan, folder, 1, False): i for i, plan, folder in jobs
        }
        for fut in ex.as_completed(futures):
            if fut.status == "error":
                # Pairs not started are cancelled; running ones still finish on their workers.
                for other in futures:
                    if not other.done():
                        other.cancel()
                yield futures[fut], None, fut.exception()
                return
            if fut.status == "finished":
                yield futures[fut], fut.result(), None


def run_project(
    project: Project | str | PathLike[str],
    *,
    workers: int | None = None,
    concurrent_pairs: int | None = None,
    scheduler: str | None = None,
    report: bool = True,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> ProjectResult:
    """Process every pair of a project (skipping complete ones), then compose the products.

    Pairs run one after another, several at a time on local worker processes
    (``concurrent_pairs``), or as one task each on a ``dask.distributed`` cluster
    (``scheduler``). The products are the same either way, value for value, and the progress
    lines and the result list the pairs in plan order. Composites are made once every pair is
    done.

    Parameters
    ----------
    project : Project or path
        A loaded project or the path of its TOML file.
    workers : int, optional
        Matching processes; overrides ``[matching] workers`` (the result does not depend on it).
        With ``concurrent_pairs`` above 1, the processes of the whole run (default: the number
        of CPUs), shared out between the pairs running at once (at least one each).
    concurrent_pairs : int, optional
        How many pairs run at once on local processes; overrides ``[matching]
        concurrent_pairs`` (default 1: one after another, in this process).
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler to run the pairs on, one task and one
        matching process per pair; its workers must see the scene files and the output folder
        at the same paths. Always explicit: the library does not read
        ``DASK_SCHEDULER_ADDRESS`` (``glacierflow run`` takes it as the default of
        ``--scheduler``).
    report : bool
        Write ``report.html``.
    progress : bool or None
        Progress bars on stderr (over the pairs and, one pair at a time, over each pair's
        nodes): True always, False never, None when stderr is a terminal.
    echo : callable, optional
        Receives one line of progress per step (the CLI prints them).

    Returns
    -------
    ProjectResult

    Raises
    ------
    GlacierflowError
        The first error of a pair, in plan order (the same as a sequential run gives); the
        pairs that finished are kept, so a rerun resumes.
    """
    from tqdm.auto import tqdm

    if not isinstance(project, Project):
        project = load_project(project)
    concurrent_pairs = project.concurrent_pairs if concurrent_pairs is None else concurrent_pairs
    if concurrent_pairs < 1:
        raise InputError(f"concurrent_pairs must be 1 or more, got {concurrent_pairs}")

    say = _between_bars(echo)
    check_writable_folder(project.output)  # before any pair: an unwritable output fails now
    plans = plan_pairs(project)
    say(f"{project.name}: {len(plans)} pair(s) -> {project.output}")
    pair_dirs = {plan.pair_id: project.output / "pairs" / plan.pair_id for plan in plans}
    lines = _PairLines(plans, say)
    jobs = _unfinished(project, plans, pair_dirs, lines)

    with tqdm(
        total=len(plans),
        initial=len(plans) - len(jobs),
        unit="pair",
        desc="pairs",
        disable=(not progress) if progress is not None else None,
    ) as bar:
        lines.say_in_order()
        outcomes = _run_pairs(
            project,
            jobs,
            workers=workers,
            concurrent_pairs=concurrent_pairs,
            scheduler=scheduler,
            progress=progress,
        )
        try:
            done = _collect(outcomes, plans, lines, bar)
        except InputError as exc:
            if not exc.keys:
                raise
            raise _in_project_terms(exc) from exc
    processed = [plan.pair_id for i, plan in enumerate(plans) if i in done]
    skipped = [plan.pair_id for i, plan in enumerate(plans) if i not in done]
    write_plan(project.output / "pairs", [p.pair_id for p in plans])
    say("composites:")
    result = compose_products(project, pair_dirs, report=report, echo=say)
    result.pairs, result.processed, result.skipped = plans, processed, skipped
    if result.report_path is not None:
        say(f"report: {result.report_path}")
    return result


def _between_bars(echo: Callable[[str], None] | None) -> Callable[[str], None]:
    """``echo`` as a function that prints between the progress bars (nothing if None)."""
    from tqdm.auto import tqdm

    def say(msg: str) -> None:
        if echo is not None:
            with tqdm.external_write_mode():
                echo(msg)

    return say


def _unfinished(
    project: Project, plans: Sequence[PairPlan], pair_dirs: dict[str, Path], lines: _PairLines
) -> list[tuple[int, PairPlan, Path]]:
    """The pairs to process: (index in the plan, plan, folder); complete ones are kept."""
    write_plan(project.output / "pairs", [p.pair_id for p in plans], only_if_there=True)
    jobs = []
    for i, plan in enumerate(plans):
        folder = pair_dirs[plan.pair_id]
        problem = pair_problem(folder, fingerprint(project, plan), scene_inputs(plan))
        if problem is None:
            lines.finish(i, "complete, kept")
            continue
        if (folder / DONE_NAME).is_file():
            log.warning("pair %s: %s; tracking it again", plan.pair_id, problem)
        jobs.append((i, plan, folder))
    return jobs


def _collect(
    outcomes: Iterator[PairOutcome], plans: Sequence[PairPlan], lines: _PairLines, bar: Any
) -> set[int]:
    """The pairs that finished, saying each pair's line in plan order as they come.

    Raises the error of the first pair in plan order that failed (the one a sequential run
    raises), once every running pair has finished and its line is said.
    """
    done: set[int] = set()
    errors: dict[int, BaseException] = {}
    for i, summary, error in outcomes:
        bar.update(1)
        if error is not None or summary is None:
            errors[i] = error or GlacierflowError(f"pair {plans[i].pair_id} gave no result")
            lines.finish(i, "failed")
        else:
            done.add(i)
            lines.finish(i, _tracked_line(summary))
        lines.say_in_order()
    if errors:
        # Concurrent pairs only (one after another, the error is raised as it happens): say
        # which pairs finished, then raise the error the sequential run would have raised.
        lines.say_all()
        raise errors[min(errors)]
    return done


def _in_project_terms(exc: InputError) -> InputError:
    """``exc`` with the settings it names called as the project file calls them
    (``"[matching] chip_px"``, not the tree's ``matching.chip_px``)."""
    from glacierflow.errors import render

    renamed = render(InputError(exc.problem, key=exc.keys), file_key)
    return InputError(renamed, exc.path)


def _tracked_line(summary: dict[str, float]) -> str:
    return (
        f"tracked, {summary['valid']:.0%} of {summary['nodes']} nodes "
        f"valid, stable ground NMAD vx {summary['stable_vx']:.1f} vy "
        f"{summary['stable_vy']:.1f} m/yr ({summary['seconds']:.1f} s)"
    )


class _PairLines:
    """One progress line per pair, said in plan order as the pairs finish."""

    def __init__(self, plans: Sequence[PairPlan], say: Callable[[str], None]) -> None:
        self.say = say
        self.heads = [
            f"pair {i + 1}/{len(plans)} {plan.ref.acquired:%Y-%m-%d} -> "
            f"{plan.sec.acquired:%Y-%m-%d} ({plan.dt_days:.0f} d)"
            for i, plan in enumerate(plans)
        ]
        self.waiting: dict[int, str] = {}
        self.next = 0

    def finish(self, index: int, outcome: str) -> None:
        """Pair ``index`` ended with ``outcome``; its line waits for those before it."""
        self.waiting[index] = f"{self.heads[index]}: {outcome}"

    def say_in_order(self) -> None:
        """Say the waiting lines that every earlier pair's line precedes."""
        while self.next in self.waiting:
            self.say(self.waiting.pop(self.next))
            self.next += 1

    def say_all(self) -> None:
        """Say every waiting line, in plan order, gaps or not."""
        for index in sorted(self.waiting):
            self.say(self.waiting.pop(index))
