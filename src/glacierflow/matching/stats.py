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
