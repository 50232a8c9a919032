"""The demo: Yahtse Glacier, Alaska, from the bundled Landsat 8 panchromatic pair.

Landsat-8 images courtesy of the U.S. Geological Survey (public domain); stable-rock outlines
from the CARST example (MIT, CARST Development Team). See ``data/yahtse/README.md``.
"""

from __future__ import annotations

from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from glacierflow.outlines import outline_mask
from glacierflow.velocity import DAYS_PER_YEAR

#: Lower tongue of Yahtse Glacier near the terminus, in UTM 7N metres (x0, x1, y0, y1): image
#: columns 900 to 1050 and rows 600 to 900 of the bundled crop, where the ice is clear.
TONGUE_BOX_M = (
    465067.5 + 900 * 15,
    465067.5 + 1050 * 15,
    6681577.5 - 900 * 15,
    6681577.5 - 600 * 15,
)


#: The clear part of the lower tongue, in UTM 7N metres (x0, x1, y0, y1): image columns 920 to
#: 1030 and rows 700 to 880, i.e. :data:`TONGUE_BOX_M` without its upper 100 rows (where the
#: glacier turns through an icefall and moves up to about 20 px in the 16 days, more than the
#: default +/-16 px search) and without the 20 px along its sides (chips straddling the shear
#: margins).
CLEAR_TONGUE_BOX_M = (
    465067.5 + 920 * 15,
    465067.5 + 1030 * 15,
    6681577.5 - 880 * 15,
    6681577.5 - 700 * 15,
)


def box_nodes(ds: xr.Dataset, box_m: tuple[float, float, float, float]) -> np.ndarray:
    """Nodes of a product whose centres lie in ``box_m`` = (x0, x1, y0, y1), map metres."""
    x0, x1, y0, y1 = box_m
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


def data_dir() -> Path:
    """Folder of the bundled Yahtse pair."""
    return Path(str(resources.files("glacierflow") / "data" / "yahtse"))


def demo_inputs() -> tuple[Path, Path, Path]:
    """Paths of the reference image, the secondary image and the stable-rock outlines."""
    d = data_dir()
    return (
        d / "LC80630182016200LGN00_B8_yahtse.TIF",
        d / "LC80630182016216LGN00_B8_yahtse.TIF",
        d / "stable_rock_outlines.gpkg",
    )


def node_mask_from_outlines(ds: xr.Dataset, path: str | PathLike[str]) -> np.ndarray:
    """Nodes of a velocity product whose centres lie inside the outlines of ``path``."""
    from affine import Affine

    transform = Affine.from_gdal(*ds.attrs["transform"])
    return outline_mask(path, crs=ds.attrs["crs_wkt"], transform=transform, shape=ds["v"].shape)


def demo_statistics(ds: xr.Dataset, stable_outlines: str | PathLike[str]) -> dict[str, Any]:
    """Tongue speed and stable-rock offsets of a Yahtse velocity product.

    Returns
    -------
    dict
        ``tongue_speed_p95_m_per_day`` (95th percentile of speed on the lower tongue, in m/day),
        ``tongue_offset_median_px``, ``tongue_direction_deg`` (median flow bearing, degrees
        clockwise from north), ``stable_offset_median_px`` (median offset magnitude on stable
        rock, pixels; Rician-biased upwards by the noise, see ``summary["stable_ground"]`` for
        the components), ``stable_nodes``, ``tongue_valid_fraction`` and
        ``clear_tongue_valid_fraction`` (nodes with a speed in :data:`TONGUE_BOX_M` and
        :data:`CLEAR_TONGUE_BOX_M`) and ``flagged_fraction`` (nodes with a quality flag).
    """
    tongue = box_nodes(ds, TONGUE_BOX_M)
    clear = box_nodes(ds, CLEAR_TONGUE_BOX_M)
    v = ds["v"].values
    ok = tongue & np.isfinite(v)
    stable = node_mask_from_outlines(ds, stable_outlines)
    mag = np.hypot(ds["dx"].values, ds["dy"].values)
    st = stable & np.isfinite(mag)
    vx, vy = ds["vx"].values[ok], ds["vy"].values[ok]
    bearing = (
        float(np.degrees(np.arctan2(np.median(vx), np.median(vy))) % 360) if ok.any() else None
    )
    return {
        "tongue_speed_p95_m_per_day": float(np.percentile(v[ok], 95) / DAYS_PER_YEAR)
        if ok.any()
        else None,
        "tongue_offset_median_px": float(np.median(mag[ok])) if ok.any() else None,
        "tongue_direction_deg": bearing,
        "tongue_nodes": int(ok.sum()),
        "stable_offset_median_px": float(np.median(mag[st])) if st.any() else None,
        "stable_nodes": int(st.sum()),
        "tongue_valid_fraction": float(np.isfinite(v[tongue]).mean()) if tongue.any() else None,
        "clear_tongue_valid_fraction": (
            float(np.isfinite(v[clear]).mean()) if clear.any() else None
        ),
        "flagged_fraction": (
            float((ds["quality"].values != 0).mean()) if "quality" in ds.data_vars else None
        ),
    }


def run_demo(
    out_dir: str | PathLike[str],
    workers: int = 1,
    progress: bool | None = None,
    *,
    overwrite: bool = False,
):
    """Track the bundled Yahtse pair and write every product into ``out_dir``.

    ``workers`` matching processes; products already in ``out_dir`` are replaced only with
    ``overwrite`` (see :func:`glacierflow.track.track_to_products`).

    Returns
    -------
    ds : xarray.Dataset
        The velocity product.
    paths : dict of str to Path
        Written products.
    stats : dict
        See :func:`demo_statistics`; also merged into ``summary.json`` under ``"demo"``.
    """
    from glacierflow.products import write_summary
    from glacierflow.track import track_to_products

    ref, sec, rock = demo_inputs()
    ds, paths = track_to_products(
        ref, sec, out_dir, workers=workers, progress=progress, overwrite=overwrite, stable_mask=rock
    )
    stats = demo_statistics(ds, rock)
    write_summary(ds, paths["summary"], extra={"demo": stats})
    return ds, paths, stats
