"""The image pyramid of a guided search: images downsampled by two, and node-grid fields
(search centres) smoothed, filled and resampled between a coarse grid and a fine one.

The coarse pass itself is a :func:`glacierflow.matching.match.match` on the downsampled images
(:func:`glacierflow.matching.match.coarse_centres`); this module holds what it needs around it.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from glacierflow.matching.settings import MatchSettings

__all__ = [
    "coarse_settings",
    "downsample2",
    "fill_nan",
    "fine_settings",
    "nanmedian3",
    "sample_nodes",
]


def fill_nan(a: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """NaNs replaced by the nearest finite value (by ``fallback``, or 0, if there is none)."""
    bad = ~np.isfinite(a)
    if not bad.any():
        return a
    if bad.all():
        return np.zeros_like(a) if fallback is None else fallback.copy()
    _, (ii, jj) = ndimage.distance_transform_edt(bad, return_indices=True)
    return a[ii, jj]


def nanmedian3(a: np.ndarray) -> np.ndarray:
    """3 x 3 median ignoring NaN (NaN where the whole neighbourhood is NaN)."""
    padded = np.pad(a, 1, mode="constant", constant_values=np.nan)
    win = sliding_window_view(padded, (3, 3)).reshape(*a.shape, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods stay NaN
        return np.nanmedian(win, axis=-1)


def sample_nodes(field_: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of a node-grid field at fractional node indices (edges held)."""
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(field_, [rr, cc], order=1, mode="nearest")


def downsample2(image: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """2 x 2 block mean of valid pixels; a block is valid where at least 2 of its 4 are.

    Row by row blocks never cross an even row boundary: an image downsampled strip by strip
    (strips of an even number of rows) is the whole image downsampled, exactly.
    """
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    img = np.asarray(image)[:h, :w]
    ok = np.isfinite(img) if valid is None else (np.asarray(valid, bool)[:h, :w] & np.isfinite(img))
    dtype = np.complex128 if np.iscomplexobj(img) else np.float64
    v = np.where(ok, img, 0).astype(dtype)
    s = v[0::2, 0::2] + v[1::2, 0::2] + v[0::2, 1::2] + v[1::2, 1::2]
    cnt = ok[0::2, 0::2].astype(int) + ok[1::2, 0::2] + ok[0::2, 1::2] + ok[1::2, 1::2]
    out = s / np.maximum(cnt, 1)
    return out.astype(np.complex64 if dtype == np.complex128 else np.float32), cnt >= 2


def coarse_settings(settings: MatchSettings) -> MatchSettings:
    """Settings of the coarse pass one level below: a parabola for the sub-pixel peak (only the
    rounded offset is used), no retries and no forward-backward check (the fine pass checks its
    own offsets).

    By default the same chip, search and step in coarse pixels (twice the footprint and reach).
    Coarse to fine (``fine_search_px``): half the chip and search in coarse pixels, the same
    footprint and reach as the fine pass, on a grid a quarter of the coarse chip apart (at
    least the fine step): a +/-32 px search at step 2 then costs the coarse pass about a
    sixtieth of its dense work, and the fine pass searches only ``fine_search_px`` around the
    coarse offsets (:func:`fine_settings`).
    """
    update = {
        "pyramid_levels": settings.pyramid_levels - 1,
        "subpixel": "parabola",
        "retry_chip_px": (),
        "recheck_search_px": 0,
        "retry_min_snr": 0.0,
        "backmatch_px": 0,
    }
    if settings.fine_search_px:
        chip = max(settings.chip_px // 2, 4)
        search = max(-(-settings.search_px // 2), 1)
        update |= {
            "chip_px": chip,
            "search_px": search,
            "step_px": max(settings.step_px, chip // 4),
            "fine_search_px": min(settings.fine_search_px, search) if chip >= 8 else 0,
        }
    return settings.model_copy(update=update)


def fine_settings(settings: MatchSettings) -> MatchSettings:
    """Settings of the finest pass of a guided search: ``search_px`` narrowed to
    ``fine_search_px`` when a coarse pass found the centres (coarse to fine); otherwise the
    settings themselves."""
    if settings.pyramid_levels > 1 and settings.fine_search_px:
        return settings.model_copy(update={"search_px": settings.fine_search_px})
    return settings
