"""Tiled matching from files: identical to whole-image matching, resumable, and on Dask."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from glacierflow.demo import demo_inputs
from glacierflow.errors import InputError
from glacierflow.matching import MatchSettings, match
from glacierflow.scenes import read_header, read_scene
from glacierflow.tiling import plan_tiles, tiled_match

LAYERS = ("dx_px", "dy_px", "corr", "snr", "closure_px")


def _crop(src: Path, dst: Path, window: Window) -> Path:
    with rasterio.open(src) as ds:
        profile = ds.profile | {
            "height": window.height,
            "width": window.width,
            "transform": window_transform(window, ds.transform),
        }
        data = ds.read(1, window=window)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data, 1)
    return dst


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> tuple[Path, Path]:
    """A 260 x 300 px crop of the Yahtse pair over the lower tongue (names keep the dates)."""
    folder = tmp_path_factory.mktemp("crops")
    ref, sec, _ = demo_inputs()
    win = Window(850, 560, 300, 260)
    return (
        _crop(ref, folder / ref.name, win),
        _crop(sec, folder / sec.name, win),
    )


def _untiled(ref: Path, sec: Path, settings: MatchSettings):
    a, b = read_scene(ref), read_scene(sec)
    return match(a.data, b.data, a.valid, b.valid, settings)


def _assert_identical(x, y) -> None:
    assert x.grid == y.grid
    for name in LAYERS:
        np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=name)


@pytest.mark.parametrize("tile_nodes", [1, 37, 256, 10_000])
def test_tiled_equals_untiled_bit_for_bit(crops, tile_nodes):
    # batch_nodes=1 lets a tile be a single node; 37 gives tiles that do not divide the grid.
    settings = MatchSettings(batch_nodes=1 if tile_nodes == 1 else 16)
    whole = _untiled(*crops, settings)
    assert whole.valid.mean() > 0.9
    tiles = plan_tiles(whole.grid, settings, tile_nodes)
    assert len(tiles) > (100 if tile_nodes == 1 else 0)
    tiled = tiled_match(
        read_header(crops[0]), read_header(crops[1]), settings, tile_nodes=tile_nodes
    )
    _assert_identical(tiled, whole)


@pytest.mark.parametrize("tile_nodes", [50, 4096])
def test_tiled_dense_kernel_equals_untiled(crops, tile_nodes):
    # Step 2 takes the dense kernel (box-filtered products per offset) with its own large
    # internal tiles; 50 nodes per task cuts those into tiles that do not divide the grid.
    settings = MatchSettings(step_px=2, search_px=8, batch_nodes=None if tile_nodes > 50 else 25)
    assert settings.dense
    whole = _untiled(*crops, settings)
    assert whole.valid.mean() > 0.9
    tiled = tiled_match(
        read_header(crops[0]), read_header(crops[1]), settings, tile_nodes=tile_nodes
    )
    _assert_identical(tiled, whole)
    # And the dense kernel finds what the FFT kernel finds.
    fft = _untiled(*crops, MatchSettings(step_px=2, search_px=8, ncc_kernel="fft"))
    both = fft.valid & whole.valid
    assert both.mean() > 0.9
    assert np.abs(fft.dx_px - whole.dx_px)[both].max() < 2e-3
    assert np.abs(fft.dy_px - whole.dy_px)[both].max() < 2e-3


@pytest.mark.parametrize("step", [8, 2])
def test_tiled_with_a_prior_equals_untiled(crops, step):
    # Search centres that differ across tiles and push windows past the image edge.
    settings = MatchSettings(step_px=step, search_px=8, batch_nodes=64 if step == 8 else 400)
    a, b = read_scene(crops[0]), read_scene(crops[1])
    grid = match(a.data, b.data, a.valid, b.valid, settings).grid
    yy, xx = np.meshgrid(np.arange(grid.ny), np.arange(grid.nx), indexing="ij")
    prior_dx = -2.0 + 6.0 * xx / grid.nx
    prior_dy = 3.0 - 4.0 * yy / grid.ny
    prior_dx[0, :3] = np.nan  # unknown: searched around zero
    whole = match(
        a.data, b.data, a.valid, b.valid, settings, prior_dx_px=prior_dx, prior_dy_px=prior_dy
    )
    assert whole.valid.mean() > 0.8
    tiled = tiled_match(
        read_header(crops[0]),
        read_header(crops[1]),
        settings,
        tile_nodes=500,
        prior_dx_px=prior_dx,
        prior_dy_px=prior_dy,
    )
    _assert_identical(tiled, whole)


def test_tiled_pair_of_offset_scenes_covers_their_overlap(tmp_path):
    # Two scenes of one pixel lattice with different extents (as two Landsat scenes of one
    # path/row): tiled matching works on their overlap, exactly as on crops to the overlap.
    from glacierflow.track import load_pair_tiled

    ref, sec, _ = demo_inputs()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _crop(ref, tmp_path / "a" / ref.name, Window(850, 560, 300, 260))
    b = _crop(sec, tmp_path / "a" / sec.name, Window(835, 575, 320, 240))
    pair = load_pair_tiled(a, b)
    assert pair.ref.shape == pair.sec.shape == (240, 300)
    assert pair.sec.file_offset_px == (0, 15) and pair.ref.file_offset_px == (15, 0)
    settings = MatchSettings(batch_nodes=16)
    offset = tiled_match(pair.ref, pair.sec, settings, tile_nodes=100)
    overlap = Window(850, 575, 300, 240)
    exact = load_pair_tiled(
        _crop(ref, tmp_path / "b" / ref.name, overlap),
        _crop(sec, tmp_path / "b" / sec.name, overlap),
    )
    assert exact.ref.transform == pair.ref.transform
    _assert_identical(offset, tiled_match(exact.ref, exact.sec, settings, tile_nodes=100))
    assert offset.valid.mean() > 0.9
    # Half a pixel off the lattice: refused with a clear message.
    with rasterio.open(b, "r+") as ds:
        ds.transform = ds.transform @ ds.transform.translation(0.5, 0)
    with pytest.raises(InputError, match="one pixel lattice"):
        load_pair_tiled(a, b)


def test_tiled_slc_off_dense_equals_untiled(crops, tmp_path):
    # SLC-off gaps (DN 0, the Landsat fill) on both dates at step 2: the masked dense kernel,
    # tile by tile from the files, bit for bit as in memory.
    from glacierflow.synthetic import slc_off_mask

    painted = []
    for path, phase in zip(crops, (0.0, 13.0), strict=True):
        with rasterio.open(path) as ds:
            profile, data = ds.profile, ds.read(1)
        data[slc_off_mask(data.shape, max_gap_px=10, phase=phase)] = 0
        out = tmp_path / path.name
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(data, 1)
        painted.append(out)
    settings = MatchSettings(step_px=2, search_px=8)
    whole = _untiled(*painted, settings)
    assert whole.valid.mean() > 0.7
    tiled = tiled_match(read_header(painted[0]), read_header(painted[1]), settings, tile_nodes=3000)
    _assert_identical(tiled, whole)


def test_large_scenes_are_tiled_by_default(crops, monkeypatch):
    # Above AUTO_TILE_PIXELS, `track` matches tile by tile unless the options need the whole
    # images: the same product as an explicit tiled run.
    import glacierflow.tiling

    track_module = importlib.import_module("glacierflow.track")  # `glacierflow.track`: a function

    calls = []
    real = glacierflow.tiling.tiled_match
    monkeypatch.setattr(
        glacierflow.tiling, "tiled_match", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    opts = dict(coreg="none", progress=False)
    small = track_module.track(*crops, **opts)
    assert calls == []
    monkeypatch.setattr(track_module, "AUTO_TILE_PIXELS", 10_000)
    auto = track_module.track(*crops, **opts)
    assert len(calls) == 1
    explicit = track_module.track(*crops, tile_nodes=16384, **opts)
    assert len(calls) == 2
    for name in ("dx", "dy", "v"):
        np.testing.assert_array_equal(auto[name].values, explicit[name].values)
    np.testing.assert_allclose(auto["v"].values, small["v"].values, atol=1e-3, equal_nan=True)
    # Second matches run on the whole images: untiled whatever the size.
    track_module.track(*crops, recheck_search_px=24, **opts)
    assert len(calls) == 2
    # And from the command line's entry point, which writes the products.
    out = crops[0].parent / "auto_products"
    ds, paths = track_module.track_to_products(*crops, out, **opts)
    assert len(calls) == 3 and paths and not (out / ".glacierflow-work").exists()
    np.testing.assert_array_equal(ds["v"].values, auto["v"].values)


@pytest.mark.parametrize("step", [8, 2])
def test_tiled_highpass_equals_untiled(crops, step):
    # The Gaussian high-pass, tile by tile (its reach read around every window), bit for bit
    # as on the whole images.
    from glacierflow.prefilter import highpass

    settings = MatchSettings(step_px=step, search_px=8, batch_nodes=64 if step == 8 else None)
    a, b = read_scene(crops[0]), read_scene(crops[1])
    ra, va = highpass(a.data, a.valid, 2.5)
    rb, vb = highpass(b.data, b.valid, 2.5)
    whole = match(ra, rb, va, vb, settings)
    assert whole.valid.mean() > 0.9
    tiled = tiled_match(
        read_header(crops[0]),
        read_header(crops[1]),
        settings,
        tile_nodes=700,
        prefilter="highpass",
        prefilter_sigma_px=2.5,
    )
    _assert_identical(tiled, whole)


@pytest.mark.parametrize("subpixel", ["dft", "lanczos"])
def test_tiled_phase_correlation_equals_untiled(crops, subpixel):
    settings = MatchSettings(method="phase", subpixel=subpixel, batch_nodes=16)
    whole = _untiled(*crops, settings)
    assert whole.valid.mean() > 0.8
    tiled = tiled_match(read_header(crops[0]), read_header(crops[1]), settings, tile_nodes=37)
    _assert_identical(tiled, whole)


@pytest.mark.parametrize(("step", "sigma", "fine"), [(8, None, 0), (2, 2.5, 0), (2, None, 6)])
def test_tiled_coarse_pass_equals_untiled(crops, step, sigma, fine):
    # The coarse pass on both scenes downsampled strip by strip (high-passed first, if asked),
    # then the fine pass tile by tile around its centres (+/-fine px: coarse to fine): bit for
    # bit the whole-image run.
    from glacierflow.prefilter import highpass

    settings = MatchSettings(step_px=step, search_px=8, pyramid_levels=2, fine_search_px=fine)
    a, b = read_scene(crops[0]), read_scene(crops[1])
    if sigma is None:
        images = (a.data, b.data, a.valid, b.valid)
    else:
        (ra, va), (rb, vb) = highpass(a.data, a.valid, sigma), highpass(b.data, b.valid, sigma)
        images = (ra, rb, va, vb)
    whole = match(*images, settings)
    assert whole.valid.mean() > 0.9
    tiled = tiled_match(
        read_header(crops[0]),
        read_header(crops[1]),
        settings,
        tile_nodes=900,
        prefilter="none" if sigma is None else "highpass",
        prefilter_sigma_px=sigma or 3.0,
    )
    _assert_identical(tiled, whole)


@pytest.mark.parametrize(
    ("kind", "method"), [("wallis", "ncc"), ("none", "orientation"), ("wallis", "orientation")]
)
def test_tiled_wallis_and_orientation_equal_untiled(crops, kind, method):
    # Filters with an image-wide constant (Wallis target spread, typical gradient): the
    # constant from the file's sampled strips, the filter tile by tile with its reach.
    from glacierflow.prefilter import prefilter

    settings = MatchSettings(method=method, batch_nodes=16)
    a, b = read_scene(crops[0]), read_scene(crops[1])
    (ra, va), (rb, vb) = prefilter(a.data, a.valid, kind), prefilter(b.data, b.valid, kind)
    whole = match(ra, rb, va, vb, settings)
    assert whole.valid.mean() > 0.8
    tiled = tiled_match(
        read_header(crops[0]), read_header(crops[1]), settings, tile_nodes=100, prefilter=kind
    )
    _assert_identical(tiled, whole)


def test_tiled_on_worker_processes_and_resume(crops, tmp_path):
    settings = MatchSettings(batch_nodes=16, workers=2)
    whole = _untiled(*crops, settings)
    heads = read_header(crops[0]), read_header(crops[1])
    work = tmp_path / "work"
    first = tiled_match(*heads, settings, tile_nodes=64, work_dir=work)
    _assert_identical(first, whole)
    saved = sorted(work.rglob("tile_*.npz"))
    assert len(saved) == len(plan_tiles(whole.grid, settings, 64))
    # A rerun reads every tile back instead of matching it again: remove one, damage one.
    saved[0].unlink()
    saved[1].write_bytes(b"not a tile")
    stamps = {p: p.stat().st_mtime_ns for p in saved[2:]}
    again = tiled_match(*heads, settings, tile_nodes=64, work_dir=work)
    _assert_identical(again, whole)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_dask_local_cluster_gives_the_same_product(crops):
    distributed = pytest.importorskip("distributed")
    settings = MatchSettings(batch_nodes=16)
    whole = _untiled(*crops, settings)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        tiled = tiled_match(
            read_header(crops[0]),
            read_header(crops[1]),
            settings,
            tile_nodes=64,
            scheduler=cluster.scheduler_address,
        )
    _assert_identical(tiled, whole)


def test_killed_run_resumes_to_the_same_product(tmp_path):
    """SIGKILL a real `glacierflow track` mid-run; the rerun finishes with the same product."""
    ref, sec, _ = demo_inputs()
    exe = [sys.executable, "-m", "glacierflow.cli", "track", str(ref), str(sec)]
    opts = ["--tile-nodes", "256", "--workers", "1", "--coreg", "none", "--no-progress"]
    out = tmp_path / "out"
    proc = subprocess.Popen([*exe, "-o", str(out), *opts], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    work = out / ".glacierflow-work"
    while time.monotonic() < deadline and len(list(work.rglob("tile_*.npz"))) < 5:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(work.rglob("tile_*.npz")))
    assert done_before >= 5
    assert not (out / "velocity.tif").exists()
    subprocess.run([*exe, "-o", str(out), *opts], check=True, capture_output=True)
    assert not work.exists()  # cleaned up once the products are complete
    clean = tmp_path / "clean"
    subprocess.run([*exe, "-o", str(clean), *opts], check=True, capture_output=True)
    with rasterio.open(out / "velocity.tif") as a, rasterio.open(clean / "velocity.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
