"""One image pair through the whole pipeline: scenes, pair, matching, velocity.

``track`` returns the velocity product as an ``xarray.Dataset``; ``track_to_products`` also writes
the files. Both are plain function calls with explicit inputs, and the command line is a thin
layer over them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from glacierflow import __version__
from glacierflow.coregister import ConstantShift
from glacierflow.errors import InputError
from glacierflow.glaciers import outline_mask
from glacierflow.matching import MatchSettings, make_grid, match
from glacierflow.pair import Pair, make_pair
from glacierflow.scenes import Scene, read_scene
from glacierflow.velocity import node_grid_transform, velocity_dataset

log = logging.getLogger("glacierflow")

SceneLike = str | PathLike[str] | Scene


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


def track_pair(
    pair: Pair,
    *,
    chip_px: int = 32,
    search_px: int = 16,
    step_px: int = 8,
    subpixel: str = "lanczos",
    method: str = "ncc",
    workers: int = 1,
    progress: bool | None = None,
    stable_mask: str | PathLike[str] | np.ndarray | None = None,
) -> xr.Dataset:
    """Match a prepared pair and return the velocity product.

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
    progress : bool or None
        Show a progress bar: True always, False never, None when stderr is a terminal.
    stable_mask : path, ndarray of bool or None
        Stable (ice-free) ground: polygon outlines to rasterise, or a boolean array on the node
        grid. Where given, a constant misregistration is fitted on it and removed from all
        offsets (see :mod:`glacierflow.coregister`).

    Returns
    -------
    xarray.Dataset
        See :func:`glacierflow.velocity.velocity_dataset`.
    """
    _check_sizes(chip_px, search_px, step_px)
    settings = MatchSettings(
        chip_px=chip_px,
        search_px=search_px,
        step_px=step_px,
        subpixel=subpixel,
        method=method,
        workers=workers,
    )
    ref, sec = pair.ref, pair.sec
    try:
        grid = make_grid(ref.shape, chip_px=chip_px, search_px=search_px, step_px=step_px)
    except ValueError as exc:
        raise InputError(f"{exc}", ref.path) from exc
    from tqdm.auto import tqdm

    with tqdm(
        total=grid.ny * grid.nx,
        unit="node",
        desc="matching",
        disable=(not progress) if progress is not None else None,
        leave=False,
    ) as bar:
        result = match(ref.data, sec.data, ref.valid, sec.valid, settings, progress=bar.update)
    dx, dy = result.dx_px, result.dy_px
    node_transform = node_grid_transform(pair.transform, grid.row0_px, grid.col0_px, step_px)
    coreg_attrs: dict[str, Any] = {"coreg_method": "none"}
    if stable_mask is not None:
        stable = _stable_nodes(stable_mask, pair, node_transform, grid.shape)
        try:
            shift = ConstantShift().fit(dx, dy, stable)
        except ValueError as exc:
            where = stable_mask if not isinstance(stable_mask, np.ndarray) else None
            raise InputError(f"cannot co-register on the stable mask: {exc}", where) from exc
        dx, dy = shift.apply(dx, dy)
        coreg_attrs = shift.attrs()
        coreg_attrs["stable_source"] = (
            Path(stable_mask).name if not isinstance(stable_mask, np.ndarray) else "array"
        )
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
        "secondary_reprojected": int(pair.reprojected),
        "glacierflow_version": __version__,
        **coreg_attrs,
    }
    return velocity_dataset(
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
    )


def _stable_nodes(
    stable_mask: str | PathLike[str] | np.ndarray,
    pair: Pair,
    node_transform: Any,
    shape: tuple[int, int],
) -> np.ndarray:
    """Stable-ground nodes from outlines or a boolean node-grid array."""
    if isinstance(stable_mask, np.ndarray):
        if stable_mask.shape != shape:
            raise InputError(
                f"stable mask array has shape {stable_mask.shape}, the node grid {shape}"
            )
        return stable_mask.astype(bool)
    if pair.crs is None:
        raise InputError("outlines need georeferenced images", stable_mask)
    return outline_mask(stable_mask, crs=pair.crs, transform=node_transform, shape=shape)


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
    progress: bool | None = None,
    stable_mask: str | PathLike[str] | np.ndarray | None = None,
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
    stable_mask : path, ndarray of bool or None
        Stable ground (outline file, or boolean node-grid array) on which a constant
        misregistration is fitted and removed. None: no co-registration.

    Returns
    -------
    xarray.Dataset
        ``vx``, ``vy``, ``v`` in m/yr (365.25-day year), ``dx``, ``dy`` in pixels, ``corr``,
        ``snr``, on map coordinates ``x``, ``y`` (pixel centres), with pair metadata in attrs.
    """
    _check_sizes(chip_px, search_px, step_px)
    pair = load_pair(ref, sec, ref_date=ref_date, sec_date=sec_date, band=band)
    return track_pair(
        pair,
        chip_px=chip_px,
        search_px=search_px,
        step_px=step_px,
        subpixel=subpixel,
        method=method,
        workers=workers,
        progress=progress,
        stable_mask=stable_mask,
    )


def track_to_products(
    ref: SceneLike,
    sec: SceneLike,
    out_dir: str | PathLike[str],
    **options: Any,
) -> tuple[xr.Dataset, dict[str, Path]]:
    """Run :func:`track` and write every product into ``out_dir``.

    Returns the dataset and a mapping from product name to path.
    """
    from glacierflow.products import write_products

    pair = load_pair(
        ref,
        sec,
        ref_date=options.pop("ref_date", None),
        sec_date=options.pop("sec_date", None),
        band=options.pop("band", None),
    )
    ds = track_pair(pair, **options)
    paths = write_products(
        ds, out_dir, background=pair.ref.data, background_transform=pair.transform
    )
    return ds, paths


def valid_fraction(ds: xr.Dataset) -> float:
    """Fraction of nodes with a finite speed."""
    v = ds["v"].values
    return float(np.isfinite(v).mean()) if v.size else 0.0
