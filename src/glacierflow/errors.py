"""Exceptions that glacierflow raises for bad input.

Every error names the file (when there is one), the problem and, where possible, the fix. The
command line turns any :class:`GlacierflowError` into a one-line message and exit status 2.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
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
    key : str or iterable of str, optional
        The settings the problem is about, as dotted keys of the settings tree
        (``"matching.chip_px"``; see :mod:`glacierflow.settings`). The message names them by
        these keys; :func:`render` renames them for the command line or a project file.
    """

    def __init__(
        self,
        problem: str,
        path: str | PathLike[str] | None = None,
        *,
        key: str | Iterable[str] | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.keys: tuple[str, ...] = (key,) if isinstance(key, str) else tuple(key or ())
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    @property
    def key(self) -> str | None:
        """The first setting the problem is about (a dotted key), or None."""
        return self.keys[0] if self.keys else None

    def __reduce__(self) -> tuple:
        # Rebuilt from its parts when sent back from a worker process or a Dask task.
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type, state: dict) -> GlacierflowError:
    exc = cls.__new__(cls)
    exc.__dict__.update(state)
    message = f"{state['path']}: {state['problem']}" if state.get("path") else state["problem"]
    exc.args = (message,)
    return exc


class NoAcquisitionTimeError(InputError):
    """The acquisition time of a scene cannot be found in its metadata or name.

    Made by :meth:`missing`, the message ends by naming the settings that give the time;
    :meth:`given_by` names only the one that gives this scene's time.
    """

    #: How the message ends: which settings give the time, and in what form.
    _ASK = "; give it as {keys} (an ISO date or date-time, e.g. 2016-07-18)"

    @classmethod
    def missing(
        cls, reason: str, path: str | PathLike[str] | None, keys: tuple[str, ...]
    ) -> NoAcquisitionTimeError:
        """The error for a scene at ``path`` whose time is missing for ``reason``, asking for
        it as one of ``keys`` (``("ref_date", "sec_date")``)."""
        exc = cls(reason + cls._ASK.format(keys=" or ".join(keys)), path, key=keys)
        exc.reason = reason
        return exc

    def given_by(self, key: str) -> NoAcquisitionTimeError:
        """The same error asking for the time as ``key`` only (e.g. ``"sec_date"``)."""
        reason = getattr(self, "reason", None)
        if reason is None:
            return self
        return type(self).missing(reason, self.path, (key,))


class DateConflictError(InputError):
    """A date given for a scene falls on another UTC day than its metadata's.

    Made by :meth:`between`; :meth:`given_by` names the setting that gave the date.
    """

    @classmethod
    def between(
        cls, path: str | PathLike[str] | None, given: str, found: str, key: str = "acquired"
    ) -> DateConflictError:
        """The error for the date ``given`` (text) against ``found`` (text naming its source),
        the date having come as ``key``."""
        exc = cls(
            f"the acquisition date given as {key} ({given}) contradicts {found}: they must fall "
            f"on the same UTC day. Fix {key} (a swapped or mistyped date reverses or scales the "
            "flow), or set trust_given_dates to use it anyway",
            path,
            key=(key, "trust_given_dates"),
        )
        exc.given, exc.found = given, found
        return exc

    def given_by(self, key: str) -> DateConflictError:
        """The same error naming ``key`` (e.g. ``"sec_date"``) as the setting that gave it."""
        given = getattr(self, "given", None)
        if given is None:
            return self
        return type(self).between(self.path, given, self.found, key)


@contextlib.contextmanager
def time_given_by(key: str) -> Iterator[None]:
    """Inside, a :class:`NoAcquisitionTimeError` asks for the time as ``key`` only, and a
    :class:`DateConflictError` names ``key`` as the setting that gave the date (the scene read
    is the one ``key`` dates, e.g. ``"ref_date"``)."""
    try:
        yield
    except (NoAcquisitionTimeError, DateConflictError) as exc:
        raise exc.given_by(key) from None


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


class SettingsError(InputError):
    """A setting with a value glacierflow cannot use, or an unknown setting.

    Parameters
    ----------
    key : str
        Dotted key of the setting (``"matching.chip_px"``).
    problem : str
        What is wrong with it, starting after its name (``"must be a positive whole number, got
        0"``); the message is ``f"{key} {problem}"``.
    allowed : iterable, optional
        The values it may take, when they are a short list.
    path : str or PathLike, optional
        The file the setting came from.
    """

    def __init__(
        self,
        key: str,
        problem: str,
        *,
        allowed: Iterable[object] | None = None,
        path: str | PathLike[str] | None = None,
    ) -> None:
        self.allowed = None if allowed is None else tuple(allowed)
        super().__init__(f"{key} {problem}", path, key=key)


def render(exc: BaseException, name: Callable[[str], str], known: Iterable[str] = ()) -> str:
    """The message of ``exc`` with the settings it names renamed by ``name``.

    The command line passes a function giving a setting's flag (``"matching.chip_px"`` ->
    ``"--chip-px"``), a project runner one giving its table key (``"[matching] chip_px"``). The
    settings the error carries (``exc.keys``) are recognised by their dotted key, or by its last
    part standing alone when that is an identifier with an underscore (``chip_px``, not
    ``method``); the ``known`` dotted keys by their dotted form only. The file name that leads
    the message is left as it is.
    """
    names: dict[str, str] = {}
    for key in getattr(exc, "keys", ()):
        new = name(key)
        names.setdefault(key, new)
        leaf = key.rsplit(".", 1)[-1]
        if "_" in leaf:
            names.setdefault(leaf, new)
    for key in known:
        names.setdefault(key, name(key))
    path = getattr(exc, "path", None)
    text = exc.problem if isinstance(exc, InputError) else str(exc)
    if names:
        # One pass, longest names first, so that a renamed setting is not renamed again.
        words = "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True))
        text = re.sub(rf"(?<![\w.\-/])({words})(?![\w/])", lambda m: names[m.group(1)], text)
    return f"{path}: {text}" if path and isinstance(exc, InputError) else text


class MissingExtraError(GlacierflowError, ImportError):
    """A command needs an optional part of glacierflow that is not installed.

    Parameters
    ----------
    extra : str
        The extra that provides it (``"portal"``, ``"dask"``, ``"search"``).
    module : str
        The missing top-level module (``"fastapi"``).
    what : str
        What needs it, for the message (``"glacierflow serve"``).
    """

    def __init__(self, extra: str, module: str, what: str) -> None:
        self.extra, self.module, self.what = extra, module, what
        super().__init__(
            f"{what} needs the optional package {module!r}, which is not installed; "
            f"install it with: pip install 'glacierflow[{extra}]'"
        )

    def __reduce__(self) -> tuple:
        return (type(self), (self.extra, self.module, self.what))
