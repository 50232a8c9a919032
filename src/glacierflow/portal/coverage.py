"""Where and when the data are, and whether the dataset record says the same.

A dataset record may state its bounding box and time frame (``[extent]`` of ``dataset.toml``).
``publish`` then checks that the record contains the products being published, so that a
record cannot be published over the wrong files (the Karakoram 1999-2003 record over the
Alaska 2016 demo stops with one error naming both); what the record does not state is taken
from the products.

The data's coverage is computed from the files: the union of the products' bounding boxes in
degrees (their grids' outlines reprojected to WGS 84) and the first and last acquisition dates
of the images they were measured from (a pair's ``ref_time`` and ``sec_time``; an annual
composite's pairs, listed in its ``pairs`` tag), not the calendar years of annual products.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike

from glacierflow.dates import to_utc
from glacierflow.errors import InputError
from glacierflow.portal.discover import ProductFacts
from glacierflow.portal.meta import DatasetMeta
from glacierflow.portal.params import lon_intervals

__all__ = [
    "BBOX_TOLERANCE_DEG",
    "Coverage",
    "acquisition_span",
    "data_coverage",
    "record_coverage",
]

#: Slack of the containment test, degrees (about 10 cm): rounding, not a margin.
BBOX_TOLERANCE_DEG = 1e-6

_PAIR_LABEL_RE = re.compile(r"(\d{4}-\d{2}-\d{2})/(\d{4}-\d{2}-\d{2})")


def _lon(value: float) -> str:
    return f"{abs(value):.4f}° {'E' if value >= 0 else 'W'}"


def _lat(value: float) -> str:
    return f"{abs(value):.4f}° {'N' if value >= 0 else 'S'}"


@dataclass(frozen=True)
class Coverage:
    """A bounding box and a time frame.

    Attributes
    ----------
    bbox : tuple of float
        (west, south, east, north), degrees WGS 84; west > east crosses the antimeridian.
    start, end : datetime.datetime
        First and last instant (UTC).
    """

    bbox: tuple[float, float, float, float]
    start: dt.datetime
    end: dt.datetime

    def text(self) -> str:
        """The box and time frame as a person reads them on a map and a calendar."""
        west, south, east, north = self.bbox
        return (
            f"{_lon(west)} to {_lon(east)}, {_lat(south)} to {_lat(north)}, "
            f"{self.start:%Y-%m-%d} to {self.end:%Y-%m-%d}"
        )

    def contains_box(self, other: Coverage) -> bool:
        """Whether this box holds ``other``'s (within :data:`BBOX_TOLERANCE_DEG`)."""
        tol = BBOX_TOLERANCE_DEG
        _, south, _, north = self.bbox
        if other.bbox[1] < south - tol or other.bbox[3] > north + tol:
            return False
        mine = lon_intervals(self.bbox[0], self.bbox[2])
        return all(
            any(w0 - tol <= w1 and e1 <= e0 + tol for w0, e0 in mine)
            for w1, e1 in lon_intervals(other.bbox[0], other.bbox[2])
        )

    def contains_time(self, other: Coverage) -> bool:
        """Whether this time frame holds ``other``'s, compared by calendar date (UTC)."""
        return self.start.date() <= other.start.date() and other.end.date() <= self.end.date()


def acquisition_span(product: ProductFacts) -> tuple[dt.datetime, dt.datetime]:
    """First and last acquisition time of the images a product was measured from (UTC).

    A pair: its reference and secondary times. An annual composite: the first start and last
    end of the pairs named in its ``pairs`` tag (``YYYY-MM-DD/YYYY-MM-DD`` labels), or its own
    time frame when the tag is missing.
    """
    if product.kind != "annual":
        return product.start, product.end
    labels = product.tags.get("pairs")
    text = " ".join(map(str, labels)) if isinstance(labels, list) else str(labels or "")
    found = _PAIR_LABEL_RE.findall(text)
    if not found:
        return product.start, product.end
    firsts = [dt.date.fromisoformat(a) for a, _ in found]
    lasts = [dt.date.fromisoformat(b) for _, b in found]
    start = dt.datetime.combine(min(firsts), dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(max(lasts), dt.time(23, 59, 59), tzinfo=dt.UTC)
    return start, end


def data_coverage(products: Sequence[ProductFacts]) -> Coverage:
    """The union of the products' boxes (degrees) and their first and last acquisitions."""
    if not products:
        raise ValueError("no products")
    spans = [acquisition_span(p) for p in products]
    return Coverage(
        bbox=(
            min(p.bbox[0] for p in products),
            min(p.bbox[1] for p in products),
            max(p.bbox[2] for p in products),
            max(p.bbox[3] for p in products),
        ),
        start=min(to_utc(s) for s, _ in spans),
        end=max(to_utc(e) for _, e in spans),
    )


def record_coverage(
    meta: DatasetMeta,
    products: Sequence[ProductFacts],
    products_dir: str | PathLike[str] | None = None,
) -> tuple[Coverage, Coverage]:
    """The record's coverage (the data's where it states none) and the data's, checked.

    Parameters
    ----------
    meta : DatasetMeta
        The record; its ``bbox``, ``start`` and ``end`` are optional.
    products : sequence of ProductFacts
        The products being published.
    products_dir : path, optional
        Where they were found, for the error message.

    Returns
    -------
    record, data : Coverage
        The record's stated coverage (a stated start is its day's first instant, a stated end
        its day's last), completed from the data; and the data's own coverage.

    Raises
    ------
    InputError
        When the record's box or time frame does not contain the data's; the message gives
        both, in degrees and dates.
    """
    data = data_coverage(products)
    start = dt.datetime.combine(meta.start, dt.time(), tzinfo=dt.UTC) if meta.start else data.start
    end = (
        dt.datetime.combine(meta.end, dt.time(23, 59, 59), tzinfo=dt.UTC) if meta.end else data.end
    )
    record = Coverage(bbox=meta.bbox or data.bbox, start=start, end=end)
    outside = []
    if not record.contains_box(data):
        outside.append("outside its bounding box")
    if not record.contains_time(data):
        outside.append("outside its time frame")
    if outside:
        where = f"the products in {products_dir}" if products_dir else "the products"
        raise InputError(
            f"the record does not describe these products: the record covers "
            f"{record.text()}, but {where} cover {data.text()} ({' and '.join(outside)}); "
            "publish the products this record describes, or correct [extent] in the record",
            meta.source,
        )
    return record, data
