"""The ``glacierflow`` command line: a thin shell over the library, one module per command.

In the style of rasterio's ``rio``: :mod:`.main` holds the group, each command lives in its own
small module (:mod:`.track`, :mod:`.demo`, :mod:`.run`, :mod:`.search`, :mod:`.publish`,
:mod:`.serve`), and :mod:`.options` builds the options of the settings tree. Any
:class:`~glacierflow.errors.GlacierflowError` becomes one line on stderr and exit status 2, in
one place (the group's ``invoke``), with settings named by their flags.
"""

from glacierflow.cli.main import cli, main

__all__ = ["cli", "main"]
