"""The regression net: a refactor changes no result.

Every case of :mod:`regression_cases` (the CLI on a crop of the bundled Yahtse pair with each
correlator and pre-filter, the pyramid/retry/affine/fill options, a tiled run, the demo, and a
project run on a synthetic four-year series) is run and compared, array by array, with the
reference written by ``tests/record_regression.py`` on the code before the redesign of issue 11.

Integer, flag and text arrays must be equal; float arrays must have their NaNs at the same
places and agree within ``rtol = atol = 1e-6`` elsewhere, so that a CPU differing in the last bit
passes. With ``GLACIERFLOW_REGRESSION_EXACT=1`` every array must be bit for bit the reference.
Re-record (``python tests/record_regression.py [CASE ...]``) only when a change of results is
intended, and say so in the commit.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from regression_cases import CASES, REFERENCE_DIR, is_exact

RTOL = ATOL = 1e-6
EXACT = os.environ.get("GLACIERFLOW_REGRESSION_EXACT") == "1"


@pytest.fixture(scope="session")
def results(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """Products of each case, run at most once per session (``results[case]`` runs it)."""

    class _Lazy(dict):
        def __missing__(self, name: str) -> dict[str, np.ndarray]:
            self[name] = CASES[name](tmp_path_factory.mktemp(name))
            return self[name]

    return _Lazy()


def load_reference(name: str) -> dict[str, np.ndarray]:
    path = REFERENCE_DIR / f"{name}.npz"
    if not path.exists():
        pytest.fail(f"{path}: no reference; run `python tests/record_regression.py {name}`")
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def compare(name: str, got: np.ndarray, ref: np.ndarray) -> tuple[str | None, str | None]:
    """(problem, note) of one array against its reference.

    The problem fails the test; the note says that a float array agrees within the tolerance
    but not bit for bit (a failure only with ``GLACIERFLOW_REGRESSION_EXACT=1``).
    """
    got = np.asarray(got)
    if got.shape != ref.shape:
        return f"{name}: shape {got.shape}, reference {ref.shape}", None
    if not name.startswith("attr/") and got.dtype != ref.dtype:
        return f"{name}: dtype {got.dtype}, reference {ref.dtype}", None
    if is_exact(name, ref) or ref.dtype.kind not in "fc":
        if np.array_equal(got, ref, equal_nan=ref.dtype.kind in "fc"):
            return None, None
        if ref.dtype.kind in "biuf":
            bad = int(np.count_nonzero(got != ref))
            diff = np.nanmax(np.abs(got.astype(np.float64) - ref.astype(np.float64)), initial=0.0)
            return f"{name}: {bad} values differ (must be equal), max |diff| {diff:.3g}", None
        return f"{name}: {np.count_nonzero(got != ref)} values differ (must be equal)", None
    g, r = got.astype(np.float64), ref.astype(np.float64)
    nan_g, nan_r = np.isnan(g), np.isnan(r)
    diff = np.abs(g - r)
    max_diff = float(np.max(diff[~nan_g & ~nan_r], initial=0.0))
    if not np.array_equal(nan_g, nan_r):
        return (
            f"{name}: NaN at {int(np.count_nonzero(nan_g & ~nan_r))} new and "
            f"{int(np.count_nonzero(nan_r & ~nan_g))} lost places; "
            f"max |diff| elsewhere {max_diff:.3g}"
        ), None
    both = ~nan_r
    close = np.isclose(g[both], r[both], rtol=RTOL, atol=ATOL) | (g[both] == r[both])
    if not close.all():
        return (
            f"{name}: {int(np.count_nonzero(~close))} of {int(both.sum())} values beyond "
            f"rtol=atol={RTOL:g}, max |diff| {max_diff:.3g}"
        ), None
    if np.array_equal(got, ref, equal_nan=True):
        return None, None
    return None, f"{name}: not bit-exact, max |diff| {max_diff:.3g}"


@pytest.mark.parametrize("case", list(CASES))
def test_products_match_the_reference(case, results):
    reference = load_reference(case)
    got = results[case]
    problems, inexact = [], []
    missing = sorted(set(reference) - set(got))
    if missing:
        problems.append(f"missing from the products: {', '.join(missing)}")
    for name in sorted(set(reference) & set(got)):
        problem, note = compare(name, got[name], reference[name])
        if problem:
            problems.append(problem)
        if note:
            inexact.append(note)
    if EXACT:
        problems += inexact
    elif inexact:
        warnings.warn(
            f"{case}: within tolerance but not bit-exact: " + "; ".join(inexact), stacklevel=1
        )
    assert not problems, (
        f"{case}: {len(problems)} of {len(reference)} reference arrays differ "
        f"({'bit-exact' if EXACT else f'rtol=atol={RTOL:g}'}):\n  " + "\n  ".join(problems)
    )


def test_a_tiled_run_equals_the_untiled_one(results):
    untiled, tiled = results["track_ncc"], results["track_tiled"]
    common = sorted(set(untiled) & set(tiled))
    assert len(common) > 80
    differ = [k for k in common if not np.array_equal(untiled[k], tiled[k], equal_nan=True)]
    assert not differ, f"tiled and untiled products differ in {differ}"


def test_the_cases_differ_from_each_other():
    """The net is not blind: each case's speeds differ from the default run's."""
    base = load_reference("track_ncc")["tif/v"]
    for case in CASES:
        if case.startswith("track_") and case not in ("track_ncc", "track_tiled"):
            v = load_reference(case)["tif/v"]
            assert not np.array_equal(v, base, equal_nan=True), f"{case} equals track_ncc"
