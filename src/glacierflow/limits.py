"""Bounds checked from the inputs before any work: memory, output folders, dates.

Every check here is cheap (a header, a ``stat``, a probe file) and runs before the first pixel
is matched, so that an impossible request fails in a second with one line naming the numbers,
not after hours of tracking with a ``MemoryError`` or a traceback from the last write. This
module imports nothing of glacierflow but its errors.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from glacierflow.errors import InputError, OutputError

__all__ = [
    "BYTES_PER_GRID_CELL",
    "BYTES_PER_NODE",
    "BYTES_PER_PIXEL",
    "EARLIEST_ACQUISITION",
    "MAX_SEPARATION_DAYS",
    "MIN_SEPARATION_DAYS",
    "available_memory_bytes",
    "check_memory",
    "check_separation",
    "check_writable_folder",
    "human_bytes",
]

#: Working memory per image pixel of an untiled pair, bytes: both images as float32 with their
#: masks, their pre-filtered copies and the matcher's float64 sums (measured peak, rounded up).
BYTES_PER_PIXEL = 48
#: Working memory per matching node, bytes: about forty float64 layers (offsets, correlation,
#: filters, co-registration, errors, the product's variables and their written copies).
BYTES_PER_NODE = 320
#: Working memory per cell of a project's output grid, bytes: five float32 bands of a composite
#: with the per-pair layers stacked to build it.
BYTES_PER_GRID_CELL = 96
#: Share of the available memory a run may plan to use.
MEMORY_SHARE = 0.8

#: Shortest separation of a pair, days: below it, offsets are noise over a tiny time.
MIN_SEPARATION_DAYS = 1.0
#: Longest separation of a pair, days (30 years): beyond it, features no longer correlate.
MAX_SEPARATION_DAYS = 30 * 365.25
#: Launch of Landsat 1 (23 July 1972): no satellite image of a glacier is older.
EARLIEST_ACQUISITION = datetime(1972, 7, 23, tzinfo=UTC)


def human_bytes(n: float) -> str:
    """``n`` bytes in binary units (``"1.5 GiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def available_memory_bytes() -> int:
    """Memory this process may still use, bytes: the kernel's ``MemAvailable``, or less under
    a cgroup limit (containers, batch jobs)."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 2**63  # unknown: do not refuse
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            avail = min(avail, int(text))
    return int(avail)


def check_memory(
    nbytes: float,
    what: str,
    fix: str,
    *,
    path: str | os.PathLike[str] | None = None,
    key: str | Iterable[str] | None = None,
) -> None:
    """Refuse work whose memory estimate exceeds what the machine has.

    Parameters
    ----------
    nbytes : float
        Estimated working memory, bytes (may be infinite).
    what : str
        What needs it, with its size ("a node grid of 25,000 x 25,000 nodes").
    fix : str
        What to do instead.
    path, key : optional
        The file and the settings the estimate comes from, for the message.

    Raises
    ------
    InputError
        When ``nbytes`` exceeds :data:`MEMORY_SHARE` of :func:`available_memory_bytes`.
    """
    avail = available_memory_bytes()
    if not nbytes <= MEMORY_SHARE * avail:
        raise InputError(
            f"{what} needs about {human_bytes(nbytes)} of memory, more than the "
            f"{human_bytes(avail)} available; {fix}",
            path,
            key=key,
        )


def check_writable_folder(folder: str | os.PathLike[str], what: str = "output folder") -> None:
    """Make sure ``folder`` exists or can be created, and takes files; create nothing.

    The nearest existing folder on its path gets a probe file (created and removed at once),
    which catches a file in the way, a read-only file system, ``/proc`` and missing permission
    before any work is done.

    Raises
    ------
    OutputError
        Naming ``folder`` and the problem.
    """
    target = Path(folder)
    probe = target
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        where = "it is a file" if probe == target else f"{probe} is a file, not a folder"
        raise OutputError(f"cannot use it as the {what}: {where}; choose another path", target)
    try:
        fd, name = tempfile.mkstemp(prefix=".glacierflow-probe-", dir=probe)
    except OSError as exc:
        raise OutputError(
            f"cannot write into {probe} ({exc.strerror or exc}); choose a writable {what}",
            target,
        ) from None
    os.close(fd)
    os.unlink(name)


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def check_separation(
    ref_time: datetime,
    sec_time: datetime,
    path: str | os.PathLike[str] | None = None,
    *,
    key: str | Iterable[str] | None = ("ref_date", "sec_date"),
) -> None:
    """Refuse a pair whose dates make no physical sense.

    Acquisitions before Landsat 1 (:data:`EARLIEST_ACQUISITION`) or more than a day in the
    future, and separations under :data:`MIN_SEPARATION_DAYS` or over
    :data:`MAX_SEPARATION_DAYS`, would turn offsets into absurd speeds.

    Raises
    ------
    InputError
        Naming both dates and the limit.
    """
    times = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in (ref_time, sec_time)]
    dates = f"{_iso(times[0])} and {_iso(times[1])}"
    now = datetime.now(UTC)
    for t in times:
        if t < EARLIEST_ACQUISITION:
            raise InputError(
                f"acquisition time {_iso(t)} is before Landsat 1 (1972-07-23), the first "
                f"satellite images of glaciers (pair {dates}); check the dates",
                path,
                key=key,
            )
        if t > now + timedelta(days=1):
            raise InputError(
                f"acquisition time {_iso(t)} is in the future (pair {dates}); check the dates",
                path,
                key=key,
            )
    dt_days = abs((times[1] - times[0]).total_seconds()) / 86400.0
    if dt_days < MIN_SEPARATION_DAYS:
        raise InputError(
            f"the pair {dates} is {dt_days * 86400:.0f} s apart, under "
            f"{MIN_SEPARATION_DAYS:g} day: its offsets would give absurd speeds; check the dates",
            path,
            key=key,
        )
    if dt_days > MAX_SEPARATION_DAYS:
        raise InputError(
            f"the pair {dates} is {dt_days / 365.25:.0f} years apart, over "
            f"{MAX_SEPARATION_DAYS / 365.25:.0f} years: no feature survives that long; check "
            "the dates",
            path,
            key=key,
        )
