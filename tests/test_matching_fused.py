"""The compiled loops of the NCC kernels give the numpy kernels' values, bit for bit.

Kernels take their numpy form until numba's loops are loaded (in the background, see
``glacierflow.matching.ncc.compiled_loops``), so a run may mix both: any difference, even in the
last bit, would make results depend on timing (and break tiled == untiled). Each case matches a
crop of the real Yahtse pair, moved by a glacier-like field, once with the compiled loops and
once without, and requires every array to be identical.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

import glacierflow.matching.ncc_tiles as ncc_tiles
import glacierflow.matching.peaks as peaks
from glacierflow.matching import MatchSettings, fused, make_grid, match
from glacierflow.synthetic import glacier_field, warp_image


@pytest.fixture(scope="module")
def pair(yahtse_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(yahtse_dir / "LC80630182016200LGN00_B8_yahtse.TIF") as ds:
        ref = ds.read(1).astype(np.float64)[300:560, 300:600]
    dx, dy = glacier_field(ref.shape, peak_px=6.0)
    return ref, warp_image(ref, dx, dy)


def _run(monkeypatch, compiled: bool, ref, sec, settings, **kw):
    loops = (lambda values=0: fused) if compiled else (lambda values=0: None)
    monkeypatch.setattr(ncc_tiles, "compiled_loops", loops)
    monkeypatch.setattr(peaks, "compiled_loops", loops)
    res = match(ref, sec, settings=settings, **kw)
    return np.stack([res.dx_px, res.dy_px, res.corr, res.snr])


@pytest.mark.skipif(not fused.AVAILABLE, reason="numba is not installed")
@pytest.mark.parametrize(
    "options",
    [
        dict(step_px=8),  # block FFT
        dict(step_px=2),  # dense
        dict(step_px=3, chip_px=31, search_px=10),  # dense, odd chip
        dict(step_px=6, chip_px=24, search_px=12, ncc_kernel="fft"),  # block FFT, 6 px blocks
        dict(step_px=4, search_px=3),  # small surfaces: a lower Lanczos order
        dict(step_px=8, chip_px=24, search_px=12, ncc_kernel="fft"),  # 3 blocks per chip
    ],
)
def test_compiled_loops_give_numpy_values_bit_for_bit(monkeypatch, pair, options):
    ref, sec = pair
    settings = MatchSettings(**options)
    a = _run(monkeypatch, False, ref, sec, settings)
    b = _run(monkeypatch, True, ref, sec, settings)
    assert np.isfinite(a[0]).mean() > 0.5  # mostly matched: the loops were exercised
    np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not fused.AVAILABLE, reason="numba is not installed")
def test_compiled_loops_with_nodata_and_prior(monkeypatch, pair):
    """Gaps (masked surfaces with NaN shifts, SNR over finite values only) and a guided search
    (wider shared surfaces, each node's own window)."""
    ref, sec = pair
    sec_valid = np.ones(sec.shape, bool)
    sec_valid[:, 140:150] = False  # a stripe of nodata, as a Landsat 7 SLC-off gap
    rng = np.random.default_rng(3)
    for step in (2, 8):
        settings = MatchSettings(step_px=step)
        g = make_grid(ref.shape, chip_px=32, search_px=16, step_px=step)
        prior = rng.integers(-2, 3, g.shape).astype(float)
        kw = dict(sec_valid=sec_valid, prior_dx_px=prior, prior_dy_px=-prior)
        a = _run(monkeypatch, False, ref, sec, settings, **kw)
        b = _run(monkeypatch, True, ref, sec, settings, **kw)
        assert np.isfinite(a[0]).mean() > 0.3
        np.testing.assert_array_equal(a, b)


def test_small_runs_never_import_numba_large_ones_load_it_in_the_background(yahtse_dir):
    """numba costs about half a second of CPU per process: a run under
    ``COMPILE_AFTER_VALUES`` correlation values must not import it; past them it is loaded while
    the numpy kernels go on."""
    code = f"""
import sys, rasterio
import numpy as np
from glacierflow.matching import MatchSettings, match, ncc
with rasterio.open({str(yahtse_dir / "LC80630182016200LGN00_B8_yahtse.TIF")!r}) as ds:
    ref = ds.read(1).astype(np.float64)[:400, :400]
sec = np.roll(ref, 2, axis=1)
res = match(ref, sec, settings=MatchSettings(step_px=8))
assert res.valid.mean() > 0.9
assert "numba" not in sys.modules, "a small run imported numba"
ncc.COMPILE_AFTER_VALUES = 2 * res.dx_px.size * 33 * 33
match(ref, sec, settings=MatchSettings(step_px=8))
ncc._LOADING[0].join(300)
assert ncc.compiled_loops() is not None, "the compiled loops were not loaded"
"""
    if not fused.AVAILABLE:
        pytest.skip("numba is not installed")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
