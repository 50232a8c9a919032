"""Tiled matching with bounded memory: worker processes on one machine, or a Dask cluster.

The node grid of a pair is split into tiles. Each tile task reads only its windows of both
images (the tile's chips plus the search margin) with rasterio windowed reads, matches them and
returns its offsets; the main process never holds the images. Tiles are multiples of the
matcher's own internal tile, aligned on the same node lattice, and the images are normalised with
statistics accumulated strip by strip (:mod:`glacierflow.matching.stats`), so the result is
identical, bit for bit, to matching the whole images at once.

Finished tiles are kept in a work folder (one ``.npz`` each, written atomically) keyed by the
inputs and settings, so a killed run restarts from where it stopped. Tasks run in this process,
on ``workers`` local processes, or on an existing ``dask.distributed`` scheduler
(``scheduler=ADDRESS`` or the ``DASK_SCHEDULER_ADDRESS`` environment variable).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from glacierflow.errors import InputError
from glacierflow.matching import MatchResult, MatchSettings, NodeGrid, make_grid
from glacierflow.matching.core import coarse_centres, downsample2, match_tile, tile_slices
from glacierflow.matching.ncc import PreparedImage
from glacierflow.matching.stats import STRIP_ROWS, stats_from_strips, strip_sums
from glacierflow.scenes import Scene, read_scene

Tile = tuple[slice, slice]


def internal_side(settings: MatchSettings) -> int:
    """Side, in nodes, of the matcher's own tiles (see :func:`matching.core.tile_slices`)."""
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
    scene: Scene, band: int | None, highpass_sigma_px: float | None = None
) -> tuple[float, float]:
    """Normalisation statistics of a scene (its part of the file), read strip by strip, as
    :func:`glacierflow.matching.stats.image_stats` takes them from an image in memory (of the
    high-passed image when ``highpass_sigma_px`` is given)."""
    rows, cols = scene.shape
    ref = scene_ref(scene)

    def sums(r: int) -> tuple[int, float, float]:
        win = Window(0, r, cols, min(STRIP_ROWS, rows - r))
        data, valid = _read_filtered(ref, band, win, highpass_sigma_px)
        return strip_sums(data, valid)

    return stats_from_strips(rows, sums)


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
    highpass_sigma_px: float | None = None,
) -> np.ndarray:
    """Read one tile's windows of both files and match them.

    Parameters
    ----------
    centres : (ndarray, ndarray), optional
        Search centres of the tile's nodes relative to the nodes (rows, columns), in whole
        pixels, shape of the tile; the windows read reach that much further (past the image
        edge, pixels count as nodata).
    highpass_sigma_px : float, optional
        High-pass both images first (:func:`glacierflow.prefilter.highpass`), reading the
        Gaussian's reach around the windows so that the result is the whole image's.

    Returns
    -------
    ndarray, shape (4, tile rows, tile columns), float32
        ``dx_px``, ``dy_px``, ``corr``, ``snr``.
    """
    # One pixel more than the farthest centre: a shared kernel searches around the middle of
    # the tile's centres, rounded down (as the padding of an untiled run allows).
    reach = 0
    if centres is not None:
        reach = int(max(np.abs(centres[0]).max(), np.abs(centres[1]).max())) + 1
    win = tile_window(grid, tile, reach)
    prep = [
        PreparedImage(*_read_filtered(scene, band, win, highpass_sigma_px), stats=st)
        for scene, st in ((ref, ref_stats), (sec, sec_stats))
    ]
    ti, tj = tile
    rows = grid.rows_px()[ti] - int(win.row_off)
    cols = grid.cols_px()[tj] - int(win.col_off)
    out = np.full((4, rows.size, cols.size), np.nan, dtype=np.float32)
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
    scene: SceneRef, band: int | None, win: Window, highpass_sigma_px: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """A window of a scene, high-passed as the whole scene would be when a sigma is given: the
    Gaussian's reach is read around the window (nodata past the scene's edge) and cut off."""
    if highpass_sigma_px is None:
        return _read_padded(scene, band, win)
    from glacierflow.prefilter import highpass, highpass_reach_px

    m = highpass_reach_px(highpass_sigma_px)
    wide = Window(win.col_off - m, win.row_off - m, win.width + 2 * m, win.height + 2 * m)
    data, valid = highpass(*_read_padded(scene, band, wide), highpass_sigma_px)
    inner = (slice(m, m + int(win.height)), slice(m, m + int(win.width)))
    return data[inner], valid[inner]


