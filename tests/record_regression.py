"""Write the reference arrays of the regression net: ``python tests/record_regression.py``.

Runs every case of :mod:`regression_cases` and writes ``tests/data/regression/<case>.npz``
(compressed, arrays as the products hold them). Run it only on code whose results are meant to
be the reference (e.g. before a refactor); ``tests/test_regression.py`` then checks that later
code reproduces them. ``python tests/record_regression.py CASE ...`` records only those cases.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from regression_cases import CASES, REFERENCE_DIR  # noqa: E402


def main(names: list[str]) -> None:
    """Run the cases ``names`` (default: all) and write their reference files."""
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        sys.exit(
            f"record_regression: unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}"
        )
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    for name in names or list(CASES):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"regression-{name}-") as work:
            arrays = CASES[name](Path(work))
        path = REFERENCE_DIR / f"{name}.npz"
        np.savez_compressed(path, **arrays)
        print(
            f"{name}: {len(arrays)} arrays, {path.stat().st_size / 1e3:.0f} kB, "
            f"{time.perf_counter() - start:.1f} s -> {path}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
