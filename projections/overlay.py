"""Read a projection another process keeps writing, plus the events it has not stored yet.

``tasklog query`` on a Hub's log answers from the Hub's own SQLite projection, opened
read-only, instead of replaying the log: the events past its checkpoint are folded into an
in-memory overlay here, and every answer is the overlay's records over the projection's.
Nothing is ever written to the projection. The fold is idempotent per record (each record
keeps the last sequence number applied to it), so a record the writer stored after the
checkpoint was read is never folded twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any

from tasklog.lifecycle import TaskState

from . import paging
from .base import Projection, Records, TaskTimes
from .counts import Counted
from .derived import times_of
from .errors import ProjectionError
from .fold import is_tombstone, task_of
from .paging import MAX_LIMIT, Cursor, Page
from .query import Logical, compile_predicate, public_copy

__all__ = ["Overlay"]


class Overlay(Projection):
    """Events folded in memory over a projection that is only read."""

    def __init__(self, inner: Projection) -> None:
        super().__init__()
        self.inner = inner
        self.spec = f"{inner.spec} (read-only, with the log's newer events)"
        self.last_seq = inner.last_seq
        self.log_identity, self.pinned = inner.log_identity, inner.pinned
        self.datetime_resolution = inner.datetime_resolution
        self.buffers = inner.buffers
        self.counted = Counted(inner.counted.blocks.copy(), inner.counted.since)
        self._records: Records = {}

    def read_from(self, source: Any) -> None:
        """Read events (buffers, re-folds) from ``source``, here and in the projection."""
        self.inner.read_from(source)
        self.source = source

    def bind(self, identity: str | None) -> None:
        """Refuse a projection of another log (nothing is written)."""
        if self.log_identity != identity:
            raise ProjectionError(f"{self.inner.spec} was built from log {self.log_identity}, not {identity}")

    def pin(self, seq: int | None) -> None:
        """Follow the log only: a pinned projection is answered by the projection itself."""
        if seq is not None or self.pinned is not None:
            raise ProjectionError(f"{self.inner.spec} is pinned; an overlay only follows the log")

    def _save_marks(self) -> None:
        raise ProjectionError(f"{self.inner.spec} is read here, never written")

    def _clear(self) -> None:
        raise ProjectionError(f"{self.inner.spec} is read here, never cleared")

    def _load(self, msg_ids: set[str]) -> Records:
        out = {m: self._records[m] for m in msg_ids if m in self._records}
        rest = msg_ids - out.keys()
        if rest:
            out.update(self.inner.records_of(rest))
        return out

    def _store(self, records: Records, changed: set[str], last_seq: int) -> None:
        for m in changed:
            self._records[m] = records[m]

    def _find(self, node: Logical, keys: list[str] | None) -> list[dict[str, Any]]:
        mine = self._records
        # The projection answers for every task the overlay does not hold; the overlay for the rest.
        below = [r for r in self.inner.find_records(node, keys) if r["msg_id"] not in mine]
        match = compile_predicate(node)
        hits = [r for r in mine.values() if r is not None and not is_tombstone(r) and match(r)]
        if keys is None:
            return below + [public_copy(r) for r in hits]
        # Copies: a caller's change to a list it was handed changed the overlay's record (the contract's keys test).
        return below + [public_copy({k: r[k] for k in ("msg_id", *keys) if k in r}) for r in hits]

    def _page(self, node: Logical, sort: str, descending: bool, limit: int, after: Cursor | None) -> Page:
        # The projection's own pages (its index, LIMIT) without the tasks the overlay holds, merged
        # with the overlay's matches: a page of a Hub's million tasks sorted them all in Python.
        mine = self._records
        match = compile_predicate(node)
        own = paging.page_of([public_copy(r) for r in mine.values() if r is not None and not is_tombstone(r)
                              and match(r)], sort, descending, limit + 1, after).records
        below: list[dict[str, Any]] = []
        cursor = after
        while len(below) <= limit:
            page = self.inner.find_page(node, sort=sort, descending=descending, limit=min(limit + 1, MAX_LIMIT),
                                        after=cursor)
            below += [r for r in page.records if r["msg_id"] not in mine]
            if page.after is None:
                break
            cursor = page.after
        both = sorted(below + own, key=lambda r: paging.order_key(r, sort), reverse=descending)
        return paging.cut(both[:limit + 1], sort, limit)

    def _history(self) -> list[str]:
        both = {r["msg_id"]: r.get("submitted") for r in self.inner.find_records({}, ["msg_id", "submitted"])}
        for m, rec in self._records.items():
            both.pop(m, None)
            if rec is not None and not is_tombstone(rec):
                both[m] = rec.get("submitted")

        def order(item: tuple[str, Any]) -> tuple[Any, ...]:
            m, sub = item
            return (1, sub, m) if isinstance(sub, datetime) else (0, m)
        return [m for m, _ in sorted(both.items(), key=order)]

    def task_states(self) -> Iterator[TaskState]:
        """The projection's tasks' states, with the overlay's in place of theirs."""
        mine = self._records
        for task in self.inner.task_states():
            if task.msg_id not in mine:
                yield task
        yield from (task_of(rec) for rec in mine.values() if rec is not None)

    def task_times(self, msg_ids: Collection[str] | None = None) -> Iterator[TaskTimes]:
        """The projection's tasks' times (its columns), with the overlay's in place of theirs."""
        mine = self._records
        below = None if msg_ids is None else [m for m in msg_ids if m not in mine]
        yield from (row for row in self.inner.task_times(below) if row[0] not in mine)
        ours = mine.values() if msg_ids is None else (mine[m] for m in msg_ids if m in mine)
        yield from (times_of(task_of(rec)) for rec in ours if rec is not None and not is_tombstone(rec))

    def tasks_by(self, name: str) -> Counter[str | None]:
        """The projection's tasks by ``name``, with the overlay's records in place of theirs."""
        out = self.inner.tasks_by(name)
        below = self.inner.records_of(set(self._records))
        out.subtract(getattr(task_of(rec), name) for rec in below.values() if rec is not None)
        out.update(getattr(task_of(rec), name) for rec in self._records.values() if rec is not None)
        return +out

    def close(self) -> None:
        """Close the projection."""
        self.inner.close()
