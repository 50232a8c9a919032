"""ITS_LIVE v2 granules written from a real glacierflow product read back to the same values."""

from __future__ import annotations

import numpy as np
import pytest

from glacierflow.timeseries.itslive import read_itslive_granule, write_itslive_granule
from glacierflow.timeseries.network import combine_pairs, invert_cube


@pytest.fixture(scope="module")
def product(yahtse_dir):
    from glacierflow.track import track

    return track(
        yahtse_dir / "LC80630182016200LGN00_B8_yahtse.TIF",
        yahtse_dir / "LC80630182016216LGN00_B8_yahtse.TIF",
        step_px=16,
    )


def test_granule_round_trip_and_single_pair_coverage(product, tmp_path):
    path = write_itslive_granule(product, tmp_path / "pair.nc")
    g = read_itslive_granule(path)
    for name in ("vx", "vy", "v", "v_error"):
        a, b = product[name].values, g[name].values[0]
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b)) == 0
    assert g.attrs["transform"] == [float(v) for v in product.attrs["transform"]]
    assert str(g["acquisition_date_img1"].values[0])[:10] == "2016-07-18"
    assert float(g["date_dt"].values[0]) == pytest.approx(16.0, abs=1e-3)
    r = invert_cube(combine_pairs([product, g]), "monthly")
    cov = r["coverage_days"].max(dim=("y", "x")).values
    assert cov[0] == pytest.approx(13.14, abs=0.01) and cov[1] == pytest.approx(2.86, abs=0.01)
    first = np.sort(r["first_date"].values[0].ravel())[0]  # NaT sorts last
    assert str(first)[:10] == "2016-07-18"
