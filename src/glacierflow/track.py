"""One image pair through the whole pipeline: scenes, pair, matching, velocity.

``track`` returns the velocity product as an ``xarray.Dataset``; ``track_to_products`` also writes
the files. Both take one :class:`~glacierflow.settings.TrackSettings` (or keyword shortcuts for
its settings: ``chip_px=48``, ``coreg="none"``), and the command line is a thin layer over them.

:func:`track_pair` is a short list of named steps:

1. :func:`match_pair`: match the nodes, in memory or tile by tile from the files.
2. :func:`~glacierflow.filters.filter_offsets`: remove outliers (correlation and SNR thresholds,
   forward-backward check, speed limit, DEM flow direction, median test, small clusters).
3. :func:`~glacierflow.stable.stable_ground`: outlines, a mask, or the slowest quarter of
   valid nodes.
4. :func:`coregister_offsets`: fit the co-registration on the stable nodes that survived
   filtering and remove it from every node (:mod:`glacierflow.coregister`).
5. :func:`error_model`: calibrate the per-node error on the same stable nodes.
6. :func:`fill_holes`: optionally fill small holes.
7. :func:`product_attrs` and :func:`product_dataset`: convert to velocity and record the
   settings and the stable-ground statistics (:mod:`glacierflow.velocity`).

The median test is not repeated after co-registration: a constant or smooth correction leaves
the differences between neighbours unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from glacierflow import __version__
from glacierflow.coregister import fit_on_slowest, make_coreg, slowest_nodes
from glacierflow.errors import GlacierflowError, InputError
from glacierflow.filters import (
    METHOD_THRESHOLDS,
    FilterResult,
    fill_holes,
    filter_offsets,
)
from glacierflow.matching import MatchResult, NodeGrid, make_grid, match
from glacierflow.pair import Pair, SceneLike, lattice_offset, load_pair, load_pair_tiled
from glacierflow.plausibility import filter_inputs
from glacierflow.progress import Progress, ProgressSink, node_bar
from glacierflow.scenes import Scene, read_header, read_scene
from glacierflow.settings import COREG_CHOICES, TrackSettings
from glacierflow.stable import FALLBACK_SOURCE, stable_ground
from glacierflow.uncertainty import node_errors
from glacierflow.velocity import (
    component_errors_m_per_yr,
    error_px_to_m_per_yr,
    node_grid_transform,
    peak_covariance_shape,
    stable_statistics,
    velocity_dataset,
)

__all__ = [
    "COREG_CHOICES",
    "FALLBACK_SOURCE",
    "METHOD_THRESHOLDS",
    "ProgressSink",
    "load_pair",
    "load_pair_tiled",
    "track",
    "track_pair",
    "track_settings",
    "track_to_products",
]

if TYPE_CHECKING:
    from glacierflow.execute import Executor

log = logging.getLogger("glacierflow")


#: What a matching worker imports: loaded once by the worker server, before the workers fork;
#: the compiled loops too (``matching.fused``: each worker would otherwise load them itself
#: after its first 30,000 nodes with the numpy kernels; 2 s of CPU at step 4 on Yahtse).
MATCHING_MODULES = (
    "glacierflow.matching.match",
    "glacierflow.matching.fused",
    "glacierflow.tiling",
    "glacierflow.matching.affine",
)
#: Scenes with more pixels than this are matched tile by tile by :func:`track` when the settings
#: allow it (about 6,300 x 6,300 px; a Landsat panchromatic scene holds about 220 million).
AUTO_TILE_PIXELS = 40_000_000


def track_settings(settings: TrackSettings | None = None, **shortcuts: Any) -> TrackSettings:
    """``settings`` (default: all defaults) with the keyword shortcuts applied.

    Shortcuts are the short names of :data:`glacierflow.settings.SHORTCUTS` (``chip_px=48``,
    ``method="phase"``, ``coreg="none"``, ``stable_mask=path``, ``tile_nodes=2000``, ...).

    Raises
    ------
    SettingsError
        For an unknown shortcut or an unusable value, naming the setting's dotted key.
    """
    return (settings or TrackSettings()).updated(**shortcuts)


@dataclasses.dataclass(frozen=True)
class NodeGeometry:
    """Where the nodes of a pair lie: image pixels and map coordinates.

    Attributes
    ----------
    grid : NodeGrid
        The node layout.
    transform : Affine
        Map transform of the node grid (one cell per node).
    rows_px, cols_px : ndarray of float64
        Image row and column of every node, shape ``grid.shape``.
    pixel_size_m : float
        Image pixel size, in map units (metres).
    """

    grid: NodeGrid
    transform: Any
    rows_px: np.ndarray
    cols_px: np.ndarray
    pixel_size_m: float


def node_geometry(pair: Pair, settings: TrackSettings) -> NodeGeometry:
    """Lay out the node grid of ``pair`` (every chip and search window inside the image).

    Raises
    ------
    InputError
        If the image is smaller than one chip with its search window.
    """
    m = settings.matching
    settings.check_image(pair.ref.shape, pair.ref.path)
    grid = make_grid(pair.ref.shape, chip_px=m.chip_px, search_px=m.search_px, step_px=m.step_px)
    from glacierflow.pair import check_node_memory

    check_node_memory(pair, grid.shape, m.step_px, settings.tiling.enabled and m.pyramid_levels > 1)
    rows_px, cols_px = np.meshgrid(grid.rows_px(), grid.cols_px(), indexing="ij")
    return NodeGeometry(
        grid=grid,
        transform=node_grid_transform(pair.transform, grid.row0_px, grid.col0_px, m.step_px),
        rows_px=rows_px.astype(np.float64),
        cols_px=cols_px.astype(np.float64),
        pixel_size_m=float(np.hypot(pair.transform.a, pair.transform.d)),
    )


def track_pair(
    pair: Pair,
    settings: TrackSettings | None = None,
    *,
    progress: Progress = None,
    band: int | None = None,
    executor: Executor | None = None,
    **shortcuts: Any,
) -> xr.Dataset:
    """Match a prepared pair and return the filtered, co-registered velocity product.

    Parameters
    ----------
    pair : Pair
        Two scenes on one grid, earlier first (from :func:`load_pair`, or
        :func:`load_pair_tiled` for tiled matching).
    settings : TrackSettings, optional
        Every setting (:mod:`glacierflow.settings`); default: all defaults.
    progress : bool, None or ProgressSink
        Show a progress bar: True always, False never, None when stderr is a terminal; or send
        the node counts to a :class:`~glacierflow.progress.ProgressSink`.
    band : int, optional
        Band to read from multi-band files (tiled matching reads the files).
    executor : Executor, optional
        Runs the matching tasks; by default one is made for the call from ``matching.workers``
        (and ``tiling.scheduler``).
    **shortcuts
        Short names of settings that override ``settings`` (see :func:`track_settings`).

    Returns
    -------
    xarray.Dataset
        See :func:`glacierflow.velocity.velocity_dataset`; with ``v_error`` and ``quality``,
        and the co-registration (``coreg_*``), stable-ground (``stable_*``), error model
        (``v_error_*``) and filter (``filter_*``) parameters in its attributes.

    Raises
    ------
    SettingsError
        For unusable settings.
    InputError
        For unusable outlines or masks (not overlapping the image, no valid stable node, a mask
        covering everything).
    """
    s = track_settings(settings, **shortcuts)
    geo = node_geometry(pair, s)
    # The peaks' shapes need only the reference scene: worked out while the workers match.
    args = (peak_covariance, pair, geo, s, band)
    peak_cov = executor.alongside(*args) if executor else functools.partial(*args)
    result = match_pair(pair, geo, s, progress=progress, band=band, executor=executor)
    fsettings = s.filter_settings()
    checks = filter_inputs(
        fsettings, closure_px=result.closure_px, crs=pair.crs, image_transform=pair.transform,
        node_transform=geo.transform, shape=geo.grid.shape, dt_days=pair.dt_days, match=result,
    )  # fmt: skip
    filt = filter_offsets(result.dx_px, result.dy_px, result.corr, result.snr, fsettings, **checks)
    stable, stable_attrs = stable_ground(
        pair, geo.transform, geo.grid.shape, geo.pixel_size_m, s, filt.valid
    )
    dx, dy, stable, coreg_sigma_px, coreg_attrs = coregister_offsets(
        filt, stable, geo, s, stable_attrs["stable_source"]
    )
    sigma_px, error_attrs = error_model(
        result.corr, dx, dy, stable, coreg_sigma_px, s, stable_attrs["stable_source"], peak_cov(),
        executor,
    )  # fmt: skip
    if fsettings.fill_holes:
        dx, dy, sigma_px = fill_holes(dx, dy, sigma_px, filt, fsettings)
    attrs = {
        **product_attrs(pair, s),
        **fsettings.attrs(),
        **coreg_attrs,
        **stable_attrs,
        **error_attrs,
        "v_error_calibration_nodes": int(stable.sum()),
    }
    return product_dataset(pair, geo, result, dx, dy, sigma_px, filt.quality, stable, attrs)


def match_pair(
    pair: Pair,
    geo: NodeGeometry,
    settings: TrackSettings,
    *,
    progress: Progress = None,
    band: int | None = None,
    executor: Executor | None = None,
) -> MatchResult:
    """Step 1: match every node of the pair, in memory or tile by tile from the files.

    Tiled when any ``tiling`` setting is given (the pair must then come from
    :func:`load_pair_tiled`); a prior velocity (``prior``) centres each node's search window.
    The tasks run on ``executor`` (default: one made for the call from the settings).
    """
    prior = prior_offsets(pair, geo, settings)
    with node_bar(geo.grid.ny * geo.grid.nx, progress) as bar:
        if settings.tiling.enabled:
            return _match_tiled(pair, settings, bar.update, band, prior, executor)
        return _match_in_memory(pair, settings, bar.update, prior, executor)


def prior_offsets(pair: Pair, geo: NodeGeometry, settings: TrackSettings) -> dict[str, np.ndarray]:
    """The prior velocity as expected offsets on the node grid (``prior_dx_px``,
    ``prior_dy_px``, pixels over the pair's time separation), or ``{}`` without one."""
    if settings.prior.vx is None:
        return {}
    from glacierflow.prior import prior_offsets as offsets_from_rasters

    pdx, pdy = offsets_from_rasters(
        settings.prior.vx,
        settings.prior.vy,
        crs=pair.crs,
        transform=pair.transform,
        rows_px=geo.grid.rows_px(),
        cols_px=geo.grid.cols_px(),
        dt_days=pair.dt_days,
    )
    return {"prior_dx_px": pdx, "prior_dy_px": pdy}


def _match_tiled(
    pair: Pair,
    settings: TrackSettings,
    update: Any,
    band: int | None,
    prior: dict[str, np.ndarray],
    executor: Executor | None = None,
) -> MatchResult:
    from glacierflow.tiling import DEFAULT_TILE_NODES, tiled_match

    t, p = settings.tiling, settings.prefilter
    return tiled_match(
        pair.ref,
        pair.sec,
        settings.matching,
        band=band,
        tile_nodes=t.tile_nodes or DEFAULT_TILE_NODES,
        work_dir=t.work_dir,
        scheduler=t.scheduler,
        progress=update,
        prefilter=p.method,
        prefilter_sigma_px=p.highpass_sigma_px,
        wallis_window_px=p.wallis_window_px,
        executor=executor,
        **prior,
    )


def _match_in_memory(
    pair: Pair,
    settings: TrackSettings,
    update: Any,
    prior: dict[str, np.ndarray],
    executor: Executor | None = None,
) -> MatchResult:
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(matching_executor(settings))
        # Workers start while the scenes are filtered.
        executor.start()
        return _prefilter_and_match(pair, settings, update, prior, executor)


def _prefilter_and_match(
    pair: Pair,
    settings: TrackSettings,
    update: Any,
    prior: dict[str, np.ndarray],
    executor: Executor,
) -> MatchResult:
    from glacierflow.prefilter import prefilter

    p = settings.prefilter
    try:
        images = [
            prefilter(
                scene.data,
                scene.valid,
                p.method,
                sigma_px=p.highpass_sigma_px,
                window_px=p.wallis_window_px,
            )
            for scene in (pair.ref, pair.sec)
        ]
        (ref_img, ref_ok), (sec_img, sec_ok) = images
        return match(
            ref_img,
            sec_img,
            ref_ok,
            sec_ok,
            settings.matching,
            progress=update,
            executor=executor,
            **prior,
        )
    except ValueError as exc:
        raise InputError(f"matching settings: {exc}", key="matching") from exc


def matching_executor(settings: TrackSettings, preload: tuple[str, ...] = ()) -> Executor:
    """The executor of a pair's matching: ``matching.workers`` local processes (started with
    the matching modules and ``preload`` loaded) or the ``tiling.scheduler``'s Dask cluster."""
    from glacierflow.execute import Executor

    return Executor(
        settings.matching.workers,
        settings.tiling.scheduler if settings.tiling.enabled else None,
        preload=MATCHING_MODULES + preload,
    )


def coregister_offsets(
    filt: FilterResult,
    stable: np.ndarray | None,
    geo: NodeGeometry,
    settings: TrackSettings,
    source: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Step 4: fit the co-registration on the stable nodes and remove it from every node.

    Returns
    -------
    dx, dy : ndarray
        Corrected offsets, pixels.
    stable : ndarray of bool
        The stable nodes used (the slowest quarter when none were given), valid ones only.
    coreg_sigma_px : ndarray
        One-sigma error of the correction at every node, pixels.
    attrs : dict
        The ``coreg_*`` attributes.
    """
    dx, dy, valid = filt.dx_px, filt.dy_px, filt.valid
    method, m = settings.coreg.method, settings.matching
    if method == "none":
        stable = slowest_nodes(dx, dy) if stable is None else stable
        return dx, dy, stable & valid, np.zeros(dx.shape), {"coreg_method": "none"}
    model = make_coreg(method, nodes_per_sample=max(1.0, (m.chip_px / m.step_px) ** 2))
    try:
        if stable is None:
            stable = fit_on_slowest(model, dx, dy, geo.cols_px, geo.rows_px)
        else:
            model.fit(dx, dy, stable, geo.cols_px, geo.rows_px)
    except ValueError as exc:
        mask = settings.stable.stable_mask
        where = mask if isinstance(mask, str | PathLike) else settings.stable.glacier_outlines
        raise InputError(
            f"cannot co-register on {source}: {exc}; give a larger stable-ground mask, or "
            "coreg.method 'none'",
            where,
            key=("coreg.method", "stable.stable_mask"),
        ) from exc
    dx, dy = model.apply(dx, dy, geo.cols_px, geo.rows_px)
    coreg_sigma_px = model.correction_error(geo.cols_px, geo.rows_px)
    return (
        dx.astype(np.float64),
        dy.astype(np.float64),
        stable & valid,
        coreg_sigma_px,
        model.attrs(),
    )


def peak_covariance(
    pair: Pair, geo: NodeGeometry, settings: TrackSettings, band: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The texture's elongation of each node's peak (:func:`peak_covariance_shape` of the
    reference scene; in strips read from the file when matching is tiled)."""
    ref, grid = pair.ref, geo.grid
    image: Any = ref.data
    if settings.tiling.enabled:
        from rasterio.windows import Window

        (r0, c0), width, at = ref.file_offset_px, ref.shape[1], (ref.acquired, ref.sensor)

        def image(top: int, bottom: int) -> tuple[np.ndarray, np.ndarray]:
            win = Window(c0, r0 + top, width, bottom - top)
            part = read_scene(ref.path, band=band, acquired=at[0], sensor=at[1], window=win)
            return part.data, part.valid

    return peak_covariance_shape(
        image, ref.valid, grid.rows_px(), grid.cols_px(), settings.matching.chip_px, shape=ref.shape
    )


def error_model(
    corr: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    stable: np.ndarray,
    coreg_sigma_px: np.ndarray,
    settings: TrackSettings,
    source: str,
    peak_cov: tuple[np.ndarray, np.ndarray] | None = None,
    executor: Executor | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Step 5: the one-sigma offset errors of every node in pixels, stacked (isotropic, of dx,
    of dy), and the ``v_error_*`` attributes (:func:`glacierflow.uncertainty.node_errors`);
    the strain terms' plane fits in bands of rows on the ``executor``'s workers."""
    m = settings.matching
    rowwise = None if executor is None else executor.rowwise
    return node_errors(
        corr, dx, dy, stable, m.chip_px, m.step_px, coreg_sigma_px, peak_cov, source, rowwise
    )


def product_attrs(pair: Pair, settings: TrackSettings) -> dict[str, Any]:
    """Step 7a: the pair and the settings as product attributes (see also the ``filter_*``,
    ``coreg_*``, ``stable_*`` and ``v_error_*`` attributes of the other steps)."""
    ref, sec, m, prior = pair.ref, pair.sec, settings.matching, settings.prior
    return {
        "title": "Glacier surface velocity from feature tracking",
        "ref_time": ref.acquired.isoformat(),
        "sec_time": sec.acquired.isoformat(),
        "ref_sensor": ref.sensor,
        "sec_sensor": sec.sensor,
        "sensor": ref.sensor if ref.sensor == sec.sensor else f"{ref.sensor} / {sec.sensor}",
        "ref_file": ref.path.name,
        "sec_file": sec.path.name,
        "ref_scene_id": ref.scene_id or "",
        "sec_scene_id": sec.scene_id or "",
        "ref_time_source": ref.time_source,
        "sec_time_source": sec.time_source,
        "chip_px": m.chip_px,
        "search_px": m.search_px,
        "method": m.method,
        "subpixel": m.subpixel,
        "prefilter": settings.prefilter.method,
        "pyramid_levels": m.pyramid_levels,
        "prior_source": f"{prior.vx.name}, {prior.vy.name}" if prior.vx else "none",
        "secondary_reprojected": int(pair.reprojected),
        "glacierflow_version": __version__,
    }


def product_dataset(
    pair: Pair,
    geo: NodeGeometry,
    result: MatchResult,
    dx: np.ndarray,
    dy: np.ndarray,
    sigma_px: np.ndarray,
    quality: np.ndarray,
    stable: np.ndarray,
    attrs: dict[str, Any],
) -> xr.Dataset:
    """Step 7b: offsets to velocity (m/yr, 365.25-day year) on map coordinates, with the
    stable-ground statistics of the good stable nodes in the attributes."""
    ex, ey = component_errors_m_per_yr(sigma_px[1], sigma_px[2], pair.transform, pair.dt_days)
    ds = velocity_dataset(
        dx,
        dy,
        result.corr,
        result.snr,
        image_transform=pair.transform,
        row0_px=geo.grid.row0_px,
        col0_px=geo.grid.col0_px,
        step_px=geo.grid.step_px,
        crs_wkt=pair.crs.to_wkt() if pair.crs is not None else None,
        dt_days=pair.dt_days,
        attrs=attrs,
        v_error=error_px_to_m_per_yr(sigma_px[0], pair.transform, pair.dt_days),
        quality=quality,
        vx_error=ex,
        vy_error=ey,
        extra=_match_layers(result),
    )
    good_stable = stable & (quality == 0)
    ds.attrs.update(
        stable_statistics(
            ds["vx"].values,
            ds["vy"].values,
            good_stable,
            pixel_size_m=geo.pixel_size_m,
            dt_days=pair.dt_days,
        )
    )
    sig = ds["v_error"].values[good_stable & np.isfinite(ds["v_error"].values)]
    ds.attrs["stable_v_error_median_m_per_yr"] = float(np.median(sig)) if sig.size else np.nan
    return ds


def _match_layers(result: MatchResult) -> dict[str, np.ndarray] | None:
    """The matcher's own per-node layers for the product: chip size and local strain."""
    layers = {"chip_px": result.chip_px, "strain": result.strain}
    return {k: v for k, v in layers.items() if v is not None} or None


def track(
    ref: SceneLike,
    sec: SceneLike,
    settings: TrackSettings | None = None,
    *,
    ref_date: datetime | str | None = None,
    sec_date: datetime | str | None = None,
    band: int | None = None,
    progress: Progress = None,
    **shortcuts: Any,
) -> xr.Dataset:
    """Measure glacier velocity from two images.

    Parameters
    ----------
    ref, sec : str, PathLike or Scene
        The two images, GeoTIFFs in one projected CRS (or a reprojectable pair). Their order
        does not matter: the earlier acquisition becomes the reference.
    settings : TrackSettings, optional
        Every setting (:mod:`glacierflow.settings`); default: all defaults.
    ref_date, sec_date : datetime or str, optional
        Acquisition times (ISO 8601) when the metadata has none, or to override it.
    band : int, optional
        Band of multi-band files, 1-based.
    progress : bool, None or ProgressSink
        Progress bar: True, False, or None for "when stderr is a terminal".
    **shortcuts
        Short names of settings that override ``settings``: ``chip_px`` (reference chip side,
        default 32), ``search_px`` (largest offset searched each way, 16), ``step_px`` (node
        spacing, 8), ``method``, ``subpixel``, ``workers``, ``prefilter``, ``coreg``,
        ``stable_mask``, ``glacier_outlines``, ``min_corr``, ``fill_holes``, ``tile_nodes``,
        ``prior_vx``, ... (:data:`glacierflow.settings.SHORTCUTS`; sizes in pixels).

    Large scenes on one pixel lattice are matched tile by tile (bounded memory) when the
    settings allow it; any ``tiling`` setting asks for it.

    Returns
    -------
    xarray.Dataset
        ``vx``, ``vy``, ``v`` in m/yr (365.25-day year), ``dx``, ``dy`` in pixels, ``corr``,
        ``snr``, ``v_error`` (m/yr, one sigma per component) and ``quality`` (bit flags), on
        map coordinates ``x``, ``y`` (pixel centres), with pair metadata in attrs.
    """
    s = track_settings(settings, **shortcuts)
    with matching_executor(s) as executor:
        executor.start()  # workers start while the scenes are read
        pair, s = open_pair(ref, sec, s, ref_date=ref_date, sec_date=sec_date, band=band)
        return track_pair(pair, s, progress=progress, band=band, executor=executor)


def open_pair(
    ref: SceneLike,
    sec: SceneLike,
    settings: TrackSettings,
    *,
    ref_date: datetime | str | None = None,
    sec_date: datetime | str | None = None,
    band: int | None = None,
) -> tuple[Pair, TrackSettings]:
    """Read the pair for ``settings``: whole images, or their headers for tiled matching.

    Large files on one pixel lattice switch tiling on when the settings allow it (the returned
    settings then hold ``tiling.tile_nodes``).
    """
    if not settings.tiling.enabled and _auto_tiles(ref, sec, band, ref_date, sec_date, settings):
        from glacierflow.tiling import DEFAULT_TILE_NODES

        settings = settings.updated(tile_nodes=DEFAULT_TILE_NODES)
    loader = load_pair_tiled if settings.tiling.enabled else load_pair
    return loader(ref, sec, ref_date=ref_date, sec_date=sec_date, band=band), settings


def _auto_tiles(
    ref: SceneLike,
    sec: SceneLike,
    band: int | None,
    ref_date: datetime | str | None,
    sec_date: datetime | str | None,
    settings: TrackSettings,
) -> bool:
    """Whether to match tile by tile though no tiling setting was given: large files on one
    pixel lattice, with settings that tiled matching supports."""
    if not settings.tiling_supported():
        return False
    if not _large_pair_on_one_lattice(ref, sec, band, ref_date, sec_date):
        return False
    log.info("large scenes on one pixel lattice: matching tile by tile (bounded memory)")
    return True


def _large_pair_on_one_lattice(
    ref: SceneLike,
    sec: SceneLike,
    band: int | None,
    ref_date: datetime | str | None = None,
    sec_date: datetime | str | None = None,
) -> bool:
    """Whether two files are large enough for tiled matching by default, and allow it."""
    if isinstance(ref, Scene) or isinstance(sec, Scene):
        return False
    try:
        a = read_header(ref, band=band, acquired=ref_date)
        b = read_header(sec, band=band, acquired=sec_date)
    except (GlacierflowError, OSError):  # OSError: GDAL's (RasterioIOError)
        return False  # the untiled reader gives the full error
    big = a.shape[0] * a.shape[1] > AUTO_TILE_PIXELS or b.shape[0] * b.shape[1] > AUTO_TILE_PIXELS
    return big and lattice_offset(a, b) is not None


def track_to_products(
    ref: SceneLike,
    sec: SceneLike,
    out_dir: str | PathLike[str],
    settings: TrackSettings | None = None,
    *,
    ref_date: datetime | str | None = None,
    sec_date: datetime | str | None = None,
    band: int | None = None,
    progress: Progress = None,
    overwrite: bool = False,
    **shortcuts: Any,
) -> tuple[xr.Dataset, dict[str, Path]]:
    """Run :func:`track` and write every product into ``out_dir``.

    Takes what :func:`track` takes, and ``overwrite``: products of an earlier run in
    ``out_dir`` are replaced only when it is True; otherwise they raise an
    :class:`~glacierflow.errors.InputError` before any image is read. Tiled runs keep their
    finished tiles in ``out_dir/.glacierflow-work`` (unless ``tiling.work_dir`` is given) until
    the products are complete, so that a killed run picks up where it stopped. Returns the
    dataset and a mapping from product name to path.
    """
    from glacierflow.products import WORKER_MODULES, prepare_output, warm_writers, write_products
    from glacierflow.scenes import read_preview

    # Settings first: a bad setting is reported before any image is read.
    s = track_settings(settings, **shortcuts)
    prepare_output(out_dir, s.tiling.work_dir, overwrite)
    with matching_executor(s, preload=WORKER_MODULES) as executor:
        executor.start()  # workers start while the scenes are read
        executor.meanwhile(warm_writers)  # this process imports its writers while they match
        pair, s = open_pair(ref, sec, s, ref_date=ref_date, sec_date=sec_date, band=band)
        own_work = s.tiling.enabled and s.tiling.work_dir is None
        if own_work:
            s = s.updated(work_dir=Path(out_dir) / ".glacierflow-work")
        ds = track_pair(pair, s, progress=progress, band=band, executor=executor)
        if s.tiling.enabled:
            background, background_transform = read_preview(pair.ref.path, band=band)
        else:
            background, background_transform = pair.ref.data, pair.transform
        paths = write_products(ds, out_dir, background, background_transform, executor=executor)
    if own_work:
        shutil.rmtree(s.tiling.work_dir, ignore_errors=True)
    return ds, paths
