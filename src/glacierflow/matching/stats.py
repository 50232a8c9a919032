"""Image statistics computed the same way whether the image is in memory or read in strips.

Matching normalises each image by the mean and spread of its valid pixels (NCC does not depend
on them; they keep the float32 arithmetic at values near 1). Tiled processing reads the image
strip by strip, so the statistics are accumulated over fixed strips of :data:`STRIP_ROWS` rows,
in order, in both cases: the floating-point sums are then identical and so are the normalised
images, bit for bit. One strip in :data:`SAMPLE_EVERY` is enough for a normalisation and saves
decoding most of a scene twice; all strips are used when the sample holds too few valid pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

STRIP_ROWS = 512
"""Rows per strip of the statistics accumulation (a multiple of common GeoTIFF block heights)."""
SAMPLE_EVERY = 4
"""Strips sampled: 0, SAMPLE_EVERY, 2 * SAMPLE_EVERY, ..."""
MIN_SAMPLE_PX = 10_000
"""Fewest valid pixels in the sampled strips; below it every strip counts."""


def sampled_strips(rows: int) -> tuple[list[int], list[int]]:
    """First rows of the sampled strips, and of the others (used only when needed)."""
    starts = list(range(0, rows, STRIP_ROWS))
    return starts[::SAMPLE_EVERY], [r for i, r in enumerate(starts) if i % SAMPLE_EVERY]


def strip_sums(image: np.ndarray, valid: np.ndarray | None) -> tuple[int, float, float]:
    """Count, sum and sum of squares (float64) of the finite valid pixels of one strip."""
    ok = np.isfinite(image)
    if valid is not None:
        ok &= valid
    vals = image[ok].astype(np.float64)
    return int(vals.size), float(vals.sum()), float(np.dot(vals, vals))


def combine(sums: Iterable[tuple[int, float, float]]) -> tuple[float, float]:
    """Mean and standard deviation from per-strip sums taken in order.

    The spread is ``sqrt(E[x^2] - E[x]^2)`` in float64: for image values (up to 16-bit DN) this
    loses nothing that matters for a normalisation, and sums taken in a fixed order are exact to
    repeat.
    """
    n, s1, s2 = 0, 0.0, 0.0
    for cn, c1, c2 in sums:
        n += cn
        s1 += c1
        s2 += c2
    if n == 0:
        return 0.0, 1.0
    mean = s1 / n
    var = max(s2 / n - mean * mean, 0.0)
    std = float(np.sqrt(var))
    return float(mean), std if std > 0 else 1.0


def image_stats(image: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """Mean and standard deviation of the valid pixels of an in-memory image, from sampled strips
    (see :func:`sampled_strips`; all strips when the sample holds too few valid pixels)."""

    def sums(r: int) -> tuple[int, float, float]:
        part = None if valid is None else valid[r : r + STRIP_ROWS]
        return strip_sums(image[r : r + STRIP_ROWS], part)

    return stats_from_strips(image.shape[0], sums)


def stats_from_strips(
    rows: int, sums: Callable[[int], tuple[int, float, float]]
) -> tuple[float, float]:
    """Mean and standard deviation from the sums of the strips starting at given rows.

    Parameters
    ----------
    rows : int
        Image rows.
    sums : callable
        ``sums(first_row)``: count, sum and sum of squares of the strip starting there.
    """
    sample, rest = sampled_strips(rows)
    got = [sums(r) for r in sample]
    if sum(n for n, _, _ in got) < MIN_SAMPLE_PX and rest:
        got = [sums(r) for r in sorted(sample + rest)]
    return combine(got)


def checked_image(image: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The image as float64 with invalid pixels zeroed, and its validity (finite and valid).

    Raises
    ------
    ValueError
        For an image that is not 2-D, is complex, or whose mask has another shape.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    if np.iscomplexobj(img):
        raise ValueError("image must be real; orientation images cannot be filtered again")
    ok = np.isfinite(img)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != img.shape:
            raise ValueError(f"valid must have the image shape {img.shape}, got {valid.shape}")
        ok &= valid
    # float64, not centred on an image-wide mean: the local sums lose nothing that matters at
    # uint16 DN levels (1e-12 of 10,000 DN), and a filtered window of a scene is then the
    # scene's filtered window, bit for bit (tiled matching relies on it).
    return np.where(ok, img, 0.0).astype(np.float64), ok


def sampled_median(values: np.ndarray, mask: np.ndarray) -> float | None:
    """Median of ``values`` where ``mask`` holds, over the rows of the sampled strips
    (:func:`sampled_strips`), or over all rows when the sample holds
    too few pixels; None where there is none.

    Image-wide constants of the filters come from here, so that a scene filtered tile by tile
    (the constant taken from the same strips of its file) is the scene filtered whole.
    """
    rows = np.zeros(mask.shape[0], dtype=bool)
    for r in sampled_strips(mask.shape[0])[0]:
        rows[r : r + STRIP_ROWS] = True
    picked = mask & rows[:, None]
    if picked.sum() < MIN_SAMPLE_PX:
        picked = mask
    return float(np.median(values[picked])) if picked.any() else None
