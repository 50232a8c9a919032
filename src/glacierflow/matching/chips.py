"""Criteria of the texture-adaptive chips (:func:`glacierflow.matching.match.adapt_chips`):
which weak nodes a larger chip can help (noise-limited peaks), the information a chip's peak
carries, the broad strain that forbids a larger chip, and windows of prepared images.

Arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from glacierflow.matching.ncc import PreparedImage
from glacierflow.matching.pyramid import fill_nan, nanmedian3
from glacierflow.matching.settings import MatchSettings
from glacierflow.matching.strain import Crop, strain_magnitude

#: A weak node is tried with larger chips where the noise its first chip shows (chip variance
#: times ``1 - rho``) is within this factor of the median over all matched nodes.
NOISE_BAND = 1.5


def noise_limited(out, rows_px, cols_px, settings: MatchSettings, crop: Crop) -> np.ndarray:
    """Nodes whose peak is weak because of noise, which more pixels average away.

    With ``rho = S / (S + N)`` and the reference chip's variance ``V = S + N``, a node's noise
    variance is ``V (1 - rho)``. Where the image is noise-limited (faint texture, a noisy
    sensor) it is about the same everywhere, and a weak peak means a faint chip: more pixels
    help. A weak node whose noise stands far above the image's median is a surface that changed
    or sheared between the dates, one far below it a chip with nothing to match (flat water,
    saturated snow): neither is helped by a larger chip. All nodes where ``retry_below_corr``
    is 0 (retries of failures)."""
    if settings.retry_below_corr == 0:
        return np.ones(out.shape[1:], bool)
    var = chip_variance(rows_px, cols_px, settings.chip_px, crop)
    rho = np.clip(out[2], 0.0, 0.999)
    noise = var * (1.0 - rho)
    matched = np.isfinite(noise)
    if not matched.any():
        return np.zeros(out.shape[1:], bool)
    floor = np.median(noise[matched])
    with np.errstate(invalid="ignore"):
        return (noise <= NOISE_BAND * floor) & (noise >= floor / NOISE_BAND)


def chip_variance(rows_px, cols_px, chip_px: int, crop: Crop, block: int = 64) -> np.ndarray:
    """Variance of each node's reference chip over its valid pixels (prepared units), from
    summed-area tables of windows of ``block`` x ``block`` nodes; NaN without valid pixels."""
    h = chip_px // 2
    var = np.full((rows_px.size, cols_px.size), np.nan)
    for i in range(0, rows_px.size, block):
        for j in range(0, cols_px.size, block):
            r, c = rows_px[i : i + block], cols_px[j : j + block]
            top, left = int(r[0]) - h, int(c[0]) - h
            image, valid = crop(
                top, left, int(r[-1]) - top - h + chip_px, int(c[-1]) - left - h + chip_px
            )[:2]
            x = np.where(valid, image, 0.0).astype(np.float64)
            sums = [box_sums(a, r - h - top, c - h - left, chip_px) for a in (x, x * x, valid)]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = sums[0] / sums[2]
                var[i : i + block, j : j + block] = np.where(
                    sums[2] > 0, sums[1] / sums[2] - mean * mean, np.nan
                )
    return var


def box_sums(a: np.ndarray, top: np.ndarray, left: np.ndarray, size: int) -> np.ndarray:
    """Sums of ``a`` over the ``size`` x ``size`` boxes with corners ``(top[i], left[j])``."""
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    s[1:, 1:] = np.cumsum(np.cumsum(a, axis=0, dtype=np.float64), axis=1)
    t, b = top[:, None], top[:, None] + size
    lft, rgt = left[None, :], left[None, :] + size
    return s[b, rgt] - s[t, rgt] - s[b, lft] + s[t, lft]


def window_image(image: np.ndarray, valid: np.ndarray) -> PreparedImage:
    """A window of a prepared image (already normalised) as a prepared image of its own."""
    part = object.__new__(PreparedImage)
    part.image, part.valid, part.shape = image, valid, valid.shape
    part.all_valid = bool(valid.all())
    return part


def broad_strain(dx_px: np.ndarray, dy_px: np.ndarray, step_px: int, half: int = 2):
    """Strain (px/px) of the offsets' least-squares plane over each node's ``(2 half + 1)^2``
    neighbours, after a 3 x 3 median: broad enough that the noise of weak matches does not pass
    for shear (0 where no offset is known)."""
    w = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.broadcast_to(w / (w @ w) / (2 * half + 1), (2 * half + 1, 2 * half + 1))
    grad = np.zeros((*dx_px.shape, 4))
    for k, f in enumerate((dx_px, dy_px)):
        smooth = fill_nan(nanmedian3(np.asarray(f, np.float64)))
        grad[..., 2 * k] = ndimage.correlate(smooth, kernel, mode="nearest") / step_px
        grad[..., 2 * k + 1] = ndimage.correlate(smooth, kernel.T, mode="nearest") / step_px
    return np.nan_to_num(strain_magnitude(grad), nan=0.0)


def weak_nodes(flat: np.ndarray, settings: MatchSettings) -> np.ndarray:
    """Nodes (flat) whose match asks for a larger chip (see :func:`adapt_chips`): matched with a
    peak correlation below ``retry_below_corr`` or an SNR below ``retry_min_snr``; unmatched
    only where ``retry_below_corr`` is 0 (retries of failures: a node whose chip is mostly
    nodata, or has no peak, is otherwise left unmatched rather than measured from its
    neighbours' pixels)."""
    matched = np.isfinite(flat[0])
    with np.errstate(invalid="ignore"):
        weak = matched & ~(flat[3] >= settings.retry_min_snr)
        if settings.retry_below_corr > 0:
            return weak | (matched & ~(flat[2] >= settings.retry_below_corr))
    return weak | ~matched


def information(corr: np.ndarray, chip_px) -> np.ndarray:
    """``n rho / (1 - rho)``: pixels times the signal-to-noise variance ratio of a chip whose
    peak correlation is ``rho`` (0 where unmatched)."""
    rho = np.clip(np.nan_to_num(np.asarray(corr, np.float64), nan=0.0), 0.0, 0.999)
    return np.asarray(chip_px, np.float64) ** 2 * rho / (1.0 - rho)
