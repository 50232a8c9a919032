"""Correlators, guided search and SLC-off gaps on real texture with known displacement."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from numpy.lib.stride_tricks import sliding_window_view

from glacierflow.execute import Executor
from glacierflow.matching import MatchSettings, make_grid, match
from glacierflow.prefilter import orientation
from glacierflow.synthetic import (
    glacier_field,
    low_contrast,
    shift_image,
    slc_off_mask,
    warp_image,
)

#: (method, sub-pixel estimator, largest allowed pixel locking in px)
ESTIMATORS = [("phase", "dft", 0.01), ("ncc", "lanczos", 0.01), ("orientation", "lanczos", 0.03)]


@pytest.fixture(scope="module")
def crop(yahtse_dir) -> np.ndarray:
    with rasterio.open(yahtse_dir / "LC80630182016200LGN00_B8_yahtse.TIF") as ds:
        img = ds.read(1).astype(np.float64)
    return img[250:650, 250:750]  # rock, snow and crevassed ice, no water


def textured(image: np.ndarray, res, share: float = 0.05) -> np.ndarray:
    """Nodes whose reference chip has real contrast (not saturated snow or cloud)."""
    g = res.grid
    h = g.chip_px // 2
    rr, cc = np.meshgrid(g.rows_px() - h, g.cols_px() - h, indexing="ij")
    std = sliding_window_view(image, (g.chip_px, g.chip_px))[rr, cc].std(axis=(-2, -1))
    return std >= share * image.std()


def field_errors(res, tx, ty) -> tuple[np.ndarray, np.ndarray]:
    rr, cc = np.meshgrid(res.grid.rows_px(), res.grid.cols_px(), indexing="ij")
    ex = res.dx_px - (tx[rr, cc] if np.ndim(tx) else tx)
    ey = res.dy_px - (ty[rr, cc] if np.ndim(ty) else ty)
    return ex, ey


@pytest.mark.parametrize(("method", "subpixel", "max_lock"), ESTIMATORS)
def test_constant_subpixel_shifts_each_method(crop, method, subpixel, max_lock) -> None:
    """Shifts of 0..1 px in 0.1 px steps, in x and in y: small errors, no pixel locking."""
    settings = MatchSettings(method=method, subpixel=subpixel, step_px=16)
    errors, bias = [], []
    for frac in np.round(np.arange(0.0, 1.01, 0.1), 2):
        for dx, dy in ((frac, 0.0), (0.0, frac)):
            res = match(crop, shift_image(crop, dx, dy), settings=settings)
            ok = res.valid
            assert ok.mean() > 0.97
            errors.append(np.hypot(res.dx_px[ok] - dx, res.dy_px[ok] - dy))
            bias.append(np.mean(res.dx_px[ok] - dx) if dy == 0 else np.mean(res.dy_px[ok] - dy))
    err = np.concatenate(errors)
    assert np.median(err) <= 0.03, np.median(err)
    assert np.percentile(err, 95) <= 0.1, np.percentile(err, 95)
    assert np.max(np.abs(bias)) <= max_lock, np.round(bias, 4)


@pytest.mark.parametrize("method", ["phase", "orientation"])
def test_glacier_field_each_method(crop, method) -> None:
    tx, ty = glacier_field(crop.shape, peak_px=10.0, misregistration_px=(0.3, -0.2))
    res = match(crop, warp_image(crop, tx, ty), settings=MatchSettings(method=method))
    ex, ey = field_errors(res, tx, ty)
    tex = textured(crop, res)
    ok = tex & res.valid
    assert ok.sum() >= 0.9 * tex.sum()
    assert np.median(np.hypot(ex[ok], ey[ok])) <= 0.08
    rr, cc = np.meshgrid(res.grid.rows_px(), res.grid.cols_px(), indexing="ij")
    fast = ok & (np.hypot(tx[rr, cc], ty[rr, cc]) > 5)
    assert fast.sum() > 20
    assert np.median(np.hypot(ex[fast], ey[fast])) <= 0.15


def test_low_contrast_texture_one_method_holds(crop) -> None:
    """5 % of the contrast, 20 DN of noise per date: one method keeps nearly every node."""
    tx, ty = glacier_field(crop.shape, peak_px=10.0, misregistration_px=(0.3, -0.2))
    sec = warp_image(crop, tx, ty)
    ref_faint = low_contrast(crop, 0.05, 20.0, seed=1)
    sec_faint = low_contrast(sec, 0.05, 20.0, seed=2)
    assert ref_faint.std() < 0.06 * crop.std()
    scores = {}
    for method in ("ncc", "phase", "orientation"):
        res = match(ref_faint, sec_faint, settings=MatchSettings(method=method))
        ex, ey = field_errors(res, tx, ty)
        tex = textured(crop, res)  # textured in the original image
        ok = tex & res.valid
        err = np.hypot(ex[ok], ey[ok])
        scores[method] = (ok.sum() / tex.sum(), np.median(err), np.mean(err > 1.0))
    passing = [
        m for m, (v, med, gross) in scores.items() if v >= 0.8 and med <= 0.15 and gross <= 0.03
    ]
    assert passing, scores
    assert "orientation" in passing, scores


@pytest.fixture(scope="module")
def slc_pair(crop):
    """A known-displacement pair with SLC-off gaps painted on both dates (nodata 0)."""
    tx, ty = glacier_field(crop.shape, peak_px=6.0, width_frac=0.35, misregistration_px=(0.3, -0.2))
    sec = warp_image(crop, tx, ty)
    gap_ref = slc_off_mask(crop.shape, period_lines=32, max_gap_px=14, phase=0)
    gap_sec = slc_off_mask(crop.shape, period_lines=32, max_gap_px=14, phase=13)
    assert 0.15 < gap_ref.mean() < 0.3
    return dict(
        ref=crop,
        sec=sec,
        ref0=np.where(gap_ref, 0.0, crop),
        sec0=np.where(gap_sec, 0.0, sec),
        gap_ref=gap_ref,
        gap_sec=gap_sec,
        tx=tx,
        ty=ty,
    )


def _locked(res, pair) -> np.ndarray:
    """Nodes that returned the displacement of the gap pattern (13 lines, or 13 - 32)."""
    return (np.abs(res.dy_px - 13) < 1) | (np.abs(res.dy_px + 19) < 1)


def test_naive_ncc_locks_onto_slc_off_stripes(slc_pair) -> None:
    """Zero-filled gaps without masks: the stripes outshine the texture (so the test can fail)."""
    p = slc_pair
    res = match(p["ref0"], p["sec0"], settings=MatchSettings(step_px=16))
    tex = textured(p["ref"], res)
    assert _locked(res, p)[tex].mean() > 0.5


@pytest.mark.parametrize("method", ["ncc", "phase", "orientation"])
def test_slc_off_gaps_take_no_part(slc_pair, method) -> None:
    p = slc_pair
    settings = MatchSettings(method=method)
    clean = match(p["ref"], p["sec"], settings=settings)
    res = match(p["ref0"], p["sec0"], ~p["gap_ref"], ~p["gap_sec"], settings)
    tex = textured(p["ref"], res)
    ex0, ey0 = field_errors(clean, p["tx"], p["ty"])
    ex, ey = field_errors(res, p["tx"], p["ty"])
    ok = tex & res.valid
    err = np.hypot(ex[ok], ey[ok])
    base = np.median(np.hypot(ex0, ey0)[tex & clean.valid])
    assert ok.sum() >= 0.85 * tex.sum()
    # Nothing locks onto the stripes, and few gross errors.
    assert not _locked(res, p)[ok].any()
    assert np.mean(err > 1.0) <= 0.03
    if method == "phase":
        # Phase correlation has no exact masked form: nodes with gaps are matched by masked
        # NCC, so the comparison is with NCC's error without gaps.
        ncc = match(p["ref"], p["sec"], settings=MatchSettings())
        ex0, ey0 = field_errors(ncc, p["tx"], p["ty"])
        base = np.median(np.hypot(ex0, ey0)[tex & ncc.valid])
    assert np.median(err) <= 1.5 * base, (np.median(err), base)


@pytest.mark.parametrize("method", ["ncc", "phase", "orientation"])
def test_slc_off_error_has_no_stripe_pattern(crop, method) -> None:
    """A constant shift seen through SLC-off gaps: the error must not follow the gaps.

    (With a strained field, a chip crossed by gaps measures the motion of its valid pixels, whose
    centre is off the node: that is physics, not a stripe artefact, so a constant shift is used.)
    """
    dx, dy = 2.4, -1.7
    gap_ref = slc_off_mask(crop.shape, period_lines=32, max_gap_px=14, phase=0)
    gap_sec = slc_off_mask(crop.shape, period_lines=32, max_gap_px=14, phase=13)
    res = match(
        np.where(gap_ref, 0.0, crop),
        np.where(gap_sec, 0.0, shift_image(crop, dx, dy)),
        ~gap_ref,
        ~gap_sec,
        MatchSettings(method=method),
    )
    ex, ey = res.dx_px - dx, res.dy_px - dy
    err = np.hypot(ex, ey)
    ok = textured(crop, res) & res.valid & (err < 1)
    assert np.mean(err[textured(crop, res) & res.valid] > 1) <= 0.03
    # Mean error by the node's line within the 32-line gap period.
    rows = res.grid.rows_px()
    for e in (ex, ey):
        by_line = [np.nanmean(np.where(ok, e, np.nan)[(rows % 32) == k]) for k in set(rows % 32)]
        assert np.ptp(by_line) <= 0.02, np.round(by_line, 3)
    # Error against the share of gap pixels in the node's chip (either date).
    g = res.grid
    h = g.chip_px // 2
    rr, cc = np.meshgrid(g.rows_px() - h, g.cols_px() - h, indexing="ij")
    both = (gap_ref | gap_sec).astype(float)
    share = sliding_window_view(both, (g.chip_px, g.chip_px))[rr, cc].mean(axis=(-2, -1))
    for e in (ex, ey):
        r = np.corrcoef(share[ok], e[ok])[0, 1]
        assert abs(r) < 0.3, r


def test_chip_mostly_gap_is_invalid_not_guessed(slc_pair) -> None:
    """With the 14-px gaps and a small chip, nodes between wide gaps are dropped."""
    p = slc_pair
    res = match(
        p["ref0"], p["sec0"], ~p["gap_ref"], ~p["gap_sec"], MatchSettings(chip_px=16, step_px=8)
    )
    g = res.grid
    h = g.chip_px // 2
    rr, cc = np.meshgrid(g.rows_px() - h, g.cols_px() - h, indexing="ij")
    gap_share = sliding_window_view(p["gap_ref"].astype(float), (16, 16))[rr, cc].mean((-2, -1))
    assert not res.valid[gap_share > 0.5].any()


@pytest.mark.parametrize("method", ["ncc", "phase"])
def test_guided_search_reaches_beyond_the_search_window(crop, method) -> None:
    """A 24 px motion with a +/-16 px search: found with a coarse pass, or with a prior."""
    dx, dy = 24.35, -19.6
    sec = shift_image(crop, dx, dy)
    settings = MatchSettings(method=method, step_px=16)
    plain = match(crop, sec, settings=settings)
    ok = plain.valid & (np.hypot(plain.dx_px - dx, plain.dy_px - dy) < 0.5)
    assert ok.mean() < 0.2
    coarse = match(crop, sec, settings=MatchSettings(method=method, step_px=16, pyramid_levels=2))
    g = make_grid(crop.shape, chip_px=32, search_px=16, step_px=16)
    prior_dx = np.full(g.shape, 22.0)
    prior_dy = np.full(g.shape, -17.0)
    prior_dy[0, 0] = np.nan  # unknown prior: searched around zero
    guided = match(crop, sec, settings=settings, prior_dx_px=prior_dx, prior_dy_px=prior_dy)
    for res in (coarse, guided):
        # Nodes near the edges see content wrapped by the Fourier shift; the rest must agree.
        inner = np.zeros(g.shape, bool)
        inner[2:-2, 2:-2] = True
        err = np.hypot(res.dx_px - dx, res.dy_px - dy)[inner]
        assert np.mean(err < 0.1) > 0.9, np.nanmedian(err)
    assert guided.grid == plain.grid


def test_coarse_to_fine_matches_the_full_search(crop) -> None:
    """Coarse to fine (a half-resolution pass with the same footprint and reach, then +/-8 px
    around its offsets) on a sheared glacier moving up to 24 px, beyond half the +/-32 px
    search: as accurate as the full search, at the same nodes, including the fast ones."""
    tx, ty = glacier_field(crop.shape, peak_px=24.0, direction_deg=240.0, width_frac=0.35)
    sec = warp_image(crop, tx, ty)
    full_settings = MatchSettings(chip_px=64, search_px=32, step_px=4)
    full = match(crop, sec, settings=full_settings)
    fine = match(
        crop,
        sec,
        settings=full_settings.model_copy(update={"pyramid_levels": 2, "fine_search_px": 8}),
    )
    assert fine.grid == full.grid
    use = textured(crop, full)
    e_full, e_fine = (np.hypot(*field_errors(r, tx, ty))[use] for r in (full, fine))
    ok_full, ok_fine = np.isfinite(e_full), np.isfinite(e_fine)
    assert ok_fine.mean() >= ok_full.mean() - 0.01
    assert np.median(e_fine[ok_fine]) <= np.median(e_full[ok_full]) + 0.002
    assert np.percentile(e_fine[ok_fine], 90) <= np.percentile(e_full[ok_full], 90) + 0.005
    rr, cc = np.meshgrid(full.grid.rows_px(), full.grid.cols_px(), indexing="ij")
    fast = (np.hypot(tx, ty)[rr, cc] > 16)[use]
    assert fast.sum() > 50
    # The shear across a 64 px chip (gradients up to 0.33) limits both; the fast ice is found.
    assert np.mean(e_fine[fast] < 0.5) >= np.mean(e_full[fast] < 0.5) - 0.01
    assert np.mean(e_fine[fast] < 1.0) > 0.9


def test_retry_with_larger_chip_reports_chip_px(crop) -> None:
    """Chips of 16 px that are mostly nodata fail; their 48 px retries succeed."""
    valid = np.ones(crop.shape, bool)
    valid[:, 200:212] = False
    sec = shift_image(crop, 0.3, -0.4)
    settings = MatchSettings(chip_px=16, step_px=8, retry_chip_px=(48,), retry_below_corr=0)
    res = match(np.where(valid, crop, 0), sec, valid, None, settings)
    one = MatchSettings(chip_px=16, step_px=8, retry_chip_px=())
    once = match(np.where(valid, crop, 0), sec, valid, None, one)
    retried = ~once.valid & res.valid
    assert retried.sum() >= res.grid.ny  # at least the column of nodes on the nodata stripe
    np.testing.assert_array_equal(res.chip_px[retried], 48)
    np.testing.assert_array_equal(res.chip_px[once.valid], 16)
    err = np.hypot(res.dx_px - 0.3, res.dy_px + 0.4)[retried]
    assert np.median(err) < 0.05
    # Results of first-chip nodes are untouched by the retry.
    np.testing.assert_array_equal(res.dx_px[once.valid], once.dx_px[once.valid])


def test_orientation_images_can_be_given_directly(crop) -> None:
    sec = shift_image(crop, 1.3, 0.6)
    direct = match(crop, sec, settings=MatchSettings(method="orientation", step_px=16))
    ro, rv = orientation(crop)
    so, sv = orientation(sec)
    given = match(ro, so, rv, sv, MatchSettings(method="orientation", step_px=16))
    np.testing.assert_array_equal(direct.dx_px, given.dx_px)
    # Phase correlation of orientation images works too.
    ph = match(ro, so, rv, sv, MatchSettings(method="phase", subpixel="dft", step_px=16))
    assert np.nanmedian(np.hypot(ph.dx_px - 1.3, ph.dy_px - 0.6)) < 0.05


def test_peak_correlation_of_a_perfect_match_is_one(crop) -> None:
    for method in ("ncc", "phase", "orientation"):
        res = match(crop, crop, settings=MatchSettings(method=method, step_px=32))
        assert res.valid.all()
        # (Phase: components weaker than 1e-4 of the mean are damped, not whitened.)
        np.testing.assert_allclose(res.corr, 1.0, atol=0.03)
        # Sub-pixel peaks of a surface that is not symmetric need not sit exactly on 0.
        assert np.median(np.abs(res.dx_px)) < 0.02
        assert np.median(np.abs(res.dy_px)) < 0.02


def test_workers_give_identical_results_for_phase(crop) -> None:
    sec = shift_image(crop, 0.4, 0.7)
    one = match(crop, sec, settings=MatchSettings(method="phase", step_px=16, workers=1))
    with Executor(2) as executor:
        two = match(
            crop, sec, settings=MatchSettings(method="phase", step_px=16), executor=executor
        )
    np.testing.assert_array_equal(one.dx_px, two.dx_px)


def test_settings_and_inputs_are_checked(crop) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        MatchSettings(method="fft")
    with pytest.raises(ValueError, match="dft"):
        MatchSettings(method="ncc", subpixel="dft")
    with pytest.raises(ValueError, match="retry_chip_px"):
        MatchSettings(retry_chip_px=(2,))
    with pytest.raises(ValueError, match="pyramid_levels"):
        MatchSettings(pyramid_levels=0)
    with pytest.raises(ValueError, match="fine_search_px"):
        MatchSettings(search_px=8, fine_search_px=12)
    with pytest.raises(ValueError, match="fine_search_px"):
        MatchSettings(chip_px=6, pyramid_levels=2, fine_search_px=4)
    ro, _ = orientation(crop)
    with pytest.raises(ValueError, match="complex"):
        match(ro, ro)
    with pytest.raises(ValueError, match="node grid"):
        match(crop, crop, prior_dx_px=np.zeros((3, 3)), prior_dy_px=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="both"):
        match(crop, crop, prior_dx_px=np.zeros((3, 3)))


def test_slc_off_mask_geometry() -> None:
    """Wedges: no gap on the centre column, 14 px at the edges, every 32 lines, moved by phase."""
    gap = slc_off_mask((320, 501), period_lines=32, max_gap_px=14, phase=0)
    assert not gap[:, 250].any()
    widths = gap[:, [0, 125, 500]].sum(axis=0) / 10  # gap lines per period
    np.testing.assert_allclose(widths, [14, 7, 14], atol=1)
    np.testing.assert_array_equal(gap[:288], gap[32:])  # repeats every 32 lines
    moved = slc_off_mask((320, 501), period_lines=32, max_gap_px=14, phase=13)
    np.testing.assert_array_equal(moved[13:], gap[:-13])
    with pytest.raises(ValueError, match="fill a period"):
        slc_off_mask((10, 10), period_lines=8, max_gap_px=9)


@pytest.mark.parametrize(("step", "kernel"), [(8, "fft"), (2, "dense"), (4, "auto")])
def test_guided_tiles_share_a_wider_search(crop, step, kernel) -> None:
    """Nodes of a tile with different search centres (a prior on a glacier field) get from the
    shared kernels, through one wider search, what one FFT per node gives them."""
    from glacierflow.matching.ncc import PreparedImage
    from glacierflow.matching.nodes import _ncc_kernel, match_nodes, match_tile

    # A smooth ramp (2 to 10 px right, -1 to -5 px down): centres differ across a tile, and
    # a chip's mean motion is its centre's, so the result can be checked against the field.
    yy, xx = np.mgrid[: crop.shape[0], : crop.shape[1]].astype(float)
    tx, ty = 2.0 + 0.016 * xx, -1.0 - 0.01 * yy
    sec = warp_image(crop, tx, ty)
    settings = MatchSettings(step_px=step, search_px=6, ncc_kernel=kernel)
    ref_p, sec_p = PreparedImage(crop), PreparedImage(sec)
    rows = 150 + step * np.arange(10)
    cols = 150 + step * np.arange(30)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    # Search centres from the true field, rounded: they differ by several pixels in the tile.
    cy, cx = np.rint(ty[rr, cc]).astype(int), np.rint(tx[rr, cc]).astype(int)
    reach = (max(np.ptp(cx), np.ptp(cy)) + 1) // 2
    assert reach >= 1
    expected = {"fft": ("grid",), "dense": ("dense",), "auto": ("grid", "dense")}[kernel]
    assert _ncc_kernel(settings, 32, reach) in expected
    shared = match_tile(ref_p, sec_p, rows, cols, settings, cy, cx)
    alone = match_nodes(ref_p, sec_p, rr.ravel(), cc.ravel(), settings, cy.ravel(), cx.ravel())
    for a, b in zip(shared, alone, strict=True):
        np.testing.assert_allclose(a.ravel(), b, atol=2e-3)
    # And both follow the field (up to 10 px of motion with a 6 px radius).
    err = np.hypot(shared[0] - tx[rr, cc], shared[1] - ty[rr, cc])
    assert np.isfinite(err).mean() > 0.9
    assert np.nanmedian(err) < 0.1


def test_masked_dense_kernel_is_the_masked_coefficient(slc_pair) -> None:
    """Box-filtered masked NCC (dense SLC-off grids) equals the per-node masked correlation."""
    from glacierflow.matching.grid import extract_chips
    from glacierflow.matching.ncc import PreparedImage, ncc_surfaces
    from glacierflow.matching.ncc_tiles import ncc_dense_masked

    p = slc_pair
    ref = PreparedImage(p["ref"], ~p["gap_ref"])
    sec = PreparedImage(p["sec"], ~p["gap_sec"])
    c, s, off = 32, 8, (1, -2)
    rows = 100 + 2 * np.arange(8)
    cols = 120 + 2 * np.arange(9)
    dense = ncc_dense_masked(ref, sec, rows, cols, c, s, off)
    rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    chips, cv = (extract_chips(a, rr, cc, c, 16) for a in (ref.image, ref.valid))
    wr, wc = rr + off[0], cc + off[1]
    wins, wv = (extract_chips(a, wr, wc, c + 2 * s, 16 + s) for a in (sec.image, sec.valid))
    per_node = ncc_surfaces(chips, wins, cv, wv)
    assert cv.mean() < 0.9  # the chips do hold gaps
    np.testing.assert_array_equal(np.isnan(dense), np.isnan(per_node))
    np.testing.assert_allclose(dense, per_node, atol=1e-4, equal_nan=True)


def test_slc_off_dense_grid_takes_the_masked_dense_kernel(slc_pair) -> None:
    """At step 2 on an SLC-off pair the tile goes to the masked dense kernel and finds what the
    per-node masked path finds."""
    from glacierflow.matching.nodes import _masked_dense_pays

    p = slc_pair
    settings = MatchSettings(step_px=2, search_px=8)
    assert _masked_dense_pays(settings, 32, 0, "dense", 10, 90)
    crop = (slice(60, 220), slice(80, 300))
    args = (p["ref"][crop], p["sec"][crop], ~p["gap_ref"][crop], ~p["gap_sec"][crop])
    tiled = match(*args, settings=settings)
    one_by_one = match(*args, settings=settings.model_copy(update={"ncc_kernel": "fft"}))
    both = tiled.valid & one_by_one.valid
    assert both.mean() > 0.8
    assert np.abs(tiled.dx_px - one_by_one.dx_px)[both].max() < 2e-3
    assert np.abs(tiled.dy_px - one_by_one.dy_px)[both].max() < 2e-3
