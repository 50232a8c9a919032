"""Tiled matching with bounded memory: worker processes on one machine, or a Dask cluster.

The node grid of a pair is split into tiles. Each tile task reads only its windows of both
images (the tile's chips plus the search margin) with rasterio windowed reads, matches them and
returns its offsets; the main process never holds the images. Tiles are multiples of the
matcher's own internal tile, aligned on the same node lattice, and the images are normalised with
statistics accumulated strip by strip (:mod:`glacierflow.matching.stats`), so the result is
identical, bit for bit, to matching the whole images at once.

Finished tiles are kept in a work folder (one ``.npz`` each, written atomically) keyed by the
inputs and settings (the resume fingerprint), so a killed run restarts from where it stopped.
Tasks run through :class:`glacierflow.execute.Executor`: in this process, on ``workers`` local
processes, or on an existing ``dask.distributed`` scheduler given by its address (the library
does not read ``DASK_SCHEDULER_ADDRESS``; the command line does).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from glacierflow import prefilter as pf
from glacierflow.atomic import atomic_write
from glacierflow.errors import InputError
from glacierflow.execute import Executor
from glacierflow.matching import MatchResult, MatchSettings, NodeGrid, TaskRunner, make_grid
from glacierflow.matching.match import LAYERS, adapt_chips, coarse_centres, tile_slices
from glacierflow.matching.ncc import PreparedImage
from glacierflow.matching.nodes import match_tile
from glacierflow.matching.pyramid import downsample2, fine_settings
from glacierflow.matching.stats import (
    MIN_SAMPLE_PX,
    STRIP_ROWS,
    sampled_strips,
    stats_from_strips,
    strip_sums,
)
from glacierflow.matching.strain import refine_nodes
from glacierflow.scenes import Scene, file_fingerprint, read_scene
from glacierflow.settings import TILED_PREFILTERS

log = logging.getLogger("glacierflow")

Tile = tuple[slice, slice]


#: Nodes per tile task of tiled matching unless chosen (``tiling.tile_nodes``).
DEFAULT_TILE_NODES = 16384


def internal_side(settings: MatchSettings) -> int:
    """Side, in nodes, of the matcher's own tiles (see :func:`matching.match.tile_slices`)."""
    return max(1, int(round(np.sqrt(settings.tile_nodes))))


def plan_tiles(grid: NodeGrid, settings: MatchSettings, tile_nodes: int) -> list[Tile]:
    """Split the node grid into tiles of about ``tile_nodes`` nodes.

    Tile sides are whole multiples of the matcher's internal tile side, starting at node 0, so
    that every internal tile is the same as in an untiled run.
    """
    side = internal_side(settings)
    mult = max(1, int(round(np.sqrt(max(tile_nodes, 1)) / side)))
    step = side * mult
    return [
        (slice(i, min(i + step, grid.ny)), slice(j, min(j + step, grid.nx)))
        for i in range(0, grid.ny, step)
        for j in range(0, grid.nx, step)
    ]


def tile_window(grid: NodeGrid, tile: Tile, reach_px: int = 0) -> Window:
    """Pixel window holding every chip and search window of the tile's nodes, with search
    centres up to ``reach_px`` pixels from the nodes (a guided search)."""
    ti, tj = tile
    rows, cols = grid.rows_px()[ti], grid.cols_px()[tj]
    half, c, s = grid.chip_px // 2, grid.chip_px, grid.search_px + reach_px
    r0, c0 = int(rows[0]) - half - s, int(cols[0]) - half - s
    r1, c1 = int(rows[-1]) - half + c + s, int(cols[-1]) - half + c + s
    return Window(c0, r0, c1 - c0, r1 - r0)


def file_stats(
    scene: Scene, band: int | None, tile_filter: TileFilter | None = None
) -> tuple[float, float]:
    """Normalisation statistics of a scene (its part of the file), read strip by strip, as
    :func:`glacierflow.matching.stats.image_stats` takes them from an image in memory (of the
    filtered image when a filter is given)."""
    rows, cols = scene.shape
    ref = scene_ref(scene)

    def sums(r: int) -> tuple[int, float, float]:
        win = Window(0, r, cols, min(STRIP_ROWS, rows - r))
        data, valid = _read_filtered(ref, band, win, tile_filter)
        return strip_sums(data, valid)

    return stats_from_strips(rows, sums)


