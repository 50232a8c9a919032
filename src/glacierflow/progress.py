"""Progress reporting: terminal bars, and sinks that carry a pair's progress elsewhere.

A pair reports the nodes it has matched; where they go depends on who runs it. On a terminal
they drive a ``tqdm`` bar; in a worker process they go to a :class:`ProgressSink` that forwards
them (e.g. through a queue to a bar in the parent).
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["Progress", "ProgressSink", "QueueSink", "TaskBars", "node_bar"]


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


class QueueSink(ProgressSink):
    """Sends one task's node counts from a worker process to :class:`TaskBars` in the parent.

    Parameters
    ----------
    queue : queue-like
        A queue both processes reach (a ``multiprocessing`` manager's ``Queue()``).
    index : int
        Which task (bar) the counts belong to.
    """

    def __init__(self, queue: Any, index: int) -> None:
        self.queue, self.index = queue, index

    def start(self, total_nodes: int) -> None:
        self.queue.put((self.index, "start", total_nodes))

    def update(self, nodes: int) -> None:
        self.queue.put((self.index, "update", nodes))


class TaskBars:
    """One node bar per running task (e.g. per pair of a project), below an overall bar.

    Parameters
    ----------
    queue : queue-like
        Where the tasks' :class:`QueueSink` put their counts.
    slots : int
        Tasks running at once: the bar positions to share out.
    label : str
        Bars are labelled ``f"{label} {index + 1}"``.
    """

    def __init__(self, queue: Any, slots: int, label: str = "task") -> None:
        self.queue, self.label = queue, label
        self.free = list(range(1, slots + 1))
        self.bars: dict[int, Any] = {}

    def drain(self) -> None:
        """Show the counts sent so far."""
        from tqdm.auto import tqdm

        while not self.queue.empty():
            index, kind, value = self.queue.get()
            if kind == "start":
                self.close(index)
                self.bars[index] = tqdm(
                    total=value,
                    unit="node",
                    desc=f"{self.label} {index + 1}",
                    position=self.free.pop(0) if self.free else None,
                    leave=False,
                )
            elif index in self.bars:
                self.bars[index].update(value)

    def close(self, index: int) -> None:
        """Close task ``index``'s bar (if it has one), freeing its position."""
        bar = self.bars.pop(index, None)
        if bar is not None:
            if bar.pos:
                self.free.append(abs(bar.pos))
            bar.refresh()  # the final count, which the bar's rate limit may not have shown
            bar.close()
