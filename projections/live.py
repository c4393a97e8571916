"""Attach a projection to an open log: caught up now, then applied on every commit."""

from __future__ import annotations

from collections.abc import Sequence

from tasklog.events import Event
from tasklog.log import TaskLog

from . import open as open_projection
from . import snapshot
from .base import Projection

__all__ = ["attach", "detach", "Attachment"]


class Attachment:
    """A projection kept in step with a log: a listener on its commits, a flush before reads."""

    def __init__(self, log: TaskLog, projection: Projection) -> None:
        self.log = log
        self.projection = projection

    def on_commit(self, batch: Sequence[tuple[int, Event]]) -> None:
        """Apply a committed batch, reading first what the projection misses of the log."""
        proj = self.projection
        # A commit can outrun the catch-up read (or follow a gap from another process's
        # commits): read what is missing from the log first, so events apply in order.
        with proj.lock:
            if batch and batch[0][0] > proj.last_seq + 1:
                snapshot.catch_up(proj, self.log, stop=batch[0][0] - 1)
            proj.apply(batch)

    def flush(self) -> None:
        """An async append returns before its commit: commit before a read, so it sees the append."""
        self.log.flush()

    def start(self) -> None:
        """Listen to the log's commits, then catch up with what it already holds."""
        proj = self.projection
        self.log.add_listener(self.on_commit)
        with proj.lock:
            snapshot.catch_up(proj, self.log)
        if self.log.durability == "async":
            proj.before_read = self.flush
        proj.attachment = self

    def stop(self) -> None:
        """Stop applying the log's commits."""
        self.log.remove_listener(self.on_commit)
        self.projection.before_read = None
        self.projection.attachment = None


def attach(log: TaskLog, projection: Projection | str) -> Projection:
    """Keep ``projection`` in step with ``log``; a query sees every event whose append returned."""
    proj = open_projection(projection) if isinstance(projection, str) else projection
    Attachment(log, proj).start()
    return proj


def detach(projection: Projection) -> None:
    """Stop applying the log's commits to ``projection``."""
    if isinstance(projection.attachment, Attachment):
        projection.attachment.stop()
