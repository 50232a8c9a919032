"""The correlator, pre-filter, coarse-pass and prior options, end to end on the Yahtse pair."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner

from glacierflow.cli import cli
from glacierflow.demo import CLEAR_TONGUE_BOX_M, box_nodes, demo_inputs
from glacierflow.track import track

PIXEL_M = 15.0


@pytest.fixture(scope="module")
def default_run():
    ref, sec, rock = demo_inputs()
    return track(ref, sec, stable_mask=rock, progress=False)


def _tongue_offset_px(ds) -> float:
    clear = box_nodes(ds, CLEAR_TONGUE_BOX_M)
    mag = np.hypot(ds["dx"].values, ds["dy"].values)[clear]
    return float(np.nanmedian(mag))


@pytest.mark.parametrize(
    ("method", "prefilter", "subpixel"),
    [
        ("phase", "none", "dft"),
        ("orientation", "orientation", "lanczos"),
        ("ncc", "wallis", "lanczos"),
    ],
)
def test_each_method_tracks_the_tongue(method, prefilter, subpixel, default_run):
    ref, sec, rock = demo_inputs()
    ds = track(
        ref,
        sec,
        method=method,
        prefilter=prefilter,
        subpixel=subpixel,
        stable_mask=rock,
        progress=False,
    )
    assert ds.attrs["method"] == method and ds.attrs["prefilter"] == prefilter
    # The clear lower tongue near the terminus moves about 13 px in 16 days; every correlator
    # must agree with the default NCC to a tenth of a pixel.
    assert 12.0 <= _tongue_offset_px(ds) <= 14.0
    assert abs(_tongue_offset_px(ds) - _tongue_offset_px(default_run)) <= 0.1
    clear = box_nodes(ds, CLEAR_TONGUE_BOX_M)
    assert np.isfinite(ds["v"].values[clear]).mean() >= 0.8
    # Co-registered stable rock stays still whatever the correlator.
    assert ds.attrs["coreg_method"] == "constant"
    assert abs(ds.attrs["coreg_dx_px"] - 0.12) < 0.08 and abs(ds.attrs["coreg_dy_px"] - 0.21) < 0.08


def test_prior_velocity_centres_a_small_search(tmp_path):
    """With +/-6 px only, the 11 px tongue is out of reach, unless a prior centres the search."""
    ref, sec, _ = demo_inputs()
    base = track(ref, sec, progress=False, coreg="none")
    # A prior from the default run itself, smoothed to a coarse raster in m/yr.
    with rasterio.open(ref) as src:
        profile = dict(
            driver="GTiff",
            height=base.sizes["y"],
            width=base.sizes["x"],
            count=1,
            dtype="float32",
            crs=src.crs,
            nodata=np.nan,
            transform=rasterio.Affine.from_gdal(*base.attrs["transform"]),
        )
    paths = []
    for name in ("vx", "vy"):
        values = np.nan_to_num(base[name].values, nan=0.0).astype(np.float32)
        path = tmp_path / f"prior_{name}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(values, 1)
        paths.append(path)
    small = dict(search_px=6, coreg="none", progress=False)
    blind = track(ref, sec, **small)
    guided = track(ref, sec, prior_vx=paths[0], prior_vy=paths[1], **small)
    clear = box_nodes(guided, CLEAR_TONGUE_BOX_M)
    assert np.isfinite(blind["v"].values[clear]).mean() < 0.3
    assert np.isfinite(guided["v"].values[clear]).mean() >= 0.7
    # Where both measured, the guided small search finds the offsets of the wide search (the
    # node grids differ by the search margin: interpolate the wide search onto the guided
    # nodes, linearly, over at most half a node spacing of a smooth field).
    base = base[["dx", "dy"]].interp(x=guided.x, y=guided.y)
    clear = box_nodes(guided, CLEAR_TONGUE_BOX_M)
    both = clear & np.isfinite(guided["dx"].values) & np.isfinite(base["dx"].values)
    assert both.sum() >= 100
    diff = np.hypot(
        guided["dx"].values - base["dx"].values, guided["dy"].values - base["dy"].values
    )
    assert np.median(diff[both]) <= 0.1
    assert guided.attrs["prior_source"] == "prior_vx.tif, prior_vy.tif"
    # Tile by tile from the files, the prior centres the same searches.
    tiled = track(ref, sec, prior_vx=paths[0], prior_vy=paths[1], tile_nodes=2000, **small)
    a, b = xr.align(guided[["dx", "dy"]], tiled[["dx", "dy"]], join="inner")
    assert a.sizes["x"] * a.sizes["y"] >= 0.9 * guided.sizes["x"] * guided.sizes["y"]
    for name in ("dx", "dy"):
        np.testing.assert_allclose(a[name].values, b[name].values, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize(
    "extra",
    [
        dict(prefilter="highpass", prefilter_sigma_px=4.0),
        dict(pyramid_levels=2, search_px=6),
        dict(prefilter="wallis"),
        dict(method="orientation"),
    ],
    ids=["highpass", "coarse-pass", "wallis", "orientation"],
)
def test_tile_by_tile_is_the_whole_image_run(extra):
    ref, sec, _ = demo_inputs()
    opts = dict(coreg="none", progress=False, **extra)
    whole = track(ref, sec, **opts)
    tiled = track(ref, sec, tile_nodes=3000, **opts)
    a, b = xr.align(whole[["dx", "dy"]], tiled[["dx", "dy"]], join="inner")
    assert a.sizes["x"] * a.sizes["y"] >= 0.9 * whole.sizes["x"] * whole.sizes["y"]
    assert np.isfinite(a["dx"].values).mean() > 0.5
    for name in ("dx", "dy"):
        np.testing.assert_allclose(a[name].values, b[name].values, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--method", "ncc", "--subpixel", "dft"], "dft"),
        (["--prior-vx", "nowhere.tif"], "--prior-vy"),
        (["--prefilter", "orientation", "--tile-nodes", "1000"], "tiled processing"),
        (["--recheck-search-px", "24", "--tile-nodes", "1000"], "tiled processing"),
    ],
)
def test_bad_option_combinations_fail_cleanly(args, phrase, tmp_path):
    ref, sec, _ = demo_inputs()
    result = CliRunner().invoke(
        cli, ["track", str(ref), str(sec), "-o", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 2, result.output
    assert phrase in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "velocity.tif").exists()
