"""Outlier tests and quality flags: on constructed fields, and on the real Yahtse pair.

On Yahtse the bay south-west of the terminus (open water, melange and the calving plume) gives
offsets for almost every node, with peak correlations of 0.3 to 0.8: chance matches on smooth
texture. They must go; the clear lower tongue, moving 11 to 16 px, must stay.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from matplotlib.path import Path as PolygonPath

from glacierflow.demo import CLEAR_TONGUE_BOX_M, box_nodes, demo_inputs
from glacierflow.filters import (
    FLAG_MEANINGS,
    FilterSettings,
    Quality,
    coherent_cluster_sizes,
    fill_small_holes,
    filter_offsets,
    median_test,
    normalized_median_residual,
    quality_attrs,
)
from glacierflow.matching import MatchSettings, match
from glacierflow.track import track

#: Icy Bay next to the Yahtse terminus (open water, melange, the plume), traced on the
#: reference image: (column, row) vertices in image pixels of the bundled crop.
BAY_PX = [
    (120, 700), (200, 730), (300, 770), (400, 830), (500, 890), (600, 940), (660, 990),
    (760, 990), (790, 900), (830, 850), (880, 860), (920, 930), (950, 1000), (950, 1050),
    (420, 1050), (360, 950), (300, 880), (220, 800), (130, 750),
]  # fmt: skip
#: Yahtse image grid: x of column 0's left edge, y of row 0's top edge, pixel size (m).
X0_M, Y0_M, PIXEL_M = 465067.5, 6681577.5, 15.0


def node_pixels(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image column and row (pixel-centre indices) of node map coordinates."""
    xx, yy = np.meshgrid(x, y)
    return (xx - X0_M) / PIXEL_M - 0.5, (Y0_M - yy) / PIXEL_M - 0.5


def bay_nodes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    cols, rows = node_pixels(x, y)
    inside = PolygonPath(np.array(BAY_PX)).contains_points(np.c_[cols.ravel(), rows.ravel()])
    return inside.reshape(cols.shape)


# --------------------------------------------------------------------------------------------
# Constructed fields


