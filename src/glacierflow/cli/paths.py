"""Path options shared by the commands (standard library and click only: cheap to import)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["OutputPath"]


class OutputPath(click.Path):
    """A ``-o`` path: a folder or file to write, which may not be empty (``-o ""`` would
    quietly write into the current folder)."""

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give the folder or file to write, e.g. -o out", param, ctx)
        return super().convert(value, param, ctx)
