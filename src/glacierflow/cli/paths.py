"""The path options several commands share (``-o/--out``, ``--catalog``), defined once.

Only click and pathlib: a command that takes no tracking settings (``search``, ``publish``,
``serve``) starts without importing the settings tree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["OutputPath", "catalog_option", "out_option"]


class OutputPath(click.Path):
    """A path to write, which may not be empty (``-o ""`` would quietly write into the current
    folder)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give the folder or file to write, e.g. -o out", param, ctx)
        return super().convert(value, param, ctx)


def out_option(dest: str, help: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """``-o/--out``, the file or folder a command writes (not empty), passed as ``dest``;
    ``kwargs`` add ``required`` or a ``default``."""
    return click.option("-o", "--out", dest, type=OutputPath(), help=help, **kwargs)


def catalog_option(help: str) -> Callable[[Callable[..., Any]], Any]:
    """``--catalog``, the STAC catalog folder (required), passed as ``catalog_dir``."""
    return click.option(
        "--catalog", "catalog_dir", required=True, type=click.Path(path_type=Path), help=help
    )