@dataclass(frozen=True)
class TileFilter:
    """What a scene's pixels go through before matching, with its image-wide constants fixed.

    The pre-filters of :mod:`glacierflow.prefilter` (``"highpass"`` or ``"wallis"``) and, for
    orientation correlation, the orientation image. Each is local but for one constant taken
    over the whole scene (the Wallis target spread, the typical gradient); fixed here from the
    same sampled strips of the file, they make a tile's filtered pixels the scene's.
    """

    #: Pre-filter: ``"none"``, ``"highpass"`` or ``"wallis"``.
    kind: str = "none"
    #: High-pass Gaussian standard deviation, pixels.
    sigma_px: float = pf.HIGHPASS_SIGMA_PX
    #: Wallis window side, pixels, and contrast constant (dimensionless).
    window_px: float = pf.WALLIS_WINDOW_PX
    contrast: float = pf.WALLIS_CONTRAST
    #: Wallis target spread, in the image's units (None: not fixed yet).
    target: float | None = None
    #: Turn the (pre-filtered) scene into orientation images.
    orientation: bool = False
    #: Typical (median) gradient magnitude of the pre-filtered scene, image units per pixel.
    typical: float | None = None

    def reach_px(self) -> int:
        """How far the filters read around a pixel."""
        reach = 0
        if self.kind == "highpass":
            reach = pf.highpass_reach_px(self.sigma_px)
        elif self.kind == "wallis":
            reach = pf.wallis_reach_px(self.window_px)
        return reach + (pf.ORIENTATION_REACH_PX if self.orientation else 0)

    def apply(self, data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter an image (a window of the scene with the filters' reach around it)."""
        if self.kind == "highpass":
            data, valid = pf.highpass(data, valid, self.sigma_px)
        elif self.kind == "wallis":
            data, valid = pf.wallis(data, valid, self.window_px, self.contrast, self.target)
        if self.orientation:
            data, valid = pf.orientation(data, valid, typical=self.typical)
        return data, valid

    def without_orientation(self) -> TileFilter:
        """The pre-filter alone (what statistics and the coarse pass see)."""
        return replace(self, orientation=False, typical=None)


def fix_constants(scene: Scene, band: int | None, tile_filter: TileFilter) -> TileFilter:
    """The filter with the scene's image-wide constants, taken from sampled strips of its file
    as :func:`glacierflow.prefilter.sampled_median` takes them from the scene in memory."""
    f = tile_filter
    if f.kind == "wallis" and f.target is None:

        def spread(data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            _, values, ok = pf.wallis_spread(data, valid, f.window_px)
            return values, ok

        reach = pf.wallis_reach_px(f.window_px)
        f = replace(f, target=_sampled_median(scene, band, spread, TileFilter(), reach))
    if f.orientation and f.typical is None:

        def magnitude(data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            g, ok = pf.gradient(data, valid)
            return np.abs(g), ok

        pre = f.without_orientation()
        reach = pre.reach_px() + pf.ORIENTATION_REACH_PX
        f = replace(f, typical=_sampled_median(scene, band, magnitude, pre, reach))
    return f


def _sampled_median(
    scene: Scene,
    band: int | None,
    values: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    pre: TileFilter,
    reach: int,
) -> float | None:
    """Median of ``values`` (an image-sized array and where it counts) over the sampled strips
    of a scene, all strips when the sample holds too few pixels; each strip is pre-filtered by
    ``pre`` and computed with ``reach`` pixels around it (nodata past the scene's edge)."""
    rows, cols = scene.shape
    ref = scene_ref(scene)

    def strip(r: int) -> np.ndarray:
        n = min(STRIP_ROWS, rows - r)
        wide = Window(-reach, r - reach, cols + 2 * reach, n + 2 * reach)
        data, valid = _read_filtered(ref, band, wide, pre)
        v, ok = values(data, valid)
        inner = (slice(reach, reach + n), slice(reach, reach + cols))
        return v[inner][ok[inner]]

    sample, rest = sampled_strips(rows)
    got = [strip(r) for r in sample]
    if sum(v.size for v in got) < MIN_SAMPLE_PX and rest:
        got = [strip(r) for r in sorted(sample + rest)]
    every = np.concatenate(got) if got else np.zeros(0)
    return float(np.median(every)) if every.size else None


SceneRef = tuple[Path, object, str, tuple[int, int], tuple[int, int]]
"""What a tile task needs to read a scene: path, acquisition time, sensor, the scene's first
pixel in the file and its shape (small to send)."""


def scene_ref(scene: Scene) -> SceneRef:
    """The small, picklable reference of a scene that tile tasks read from."""
    return (scene.path, scene.acquired, scene.sensor, scene.file_offset_px, scene.shape)


def match_file_tile(
    ref: SceneRef,
    sec: SceneRef,
    band: int | None,
    grid: NodeGrid,
    tile: Tile,
    settings: MatchSettings,
    ref_stats: tuple[float, float],
    sec_stats: tuple[float, float],
    centres: tuple[np.ndarray, np.ndarray] | None = None,
    filters: tuple[TileFilter, TileFilter] | None = None,
) -> np.ndarray:
    """Read one tile's windows of both files and match them.

    Parameters
    ----------
    centres : (ndarray, ndarray), optional
        Search centres of the tile's nodes relative to the nodes (rows, columns), in whole
        pixels, shape of the tile; the windows read reach that much further (past the image
        edge, pixels count as nodata).
    filters : (TileFilter, TileFilter), optional
        Pre-filters (and orientation images) of both scenes, their constants fixed
        (:func:`fix_constants`); each tile reads their reach around its windows, so that its
        filtered pixels are the whole scene's.

    Returns
    -------
    ndarray, shape (LAYERS, tile rows, tile columns), float32
        ``dx_px``, ``dy_px``, ``corr``, ``snr``, ``closure_px``.
    """
    # One pixel more than the farthest centre: a shared kernel searches around the middle of
    # the tile's centres, rounded down (as the padding of an untiled run allows).
    reach = 0
    if centres is not None:
        reach = int(max(np.abs(centres[0]).max(), np.abs(centres[1]).max())) + 1
    win = tile_window(grid, tile, reach)
    ref_f, sec_f = filters if filters is not None else (None, None)
    prep = [
        PreparedImage(*_read_filtered(scene, band, win, f), stats=st)
        for scene, f, st in ((ref, ref_f, ref_stats), (sec, sec_f, sec_stats))
    ]
    ti, tj = tile
    rows = grid.rows_px()[ti] - int(win.row_off)
    cols = grid.cols_px()[tj] - int(win.col_off)
    out = np.full((LAYERS, rows.size, cols.size), np.nan, dtype=np.float32)
    local = NodeGrid(0, 0, grid.step_px, rows.size, cols.size, grid.chip_px, grid.search_px)
    for si, sj in tile_slices(local, settings.tile_nodes):
        cy = cx = None
        if centres is not None:
            cy, cx = centres[0][si, sj], centres[1][si, sj]
        res = match_tile(prep[0], prep[1], rows[si], cols[sj], settings, cy, cx)
        for layer, values in zip(out, res, strict=True):
            layer[si, sj] = values
    return out


def _read_padded(scene: SceneRef, band: int | None, win: Window) -> tuple[np.ndarray, np.ndarray]:
    """A window of a scene, data and validity; parts past the scene's edge are nodata."""
    path, when, sensor, (fr, fc), (height, width) = scene
    r0, c0 = max(0, int(win.row_off)), max(0, int(win.col_off))
    r1 = min(height, int(win.row_off + win.height))
    c1 = min(width, int(win.col_off + win.width))
    part = read_scene(
        path,
        band=band,
        acquired=when,
        sensor=sensor,
        window=Window(fc + c0, fr + r0, max(c1 - c0, 0), max(r1 - r0, 0)),
    )
    if (r0, c0, r1 - r0, c1 - c0) == (win.row_off, win.col_off, win.height, win.width):
        return part.data, part.valid
    data = np.zeros((int(win.height), int(win.width)), dtype=np.float32)
    valid = np.zeros(data.shape, dtype=bool)
    if r1 > r0 and c1 > c0:
        at = (
            slice(r0 - int(win.row_off), r1 - int(win.row_off)),
            slice(c0 - int(win.col_off), c1 - int(win.col_off)),
        )
        data[at], valid[at] = part.data, part.valid
    return data, valid


def _read_filtered(
    scene: SceneRef, band: int | None, win: Window, tile_filter: TileFilter | None
) -> tuple[np.ndarray, np.ndarray]:
    """A window of a scene, filtered as the whole scene would be: the filters' reach is read
    around the window (nodata past the scene's edge) and cut off again."""
    if tile_filter is None or (tile_filter.kind == "none" and not tile_filter.orientation):
        return _read_padded(scene, band, win)
    m = tile_filter.reach_px()
    wide = Window(win.col_off - m, win.row_off - m, win.width + 2 * m, win.height + 2 * m)
    data, valid = tile_filter.apply(*_read_padded(scene, band, wide))
    inner = (slice(m, m + int(win.height)), slice(m, m + int(win.width)))
    return data[inner], valid[inner]


def _read_downsampled(
    scene: Scene, band: int | None, tile_filter: TileFilter | None
) -> tuple[np.ndarray, np.ndarray]:
    """A scene (pre-filtered if asked) downsampled by two, strip by strip."""
    rows, cols = scene.shape
    ref = scene_ref(scene)
    parts = [
        downsample2(
            *_read_filtered(ref, band, Window(0, r, cols, min(STRIP_ROWS, rows - r)), tile_filter)
        )
        for r in range(0, rows, STRIP_ROWS)
    ]
    return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])


def _work_key(
    ref: Scene,
    sec: Scene,
    band: int | None,
    settings: MatchSettings,
    centres: tuple[np.ndarray, np.ndarray] | None = None,
    filters: tuple[TileFilter, TileFilter] | None = None,
) -> str:
    """A key that changes whenever the inputs, the settings or the search centres change."""
    info = {
        "settings": settings.model_dump(exclude={"workers"}),
        "band": band,
        "filters": None if filters is None else [asdict(f) for f in filters],
    }
    if centres is not None:
        info["centres"] = hashlib.sha256(np.stack(centres).tobytes()).hexdigest()
    for name, s in (("ref", ref), ("sec", sec)):
        # Size, time and a hash of a sample of the content: a scene replaced at the same path
        # (even with its old size and time) gets a new key, so its tiles are not reused.
        info[name] = [str(s.path.resolve()), file_fingerprint(s.path)]
        info[name] += [list(s.file_offset_px), list(s.shape)]
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


def _tile_file(folder: Path, tile: Tile) -> Path:
    return folder / f"tile_{tile[0].start:06d}_{tile[1].start:06d}.npz"


def _checksum(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def _write_tile_atomically(path: Path, values: np.ndarray) -> None:
    """Write a finished tile with its checksum and the key of its run (the folder's name), so
    that a damaged tile or one from another run is never taken for this run's."""
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh, values=values, key=np.str_(path.parent.name), sha256=np.str_(_checksum(values))
        )


def _load_tile(path: Path, tile: Tile) -> np.ndarray | None:
    """A finished tile kept in the work folder, or None to match it (again).

    A tile that cannot be read whole (truncated, bit-flipped), was written by another run (its
    key is not the folder's) or has the wrong shape is removed with a one-line warning.
    """
    if not path.is_file():
        return None
    ti, tj = tile
    try:
        with np.load(path) as z:
            values, key, sha = z["values"], str(z["key"]), str(z["sha256"])
        if key != path.parent.name:
            problem = "written by another run (other inputs or settings)"
        elif values.shape != (LAYERS, ti.stop - ti.start, tj.stop - tj.start):
            problem = f"of the wrong shape {values.shape}"
        elif sha != _checksum(values):
            problem = "damaged (checksum mismatch)"
        else:
            return values
    except Exception as exc:  # zipfile, numpy and OS errors alike: the tile is unusable
        problem = f"damaged ({type(exc).__name__}: {exc})"
    log.warning("discarded %s in %s: %s; matching it again", path.name, path.parent, problem)
    path.unlink(missing_ok=True)
    return None


def tiled_match(
    ref: Scene,
    sec: Scene,
    settings: MatchSettings,
    *,
    band: int | None = None,
    tile_nodes: int = DEFAULT_TILE_NODES,
    work_dir: str | os.PathLike[str] | None = None,
    scheduler: str | None = None,
    progress: Callable[[int], None] | None = None,
    prior_dx_px: np.ndarray | None = None,
    prior_dy_px: np.ndarray | None = None,
    prefilter: str = "none",
    prefilter_sigma_px: float = pf.HIGHPASS_SIGMA_PX,
    wallis_window_px: float = pf.WALLIS_WINDOW_PX,
    executor: TaskRunner | None = None,
) -> MatchResult:
    """Match two images on one grid, tile by tile, from their files.

    Parameters
    ----------
    ref, sec : Scene
        Scene headers (from :func:`glacierflow.scenes.read_header`); their files are read in
        windows. Both must be on the same grid.
    settings : MatchSettings
        Matching parameters; ``settings.workers`` local processes run the tiles unless a
        scheduler or an executor is given.
    band : int, optional
        Band of multi-band files.
    tile_nodes : int
        About how many nodes one tile task matches; memory per task grows with it.
    work_dir : path, optional
        Folder for finished tiles; a rerun with the same inputs and settings reuses them.
        Without one, nothing is kept.
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler to run the tiles on.
    progress : callable, optional
        Called with the number of nodes of each finished tile.
    prior_dx_px, prior_dy_px : ndarray, optional
        Expected offsets on the node grid, in pixels (NaN: unknown, taken as 0), as for
        :func:`glacierflow.matching.match`: each node's search is centred on the rounded prior.
    prefilter : {"none", "highpass", "wallis"}
        Pre-filter both scenes (:mod:`glacierflow.prefilter`; ``prefilter_sigma_px`` for the
        high-pass, ``wallis_window_px`` for the Wallis filter), tile by tile exactly as whole
        scenes; ``settings.method = "orientation"`` matches their orientation images.
    executor : TaskRunner, optional
        Runs the tile tasks (a :class:`glacierflow.execute.Executor`); by default one is made
        from ``settings.workers`` and ``scheduler`` for this call.

    Returns
    -------
    MatchResult
        Identical to :func:`glacierflow.matching.match` on the whole images.
    """
    grid = _checked_grid(ref, sec, settings)
    prior = _prior_on_grid(prior_dx_px, prior_dy_px, grid)
    if prefilter not in TILED_PREFILTERS:
        *first, last = (repr(kind) for kind in TILED_PREFILTERS)
        raise ValueError(f"tiled pre-filters are {', '.join(first)} and {last}, not {prefilter!r}")
    with contextlib.ExitStack() as stack:
        if executor is None:
            # Made first: a scheduler that does not answer fails before any work.
            executor = stack.enter_context(Executor(settings.workers, scheduler))
        base = TileFilter(kind=prefilter, sigma_px=prefilter_sigma_px, window_px=wallis_window_px)
        base = replace(base, orientation=settings.method == "orientation")
        filters = tuple(fix_constants(s, band, base) for s in (ref, sec))
        if settings.pyramid_levels > 1:
            # The coarse pass on both scenes at half resolution, downsampled strip by strip (a
            # quarter of the pixels in memory), as match() does on whole images.
            halves = [
                _read_downsampled(s, band, f.without_orientation())
                for s, f in zip((ref, sec), filters, strict=True)
            ]
            prior = coarse_centres(*halves[0], *halves[1], settings, grid, prior, executor)
            del halves
        centres = None if prior is None else tuple(np.rint(a).astype(np.int64) for a in prior)
        folder = None
        if work_dir is not None:
            folder = Path(work_dir) / _work_key(ref, sec, band, settings, centres, filters)
            folder.mkdir(parents=True, exist_ok=True)
        if folder is not None:
            # A failure before any tile is kept leaves no work folder behind.
            stack.push(lambda kind, _exc, _tb, f=folder: bool(kind and remove_unused_work(f)))
        out = np.full((LAYERS, *grid.shape), np.nan, dtype=np.float32)
        fine = fine_settings(settings)  # coarse to fine: a narrower search around the centres
        todo = _resume(out, plan_tiles(grid, fine, tile_nodes), folder, progress)
        stats = _both_stats(ref, sec, band, settings, filters)
        if todo:
            files = (scene_ref(ref), scene_ref(sec), band, grid, filters)
            task = functools.partial(_task, files, settings=fine, stats=stats)
            jobs = [(t, None if centres is None else (centres[0][t], centres[1][t])) for t in todo]
            for tile, values in executor.map_unordered(task, jobs):
                out[:, tile[0], tile[1]] = values
                if folder:
                    _write_tile_atomically(_tile_file(folder, tile), values)
                if progress:
                    progress(values[0].size)
        files = (ref, sec, band, filters, stats)
        return _refined(out, grid, fine, files, executor, centres)  # as match() does


def _refined(out, grid, settings, files, executor, centres=None) -> MatchResult:
    """The result, after the strain-aware second pass (:mod:`glacierflow.matching.strain`) and
    the texture-adaptive chips (:func:`~glacierflow.matching.match.adapt_chips`) on windows
    read from the files, as they run in memory."""
    strain = refined = None
    ref, sec, band, filters, stats = files
    crop = _file_crop(scene_ref(ref), scene_ref(sec), band, filters, stats)
    rows, cols = grid.rows_px(), grid.cols_px()
    if settings.refine != "off" and settings.method != "orientation":
        out[0], out[1], strain, refined = refine_nodes(
            *out[:4], rows, cols, settings, crop, executor.map_unordered
        )  # fmt: skip
    chip = adapt_chips(out, rows, cols, centres, settings, crop, executor.map_unordered)
    if refined is not None:
        refined &= chip == settings.chip_px
    return MatchResult(grid, *out[:4], settings, chip, strain, refined, closure_px=out[4])


def _file_crop(ref: SceneRef, sec: SceneRef, band, filters, stats) -> Callable:
    """Windows of both scenes' files, filtered and normalised exactly as whole scenes (picklable:
    the strain pass's tasks read their windows on the workers)."""
    crop = functools.partial(_crop_files, ref, sec, band, filters, stats)
    crop.in_worker = True  # type: ignore[attr-defined]
    return crop


def _crop_files(ref, sec, band, filters, stats, top: int, left: int, rows: int, cols: int):
    win = Window(left, top, cols, rows)
    out: list[np.ndarray] = []
    for scene, f, st in ((ref, filters[0], stats[0]), (sec, filters[1], stats[1])):
        prep = PreparedImage(*_read_filtered(scene, band, win, f), stats=st)
        out += [prep.image, prep.valid]
    return tuple(out)


def _checked_grid(ref: Scene, sec: Scene, settings: MatchSettings) -> NodeGrid:
    """The node grid of two scenes on one grid (InputError naming REF otherwise)."""
    if ref.shape != sec.shape or ref.transform != sec.transform or ref.crs != sec.crs:
        raise InputError(
            f"tiled processing needs both images on one grid (SEC {sec.path.name} differs in "
            "CRS, transform or size); reproject SEC onto REF first or run untiled",
            ref.path,
        )
    try:
        return make_grid(
            ref.shape,
            chip_px=settings.chip_px,
            search_px=settings.search_px,
            step_px=settings.step_px,
        )
    except ValueError as exc:
        raise InputError(str(exc), ref.path) from exc


def _prior_on_grid(prior_dx_px, prior_dy_px, grid: NodeGrid):
    """The prior offsets (rows, columns) on the node grid, NaN taken as 0; or None."""
    if (prior_dx_px is None) != (prior_dy_px is None):
        raise ValueError("give both prior_dx_px and prior_dy_px, or neither")
    if prior_dx_px is None:
        return None
    prior = tuple(
        np.where(np.isfinite(a), a, 0.0)
        for a in (np.asarray(prior_dy_px, float), np.asarray(prior_dx_px, float))
    )
    if prior[0].shape != grid.shape or prior[1].shape != grid.shape:
        raise ValueError(f"prior offsets must be on the node grid, shape {grid.shape}")
    return prior


def _resume(out: np.ndarray, tiles: list[Tile], folder: Path | None, progress) -> list[Tile]:
    """Fill ``out`` from the finished tiles kept in ``folder``; the tiles still to match."""
    todo = []
    for tile in tiles:
        values = _load_tile(_tile_file(folder, tile), tile) if folder else None
        if values is None:
            todo.append(tile)
            continue
        out[:, tile[0], tile[1]] = values
        if progress:
            progress(values[0].size)
    return todo


def _both_stats(ref, sec, band, settings, filters) -> tuple[tuple[float, float], ...]:
    """Normalisation statistics of both scenes, from their files."""
    if settings.method == "orientation":
        # Orientation images are complex: they take no normalisation statistics.
        return (0.0, 1.0), (0.0, 1.0)
    # Both files' statistics at once: GDAL decodes and numpy sums without the GIL.
    with ThreadPoolExecutor(2) as pool:
        return tuple(pool.map(file_stats, (ref, sec), (band, band), filters))


def _task(args, job, *, settings, stats) -> tuple[Tile, np.ndarray]:
    """One tile task (run in any process): the tile and its ``dx, dy, corr, snr``."""
    ref, sec, band, grid, filters = args
    tile, centres = job
    return tile, match_file_tile(
        ref, sec, band, grid, tile, settings, stats[0], stats[1], centres, filters
    )


def remove_unused_work(folder: Path) -> None:
    """After a failed tiled match: remove its work folder if no finished tile is kept in it
    (and the ``.glacierflow-work`` folder above, if that left it empty)."""
    if any(folder.glob("tile_*.npz")):
        return
    shutil.rmtree(folder, ignore_errors=True)
    if folder.parent.name == ".glacierflow-work":
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # only if empty
