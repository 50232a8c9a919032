"""Node layout and chip extraction for area-based matching.

A *node* is the centre pixel of a reference chip. Node ``(i, j)`` sits at image row
``row0_px + i * step_px`` and column ``col0_px + j * step_px``. Its reference chip covers
``chip_px`` pixels centred on it (for even sizes the centre is the pixel just right/below the
geometric middle), and its search window in the secondary image extends ``search_px`` pixels
further on every side, so that offsets from ``-search_px`` to ``+search_px`` can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class NodeGrid:
    """A regular grid of matching nodes over an image.

    Attributes
    ----------
    row0_px, col0_px : int
        Image row and column of node ``(0, 0)``.
    step_px : int
        Spacing of the nodes, in pixels.
    ny, nx : int
        Number of node rows and columns.
    chip_px : int
        Side of the reference chip, in pixels.
    search_px : int
        Largest offset searched in each direction, in pixels.
    """

    row0_px: int
    col0_px: int
    step_px: int
    ny: int
    nx: int
    chip_px: int
    search_px: int

    @property
    def shape(self) -> tuple[int, int]:
        """Node grid shape ``(ny, nx)``."""
        return (self.ny, self.nx)

    @property
    def half_px(self) -> int:
        """Pixels from a chip's first row/column to its centre pixel."""
        return self.chip_px // 2

    @property
    def window_px(self) -> int:
        """Side of the search window in the secondary image, in pixels."""
        return self.chip_px + 2 * self.search_px

    def rows_px(self) -> np.ndarray:
        """Image rows of the node rows."""
        return self.row0_px + self.step_px * np.arange(self.ny)

    def cols_px(self) -> np.ndarray:
        """Image columns of the node columns."""
        return self.col0_px + self.step_px * np.arange(self.nx)


def make_grid(
    shape: tuple[int, int], *, chip_px: int, search_px: int, step_px: int, margin_px: int = 0
) -> NodeGrid:
    """Lay out nodes so that every chip and search window lies inside the image.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(rows, cols)``.
    chip_px, search_px, step_px : int
        Chip side, search radius and node spacing, in pixels.
    margin_px : int
        Extra distance kept from the image edge, in pixels (e.g. for a guided search that may
        move the window).

    Raises
    ------
    ValueError
        If a size is not positive or the image is too small for one chip and its search window.
    """
    for name, value in (("chip_px", chip_px), ("step_px", step_px)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive whole number of pixels, got {value}")
    if int(search_px) != search_px or search_px < 1:
        raise ValueError(f"search_px must be a positive whole number of pixels, got {search_px}")
    if chip_px < 4:
        raise ValueError(f"chip_px must be at least 4 pixels, got {chip_px}")
    rows, cols = shape
    half = chip_px // 2
    lo = half + search_px + margin_px  # first usable centre
    hi_r = rows - (chip_px - half) - search_px - margin_px  # last usable centre (inclusive)
    hi_c = cols - (chip_px - half) - search_px - margin_px
    if hi_r < lo or hi_c < lo:
        need = chip_px + 2 * (search_px + margin_px)
        raise ValueError(
            f"the image ({rows} x {cols} px) is smaller than one chip with its search window "
            f"({need} x {need} px for chip_px={chip_px}, search_px={search_px}); "
            "use a smaller chip_px or search_px"
        )
    ny = (hi_r - lo) // step_px + 1
    nx = (hi_c - lo) // step_px + 1
    # Centre the node grid in the usable area so both edges lose the same amount.
    row0 = lo + ((hi_r - lo) - (ny - 1) * step_px) // 2
    col0 = lo + ((hi_c - lo) - (nx - 1) * step_px) // 2
    return NodeGrid(row0, col0, step_px, ny, nx, chip_px, search_px)


def extract_chips(
    image: np.ndarray, rows_px: np.ndarray, cols_px: np.ndarray, size_px: int, offset_px: int
) -> np.ndarray:
    """Gather square chips of ``size_px`` whose first pixel is ``(row - offset, col - offset)``.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Source image.
    rows_px, cols_px : ndarray of int, shape (N,)
        Chip anchor pixels (node centres).
    size_px : int
        Chip side in pixels.
    offset_px : int
        Distance from the chip's first row/column to its anchor, in pixels.

    Returns
    -------
    ndarray, shape (N, size_px, size_px)
        A copy of the chips (a fancy-indexed gather, not a view).
    """
    windows = sliding_window_view(image, (size_px, size_px))
    return windows[rows_px - offset_px, cols_px - offset_px]
