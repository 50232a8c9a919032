"""Stable (ice-free) ground of a pair: from a mask, from glacier outlines, or the fallback.

Stable ground is where the surface does not move: the co-registration is fitted there
(:mod:`glacierflow.coregister`) and the error model calibrated. It comes from a stable mask
(rock polygons, a raster, or a boolean array on the node grid), from glacier outlines (every
node off the ice grown by a buffer), from both (the mask minus the ice), or, with neither, from
the slowest quarter of the valid nodes (:func:`glacierflow.coregister.fit_on_slowest`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from glacierflow.errors import InputError
from glacierflow.glaciers import ice_mask_from_outlines, mask_from_file
from glacierflow.pair import Pair
from glacierflow.settings import TrackSettings

log = logging.getLogger("glacierflow")

#: ``stable_source`` of products whose stable ground is the fallback.
FALLBACK_SOURCE = "slowest quarter of valid nodes (no outlines given)"
#: A stable mask covering more than this fraction of the valid nodes is refused.
MAX_STABLE_FRACTION = 0.99


def stable_ground(
    pair: Pair,
    node_transform: Affine,
    shape: tuple[int, int],
    pixel_size_m: float,
    settings: TrackSettings,
    valid: np.ndarray,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Stable nodes from outlines and/or a mask (None: the fallback, chosen when
    co-registering), and the ``stable_*`` attributes (``stable_source`` says which).

    With both, stable ground is the mask minus the ice grown by ``stable.ice_buffer_m``.

    Parameters
    ----------
    pair : Pair
        The pair (its CRS places outlines and masks).
    node_transform : Affine
        Map transform of the node grid, one cell per node.
    shape : tuple of int
        Node grid shape.
    pixel_size_m : float
        Image pixel size, metres (for the default ice buffer).
    settings : TrackSettings
        ``settings.stable`` says where stable ground is.
    valid : ndarray of bool
        Nodes that passed the outlier filter.

    Raises
    ------
    InputError
        For a mask that covers (almost) every valid node or none, outlines that leave no valid
        node off the ice, or outlines on images without a CRS.
    """
    st, m = settings.stable, settings.matching
    outlines, mask = st.glacier_outlines, st.stable_mask
    if outlines is None and mask is None:
        log.info("no outlines or stable mask given: stable ground is the %s", FALLBACK_SOURCE)
        return None, {"stable_source": FALLBACK_SOURCE}
    if pair.crs is None and (outlines is not None or not isinstance(mask, np.ndarray)):
        raise InputError(
            "outlines need georeferenced images",
            outlines or mask,
            key=("stable.glacier_outlines", "stable.stable_mask"),
        )
    stable, parts = np.ones(shape, dtype=bool), []
    if mask is not None:
        stable, name = _marked_stable(mask, pair, node_transform, shape, valid)
        parts.append(name)
    attrs: dict[str, Any] = {}
    if outlines is not None:
        buffer_m = st.buffer_m(m.chip_px, m.step_px, pixel_size_m)
        stable = _off_ice(stable, outlines, buffer_m, pair, node_transform, valid)
        text = f"off-ice: outside {outlines.name} grown by {buffer_m:.0f} m"
        parts.append(text if not parts else f"minus ice of {outlines.name}")
        attrs["stable_ice_buffer_m"] = buffer_m
    return stable, {"stable_source": " ".join(parts), **attrs}


def _marked_stable(
    mask: Path | np.ndarray,
    pair: Pair,
    node_transform: Affine,
    shape: tuple[int, int],
    valid: np.ndarray,
) -> tuple[np.ndarray, str]:
    """Nodes of a stable mask (file or node-grid array), and how the source is named."""
    if isinstance(mask, np.ndarray):
        if mask.shape != shape:
            raise InputError(
                f"stable mask array has shape {mask.shape}, the node grid {shape}",
                key="stable.stable_mask",
            )
        stable, name, where = mask.astype(bool), "array", None
    else:
        stable = mask_from_file(mask, crs=pair.crs, transform=node_transform, shape=shape)
        name, where = mask.name, mask
    n_valid = int(valid.sum())
    covered = int((stable & valid).sum())
    if n_valid and covered > MAX_STABLE_FRACTION * n_valid:
        raise InputError(
            f"the stable mask covers {covered} of the {n_valid} valid nodes: it would "
            "take the glacier's own motion for misregistration and zero it; mark only "
            "ice-free ground, give stable.glacier_outlines instead, or give neither to use "
            "the slowest quarter of the nodes",
            where,
            key=("stable.stable_mask", "stable.glacier_outlines"),
        )
    if not covered:
        raise InputError(
            f"the stable mask marks {int(stable.sum())} nodes but none holds a valid "
            "offset after filtering; give a mask over textured, ice-free ground",
            where,
            key="stable.stable_mask",
        )
    return stable, name


def _off_ice(
    stable: np.ndarray,
    outlines: Path,
    buffer_m: float,
    pair: Pair,
    node_transform: Affine,
    valid: np.ndarray,
) -> np.ndarray:
    """``stable`` minus the glacier outlines grown by ``buffer_m`` metres."""
    ice = ice_mask_from_outlines(
        outlines, crs=pair.crs, transform=node_transform, shape=valid.shape, buffer_m=buffer_m
    )
    stable = stable & ~ice
    if not (stable & valid).any():
        raise InputError(
            f"no valid node is left off the ice grown by {buffer_m:.0f} m "
            f"({int(ice.sum())} of {ice.size} nodes are ice); give a smaller "
            "stable.ice_buffer_m or a stable.stable_mask",
            outlines,
            key=("stable.ice_buffer_m", "stable.stable_mask"),
        )
    return stable
