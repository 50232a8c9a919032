"""Shared inputs of the benchmarks: real texture with a known displacement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from glacierflow.demo import demo_inputs

EVEREST = Path(__file__).resolve().parents[1] / "tests" / "data" / "everest"


def yahtse_reference() -> np.ndarray:
    """The Yahtse Landsat 8 reference image (1087 x 1698 px, 15 m), float64."""
    with rasterio.open(demo_inputs()[0]) as ds:
        return ds.read(1).astype(np.float64)


def everest_image() -> np.ndarray:
    """The Everest Landsat 7 band 4 image (655 x 800 px, 30 m), float64."""
    with rasterio.open(EVEREST / "LE71400412000304SGS00_B4.tif") as ds:
        return ds.read(1).astype(np.float64)


def large_texture(size_px: int = 2048) -> np.ndarray:
    """A real-texture image of at least ``size_px`` square, mirrored from the Yahtse scene."""
    img = yahtse_reference()
    pad_r = max(0, size_px - img.shape[0])
    pad_c = max(0, size_px - img.shape[1])
    return np.pad(img, ((0, pad_r), (0, pad_c)), mode="symmetric")[:size_px, :size_px]


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of dicts."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)
