"""Matching on real texture with known displacement: the physics of the correlator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from glacierflow.execute import Executor
from glacierflow.matching import MatchSettings, match
from glacierflow.matching.ncc import ncc_surfaces
from glacierflow.synthetic import glacier_field, shift_image, warp_image

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def yahtse_crop(yahtse_dir: Path) -> np.ndarray:
    with rasterio.open(yahtse_dir / "LC80630182016200LGN00_B8_yahtse.TIF") as ds:
        img = ds.read(1).astype(np.float64)
    return img[250:650, 250:750]  # rock, snow and crevassed ice, no water


@pytest.fixture(scope="module")
def everest() -> np.ndarray:
    with rasterio.open(DATA / "everest" / "LE71400412000304SGS00_B4.tif") as ds:
        return ds.read(1).astype(np.float64)


def _textured(image: np.ndarray, result, min_std: float) -> np.ndarray:
    """Nodes whose reference chip has real contrast (not saturated snow or deep shadow)."""
    g = result.grid
    h = g.chip_px // 2
    rr, cc = np.meshgrid(g.rows_px(), g.cols_px(), indexing="ij")
    stds = np.array(
        [
            image[r - h : r + h, c - h : c + h].std()
            for r, c in zip(rr.ravel(), cc.ravel(), strict=True)
        ]
    )
    return (stds >= min_std).reshape(g.shape)


def _constant_shift_errors(image: np.ndarray, subpixel: str) -> tuple[np.ndarray, np.ndarray]:
    """Errors (px) for shifts 0..1 px in 0.1 px steps in x and y; also mean x error per shift."""
    errors, bias = [], []
    for frac in np.round(np.arange(0.0, 1.01, 0.1), 2):
        for dx, dy in ((frac, 0.0), (0.0, frac), (frac, 1.0 - frac)):
            sec = shift_image(image, dx, dy)
            res = match(image, sec, settings=MatchSettings(subpixel=subpixel))
            ok = res.valid
            errors.append(np.hypot(res.dx_px[ok] - dx, res.dy_px[ok] - dy))
            if dy == 0.0:
                bias.append(np.mean(res.dx_px[ok] - dx))
    return np.concatenate(errors), np.array(bias)


@pytest.mark.parametrize("name", ["yahtse_crop", "everest"])
def test_constant_subpixel_shifts_are_recovered(name: str, request) -> None:
    image = request.getfixturevalue(name)
    err, bias = _constant_shift_errors(image, "lanczos")
    assert np.median(err) <= 0.03, np.median(err)
    assert np.percentile(err, 95) <= 0.10, np.percentile(err, 95)
    # Not pixel-locked: the mean error stays small at every fractional shift.
    assert np.max(np.abs(bias)) <= 0.02, bias


def test_three_point_parabola_is_pixel_locked(yahtse_crop: np.ndarray) -> None:
    """The cheap estimator shows the bias the default one removes (so the test can tell)."""
    _, bias_par = _constant_shift_errors(yahtse_crop, "parabola")
    _, bias_lan = _constant_shift_errors(yahtse_crop, "lanczos")
    assert np.max(np.abs(bias_par)) > 3 * np.max(np.abs(bias_lan))
    assert np.max(np.abs(bias_par)) > 0.025


@pytest.mark.parametrize("name", ["yahtse_crop", "everest"])
def test_glacier_field_with_misregistration(name: str, request) -> None:
    image = request.getfixturevalue(name)
    tx, ty = glacier_field(image.shape, peak_px=10.0, misregistration_px=(0.3, -0.2))
    assert np.hypot(tx, ty).max() > 9.5
    sec = warp_image(image, tx, ty)
    res = match(image, sec, settings=MatchSettings())
    rr, cc = np.meshgrid(res.grid.rows_px(), res.grid.cols_px(), indexing="ij")
    ex = res.dx_px - tx[rr, cc]
    ey = res.dy_px - ty[rr, cc]
    textured = _textured(image, res, min_std=0.05 * image.std())
    ok = textured & res.valid
    assert ok.sum() >= 0.8 * textured.sum()
    err = np.hypot(ex[ok], ey[ok])
    assert np.median(err) <= 0.08, np.median(err)
    # The fast-moving band is really tracked, not just the slow margins.
    fast = ok & (np.hypot(tx[rr, cc], ty[rr, cc]) > 5)
    assert fast.sum() > 20
    assert np.median(np.hypot(ex[fast], ey[fast])) <= 0.15


def test_ncc_matches_opencv(yahtse_crop: np.ndarray) -> None:
    """Same correlation surface as OpenCV's TM_CCOEFF_NORMED, an independent implementation."""
    cv2 = pytest.importorskip("cv2")
    img = yahtse_crop.astype(np.float32)
    sec = shift_image(img, 3.4, -2.7).astype(np.float32)
    rng = np.random.default_rng(0)
    rows = rng.integers(40, img.shape[0] - 40, 30)
    cols = rng.integers(40, img.shape[1] - 40, 30)
    chips = np.stack(
        [img[r - 16 : r + 16, c - 16 : c + 16] for r, c in zip(rows, cols, strict=True)]
    )
    wins = np.stack(
        [sec[r - 32 : r + 32, c - 32 : c + 32] for r, c in zip(rows, cols, strict=True)]
    )
    ours = ncc_surfaces(chips, wins)
    theirs = np.stack(
        [cv2.matchTemplate(w, t, cv2.TM_CCOEFF_NORMED) for t, w in zip(chips, wins, strict=True)]
    )
    # OpenCV accumulates in float32 and is the less exact of the two where the window's local
    # mean is far from its global one (up to 2e-3 there); both agree on every peak.
    np.testing.assert_allclose(ours, theirs, atol=3e-3)
    flat = ours.reshape(len(ours), -1)
    np.testing.assert_array_equal(flat.argmax(1), theirs.reshape(len(ours), -1).argmax(1))
    # And ours agrees with a float64 brute-force coefficient to 1e-4.
    for n in (0, 7, 14, 21, 27):
        for ky, kx in ((0, 0), (16, 16), (13, 19), (32, 5), (0, 8), (1, 23)):
            a = chips[n].astype(np.float64).ravel()
            b = wins[n, ky : ky + 32, kx : kx + 32].astype(np.float64).ravel()
            assert abs(ours[n, ky, kx] - np.corrcoef(a, b)[0, 1]) < 1e-4


