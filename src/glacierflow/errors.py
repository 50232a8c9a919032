"""Exceptions that glacierflow raises for bad input.

Every error names the file (when there is one), the problem and, where possible, the fix. The
command line turns any :class:`GlacierflowError` into a one-line message and exit status 2.
"""

from __future__ import annotations

from os import PathLike


class GlacierflowError(Exception):
    """Base class of every error glacierflow raises on purpose."""


class InputError(GlacierflowError, ValueError):
    """A file or a parameter that glacierflow cannot use.

    Parameters
    ----------
    problem : str
        What is wrong, and what to do about it.
    path : str or PathLike, optional
        The file the problem is about; it leads the message.
    """

    def __init__(self, problem: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class NoAcquisitionTimeError(InputError):
    """The acquisition time of a scene cannot be found in its metadata or name."""


class OutputError(GlacierflowError, OSError):
    """A product cannot be written (no space, no permission, a folder in the way).

    Parameters
    ----------
    problem : str
        What went wrong.
    path : str or PathLike
        The file that could not be written; it leads the message.
    """

    def __init__(self, problem: str, path: str | PathLike[str]) -> None:
        self.path = str(path)
        self.problem = problem
        Exception.__init__(self, f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def __reduce__(self) -> tuple:
        # Rebuilt from (problem, path) when sent back from a worker process or a Dask task;
        # OSError's own reduction would call __init__ with the message alone.
        return (type(self), (self.problem, self.path), self.__dict__)
