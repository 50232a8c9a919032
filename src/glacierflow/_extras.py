"""The optional parts of glacierflow and the one-line message when one is missing.

The core package tracks pairs and runs projects (``glacierflow track``, ``demo``, ``run``).
Three extras add the rest, each a ``pip install 'glacierflow[NAME]'`` away:

``portal``  ``glacierflow publish`` and ``serve``: FastAPI, uvicorn, rio-tiler, Jinja2, pystac
``dask``    a ``dask.distributed`` scheduler for tiles or pairs (``--scheduler ADDRESS``)
``search``  ``glacierflow search``: pystac-client

Code that needs an extra imports it inside :func:`needs`, which turns the
``ModuleNotFoundError`` of one of that extra's modules into a
:class:`~glacierflow.errors.MissingExtraError` naming the ``pip install`` to run. A missing
module that belongs to no extra is a bug and is raised as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from glacierflow.errors import MissingExtraError

__all__ = ["EXTRAS", "needs"]

#: Extra -> the top-level modules it installs that glacierflow imports.
EXTRAS: dict[str, tuple[str, ...]] = {
    "portal": (
        "fastapi",
        "starlette",
        "uvicorn",
        "h11",
        "rio_tiler",
        "morecantile",
        "jinja2",
        "pystac",
    ),
    "dask": ("dask", "distributed"),
    "search": ("pystac_client", "pystac"),
}


@contextmanager
def needs(extra: str, what: str) -> Iterator[None]:
    """Run the ``with`` block's imports; a module of ``extra`` missing raises one clear error.

    Parameters
    ----------
    extra : str
        A key of :data:`EXTRAS`.
    what : str
        What needs it, named in the message (``"glacierflow serve"``).

    Raises
    ------
    MissingExtraError
        When the block fails to import one of the extra's modules.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRAS[extra]:
            raise
        raise MissingExtraError(extra, top, what) from None
