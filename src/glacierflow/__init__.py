"""glacierflow: glacier surface velocity from pairs of optical satellite images."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("glacierflow")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "track"]


def __getattr__(name: str):  # lazy: keep `import glacierflow` light
    if name == "track":
        from glacierflow.track import track

        return track
    raise AttributeError(name)
