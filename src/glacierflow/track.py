"""One image pair through the whole pipeline: scenes, pair, matching, velocity.

``track`` returns the velocity product as an ``xarray.Dataset``; ``track_to_products`` also writes
the files. Both are plain function calls with explicit inputs, and the command line is a thin
layer over them.

The order, in :func:`track_pair`: match; remove outliers (correlation and SNR thresholds,
normalized median test, small isolated clusters: :mod:`glacierflow.filters`); find stable ground
(outlines, a mask, or the slowest quarter of valid nodes); fit the co-registration on the stable
nodes that survived filtering and remove it from every node (:mod:`glacierflow.coregister`);
calibrate the per-node error on the same stable nodes; optionally fill small holes; convert to
velocity and record the stable-ground statistics (:mod:`glacierflow.velocity`). The median test
is not repeated after co-registration: a constant or smooth correction leaves the differences
between neighbours unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from glacierflow import __version__
from glacierflow.coregister import COREG_METHODS, fit_on_slowest, make_coreg, slowest_nodes
from glacierflow.errors import GlacierflowError, InputError
from glacierflow.filters import FilterSettings, Quality, fill_small_holes, filter_offsets
from glacierflow.glaciers import ice_mask_from_outlines, mask_from_file
from glacierflow.matching import MatchSettings, make_grid, match
from glacierflow.pair import Pair, make_pair
from glacierflow.scenes import Scene, header_window, read_header, read_scene
from glacierflow.velocity import (
    DEFAULT_PEAK_SIGMA_SCALE,
    DEFORMATION_FACTOR,
    PEAK_SIGMA_FLOOR_PX,
    error_px_to_m_per_yr,
    node_grid_transform,
    offset_sigma_px,
    stable_statistics,
    velocity_dataset,
)

log = logging.getLogger("glacierflow")

#: Default outlier thresholds (peak correlation, SNR) per correlator. Each correlator's peak has
#: its own scale: phase correlation peaks are low but sharp, NCC peaks high and broad. Chosen
#: near the 5th percentile of each method's values on clear real texture (the Yahtse pair).
METHOD_THRESHOLDS: dict[str, tuple[float, float]] = {
    "ncc": (0.3, 1.2),
    "phase": (0.1, 5.0),
    "orientation": (0.2, 3.0),
}

SceneLike = str | PathLike[str] | Scene
MaskLike = str | PathLike[str] | np.ndarray

#: ``stable_source`` of products whose stable ground is the fallback.
FALLBACK_SOURCE = "slowest quarter of valid nodes (no outlines given)"
#: Co-registration choices: the fitted surfaces, or ``"none"``.
COREG_CHOICES = (*COREG_METHODS, "none")
#: A stable mask covering more than this fraction of the valid nodes is refused.
MAX_STABLE_FRACTION = 0.99


def _scene(src: SceneLike, date: datetime | str | None, band: int | None) -> Scene:
    if isinstance(src, Scene):
        return src
    return read_scene(src, band=band, acquired=date)


def _check_sizes(chip_px: int, search_px: int, step_px: int) -> None:
    for flag, value in (("--chip-px", chip_px), ("--search-px", search_px), ("--step-px", step_px)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise InputError(f"{flag} must be a positive whole number of pixels, got {value}")
    if chip_px < 4:
        raise InputError(f"--chip-px must be at least 4 pixels, got {chip_px}")


class ProgressSink:
    """Receives a pair's matching progress instead of a progress bar.

    Subclasses override :meth:`start` (called once with the number of nodes) and :meth:`update`
    (called with the nodes finished since the last call); they must pickle when the pair runs
    in another process.
    """

    def start(self, total_nodes: int) -> None:
        """The pair has ``total_nodes`` nodes to match."""

    def update(self, nodes: int) -> None:
        """``nodes`` more nodes are matched."""


def track_pair(
    pair: Pair,
    *,
    chip_px: int = 32,
    search_px: int = 16,
    step_px: int = 8,
    subpixel: str = "lanczos",
    method: str = "ncc",
    workers: int = 1,
    progress: bool | None | ProgressSink = None,
    glacier_outlines: str | PathLike[str] | None = None,
    stable_mask: MaskLike | None = None,
    coreg: str = "constant",
    ice_buffer_m: float | None = None,
    min_corr: float | None = None,
    min_snr: float | None = None,
    fill_holes: bool = False,
    filter_settings: FilterSettings | None = None,
    tile_nodes: int | None = None,
    scheduler: str | None = None,
    work_dir: str | PathLike[str] | None = None,
    band: int | None = None,
    prefilter: str = "none",
    prefilter_sigma_px: float = 3.0,
    wallis_window_px: float = 21.0,
    pyramid_levels: int = 1,
    retry_chip_px: tuple[int, ...] = (),
    retry_min_snr: float = 0.0,
    prior_vx: str | PathLike[str] | None = None,
    prior_vy: str | PathLike[str] | None = None,
) -> xr.Dataset:
    """Match a prepared pair and return the filtered, co-registered velocity product.

    Parameters
    ----------
    pair : Pair
        Two scenes on one grid, earlier first.
    chip_px, search_px, step_px : int
        Chip side, search radius and node spacing, in pixels.
    subpixel : str
        Sub-pixel peak estimator (see :mod:`glacierflow.matching.subpixel`).
    method : str
        Correlator.
    workers : int
        Threads for matching.
    progress : bool, None or ProgressSink
        Show a progress bar: True always, False never, None when stderr is a terminal; or send
        the node counts to a :class:`ProgressSink` (e.g. to a bar in another process).
    glacier_outlines : path, optional
        Glacier (ice) outlines, any CRS: stable ground is every node off the ice grown by
        ``ice_buffer_m``.
    stable_mask : path, ndarray of bool or None
        Stable ground marked directly: polygons or a raster mask (non-zero = stable), or a
        boolean array on the node grid. With ``glacier_outlines`` too, stable ground is this
        mask minus the buffered ice.
    coreg : str
        Misregistration model fitted on stable ground and removed from every node:
        ``"constant"`` (default), ``"affine"``, ``"poly2"`` or ``"none"``. Without outlines
        and mask the slowest quarter of valid nodes stands in for stable ground (recorded in
        ``attrs["stable_source"]``).
    ice_buffer_m : float, optional
        Growth of the glacier outlines, in metres; default half a chip plus one node step
        (no stable chip reaches the ice, with a node step to spare for outline errors).
    min_corr, min_snr : float, optional
        Correlation and SNR thresholds of the outlier filter (see
        :class:`glacierflow.filters.FilterSettings`); by default those of
        :data:`METHOD_THRESHOLDS` for the correlator.
    fill_holes : bool
        Fill small enclosed holes by interpolation (flagged in ``quality``).
    filter_settings : FilterSettings, optional
        All filter parameters at once; overrides ``min_corr``, ``min_snr`` and ``fill_holes``.
    tile_nodes, scheduler, work_dir : optional
        Tiled matching from the files (see :func:`glacierflow.tiling.tiled_match`): about
        ``tile_nodes`` nodes per task, on a Dask ``scheduler`` if given, finished tiles kept in
        ``work_dir`` so that a killed run resumes. Any of them switches tiling on; the pair
        must then come from :func:`load_pair_tiled`, and ``band`` names the band to read.
    prefilter : str
        ``"none"``, ``"highpass"``, ``"wallis"`` or ``"orientation"`` (see
        :mod:`glacierflow.prefilter`), with ``prefilter_sigma_px`` (high-pass Gaussian sigma,
        pixels) and ``wallis_window_px`` (Wallis window, pixels).
    pyramid_levels : int
        2 or more: a coarse pass at half resolution centres each node's search window.
    retry_chip_px, retry_min_snr : optional
        Larger chips to retry nodes whose SNR stays below ``retry_min_snr``.
    prior_vx, prior_vy : path, optional
        Prior velocity rasters in m/yr (e.g. an ITS_LIVE mosaic), scaled by the pair's time
        separation to centre each node's search window.

    Returns
    -------
    xarray.Dataset
        See :func:`glacierflow.velocity.velocity_dataset`; with ``v_error`` and ``quality``,
        and the co-registration (``coreg_*``), stable-ground (``stable_*``), error model
        (``v_error_*``) and filter (``filter_*``) parameters in its attributes.

    Raises
    ------
    InputError
        For unusable outlines or masks (not overlapping the image, no valid stable node, a mask
        covering everything) and unknown options.
    """
    _check_sizes(chip_px, search_px, step_px)
    if coreg not in COREG_CHOICES:
        raise InputError(f"--coreg must be one of {', '.join(COREG_CHOICES)}, got {coreg!r}")
    try:
        default_corr, default_snr = METHOD_THRESHOLDS.get(
            method, (FilterSettings.min_corr, FilterSettings.min_snr)
        )
        fsettings = filter_settings or FilterSettings.for_grid(
            chip_px,
            step_px,
            min_corr=default_corr if min_corr is None else min_corr,
            min_snr=default_snr if min_snr is None else min_snr,
            fill_holes=fill_holes,
        )
    except ValueError as exc:
        raise InputError(f"filter settings: {exc}") from exc
    try:
        settings = MatchSettings(
            chip_px=chip_px,
            search_px=search_px,
            step_px=step_px,
            subpixel=subpixel,
            method=method,
            workers=workers,
            pyramid_levels=pyramid_levels,
            retry_chip_px=tuple(retry_chip_px),
            retry_min_snr=retry_min_snr,
        )
    except ValueError as exc:
        raise InputError(f"matching options: {exc}") from exc
    if (prior_vx is None) != (prior_vy is None):
        raise InputError("give both --prior-vx and --prior-vy, or neither")
    ref, sec = pair.ref, pair.sec
    try:
        grid = make_grid(ref.shape, chip_px=chip_px, search_px=search_px, step_px=step_px)
    except ValueError as exc:
        raise InputError(f"{exc}", ref.path) from exc
    from tqdm.auto import tqdm

    tiled = tile_nodes is not None or scheduler is not None or work_dir is not None
    if tiled and not _tiling_supports(method, prefilter, pyramid_levels, retry_chip_px):
        raise InputError(
            "tiled processing (--tile-nodes, --scheduler, --work-dir) supports every correlator "
            "with a prior velocity, a coarse pass and the high-pass or Wallis pre-filter, but not "
            "the orientation pre-filter (use --method orientation) or retries; run untiled"
        )
    prior: dict[str, np.ndarray] = {}
    if prior_vx is not None:
        from glacierflow.prior import prior_offsets

        pdx, pdy = prior_offsets(
            prior_vx,
            prior_vy,
            crs=pair.crs,
            transform=pair.transform,
            rows_px=grid.rows_px(),
            cols_px=grid.cols_px(),
            dt_days=pair.dt_days,
        )
        prior = {"prior_dx_px": pdx, "prior_dy_px": pdy}
    if isinstance(progress, ProgressSink):
        progress.start(grid.ny * grid.nx)
        bar_context: Any = contextlib.nullcontext(progress)
    else:
        bar_context = tqdm(
            total=grid.ny * grid.nx,
            unit="node",
            desc="matching",
            disable=(not progress) if progress is not None else None,
            leave=False,
        )
    with bar_context as bar:
        if tiled:
            from glacierflow.tiling import tiled_match

            result = tiled_match(
                ref,
                sec,
                settings,
                band=band,
                tile_nodes=tile_nodes or DEFAULT_TILE_NODES,
                work_dir=work_dir,
                scheduler=scheduler,
                progress=bar.update,
                prefilter=prefilter,
                prefilter_sigma_px=prefilter_sigma_px,
                wallis_window_px=wallis_window_px,
                **prior,
            )
        else:
            from glacierflow.prefilter import prefilter as apply_prefilter

            try:
                ref_img, ref_ok = apply_prefilter(
                    ref.data,
                    ref.valid,
                    prefilter,
                    sigma_px=prefilter_sigma_px,
                    window_px=wallis_window_px,
                )
                sec_img, sec_ok = apply_prefilter(
                    sec.data,
                    sec.valid,
                    prefilter,
                    sigma_px=prefilter_sigma_px,
                    window_px=wallis_window_px,
                )
                from glacierflow.execute import Executor

                with Executor(settings.workers) as executor:
                    result = match(
                        ref_img,
                        sec_img,
                        ref_ok,
                        sec_ok,
                        settings,
                        progress=bar.update,
                        executor=executor,
                        **prior,
                    )
            except ValueError as exc:
                raise InputError(f"matching options: {exc}") from exc
    node_transform = node_grid_transform(pair.transform, grid.row0_px, grid.col0_px, step_px)
    rows_px, cols_px = np.meshgrid(grid.rows_px(), grid.cols_px(), indexing="ij")
    rows_px, cols_px = rows_px.astype(np.float64), cols_px.astype(np.float64)
    pixel_size_m = float(np.hypot(pair.transform.a, pair.transform.d))

    # 1. Outliers.
    filt = filter_offsets(result.dx_px, result.dy_px, result.corr, result.snr, fsettings)
    dx, dy, quality = filt.dx_px, filt.dy_px, filt.quality
    valid = filt.valid

    # 2. Stable ground.
    buffer_m = (
        float(ice_buffer_m) if ice_buffer_m is not None else (chip_px / 2 + step_px) * pixel_size_m
    )
    stable, source = _stable_ground(
        glacier_outlines, stable_mask, pair, node_transform, grid.shape, valid, buffer_m
    )
    attrs_stable: dict[str, Any] = {"stable_source": source}
    if glacier_outlines is not None:
        attrs_stable["stable_ice_buffer_m"] = buffer_m

    # 3. Co-registration, fitted on the stable nodes that passed the filter.
    corr_err_px = np.zeros(dx.shape)
    coreg_attrs: dict[str, Any] = {"coreg_method": "none"}
    if coreg != "none":
        model = make_coreg(coreg, nodes_per_sample=max(1.0, (chip_px / step_px) ** 2))
        try:
            if stable is None:
                stable = fit_on_slowest(model, dx, dy, cols_px, rows_px)
            else:
                model.fit(dx, dy, stable, cols_px, rows_px)
        except ValueError as exc:
            where = stable_mask if isinstance(stable_mask, str | PathLike) else glacier_outlines
            raise InputError(
                f"cannot co-register on {source}: {exc}; give a larger stable-ground mask, or "
                "--coreg none",
                where,
            ) from exc
        dx, dy = model.apply(dx, dy, cols_px, rows_px)
        dx, dy = dx.astype(np.float64), dy.astype(np.float64)
        corr_err_px = model.correction_error(cols_px, rows_px)
        coreg_attrs = model.attrs()
    elif stable is None:
        stable = slowest_nodes(dx, dy)
    stable = stable & valid

    # 4. Per-node error: shape from the correlation peak, scale from stable ground; plus the
    # error from strain across the chip and from the co-registration, not calibrated.
    err = {"chip_px": chip_px, "step_px": step_px, "coreg_sigma_px": corr_err_px}
    try:
        sigma_px, scale = offset_sigma_px(result.corr, dx, dy, stable, **err)
        calibration = f"stable ground: {source}"
    except ValueError as exc:
        sigma_px, scale = offset_sigma_px(
            result.corr, dx, dy, stable, scale=DEFAULT_PEAK_SIGMA_SCALE, **err
        )
        calibration = f"default scale ({exc})"
        log.warning("v_error uses the default scale %.2f: %s", scale, exc)

    # 5. Optional hole filling, always flagged.
    if fsettings.fill_holes:
        (dx, dy, sigma_px), filled = fill_small_holes(
            [dx, dy, sigma_px], valid, fsettings.max_hole_nodes
        )
        # An interpolated value is less certain than a measured one: twice its neighbours'.
        sigma_px[filled] *= 2.0
        quality[filled] |= np.uint8(Quality.FILLED)

    attrs = {
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
        "chip_px": chip_px,
        "search_px": search_px,
        "method": method,
        "subpixel": subpixel,
        "prefilter": prefilter,
        "pyramid_levels": pyramid_levels,
        "prior_source": f"{Path(prior_vx).name}, {Path(prior_vy).name}" if prior_vx else "none",
        "secondary_reprojected": int(pair.reprojected),
        "glacierflow_version": __version__,
        **fsettings.attrs(),
        **coreg_attrs,
        **attrs_stable,
        "v_error_model": (
            "sigma_px = sqrt((scale * sqrt(1 - corr^2) / (corr * chip_px))^2 + floor_px^2 + "
            "(deformation_factor * gradient * chip_px)^2 + coreg_sigma_px^2), gradient the "
            "displacement gradient (px/px) at the node; v_error = sigma_px * pixel_size_m * "
            "365.25 / dt_days"
        ),
        "v_error_deformation_factor": DEFORMATION_FACTOR,
        "v_error_scale": float(scale),
        "v_error_floor_px": PEAK_SIGMA_FLOOR_PX,
        "v_error_calibration": calibration,
        "v_error_calibration_nodes": int(stable.sum()),
    }
    ds = velocity_dataset(
        dx,
        dy,
        result.corr,
        result.snr,
        image_transform=pair.transform,
        row0_px=grid.row0_px,
        col0_px=grid.col0_px,
        step_px=step_px,
        crs_wkt=pair.crs.to_wkt() if pair.crs is not None else None,
        dt_days=pair.dt_days,
        attrs=attrs,
        v_error=error_px_to_m_per_yr(sigma_px, pair.transform, pair.dt_days),
        quality=quality,
        extra={"chip_px": result.chip_px} if result.chip_px is not None else None,
    )
    good_stable = stable & (quality == 0)
    ds.attrs.update(
        stable_statistics(
            ds["vx"].values,
            ds["vy"].values,
            good_stable,
            pixel_size_m=pixel_size_m,
            dt_days=pair.dt_days,
        )
    )
    sig = ds["v_error"].values[good_stable & np.isfinite(ds["v_error"].values)]
    ds.attrs["stable_v_error_median_m_per_yr"] = float(np.median(sig)) if sig.size else np.nan
    return ds


def _stable_ground(
    glacier_outlines: str | PathLike[str] | None,
    stable_mask: MaskLike | None,
    pair: Pair,
    node_transform: Any,
    shape: tuple[int, int],
    valid: np.ndarray,
    buffer_m: float,
) -> tuple[np.ndarray | None, str]:
    """Stable nodes from outlines and/or a mask, and a description; (None, ...) for fallback."""
    if glacier_outlines is None and stable_mask is None:
        log.info("no outlines or stable mask given: stable ground is the %s", FALLBACK_SOURCE)
        return None, FALLBACK_SOURCE
    if pair.crs is None and (
        glacier_outlines is not None or not isinstance(stable_mask, np.ndarray)
    ):
        raise InputError("outlines need georeferenced images", glacier_outlines or stable_mask)
    stable = np.ones(shape, dtype=bool)
    parts = []
    if stable_mask is not None:
        if isinstance(stable_mask, np.ndarray):
            if stable_mask.shape != shape:
                raise InputError(
                    f"stable mask array has shape {stable_mask.shape}, the node grid {shape}"
                )
            stable = stable_mask.astype(bool)
            parts.append("array")
            where = None
        else:
            stable = mask_from_file(
                stable_mask, crs=pair.crs, transform=node_transform, shape=shape
            )
            parts.append(Path(stable_mask).name)
            where = stable_mask
        n_valid = int(valid.sum())
        covered = int((stable & valid).sum())
        if n_valid and covered > MAX_STABLE_FRACTION * n_valid:
            raise InputError(
                f"the stable mask covers {covered} of the {n_valid} valid nodes: it would "
                "take the glacier's own motion for misregistration and zero it; mark only "
                "ice-free ground, give --glacier-outlines instead, or give neither to use the "
                "slowest quarter of the nodes",
                where,
            )
        if not covered:
            raise InputError(
                f"the stable mask marks {int(stable.sum())} nodes but none holds a valid "
                "offset after filtering; give a mask over textured, ice-free ground",
                where,
            )
    if glacier_outlines is not None:
        ice = ice_mask_from_outlines(
            glacier_outlines,
            crs=pair.crs,
            transform=node_transform,
            shape=shape,
            buffer_m=buffer_m,
        )
        stable = stable & ~ice
        text = f"off-ice: outside {Path(glacier_outlines).name} grown by {buffer_m:.0f} m"
        parts.append(text if not parts else f"minus ice of {Path(glacier_outlines).name}")
        if not (stable & valid).any():
            raise InputError(
                f"no valid node is left off the ice grown by {buffer_m:.0f} m "
                f"({int(ice.sum())} of {ice.size} nodes are ice); give a smaller buffer or "
                "a stable-ground mask",
                glacier_outlines,
            )
    return stable, " ".join(parts) if len(parts) > 1 else parts[0]


def load_pair_tiled(
    ref: str | PathLike[str],
    sec: str | PathLike[str],
    *,
    ref_date: datetime | str | None = None,
    sec_date: datetime | str | None = None,
    band: int | None = None,
) -> Pair:
    """Read the metadata of two scenes on one pixel lattice, earlier first, without their pixels.

    For tiled matching, which reads the pixels window by window. Both files must share CRS and
    pixel size and be offset by whole pixels (as scenes of one Landsat path/row or Sentinel-2
    tile are); the pair covers their overlap. Unlike :func:`load_pair`, nothing is reprojected.
    """
    a = read_header(ref, band=band, acquired=ref_date)
    b = read_header(sec, band=band, acquired=sec_date)
    if a.acquired == b.acquired:
        raise InputError(
            f"REF and SEC ({b.path}) were both acquired at {a.acquired.isoformat()}; the "
            "velocity needs two different times",
            a.path,
        )
    swapped = a.acquired > b.acquired
    if swapped:
        a, b = b, a
        log.warning("given the later image first: using %s as reference", a.path.name)
    offset = _lattice_offset(a, b)
    if offset is None:
        raise InputError(
            f"tiled processing needs both images on one pixel lattice (SEC {b.path.name} differs "
            "in CRS or pixel size, or is offset by a fraction of a pixel); reproject SEC onto REF "
            "first, or run untiled",
            a.path,
        )
    dr, dc = offset  # SEC's first pixel in REF's pixels
    r0, c0 = max(0, dr), max(0, dc)
    r1, c1 = min(a.shape[0], dr + b.shape[0]), min(a.shape[1], dc + b.shape[1])
    if r1 <= r0 or c1 <= c0:
        raise InputError(f"REF and SEC ({b.path.name}) do not overlap", a.path)
    if (r0, c0, r1, c1) != (0, 0, *a.shape) or b.shape != a.shape:
        a = header_window(a, r0, c0, r1 - r0, c1 - c0)
        # One transform for both (SEC's own equals it up to rounding of the offsets).
        b = dataclasses.replace(
            header_window(b, r0 - dr, c0 - dc, r1 - r0, c1 - c0), transform=a.transform
        )
    return Pair(ref=a, sec=b, swapped=swapped, reprojected=False)


def _lattice_offset(a: Scene, b: Scene) -> tuple[int, int] | None:
    """Whole-pixel offset (rows, cols) of ``b``'s first pixel in ``a``, or None when the two are
    not on one pixel lattice (CRS, pixel size, rotation or a fractional offset differ)."""
    ta, tb = a.transform, b.transform
    if a.crs != b.crs or (ta.a, ta.b, ta.d, ta.e) != (tb.a, tb.b, tb.d, tb.e) or ta.b or ta.d:
        return None
    dc, dr = (tb.c - ta.c) / ta.a, (tb.f - ta.f) / ta.e
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        return None
    return int(round(dr)), int(round(dc))


def load_pair(
    ref: SceneLike,
    sec: SceneLike,
    *,
    ref_date: datetime | str | None = None,
    sec_date: datetime | str | None = None,
    band: int | None = None,
) -> Pair:
    """Read two scenes and put them on one grid, earlier first.

    Parameters
    ----------
    ref, sec : str, PathLike or Scene
        The two images (either order; the earlier becomes the reference).
    ref_date, sec_date : datetime or str, optional
        Acquisition times that override the metadata (ISO 8601).
    band : int, optional
        Band to read from multi-band files (1-based).
    """
    a = _scene(ref, ref_date, band)
    b = _scene(sec, sec_date, band)
    pair = make_pair(a, b, log=log.warning)
    if not pair.valid.any():
        raise InputError(f"REF and SEC share no valid pixel (SEC: {pair.sec.path})", pair.ref.path)
    return pair


def track(
    ref: SceneLike,
    sec: SceneLike,
    *,
    chip_px: int = 32,
    search_px: int = 16,
    step_px: int = 8,
    ref_date: datetime | str | None = None,
    sec_date: datetime | str | None = None,
    band: int | None = None,
    subpixel: str = "lanczos",
    method: str = "ncc",
    workers: int = 1,
    progress: bool | None | ProgressSink = None,
    glacier_outlines: str | PathLike[str] | None = None,
    stable_mask: MaskLike | None = None,
    coreg: str = "constant",
    ice_buffer_m: float | None = None,
    min_corr: float | None = None,
    min_snr: float | None = None,
    fill_holes: bool = False,
    tile_nodes: int | None = None,
    scheduler: str | None = None,
    work_dir: str | PathLike[str] | None = None,
    prefilter: str = "none",
    prefilter_sigma_px: float = 3.0,
    wallis_window_px: float = 21.0,
    pyramid_levels: int = 1,
    retry_chip_px: tuple[int, ...] = (),
    retry_min_snr: float = 0.0,
    prior_vx: str | PathLike[str] | None = None,
    prior_vy: str | PathLike[str] | None = None,
) -> xr.Dataset:
    """Measure glacier velocity from two images.

    Parameters
    ----------
    ref, sec : str, PathLike or Scene
        The two images, GeoTIFFs in one projected CRS (or a reprojectable pair). Their order
        does not matter: the earlier acquisition becomes the reference.
    chip_px : int
        Reference chip side, in pixels (default 32).
    search_px : int
        Largest offset searched in each direction, in pixels (default 16).
    step_px : int
        Node spacing of the output grid, in pixels (default 8).
    ref_date, sec_date : datetime or str, optional
        Acquisition times (ISO 8601) when the metadata has none, or to override it.
    band : int, optional
        Band of multi-band files, 1-based.
    subpixel : str
        Sub-pixel estimator: ``"lanczos"`` (default, free of pixel locking), ``"cubic"``,
        ``"parabola"`` or ``"gaussian"``.
    method : str
        Correlator, ``"ncc"``.
    workers : int
        Threads used for matching.
    progress : bool or None
        Progress bar: True, False, or None for "when stderr is a terminal".
    glacier_outlines, stable_mask, coreg, ice_buffer_m, min_corr, min_snr, fill_holes
        Stable ground, co-registration and outlier filter: see :func:`track_pair`.

    tile_nodes, scheduler, work_dir : optional
        Match tile by tile from the files, with bounded memory: about ``tile_nodes`` nodes per
        task, on a Dask ``scheduler`` if given, finished tiles kept in ``work_dir`` for
        resuming (see :mod:`glacierflow.tiling`). Both images must then share one grid.
    prefilter, prefilter_sigma_px, wallis_window_px, pyramid_levels, retry_chip_px, \
    retry_min_snr, prior_vx, prior_vy : optional
        Pre-filter, coarse-to-fine pass, larger-chip retries and prior velocity; see
        :func:`track_pair`.

    Returns
    -------
    xarray.Dataset
        ``vx``, ``vy``, ``v`` in m/yr (365.25-day year), ``dx``, ``dy`` in pixels, ``corr``,
        ``snr``, ``v_error`` (m/yr, one sigma per component) and ``quality`` (bit flags), on
        map coordinates ``x``, ``y`` (pixel centres), with pair metadata in attrs.
    """
    _check_sizes(chip_px, search_px, step_px)
    tiled = tile_nodes is not None or scheduler is not None or work_dir is not None
    if not tiled and _auto_tiles(
        ref, sec, band, ref_date, sec_date, method, prefilter, pyramid_levels, retry_chip_px
    ):
        tiled, tile_nodes = True, DEFAULT_TILE_NODES
    loader = load_pair_tiled if tiled else load_pair
    pair = loader(ref, sec, ref_date=ref_date, sec_date=sec_date, band=band)
    return track_pair(
        pair,
        chip_px=chip_px,
        search_px=search_px,
        step_px=step_px,
        subpixel=subpixel,
        method=method,
        workers=workers,
        progress=progress,
        glacier_outlines=glacier_outlines,
        stable_mask=stable_mask,
        coreg=coreg,
        ice_buffer_m=ice_buffer_m,
        min_corr=min_corr,
        min_snr=min_snr,
        fill_holes=fill_holes,
        tile_nodes=tile_nodes,
        scheduler=scheduler,
        work_dir=work_dir,
        band=band,
        prefilter=prefilter,
        prefilter_sigma_px=prefilter_sigma_px,
        wallis_window_px=wallis_window_px,
        pyramid_levels=pyramid_levels,
        retry_chip_px=retry_chip_px,
        retry_min_snr=retry_min_snr,
        prior_vx=prior_vx,
        prior_vy=prior_vy,
    )


#: Nodes per tile task of tiled matching unless chosen (``--tile-nodes``).
DEFAULT_TILE_NODES = 16384
#: Scenes with more pixels than this are matched tile by tile by :func:`track` when the options
#: allow it (about 6,300 x 6,300 px; a Landsat panchromatic scene holds about 220 million).
AUTO_TILE_PIXELS = 40_000_000


def _tiling_supports(
    method: str, prefilter: str, pyramid_levels: int, retry_chip_px: tuple[int, ...]
) -> bool:
    """Whether tiled matching can do what these options ask."""
    del pyramid_levels  # the coarse pass runs on strips downsampled from the files
    return (
        method in ("ncc", "phase", "orientation")
        and prefilter in ("none", "highpass", "wallis")
        and not retry_chip_px
    )


def _auto_tiles(
    ref: SceneLike,
    sec: SceneLike,
    band: int | None,
    ref_date: datetime | str | None,
    sec_date: datetime | str | None,
    method: str,
    prefilter: str,
    pyramid_levels: int,
    retry_chip_px: tuple[int, ...],
) -> bool:
    """Whether to match tile by tile though no tiling option was given: large files on one
    pixel lattice, with options that tiled matching supports."""
    if not _tiling_supports(method, prefilter, pyramid_levels, retry_chip_px):
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
    except GlacierflowError:
        return False  # the untiled reader gives the full error
    big = a.shape[0] * a.shape[1] > AUTO_TILE_PIXELS or b.shape[0] * b.shape[1] > AUTO_TILE_PIXELS
    return big and _lattice_offset(a, b) is not None


def track_to_products(
    ref: SceneLike,
    sec: SceneLike,
    out_dir: str | PathLike[str],
    **options: Any,
) -> tuple[xr.Dataset, dict[str, Path]]:
    """Run :func:`track` and write every product into ``out_dir``.

    ``options`` are those of :func:`track` (dates, band, and everything :func:`track_pair`
    takes: sizes, outlines, stable mask, co-registration, filter thresholds). Returns the
    dataset and a mapping from product name to path.
    """
    from glacierflow.products import write_products

    # Sizes first: a bad option is reported before any image is read.
    _check_sizes(
        options.get("chip_px", 32), options.get("search_px", 16), options.get("step_px", 8)
    )
    tiled = any(options.get(k) is not None for k in ("tile_nodes", "scheduler", "work_dir"))
    if not tiled and _auto_tiles(
        ref,
        sec,
        options.get("band"),
        options.get("ref_date"),
        options.get("sec_date"),
        options.get("method", "ncc"),
        options.get("prefilter", "none"),
        options.get("pyramid_levels", 1),
        options.get("retry_chip_px", ()),
    ):
        tiled, options["tile_nodes"] = True, DEFAULT_TILE_NODES
    band = options.pop("band", None)
    pair = (load_pair_tiled if tiled else load_pair)(
        ref,
        sec,
        ref_date=options.pop("ref_date", None),
        sec_date=options.pop("sec_date", None),
        band=band,
    )
    if not tiled:
        ds = track_pair(pair, **options)
        paths = write_products(
            ds, out_dir, background=pair.ref.data, background_transform=pair.transform
        )
        return ds, paths
    # Tiled: finished tiles live in the output folder until the products are complete, so a
    # killed run picks up where it stopped.
    import shutil

    from glacierflow.scenes import read_preview

    own_work = options.get("work_dir") is None
    if own_work:
        options["work_dir"] = Path(out_dir) / ".glacierflow-work"
    ds = track_pair(pair, band=band, **options)
    background, background_transform = read_preview(pair.ref.path, band=band)
    paths = write_products(
        ds, out_dir, background=background, background_transform=background_transform
    )
    if own_work:
        shutil.rmtree(options["work_dir"], ignore_errors=True)
    return ds, paths


def valid_fraction(ds: xr.Dataset) -> float:
    """Fraction of nodes with a finite speed (filled nodes count as valid)."""
    v = ds["v"].values
    return float(np.isfinite(v).mean()) if v.size else 0.0
