"""Progress reporting: terminal bars, and sinks that carry a pair's progress elsewhere.

A pair reports the nodes it has matched; where they go depends on who runs it. On a terminal
they drive a ``tqdm`` bar; in a worker process they go to a :class:`ProgressSink` that forwards
them (e.g. through a queue to a bar in the parent).
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["Progress", "ProgressSink", "node_bar"]


class ProgressSink:
    """Receives a pair's matching progress instead of a progress bar.

    Subclasses override :meth:`start` (called once with the number of nodes) and :meth:`update`
    (called with the nodes finished since the last call); they must pickle when the pair runs
    in another process.
    """

    def start(self, total_nodes: int) -> None:
        """The pair has ``total_nodes`` nodes to match."""

    def update(self, nodes: int) -> None:
        """``nodes`` more nodes are matched."""


#: What a caller may pass as ``progress``: True (a bar), False (none), None (a bar when stderr
#: is a terminal), or a :class:`ProgressSink`.
Progress = bool | None | ProgressSink


def node_bar(total_nodes: int, progress: Progress, desc: str = "matching") -> Any:
    """A context manager giving an object whose ``update(nodes)`` reports matched nodes.

    Parameters
    ----------
    total_nodes : int
        Nodes to match.
    progress : bool, None or ProgressSink
        True: a terminal bar; False: none; None: a bar when stderr is a terminal; a
        :class:`ProgressSink`: it is started with ``total_nodes`` and receives the updates.
    desc : str
        Label of the bar.
    """
    if isinstance(progress, ProgressSink):
        progress.start(total_nodes)
        return contextlib.nullcontext(progress)
    from tqdm.auto import tqdm

    return tqdm(
        total=total_nodes,
        unit="node",
        desc=desc,
        disable=(not progress) if progress is not None else None,
        leave=False,
    )