def smooth_field(ny: int = 40, nx: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth shear flow (up to 8 px) with 0.05 px noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    speed = 8.0 * np.exp(-(((yy - ny / 2) / (ny / 5)) ** 2))
    dx = speed + rng.normal(0, 0.05, (ny, nx))
    dy = 0.1 * speed + rng.normal(0, 0.05, (ny, nx))
    return dx, dy


def test_median_test_finds_spikes_and_spares_a_sheared_field():
    dx, dy = smooth_field()
    assert not median_test(dx, dy).any()
    spikes = [(5, 5), (20, 25), (33, 40)]
    for i, j in spikes:
        dx[i, j] += 3.0
    dy[12, 30] -= 1.5
    failed = median_test(dx, dy)
    assert set(zip(*np.nonzero(failed), strict=True)) == {*spikes, (12, 30)}


def test_normalized_residual_follows_westerweel_scarano():
    u = np.zeros((3, 3))
    u[0, :] = [0.0, 0.2, 0.4]
    u[2, :] = [0.0, 0.2, 0.4]
    u[1, :] = [0.0, 1.2, 0.4]
    # Neighbours of the centre: 0, .2, .4, 0, .4, 0, .2, .4 -> median 0.2; residuals
    # .2 0 .2 .2 .2 .2 0 .2 -> median 0.2; r = |1.2 - 0.2| / (0.2 + 0.1).
    r = normalized_median_residual(u, eps=0.1)
    assert r[1, 1] == pytest.approx(1.0 / 0.3)
    assert np.isnan(normalized_median_residual(u, min_neighbours=9)[1, 1])


def test_chance_matches_break_into_small_clusters():
    dx, dy = smooth_field()
    rng = np.random.default_rng(1)
    noise = np.zeros(dx.shape, dtype=bool)
    noise[25:35, 5:20] = True  # a patch of chance matches, offsets anywhere in +/-16 px
    dx[noise] = rng.uniform(-16, 16, noise.sum())
    dy[noise] = rng.uniform(-16, 16, noise.sum())
    sizes = coherent_cluster_sizes(dx, dy, tol_px=2.0)
    assert np.all(sizes[~noise] >= 0.9 * (~noise).sum())  # the flow is one group
    assert np.percentile(sizes[noise], 95) <= 3
    dx[0, 0] = np.nan
    assert coherent_cluster_sizes(dx, dy)[0, 0] == 0


def test_filter_offsets_sets_one_bit_per_reason():
    dx, dy = smooth_field()
    corr = np.full(dx.shape, 0.8)
    snr = np.full(dx.shape, 5.0)
    dx[1, 1] = dy[1, 1] = np.nan  # no match
    corr[2, 2] = 0.1  # low correlation
    snr[3, 3] = 1.0  # low SNR
    corr[4, 4], snr[4, 4] = 0.1, 1.0  # both
    dx[20, 20] += 5.0  # a spike
    dx[30:33, 40:44] += 6.0  # 12 nodes moving together: fewer than one chip's footprint
    res = filter_offsets(dx, dy, corr, snr, FilterSettings(min_cluster_nodes=16))
    q = res.quality
    assert q.dtype == np.uint16
    assert q[1, 1] == Quality.NO_MATCH
    assert q[2, 2] == Quality.LOW_CORR
    assert q[3, 3] == Quality.LOW_SNR
    assert q[4, 4] == Quality.LOW_CORR | Quality.LOW_SNR
    assert q[20, 20] == Quality.MEDIAN_TEST
    # The block's corners differ from most of their neighbours (median test); the rest
    # agree with each other, but are too few.
    block = q[30:33, 40:44]
    corners = block[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.all(corners == Quality.MEDIAN_TEST)
    assert np.all((block == Quality.MEDIAN_TEST) | (block == Quality.SMALL_CLUSTER))
    assert (block == Quality.SMALL_CLUSTER).sum() >= 6
    assert (q != 0).sum() == 4 + 1 + 12
    assert np.array_equal(res.valid, q == 0)
    assert np.all(np.isnan(res.dx_px[q != 0])) and np.all(np.isnan(res.dy_px[q != 0]))
    counts = res.counts()
    assert counts["good"] == q.size - 17 and counts["low_correlation"] == 2


def test_filter_settings_refuse_nonsense():
    for bad in ({"min_corr": -0.1}, {"median_threshold": 0}, {"min_cluster_nodes": 0}):
        with pytest.raises(ValueError):
            FilterSettings(**bad)
    assert FilterSettings.for_grid(32, 8).min_cluster_nodes == 16
    assert FilterSettings.for_grid(32, 32).min_cluster_nodes == 4


def test_small_enclosed_holes_are_filled_and_others_not():
    yy, xx = np.mgrid[0:20, 0:20].astype(float)
    plane = 0.3 * xx - 0.2 * yy + 1.0
    valid = np.ones(plane.shape, dtype=bool)
    valid[5, 5] = False  # one node: filled exactly (the mean of a plane's neighbours)
    valid[10:12, 10:12] = False  # four nodes: filled
    valid[15:18, 2:5] = False  # nine nodes: too big
    valid[0, 10] = False  # touches the border: not enclosed
    (filled_plane,), filled = fill_small_holes([np.where(valid, plane, np.nan)], valid, 4)
    assert filled[5, 5] and filled[10:12, 10:12].all()
    assert not filled[15:18, 2:5].any() and not filled[0, 10]
    assert filled_plane[5, 5] == pytest.approx(plane[5, 5])
    np.testing.assert_allclose(filled_plane[10:12, 10:12], plane[10:12, 10:12], atol=0.2)
    assert np.isnan(filled_plane[16, 3])


def test_quality_attributes_document_every_bit():
    attrs = quality_attrs()
    assert attrs["flag_masks"] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert attrs["flag_meanings"].split() == list(FLAG_MEANINGS.values())
    for bit, meaning in FLAG_MEANINGS.items():
        assert f"{int(bit)} = {meaning}" in attrs["description"]


# --------------------------------------------------------------------------------------------
# The real pair


@pytest.fixture(scope="module")
def yahtse_match():
    """Raw matcher output of the Yahtse pair on the default grid, with node map coordinates."""
    ref, sec, _ = demo_inputs()
    with rasterio.open(ref) as a, rasterio.open(sec) as b:
        img_a, img_b = a.read(1).astype(np.float32), b.read(1).astype(np.float32)
    res = match(img_a, img_b, img_a > 0, img_b > 0, MatchSettings(workers=2))
    g = res.grid
    x = X0_M + PIXEL_M * (g.cols_px() + 0.5)
    y = Y0_M - PIXEL_M * (g.rows_px() + 0.5)
    return res, x, y


@pytest.fixture(scope="module")
def yahtse_product() -> xr.Dataset:
    ref, sec, rock = demo_inputs()
    return track(ref, sec, progress=False, stable_mask=rock, workers=2)


def _box(x: np.ndarray, y: np.ndarray, box_m) -> np.ndarray:
    x0, x1, y0, y1 = box_m
    xx, yy = np.meshgrid(x, y)
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


def test_the_bay_is_flagged_and_the_clear_tongue_kept(yahtse_match):
    res, x, y = yahtse_match
    bay = bay_nodes(x, y)
    clear = _box(x, y, CLEAR_TONGUE_BOX_M)
    assert bay.sum() > 1000 and clear.sum() > 200
    # The matcher alone keeps most of the bay: the raw offsets there look valid.
    assert res.valid[bay].mean() > 0.65
    out = filter_offsets(res.dx_px, res.dy_px, res.corr, res.snr, FilterSettings.for_grid(32, 8))
    assert 1 - out.valid[bay].mean() >= 0.85, out.valid[bay].mean()
    matched = clear & res.valid
    assert out.valid[matched].mean() >= 0.90, out.valid[matched].mean()
    # The image's south-west (rows > 850, west of column 800) is half bay; the rest is land
    # and the glacier west of the bay, which stay.
    cols, rows = node_pixels(x, y)
    south_west = (rows > 850) & (cols < 800)
    assert 0.3 <= 1 - out.valid[south_west].mean() <= 0.6


def test_without_the_coherence_tests_the_bay_survives(yahtse_match):
    """Thresholds alone cannot tell chance matches: the test above could fail."""
    res, x, y = yahtse_match
    thresholds_only = FilterSettings(median_threshold=1e9, min_cluster_nodes=1)
    out = filter_offsets(res.dx_px, res.dy_px, res.corr, res.snr, thresholds_only)
    assert out.valid[bay_nodes(x, y)].mean() > 0.5


def test_product_flags_match_its_layers(yahtse_product):
    ds = yahtse_product
    q = ds["quality"].values
    assert ds["quality"].dtype == np.uint16
    bad = q != 0
    for name in ("vx", "vy", "v", "dx", "dy", "v_error"):
        assert np.all(np.isnan(ds[name].values[bad])), name
        assert np.all(np.isfinite(ds[name].values[~bad])), name
    assert np.all((q & Quality.NO_MATCH).astype(bool) == ~np.isfinite(ds["corr"].values))
    assert 0.05 < bad.mean() < 0.25
    assert box_nodes(ds, CLEAR_TONGUE_BOX_M).sum() > 200
    assert ds.attrs["filter_min_cluster_nodes"] == 16
    assert ds.attrs["quality_flag_meanings"].split()[0] == "no_match"


def test_hole_filling_is_flagged(yahtse_product):
    ref, sec, rock = demo_inputs()
    filled = track(ref, sec, progress=False, stable_mask=rock, workers=2, fill_holes=True)
    q = filled["quality"].values
    was = (q & Quality.FILLED).astype(bool)
    assert was.sum() > 50
    # A filled node keeps the reason it was removed, and was removed without filling.
    assert np.all((q[was] & ~np.uint16(Quality.FILLED)) != 0)
    assert np.all(yahtse_product["quality"].values[was] == q[was] & ~np.uint16(Quality.FILLED))
    assert np.all(np.isfinite(filled["v"].values[was]))
    assert np.all(np.isfinite(filled["v_error"].values[was]))
    kept = q == 0
    np.testing.assert_array_equal(filled["v"].values[kept], yahtse_product["v"].values[kept])


def test_bay_polygon_lies_on_the_image() -> None:
    ref = Path(demo_inputs()[0])
    with rasterio.open(ref) as src:
        assert (src.transform.c, src.transform.f, src.transform.a) == (X0_M, Y0_M, PIXEL_M)
        h, w = src.shape
    assert all(0 <= c < w and 0 <= r < h for c, r in BAY_PX)


def test_nanmedian_is_numpys_bit_for_bit():
    """The sort-based medians of the median test and of the slowest-nodes pick give
    np.nanmedian's values exactly, with NaN where a row holds no finite value."""
    from glacierflow.coregister import _nanmedian as window_median
    from glacierflow.filters import _nanmedian

    rng = np.random.default_rng(3)
    for width in (8, 25):
        a = rng.normal(size=(4000, width)) * 10.0 ** rng.uniform(-3, 3, size=(4000, 1))
        a[rng.random(a.shape) < 0.6] = np.nan
        a[:50] = np.round(a[:50], 1)  # ties
        a[50] = np.nan
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(a, axis=-1)
        assert np.array_equal(_nanmedian(a), expected, equal_nan=True)
        held = np.isfinite(a).any(axis=-1)
        assert np.array_equal(window_median(a[held]), expected[held])
