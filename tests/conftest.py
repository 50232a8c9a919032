"""Shared fixtures: paths to the real test data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder ``../shared/data`` beside the repository; skip if absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path}")
    return path


@pytest.fixture(scope="session")
def yahtse_dir() -> Path:
    """The Yahtse Landsat 8 pair shipped with the package (``glacierflow/data/yahtse``)."""
    path = Path(str(files("glacierflow") / "data" / "yahtse"))
    assert path.is_dir(), f"bundled Yahtse data missing at {path}"
    return path
