"""Pre-filters: what each one does to real texture, and that nodata never leaks into the result."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from glacierflow.prefilter import PREFILTERS, highpass, orientation, prefilter, wallis


@pytest.fixture(scope="module")
def texture(yahtse_dir) -> np.ndarray:
    with rasterio.open(yahtse_dir / "LC80630182016200LGN00_B8_yahtse.TIF") as ds:
        return ds.read(1).astype(np.float64)[250:450, 250:450]


@pytest.fixture(scope="module")
def gap() -> np.ndarray:
    """Nodata: a 6-line stripe and a block, like an SLC-off gap and a cloud mask."""
    valid = np.ones((200, 200), bool)
    valid[80:86, :] = False
    valid[20:50, 120:170] = False
    return valid


@pytest.mark.parametrize("kind", ["highpass", "wallis", "orientation"])
def test_values_in_gaps_do_not_leak(texture, gap, kind) -> None:
    """Whatever the gap holds (0, a huge fill value, NaN) the valid output is the same."""
    outs = []
    for fill in (0.0, 65535.0, -1e6):
        img = np.where(gap, texture, fill)
        out, ok = prefilter(img, gap, kind)
        outs.append((out, ok))
    (a, ok_a), (b, ok_b), (c, _) = outs
    np.testing.assert_array_equal(ok_a, ok_b)
    assert not ok_a[~gap].any(), "a gap pixel came back valid"
    np.testing.assert_allclose(a[ok_a], b[ok_a], rtol=1e-4, atol=1e-4 * np.abs(a).max())
    np.testing.assert_allclose(a[ok_a], c[ok_a], rtol=1e-4, atol=1e-4 * np.abs(a).max())
    assert np.all(a[~ok_a] == 0)
    nan_img = np.where(gap, texture, np.nan)
    d, ok_d = prefilter(nan_img, None, kind)  # NaN is nodata without a mask
    np.testing.assert_array_equal(ok_d, ok_a)
    np.testing.assert_allclose(d[ok_d], a[ok_d], rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_highpass_removes_illumination_keeps_texture(texture) -> None:
    """A smooth brightness ramp (haze, shading) disappears; fine texture stays."""
    yy, xx = np.mgrid[0:200, 0:200]
    ramp = 40.0 * xx + 25.0 * yy + 3000.0 * np.sin(yy / 60.0)
    a, _ = highpass(texture, sigma_px=3.0)
    b, _ = highpass(texture + ramp, sigma_px=3.0)
    inner = (slice(20, -20), slice(20, -20))
    assert np.std(b[inner] - a[inner]) < 0.02 * np.std(a[inner])
    # Away from the border (and from gaps) it is exactly the image minus its Gaussian blur.
    from scipy import ndimage

    expected = texture - ndimage.gaussian_filter(texture, 3.0)
    np.testing.assert_allclose(a[inner], expected[inner], atol=1e-3 * texture.std())


def test_highpass_does_not_ring_next_to_a_gap(texture, gap) -> None:
    """Valid pixels right beside a gap stay on the scale of the texture (no edge response)."""
    img = np.where(gap, texture, 0.0)
    out, ok = highpass(img, gap, sigma_px=3.0)
    ref, _ = highpass(texture, sigma_px=3.0)
    from scipy import ndimage

    beside = ok & ndimage.binary_dilation(~gap, iterations=2)
    typical = np.median(np.abs(ref))
    assert np.median(np.abs(out[beside])) < 2 * typical
    # Zero-filled, the same filter sees a cliff of the scene's mean brightness there.
    naive, _ = highpass(img, None, sigma_px=3.0)
    assert np.median(np.abs(naive[beside])) > 5 * typical


def test_wallis_equalises_local_contrast(texture) -> None:
    """A faint half (5 % contrast) comes out with about the contrast of the bright half."""
    img = texture.copy()
    m = img.mean()
    img[:, 100:] = m + 0.05 * (img[:, 100:] - m)
    out, _ = wallis(img, window_px=21, contrast=0.9)
    left, right = out[20:-20, 20:80].std(), out[20:-20, 120:-20].std()
    assert 0.5 < right / left < 2.0
    raw_ratio = img[20:-20, 120:-20].std() / img[20:-20, 20:80].std()
    assert raw_ratio < 0.1


def test_orientation_ignores_contrast_and_brightness(texture) -> None:
    a, ok = orientation(texture)
    b, _ = orientation(3.7 * texture - 1234.0)
    np.testing.assert_allclose(a, b, atol=1e-5)
    mag = np.abs(a[ok])
    assert mag.max() <= 1.0 + 1e-6
    # Gradients above the median are (nearly) unit vectors; the soft floor only damps the rest.
    assert np.median(mag) > 0.6
    hard, _ = orientation(texture, soft=0.0)
    np.testing.assert_allclose(np.abs(hard[ok & (np.abs(hard) > 0)]), 1.0, atol=1e-5)


def test_orientation_stencil_touching_a_gap_is_invalid(gap, texture) -> None:
    _, ok = orientation(np.where(gap, texture, 0.0), gap)
    # Every pixel whose 3 x 3 neighbourhood touches the gap or the border is invalid.
    from scipy import ndimage

    expected = ndimage.binary_erosion(gap, np.ones((3, 3), bool), border_value=0)
    np.testing.assert_array_equal(ok, expected)


def test_prefilter_rejects_unknown_kind_and_bad_input(texture) -> None:
    assert PREFILTERS == ("none", "highpass", "wallis", "orientation")
    with pytest.raises(ValueError, match="prefilter must be one of"):
        prefilter(texture, None, "sobel")
    with pytest.raises(ValueError, match="2-D"):
        prefilter(texture[None], None, "highpass")
    with pytest.raises(ValueError, match="valid must have the image shape"):
        highpass(texture, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="contrast"):
        wallis(texture, contrast=1.0)
    out, ok = prefilter(texture, None, "none")
    assert out.dtype == np.float32 and ok.all()