def _read_downsampled(
    scene: Scene, band: int | None, highpass_sigma_px: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """A scene (high-passed if asked) downsampled by two, strip by strip."""
    rows, cols = scene.shape
    ref = scene_ref(scene)
    parts = [
        downsample2(
            *_read_filtered(
                ref, band, Window(0, r, cols, min(STRIP_ROWS, rows - r)), highpass_sigma_px
            )
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
    highpass_sigma_px: float | None = None,
) -> str:
    """A key that changes whenever the inputs, the settings or the search centres change."""
    info = {
        "settings": {k: v for k, v in asdict(settings).items() if k != "workers"},
        "band": band,
        "highpass_sigma_px": highpass_sigma_px,
    }
    if centres is not None:
        info["centres"] = hashlib.sha256(np.stack(centres).tobytes()).hexdigest()
    for name, s in (("ref", ref), ("sec", sec)):
        st = s.path.stat()
        info[name] = [
            str(s.path.resolve()),
            st.st_size,
            st.st_mtime_ns,
            list(s.file_offset_px),
            list(s.shape),
        ]
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


def _tile_file(folder: Path, tile: Tile) -> Path:
    return folder / f"tile_{tile[0].start:06d}_{tile[1].start:06d}.npz"


def _save_tile(path: Path, values: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.savez(fh, values=values)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_tile(path: Path, tile: Tile) -> np.ndarray | None:
    try:
        with np.load(path) as z:
            values = z["values"]
    except (OSError, ValueError, KeyError):
        return None  # a damaged leftover is simply matched again
    ti, tj = tile
    if values.shape != (4, ti.stop - ti.start, tj.stop - tj.start):
        return None
    return values


def tiled_match(
    ref: Scene,
    sec: Scene,
    settings: MatchSettings,
    *,
    band: int | None = None,
    tile_nodes: int = 16384,
    work_dir: str | os.PathLike[str] | None = None,
    scheduler: str | None = None,
    progress: Callable[[int], None] | None = None,
    prior_dx_px: np.ndarray | None = None,
    prior_dy_px: np.ndarray | None = None,
    highpass_sigma_px: float | None = None,
) -> MatchResult:
    """Match two images on one grid, tile by tile, from their files.

    Parameters
    ----------
    ref, sec : Scene
        Scene headers (from :func:`glacierflow.scenes.read_header`); their files are read in
        windows. Both must be on the same grid.
    settings : MatchSettings
        Matching parameters; ``settings.workers`` local processes run the tiles unless a
        scheduler is given.
    band : int, optional
        Band of multi-band files.
    tile_nodes : int
        About how many nodes one tile task matches; memory per task grows with it.
    work_dir : path, optional
        Folder for finished tiles; a rerun with the same inputs and settings reuses them.
        Without one, nothing is kept.
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler; defaults to ``DASK_SCHEDULER_ADDRESS``.
    progress : callable, optional
        Called with the number of nodes of each finished tile.
    prior_dx_px, prior_dy_px : ndarray, optional
        Expected offsets on the node grid, in pixels (NaN: unknown, taken as 0), as for
        :func:`glacierflow.matching.match`: each node's search is centred on the rounded prior.
    highpass_sigma_px : float, optional
        Match high-passed images (:func:`glacierflow.prefilter.highpass` with this sigma, in
        pixels), filtered tile by tile exactly as the whole images would be.

    Returns
    -------
    MatchResult
        Identical to :func:`glacierflow.matching.match` on the whole images.
    """
    if ref.shape != sec.shape or ref.transform != sec.transform or ref.crs != sec.crs:
        raise InputError(
            f"tiled processing needs both images on one grid (SEC {sec.path.name} differs in "
            "CRS, transform or size); reproject SEC onto REF first or run untiled",
            ref.path,
        )
    try:
        grid = make_grid(
            ref.shape,
            chip_px=settings.chip_px,
            search_px=settings.search_px,
            step_px=settings.step_px,
        )
    except ValueError as exc:
        raise InputError(str(exc), ref.path) from exc
    tiles = plan_tiles(grid, settings, tile_nodes)
    prior = None
    if (prior_dx_px is None) != (prior_dy_px is None):
        raise ValueError("give both prior_dx_px and prior_dy_px, or neither")
    if prior_dx_px is not None:
        prior = tuple(
            np.where(np.isfinite(a), a, 0.0)
            for a in (np.asarray(prior_dy_px, float), np.asarray(prior_dx_px, float))
        )
        if prior[0].shape != grid.shape or prior[1].shape != grid.shape:
            raise ValueError(f"prior offsets must be on the node grid, shape {grid.shape}")
    if settings.pyramid_levels > 1:
        # The coarse pass on both scenes at half resolution, downsampled strip by strip (a
        # quarter of the pixels in memory), as match() does on whole images.
        halves = [_read_downsampled(s, band, highpass_sigma_px) for s in (ref, sec)]
        prior = coarse_centres(*halves[0], *halves[1], settings, grid, prior)
        del halves
    centres = None if prior is None else tuple(np.rint(a).astype(np.int64) for a in prior)
    out = np.full((4, *grid.shape), np.nan, dtype=np.float32)
    folder = None
    if work_dir is not None:
        folder = Path(work_dir) / _work_key(ref, sec, band, settings, centres, highpass_sigma_px)
        folder.mkdir(parents=True, exist_ok=True)
    todo = []
    for tile in tiles:
        values = _load_tile(_tile_file(folder, tile), tile) if folder else None
        if values is None:
            todo.append(tile)
            continue
        out[:, tile[0], tile[1]] = values
        if progress:
            progress(values[0].size)
    if todo:
        # Both files' statistics at once: GDAL decodes and numpy sums without the GIL.
        with ThreadPoolExecutor(2) as pool:
            ref_stats, sec_stats = pool.map(
                file_stats, (ref, sec), (band, band), (highpass_sigma_px,) * 2
            )
        args = (scene_ref(ref), scene_ref(sec), band, grid, highpass_sigma_px)
        jobs = [(t, None if centres is None else (centres[0][t], centres[1][t])) for t in todo]
        for tile, values in _run(jobs, args, settings, ref_stats, sec_stats, scheduler):
            out[:, tile[0], tile[1]] = values
            if folder:
                _save_tile(_tile_file(folder, tile), values)
            if progress:
                progress(values[0].size)
    return MatchResult(grid, out[0], out[1], out[2], out[3], settings)


def _task(args, job, settings, ref_stats, sec_stats) -> tuple[Tile, np.ndarray]:
    ref, sec, band, grid, sigma = args
    tile, centres = job
    return tile, match_file_tile(
        ref, sec, band, grid, tile, settings, ref_stats, sec_stats, centres, sigma
    )


def _run(todo, args, settings, ref_stats, sec_stats, scheduler):
    """Run tile tasks here, on local processes, or on a Dask scheduler; yield as they finish."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        from distributed import Client, as_completed

        with Client(address) as client:
            futures = [
                client.submit(_task, args, t, settings, ref_stats, sec_stats, pure=False)
                for t in todo
            ]
            for fut in as_completed(futures):
                yield fut.result()
        return
    if settings.workers == 1 or len(todo) == 1:
        for t in todo:
            yield _task(args, t, settings, ref_stats, sec_stats)
        return
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ProcessPoolExecutor(settings.workers, mp_context=ctx) as pool:
        futures = [pool.submit(_task, args, t, settings, ref_stats, sec_stats) for t in todo]
        for fut in _as_completed(futures):
            yield fut.result()


def _as_completed(futures):
    from concurrent.futures import as_completed

    return as_completed(futures)
