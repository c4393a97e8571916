"""Where a view of a pruned log starts: its tasks as a snapshot holds them.

``timeline``, ``report`` and ``stats`` read a log's events from the first. Once a prune removed
the oldest ones, reading what is left gave a silently partial view (issue 20, item 11); they
start instead from the snapshot the log continues from, then read the events after it. The edge
that knows what a snapshot's records are (``projections.snapshot.view_base``) makes a Baseline;
a log's read model (``projections.readmodel``) is one too, after its last event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .lifecycle import TaskState

__all__ = ["Baseline"]


@dataclass(frozen=True)
class Baseline:
    """The tasks after event ``seq``: ``tasks()`` yields each one's TaskState (a purged one
    ``dropped``), reading them afresh at each call."""

    seq: int
    tasks: Callable[[], Iterator[TaskState]]
