"""What a projection answers through its own queries: every match a page at a time, tasks' states,
times and counts, a DataFrame. ``Projection`` inherits them; a backend that can answer one
faster overrides it (SQLite reads states and times from its columns and counts with GROUP BY).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from tasklog.fields import micros
from tasklog.lifecycle import TaskState

from . import frames
from .fold import is_tombstone
from .paging import Cursor, Page

__all__ = ["Derived", "TaskTimes", "times_of"]

#: A task's msg_id, submitted, started and completed times (µs since the epoch), whether it failed, its engine.
TaskTimes = tuple[str, int | None, int | None, int | None, bool, str | None]


def times_of(t: TaskState) -> TaskTimes:
    """A task's state as ``task_times`` gives it."""
    return (t.msg_id, None if t.submitted is None else micros(t.submitted),
            None if t.started is None else micros(t.started),
            None if t.completed is None else micros(t.completed), t.failed, t.engine_uuid)


class Derived:
    """Answers made of a projection's own queries (``find_records``, ``find_page``)."""

    if TYPE_CHECKING:
        spec: str
        last_seq: int
        applied: int
        anomalies: Counter[str]

        def count(self, query: Any = None) -> int:
            """How many records match a query (``Projection``'s)."""

        def records_of(self, msg_ids: set[str]) -> dict[str, dict[str, Any] | None]:
            """The stored records of ``msg_ids`` (``Projection``'s)."""

        def find_records(self, query: Any = None, keys: Any = None) -> list[dict[str, Any]]:
            """Records matching a query (``Projection``'s)."""

        def find_page(self, query: Any = None, keys: Any = None, sort: str = "submitted", descending: bool = True,
                      limit: int = 100, after: Cursor | None = None) -> Page:
            """One page of a query's matches (``Projection``'s)."""

    def iter_records(self, query: Any = None, keys: Any = None, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every match of ``query`` by msg_id, read a page at a time (bounded memory where the backend pages)."""
        after: Cursor | None = None
        while True:
            page = self.find_page(query, keys, sort="msg_id", descending=False, limit=batch, after=after)
            yield from page.records
            if page.after is None:
                return
            after = page.after

    def task_states(self) -> Iterator[TaskState]:
        """Every task's lifecycle state (streamed where the backend can); purged ones where the backend keeps them."""
        for rec in self.find_records({}):
            yield TaskState.of_record(rec["msg_id"], rec)

    def task_times(self, msg_ids: Collection[str] | None = None) -> Iterator[TaskTimes]:
        """Each task's msg_id, submitted, started and completed times in µs since the epoch, whether
        it failed, and its engine: what charts of a whole cluster read (purged tasks left out);
        only those of ``msg_ids`` if given."""
        if msg_ids is None:
            return (times_of(t) for t in self.task_states() if not t.dropped)
        stored = self.records_of(set(msg_ids))
        return (times_of(TaskState.of_record(m, r)) for m, r in stored.items() if r is not None and not is_tombstone(r))

    def tasks_by(self, name: str) -> Counter[str | None]:
        """Tasks, purged ones included, by ``state`` (see ``tasklog.lifecycle.STATES``) or another TaskState field."""
        return Counter(getattr(task, name) for task in self.task_states())

    def stats(self) -> dict[str, Any]:
        """Applied events, the checkpoint, and the anomalies met (events about unknown or dropped tasks)."""
        return {"spec": self.spec, "last_seq": self.last_seq, "applied": self.applied,
                "records": self.count({}), "anomalies": dict(self.anomalies)}

    def to_dataframe(self, query: Any = None, keys: Any = None) -> Any:
        """The records matching ``query`` as a pandas DataFrame indexed by msg_id (needs ``tasklog[frames]``)."""
        return frames.to_dataframe(self, query, keys)
