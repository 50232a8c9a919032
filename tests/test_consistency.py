"""Consistency and plausibility checks that catch coherent mismatches, on the real Yahtse pair.

In the crevassed neck of Yahtse Glacier (x 480.0-480.7 km, y 6671.8-6672.4 km) the ice moves
about 17 to 22 px in the 16 days, beyond the default +/-16 px search; one crevasse spacing
(about 24 px) back, the crevasses line up again, and the matcher finds a coherent patch of
vectors pointing up-glacier at 1,500-2,600 m/yr. The forward-backward check, the cluster test
that its rejections feed, the speed limit and the DEM flow-direction test are checked here
against that real failure, against the same chips matched with a search wide enough for the
truth, and against the surface slope of the SRTM DEM of the shared Yahtse folder. The check is
on by default; the filter judges the closures of the nodes in doubt only (a weak peak, or an
offset straying from its neighbours), and removes weak peaks that stray 2 px or more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from scipy import ndimage

from glacierflow.demo import demo_inputs
from glacierflow.errors import GlacierflowError, SettingsError
from glacierflow.filters import QUALITY_DTYPE, FilterSettings, Quality, filter_offsets
from glacierflow.matching import MatchSettings, match
from glacierflow.matching.consistency import UNAMBIGUOUS_SNR, closure_px
from glacierflow.matching.ncc import PreparedImage
from glacierflow.synthetic import glacier_field, warp_image
from glacierflow.track import track

#: The neck of Yahtse Glacier, image pixels of the bundled crop (columns, rows): x 480.0-480.7
#: km, y 6671.8-6672.4 km.
NECK_COLS, NECK_ROWS = (995, 1042), (612, 652)
#: A window around the neck (column, row, width, height).
NECK_WINDOW = Window(900, 520, 240, 240)


def _window(window: Window) -> tuple[np.ndarray, np.ndarray]:
    ref_path, sec_path, _ = demo_inputs()
    with rasterio.open(ref_path) as a, rasterio.open(sec_path) as b:
        return (
            a.read(1, window=window).astype(np.float64),
            b.read(1, window=window).astype(np.float64),
        )


def _neck_nodes(res, window: Window) -> np.ndarray:
    rr, cc = np.meshgrid(
        res.grid.rows_px() + window.row_off, res.grid.cols_px() + window.col_off, indexing="ij"
    )
    inside = (cc >= NECK_COLS[0]) & (cc <= NECK_COLS[1])
    return inside & (rr >= NECK_ROWS[0]) & (rr <= NECK_ROWS[1]) & res.valid


def test_aliased_neck_matches_do_not_return_home() -> None:
    # The same chips, matched with the default search (true peak out of reach: the aliased,
    # up-glacier peak wins) and with a search wide enough for the truth (down-glacier).
    ref, sec = _window(NECK_WINDOW)
    narrow = match(ref, sec, None, None, MatchSettings(search_px=16, backmatch_px=2))
    wide = match(ref, sec, None, None, MatchSettings(search_px=32, backmatch_px=2))
    aliased = _neck_nodes(narrow, NECK_WINDOW) & (narrow.dy_px < -2)  # moving up-glacier
    true = _neck_nodes(wide, NECK_WINDOW) & (wide.dy_px > 10)  # down-glacier, 10+ px
    assert aliased.sum() >= 10 and true.sum() >= 10
    fail_aliased = np.mean(narrow.closure_px[aliased] > FilterSettings().max_closure_px)
    fail_true = np.mean(wide.closure_px[true] > FilterSettings().max_closure_px)
    assert fail_aliased >= 0.4, fail_aliased
    assert fail_true <= 0.15, fail_true
    assert np.nanmedian(narrow.closure_px[aliased]) > 2 * np.nanmedian(wide.closure_px[true])


def test_closure_of_a_known_field_in_real_texture_is_sub_pixel() -> None:
    # True matches of a known glacier-like field warped into real texture close within the
    # sub-pixel noise; a patch of the secondary replaced by unrelated real texture (a
    # mismatch the search still finds partners for) does not.
    ref, _ = _window(Window(300, 250, 400, 320))
    tx, ty = glacier_field(ref.shape, peak_px=8.0)
    sec = warp_image(ref, tx, ty)
    other, _ = _window(Window(50, 50, 400, 320))
    patch = (slice(100, 200), slice(150, 250))
    sec[patch] = other[patch]
    res = match(ref, sec, None, None, MatchSettings(backmatch_px=2))
    rr, cc = np.meshgrid(res.grid.rows_px(), res.grid.cols_px(), indexing="ij")
    half = res.grid.chip_px // 2 + res.grid.search_px
    inside = (rr - half >= 100) & (rr + half < 200) & (cc - half >= 150) & (cc + half < 250)
    clear = (np.abs(rr - 150) > 50 + 2 * half) | (np.abs(cc - 200) > 50 + 2 * half)
    checked = np.isfinite(res.closure_px)
    tol = FilterSettings().max_closure_px
    outside_fail = np.mean(res.closure_px[clear & checked] > tol)
    inside_fail = np.mean(res.closure_px[inside & res.valid] > tol)
    assert outside_fail <= 0.03, outside_fail
    assert inside_fail >= 0.5, inside_fail
    assert np.median(res.closure_px[clear & checked]) < 0.15


def test_closure_is_checked_only_where_it_can_be() -> None:
    ref, sec = _window(Window(900, 600, 120, 120))
    rows = np.array([60, 60, 60])
    cols = np.array([60, 60, 60])
    dx = np.array([np.nan, 12.0, 0.3])
    dy = np.array([1.0, 12.0, 0.2])
    sec_valid = np.ones_like(sec, bool)
    sec_valid[84:88, 84:88] = False  # nodata in the second node's secondary chip only
    out = closure_px(PreparedImage(ref), PreparedImage(sec, sec_valid), rows, cols, dx, dy, 32)
    assert np.isnan(out[0]) and np.isnan(out[1]) and np.isfinite(out[2])
    off = closure_px(PreparedImage(ref), PreparedImage(sec), rows, cols, dx, dy, 32, 0)
    assert np.all(np.isnan(off))
    # An unambiguous forward peak is not checked.
    snr = np.array([1.0, 1.0, UNAMBIGUOUS_SNR])
    gated = closure_px(PreparedImage(ref), PreparedImage(sec), rows, cols, dx, dy, 32, 2, snr)
    assert np.isnan(gated[2])
    with pytest.raises(ValueError, match="back_px"):
        closure_px(PreparedImage(ref), PreparedImage(sec), rows, cols, dx, dy, 32, 1)


# --------------------------------------------------------------------------------------------
# The real pair, end to end


def uphill_fraction(ds, dem_path: Path) -> tuple[int, int, np.ndarray]:
    """Fast nodes (> 500 m/yr, slope > 2 %, above 150 m) and those moving up the SRTM slope
    smoothed over 1 km (Gaussian sigma): the measure of issue 16."""
    with rasterio.open(dem_path) as d:
        z, t = d.read(1).astype(np.float64), d.transform
    ok = np.isfinite(z)
    sigma = 1000.0 / abs(t.a)
    zs = ndimage.gaussian_filter(np.where(ok, z, 0.0), sigma) / np.maximum(
        ndimage.gaussian_filter(ok.astype(float), sigma), 1e-9
    )
    gy, gx = np.gradient(zs, t.e, t.a)
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    inv = ~t
    col, row = inv.a * xx + inv.b * yy + inv.c, inv.d * xx + inv.e * yy + inv.f

    def sample(a):
        return ndimage.map_coordinates(a, [row - 0.5, col - 0.5], order=1, cval=np.nan)

    zn, gxn, gyn = sample(np.where(ok, z, 0.0)), sample(gx), sample(gy)
    vx, vy = ds["vx"].values, ds["vy"].values
    v = np.hypot(vx, vy)
    with np.errstate(invalid="ignore"):
        fast = (v > 500) & (np.hypot(gxn, gyn) > 0.02) & (zn > 150)
        up = fast & (vx * gxn + vy * gyn > 0)
    return int(fast.sum()), int(up.sum()), up


@pytest.fixture(scope="module")
def yahtse_dem(shared_data) -> Path:
    return shared_data / "yahtse_landsat8_2016" / "yahtse_srtm_dem.tif"


@pytest.fixture(scope="module")
def checked_product():
    """The real pair at default settings (the check on: ``backmatch_px`` 2)."""
    ref, sec, rock = demo_inputs()
    return track(ref, sec, stable_mask=rock, progress=False)


#: The check as it was before the filter judged only the nodes in doubt: every checked closure,
#: at 0.5 px, and no removal of weak peaks straying from their neighbours.
JUDGE_EVERYWHERE = dict(
    closure_weak_corr=1.0, closure_stray_px=0.0, max_closure_px=0.5, weak_stray_px=np.inf
)


@pytest.fixture(scope="module")
def everywhere_product():
    """The real pair with every checked closure judged (the check as it was before the
    filter judged only the nodes in doubt)."""
    ref, sec, rock = demo_inputs()
    return track(ref, sec, stable_mask=rock, progress=False, **JUDGE_EVERYWHERE)


def _neck_box(ds) -> np.ndarray:
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    return (xx >= 480_000) & (xx <= 480_700) & (yy >= 6_671_800) & (yy <= 6_672_400)


def test_real_pair_flows_downhill_at_default_settings(checked_product, yahtse_dem) -> None:
    # Issue 16: at most 0.25 % of the fast ice flows uphill, while at least 3,000 fast nodes
    # survive (autoRIFT with its filters: 0.26 % of 2,691). At the defaults: 8 of 3,267; five
    # of the eight are slow ice (500-580 m/yr) on the upper glacier whose closures and
    # neighbours agree.
    ds = checked_product
    fast, up, where = uphill_fraction(ds, yahtse_dem)
    assert fast >= 3000, fast
    assert up / fast <= 0.0025, (up, fast)
    # The neck's up-glacier cluster is gone; the checks flagged part of it themselves.
    neck = _neck_box(ds)
    v_north = ds["vy"].values
    assert not np.any(neck & (v_north > 500)), "a vector still points up-glacier in the neck"
    q = ds["quality"].values
    assert ds["quality"].dtype == QUALITY_DTYPE
    assert ((q[neck] & Quality.BACKMATCH) != 0).sum() >= 5


def test_without_the_check_more_fast_ice_flows_uphill(checked_product, yahtse_dem) -> None:
    # With the checks off (--backmatch-px 0 --weak-stray-px inf) and translation-only chips
    # (--refine off) the neck's aliased patch passes every other filter, and 2 % or more of the
    # fast ice flows uphill: five times as much as at the defaults. The forward-backward check
    # alone off: still five times as much.
    ref, sec, rock = demo_inputs()
    ds = track(
        ref,
        sec,
        stable_mask=rock,
        progress=False,
        backmatch_px=0,
        weak_stray_px=np.inf,
        refine="off",
    )
    fast, up, _ = uphill_fraction(ds, yahtse_dem)
    fast_c, up_c, _ = uphill_fraction(checked_product, yahtse_dem)
    assert up / fast > 0.02 and up / fast > 5 * up_c / fast_c, (up, fast, up_c, fast_c)
    assert (_neck_box(ds) & (ds["vy"].values > 500)).sum() >= 10
    assert not np.any(ds["quality"].values & Quality.BACKMATCH)
    no_fb = track(ref, sec, stable_mask=rock, progress=False, backmatch_px=0)
    fast, up, _ = uphill_fraction(no_fb, yahtse_dem)
    assert up / fast > 5 * up_c / fast_c, (up, fast, up_c, fast_c)
    assert not np.any(no_fb["quality"].values & Quality.BACKMATCH)


def test_speeds_beyond_the_limit_are_flagged_never_shipped(checked_product) -> None:
    ref, sec, rock = demo_inputs()
    ds = track(ref, sec, stable_mask=rock, progress=False, max_speed_m_per_yr=2000.0)
    too_fast = (ds["quality"].values & Quality.TOO_FAST) != 0
    assert too_fast.sum() >= 50  # the lower tongue moves 3,000-4,500 m/yr
    assert np.all(np.isnan(ds["v"].values[too_fast]))
    assert np.nanmax(ds["v"].values) <= 2000.0 * 1.01  # co-registration moves a node a little
    assert ds.attrs["filter_max_speed_m_per_yr"] == 2000.0
    # The default limit (40 km/yr) flags nothing on a glacier moving 4.5 km/yr at most.
    assert not np.any(checked_product["quality"].values & Quality.TOO_FAST)


def test_a_dem_flags_uphill_flow(yahtse_dem, checked_product) -> None:
    ref, sec, rock = demo_inputs()
    ds = track(ref, sec, stable_mask=rock, progress=False, dem=yahtse_dem, backmatch_px=2)
    uphill = (ds["quality"].values & Quality.UPHILL) != 0
    assert uphill.sum() >= 1
    assert np.all(np.isnan(ds["v"].values[uphill]))
    fast, up, _ = uphill_fraction(ds, yahtse_dem)
    assert up / fast <= 0.001 < uphill_fraction(checked_product, yahtse_dem)[1] / fast, up
    assert fast >= 3000
    assert ds.attrs["filter_dem"] == yahtse_dem.name


def test_a_dem_off_the_pair_is_one_clear_error(tmp_path) -> None:
    dem = tmp_path / "far_dem.tif"
    profile = dict(
        driver="GTiff", height=20, width=20, count=1, dtype="float32", crs="EPSG:32607",
        transform=rasterio.transform.from_origin(100_000, 5_000_000, 50, 50),
    )  # fmt: skip
    with rasterio.open(dem, "w", **profile) as out:
        out.write(np.full((1, 20, 20), 500.0, np.float32))
    ref, sec, rock = demo_inputs()
    with pytest.raises(GlacierflowError, match="does not cover") as err:
        track(ref, sec, progress=False, dem=dem)
    assert "far_dem.tif" in str(err.value)
    with pytest.raises(GlacierflowError, match="DEM"):
        track(ref, sec, progress=False, dem=tmp_path / "missing.tif")


def test_filter_bits_are_independent() -> None:
    dx = np.zeros((12, 12))
    dy = np.zeros((12, 12))
    dx[5, 5], dy[2, 2] = 30.0, 0.5
    closure = np.zeros((12, 12))
    closure[8, 8] = np.inf
    down = (np.full((12, 12), -1.0), np.zeros((12, 12)))  # downhill is to the left
    dx[9, 3] = 2.0  # moving right: uphill
    res = filter_offsets(
        dx, dy, np.ones_like(dx), np.full_like(dx, 5.0), FilterSettings(),
        closure_px=closure, max_offset_px=20.0, downslope_px=down,
    )  # fmt: skip
    q = res.quality
    assert q.dtype == QUALITY_DTYPE
    assert q[5, 5] & Quality.TOO_FAST and q[8, 8] & Quality.BACKMATCH and q[9, 3] & Quality.UPHILL
    assert not q[2, 2] & (Quality.TOO_FAST | Quality.BACKMATCH | Quality.UPHILL)
    assert not np.isfinite(res.dx_px[5, 5]) and not np.isfinite(res.dx_px[8, 8])


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("backmatch_px", 1, "at least 2"),
        ("backmatch_px", -2, "at least 2"),
        ("max_closure_px", 0, "greater than 0"),
        ("max_speed_m_per_yr", -5, "greater than 0"),
        ("dem_min_slope", 0, "greater than 0"),
        ("closure_weak_corr", 1.5, "at most 1"),
        ("closure_stray_px", -1, "at least 0"),
        ("weak_stray_px", -1, "at least 0"),
    ],
)
def test_bad_check_settings_name_their_key(key, value, words) -> None:
    from glacierflow.errors import SettingsError
    from glacierflow.track import track_settings

    with pytest.raises(SettingsError, match=words) as err:
        track_settings(**{key: value})
    assert key in str(err.value)


def test_the_checks_are_recorded_in_the_product(checked_product) -> None:
    attrs = checked_product.attrs
    assert attrs["filter_max_closure_px"] == FilterSettings().max_closure_px
    assert attrs["filter_dem"] == "none"
    meanings = checked_product["quality"].attrs["flag_meanings"].split()
    assert meanings[-3:] == ["failed_forward_backward_check", "implausibly_fast", "flows_uphill"]


def test_a_second_wider_match_keeps_only_matches_that_return_home(everywhere_product, yahtse_dem):
    """``recheck_search_px``: nodes whose match did not return home, or found no peak inside
    the +/-16 px search (the neck moves 17-22 px), are matched again over +/-32 px. More fast
    ice is measured, and none of it flows uphill more often than with the check alone (every
    closure judged, as the recheck picks its nodes by every closure)."""
    ref, sec, rock = demo_inputs()
    ds = track(ref, sec, stable_mask=rock, progress=False, recheck_search_px=32, **JUDGE_EVERYWHERE)
    fast, up, _ = uphill_fraction(ds, yahtse_dem)
    fast0, up0, _ = uphill_fraction(everywhere_product, yahtse_dem)
    assert fast >= fast0 + 50, (fast, fast0)
    assert up / fast <= up0 / fast0, (up, fast, up0, fast0)
    valid, valid0 = np.isfinite(ds["v"].values), np.isfinite(everywhere_product["v"].values)
    assert valid.sum() > valid0.sum()
    # A node kept from the second match returned home: no kept node carries BACKMATCH.
    assert not np.any(valid & ((ds["quality"].values & Quality.BACKMATCH) != 0))
    with pytest.raises(SettingsError, match="recheck_search_px"):
        track(ref, sec, progress=False, recheck_search_px=32, backmatch_px=2, tile_nodes=1000)


def test_only_the_closures_of_nodes_in_doubt_are_judged() -> None:
    # A smooth field with a weak peak at one node and a stray offset at another: those two
    # closures are judged; the strong, agreeing node's closure (slop along streaks) is not.
    from glacierflow.plausibility import closure_in_doubt

    dx, dy = np.full((9, 9), 3.0), np.full((9, 9), -1.0)
    corr, snr = np.full((9, 9), 0.9), np.full((9, 9), 2.0)
    closure = np.full((9, 9), 0.9)
    corr[2, 2] = 0.45  # weak peak, agreeing offset
    dx[6, 6] = 5.0  # strong peak, 2 px from its neighbours
    corr[4, 7], dx[4, 7] = 0.2, 40.0  # below min_corr: does not move its neighbours' median
    out = closure_in_doubt(closure, dx, dy, corr, snr, FilterSettings())
    judged = np.isfinite(out)
    assert judged[2, 2] and judged[6, 6] and judged[4, 7]
    assert judged.sum() == 3
    everywhere = FilterSettings(closure_weak_corr=1.0, closure_stray_px=0.0)
    assert np.isfinite(closure_in_doubt(closure, dx, dy, corr, snr, everywhere)).all()


def test_a_weak_peak_far_from_its_neighbours_is_removed() -> None:
    # In doubt twice over (a weak peak, 2 px or more from its neighbours): removed by the
    # median test whatever its closure; a weak peak that agrees, or a strong one that strays,
    # is left to the other tests.
    from glacierflow.plausibility import weak_strays

    dx, dy = np.full((9, 9), 3.0), np.full((9, 9), -1.0)
    corr, snr = np.full((9, 9), 0.9), np.full((9, 9), 2.0)
    dx[2, 2], corr[2, 2] = 5.5, 0.45  # weak and 2.5 px away
    corr[4, 4] = 0.45  # weak, agreeing
    dx[6, 6] = 5.5  # strong, 2.5 px away
    ws = weak_strays(dx, dy, corr, snr, FilterSettings())
    assert ws[2, 2] and ws.sum() == 1
    assert not weak_strays(dx, dy, corr, snr, FilterSettings(weak_stray_px=np.inf)).any()
    res = filter_offsets(dx, dy, corr, snr, FilterSettings(), weak_stray=ws)
    assert res.quality[2, 2] & Quality.MEDIAN_TEST and not np.isfinite(res.dx_px[2, 2])
    assert res.quality[4, 4] == 0


def test_judging_every_closure_costs_true_matches_on_the_clear_tongue(
    checked_product, everywhere_product
) -> None:
    # Judged at every checked node, the closure also rejects true matches of the clear lower
    # tongue (streaked texture, peaks of 0.85-0.95 at SNRs of 1.3-2 sliding along the streaks);
    # judged only where a node is in doubt, the tongue keeps over 90 % of its nodes.
    from glacierflow.demo import CLEAR_TONGUE_BOX_M, box_nodes

    ds = everywhere_product
    clear = box_nodes(ds, CLEAR_TONGUE_BOX_M)
    kept = np.isfinite(checked_product["v"].values[clear]).mean()
    kept_all = np.isfinite(ds["v"].values[clear]).mean()
    assert kept >= 0.9 > kept_all, (kept, kept_all)
    assert checked_product.attrs["filter_closure_weak_corr"] == FilterSettings().closure_weak_corr