def test_masked_ncc_ignores_nodata(yahtse_crop: np.ndarray) -> None:
    """Gaps filled with zeros must not take part: the true peak survives a 30 % gap."""
    img = yahtse_crop
    sec = shift_image(img, 2.3, 1.6)
    valid_ref = np.ones(img.shape, bool)
    valid_sec = np.ones(img.shape, bool)
    # Stripes of nodata (zeros) in both images at different rows, like SLC-off gaps.
    for r0 in range(0, img.shape[0], 20):
        valid_ref[r0 : r0 + 4] = False
        valid_sec[r0 + 9 : r0 + 14] = False
    ref0 = np.where(valid_ref, img, 0.0)
    sec0 = np.where(valid_sec, sec, 0.0)
    res = match(ref0, sec0, valid_ref, valid_sec, MatchSettings())
    ok = res.valid
    assert ok.mean() > 0.9
    err = np.hypot(res.dx_px[ok] - 2.3, res.dy_px[ok] - 1.6)
    assert np.median(err) <= 0.05
    assert np.mean(err > 1.0) <= 0.01
    # Without masks, the zero stripes dominate and many nodes lock onto them.
    naive = match(ref0, sec0, settings=MatchSettings())
    nerr = np.hypot(naive.dx_px - 2.3, naive.dy_px - 1.6)
    assert np.nanmedian(nerr) > 2 * np.median(err)


def test_chip_of_mostly_nodata_is_not_matched(yahtse_crop: np.ndarray) -> None:
    img = yahtse_crop
    valid = np.ones(img.shape, bool)
    valid[:, :250] = False
    res = match(np.where(valid, img, 0), img, valid, None, MatchSettings())
    cols = res.grid.cols_px()
    left = cols + 16 <= 250 + 8  # more than half of the chip in the gap
    assert not res.valid[:, left[: res.grid.nx]].any()
    assert res.valid[:, cols - 16 >= 250].mean() > 0.9


def test_workers_give_identical_results(yahtse_crop: np.ndarray) -> None:
    sec = shift_image(yahtse_crop, 0.4, 0.7)
    one = match(yahtse_crop, sec, settings=MatchSettings(workers=1, batch_nodes=256))
    settings = MatchSettings(workers=2, batch_nodes=256)
    with Executor(settings.workers) as executor:
        assert executor.kind == "processes"
        two = match(yahtse_crop, sec, settings=settings, executor=executor)
    np.testing.assert_array_equal(one.dx_px, two.dx_px)
    np.testing.assert_array_equal(one.snr, two.snr)


@pytest.mark.parametrize("step", [2, 8])
def test_ncc_paths_agree_with_brute_force(yahtse_crop: np.ndarray, step: int) -> None:
    """Per-node FFT, shared block FFT and dense box-filtered products: one coefficient.

    The three NCC paths are chosen by grid density; on a tile of real texture with a shifted
    search centre each must give the float64 correlation coefficient of chip and window.
    """
    from math import gcd

    from glacierflow.matching.ncc import PreparedImage, ncc_nodes
    from glacierflow.matching.ncc_tiles import ncc_dense, ncc_grid

    c, s, off = 32, 16, (2, -3)
    sec_img = warp_image(yahtse_crop, *glacier_field(yahtse_crop.shape, peak_px=4.0))
    ref, sec = PreparedImage(yahtse_crop), PreparedImage(sec_img)
    rows = 60 + step * np.arange(9)
    cols = 70 + step * np.arange(7)
    ref_tab = ref.tables(0, 0, *ref.shape)
    sec_tab = sec.tables(0, 0, *sec.shape)
    rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    surfaces = {
        "dense": ncc_dense(ref, sec, ref_tab, sec_tab, rows, cols, c, s, off),
        "grid": ncc_grid(ref, sec, ref_tab, sec_tab, rows, cols, c, s, gcd(c, step), off),
        "nodes": ncc_nodes(ref, sec, ref_tab, sec_tab, rr, cc, c, s, rr + off[0], cc + off[1]),
    }
    rng = np.random.default_rng(3)
    for n in rng.choice(rr.size, 12, replace=False):
        t = ref.image[rr[n] - 16 : rr[n] + 16, cc[n] - 16 : cc[n] + 16].astype(np.float64)
        for ky, kx in ((0, 0), (16, 16), (15, 18), (32, 5), (7, 32)):
            r0 = rr[n] - 16 - s + off[0] + ky
            c0 = cc[n] - 16 - s + off[1] + kx
            w = sec.image[r0 : r0 + c, c0 : c0 + c].astype(np.float64)
            expected = np.corrcoef(t.ravel(), w.ravel())[0, 1]
            for name, surf in surfaces.items():
                assert abs(surf[n, ky, kx] - expected) < 1e-4, (name, n, ky, kx)
    # And the same integer peak everywhere.
    peaks = {k: v.reshape(v.shape[0], -1).argmax(1) for k, v in surfaces.items()}
    np.testing.assert_array_equal(peaks["dense"], peaks["nodes"])
    np.testing.assert_array_equal(peaks["grid"], peaks["nodes"])
