"""glacierflow: glacier surface velocity from pairs of optical satellite images."""

from __future__ import annotations

__all__ = ["__version__", "track"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("glacierflow")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0.0.0+unknown"


def __getattr__(name: str):  # lazy: keep `import glacierflow` light
    if name == "__version__":
        globals()["__version__"] = value = _version()
        return value
    if name == "track":
        from glacierflow.track import track

        return track
    raise AttributeError(name)
