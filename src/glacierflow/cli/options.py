"""Command-line options built from the settings tree, and the one-line error message.

Every setting of :mod:`glacierflow.settings` becomes an option whose flag is its short name
with ``-`` for ``_`` (``matching.chip_px`` -> ``--chip-px``, ``coreg.method`` -> ``--coreg``),
whose type, choices, default and help come from the setting's field. A command takes the
values by short name and hands them to :func:`track_settings`.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import click

from glacierflow.errors import GlacierflowError, render
from glacierflow.settings import LEAVES, Leaf

#: Choices of settings whose class declares them as plain ``str`` checked in code; a
#: ``Literal`` field gives its own. Names of constants of :mod:`glacierflow.matching`.
_CODE_CHOICES: dict[str, str] = {
    "matching.method": "METHODS",
    "matching.subpixel": "SUBPIXEL_METHODS",
    "matching.ncc_kernel": "NCC_KERNELS",
    "matching.refine": "REFINE_MODES",
}


def _code_choices(key: str) -> list[str] | None:
    import importlib

    for module in (
        "glacierflow.matching",
        "glacierflow.matching.settings",
        "glacierflow.matching.core",
    ):
        try:
            values = getattr(importlib.import_module(module), _CODE_CHOICES[key], None)
        except ImportError:
            continue
        if values is not None:
            return [str(v) for v in values]
    return None


def flag(key: str) -> str:
    """The command-line flag of a setting (a dotted key of the tree, or an argument name like
    ``ref_date``); a group of settings (``"tiling"``) keeps its name."""
    if key in LEAVES:
        return "--" + LEAVES[key].short.replace("_", "-")
    if "." in key or key in {k.split(".")[0] for k in LEAVES}:
        return key
    return "--" + key.replace("_", "-")


def fail(exc: GlacierflowError) -> typing.NoReturn:
    """Print ``exc`` as one line naming flags, not library keys, and exit with status 2."""
    click.echo(f"glacierflow: error: {render(exc, flag, LEAVES)}", err=True)
    sys.exit(2)


def _click_type(leaf: Leaf) -> tuple[Any, dict[str, Any]]:
    """click type and extra option keywords for a setting's annotation."""
    ann = leaf.annotation
    args = typing.get_args(ann)
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        ann = Path if Path in kinds else kinds[0]
        args = typing.get_args(ann)
    if typing.get_origin(ann) is Literal:
        return click.Choice([str(a) for a in args]), {}
    if typing.get_origin(ann) is tuple:
        return args[0], {"multiple": True}
    if ann is bool:
        return bool, {"is_flag": True}
    if ann is Path:
        return click.Path(path_type=Path), {}
    if ann is str and leaf.key in _CODE_CHOICES and (choices := _code_choices(leaf.key)):
        return click.Choice(choices), {}
    return ann, {}


def _all_cpus() -> int:
    from glacierflow.execute import available_cpus

    return available_cpus()


#: ``--workers``, with one meaning, help and default in every command that matches
#: (``track``, ``demo``, ``run``): processes, every CPU this process may use by default.
WORKERS: dict[str, Any] = {
    "type": click.IntRange(min=1),
    "default": _all_cpus,
    "show_default": "all CPUs",
    "help": "Processes matching the nodes (the products do not depend on it).",
}

#: ``--overwrite`` of the commands that write products into a folder (``track``, ``demo``).
OVERWRITE: dict[str, Any] = {
    "is_flag": True,
    "help": "Replace products of an earlier run in the output folder (without it they are "
    "kept and the command stops before reading any image).",
}


def setting_option(key: str, **overrides: Any) -> Callable[[Callable[..., Any]], Any]:
    """A click option for one setting; ``overrides`` replace any derived keyword."""
    leaf = LEAVES[key]
    kind, extra = _click_type(leaf)
    name = leaf.short.replace("_", "-")
    decls = [f"--{name}/--no-{name}"] if extra.pop("is_flag", False) else [f"--{name}"]
    kwargs: dict[str, Any] = {
        "type": None if kind is bool else kind,
        "default": leaf.default,
        "show_default": leaf.default is not None and leaf.default != (),
        "help": leaf.description,
        **extra,
    }
    if kind is bool:
        kwargs.pop("type")
    kwargs.update(overrides)
    return click.option(*decls, leaf.short, **kwargs)


def setting_options(
    keys: Iterable[str] = LEAVES, overrides: dict[str, dict[str, Any]] | None = None
) -> Callable[[Callable[..., Any]], Any]:
    """Options for the settings ``keys`` (default: the whole tree), in that order."""
    keys, overrides = list(keys), overrides or {}

    def decorate(func: Callable[..., Any]) -> Any:
        for key in reversed(keys):
            func = setting_option(key, **overrides.get(key, {}))(func)
        return func

    return decorate


def shortcuts(values: dict[str, Any]) -> dict[str, Any]:
    """The settings among a command's parameters, by short name (for ``track_settings``)."""
    short = {leaf.short for leaf in LEAVES.values()}
    return {name: value for name, value in values.items() if name in short}
