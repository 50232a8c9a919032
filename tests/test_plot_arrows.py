"""Flow arrows point along the flow, however short: each drawn arrow polygon, read back in map
coordinates after rendering, is checked against ``atan2(vy, vx)`` of its node.

matplotlib draws arrows shorter than ``minshaft`` head lengths as a shaftless head; with
``minshaft=1`` that head is a triangle about as wide as long (length over width 0.93), which
at a few pixels on the map read as pointing west whatever the flow (the reviewer's case: the
demo pair given later image first, ``--step-px 16`` and a box over the calving front). So
each arrow must also be clearly longer than wide.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glacierflow.demo import demo_inputs
from glacierflow.plot import quicklook_figure
from glacierflow.products import read_product
from glacierflow.velocity import velocity_dataset

#: Largest difference between an arrow's drawn direction and its flow, degrees.
TOLERANCE_DEG = 3.0
#: A drawn arrow is at least this many times as long as it is wide (it shows a direction).
MIN_ASPECT = 1.5


def _arrows(fig: Figure) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drawn direction (degrees), length over width, and the flow's vx, vy of each arrow."""
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    (q,) = [c for c in ax.collections if c.get_gid() == "flow-arrows"]
    to_data = ax.transData.inverted()
    angles, aspects = [], []
    for path, offset in zip(q.get_paths(), q.get_offsets(), strict=True):
        # Polygon vertices in display units around the node, then in map metres.
        display = q.get_transform().transform(path.vertices) + ax.transData.transform(offset)
        verts = to_data.transform(display)
        assert len(verts) == 8, "not an arrow (matplotlib draws a dot for very short ones)"
        tip, base = verts[3], 0.5 * (verts[0] + verts[6])  # matplotlib's arrow layout
        along = (tip - base) / np.hypot(*(tip - base))
        across = np.array([-along[1], along[0]])
        rel = verts - verts.mean(axis=0)
        length, width = np.ptp(rel @ along), np.ptp(rel @ across)
        angles.append(np.degrees(np.arctan2(along[1], along[0])))
        aspects.append(length / width)
    return np.array(angles), np.array(aspects), np.asarray(q.U), np.asarray(q.V)


def _check(fig: Figure) -> int:
    angles, aspects, vx, vy = _arrows(fig)
    want = np.degrees(np.arctan2(vy, vx))
    error = (angles - want + 180.0) % 360.0 - 180.0
    assert np.abs(error).max() <= TOLERANCE_DEG, np.abs(error).max()
    assert aspects.min() >= MIN_ASPECT, aspects.min()
    return angles.size


def test_arrows_of_every_length_and_direction_point_along_the_flow():
    """A swirl whose speed grows 100-fold from its centre: arrows of every direction, from
    the shortest drawn to twice the key length."""
    ny, nx = 120, 180
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    yy -= ny / 2
    xx -= nx / 2
    r = np.hypot(xx, yy) + 1e-9
    speed_px = 0.02 + 2.0 * (r / r.max()) ** 2
    dx_px, dy_px = -yy / r * speed_px, xx / r * speed_px
    ds = velocity_dataset(
        dx_px,
        dy_px,
        np.ones((ny, nx)),
        np.ones((ny, nx)),
        image_transform=rasterio.Affine(15, 0, 465067.5, 0, -15, 6681577.5),
        row0_px=16,
        col0_px=16,
        step_px=8,
        crs_wkt=rasterio.crs.CRS.from_epsg(32607).to_wkt(),
        dt_days=16.0,
        v_error=np.full((ny, nx), 1.0),
    )
    assert _check(quicklook_figure(ds)) > 300


@pytest.fixture(scope="module")
def reviewer_product(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    """``glacierflow track B A -o O --step-px 16 --bbox -141.5 60.15 -141.35 60.22``."""
    ref, sec = demo_inputs()[:2]
    out = Path(tmp_path_factory.mktemp("arrows")) / "out"
    command = [sys.executable, "-m", "glacierflow.cli", "track", str(sec), str(ref), "-o"]
    command += [str(out), "--step-px", "16", "--bbox", "-141.5", "60.15", "-141.35", "60.22"]
    done = subprocess.run(
        [*command, "--workers", "1", "--no-progress"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return read_product(out / "velocity.tif")


def test_arrows_of_the_reviewers_map_point_along_the_flow(reviewer_product):
    ds = reviewer_product
    # The node the reviewer looked at flows south-south-east; its arrow does too.
    x, y = 479000.0, 6675000.0
    node = np.argmin(np.hypot(*np.meshgrid(ds.x - x, ds.y - y)))
    row, col = np.unravel_index(node, (ds.sizes["y"], ds.sizes["x"]))
    assert float(ds.vx[row, col]) > 300 and float(ds.vy[row, col]) < -600
    assert _check(quicklook_figure(ds)) > 100
