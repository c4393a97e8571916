"""Attach a projection to an open log: caught up now, then applied on every commit."""

from __future__ import annotations

from collections.abc import Sequence

from tasklog.events import Event
from tasklog.log import TaskLog

from . import open as open_projection
from . import snapshot
from .base import Projection

__all__ = ["attach", "detach"]


def attach(log: TaskLog, projection: Projection | str) -> Projection:
    """Keep ``projection`` in step with ``log``; a query sees every event whose append returned."""
    proj = open_projection(projection) if isinstance(projection, str) else projection

    def on_commit(batch: Sequence[tuple[int, Event]]) -> None:
        # A commit can outrun the catch-up read (or follow a gap from another process's
        # commits): read what is missing from the log first, so events apply in order.
        with proj._lock:
            if batch and batch[0][0] > proj.last_seq + 1:
                snapshot.catch_up(proj, log, stop=batch[0][0] - 1)
            proj.apply(batch)

    log.add_listener(on_commit)
    with proj._lock:
        snapshot.catch_up(proj, log)
    if log.durability == "async":
        # An async append returns before its commit: flush so reads see it.
        def flush() -> None:
            log.flush()
        proj._before_read = flush
    proj._detach = lambda: log.remove_listener(on_commit)  # type: ignore[attr-defined]
    return proj


def detach(projection: Projection) -> None:
    """Stop applying the log's commits to ``projection``."""
    undo = getattr(projection, "_detach", None)
    if undo is not None:
        undo()
        projection._before_read = None
