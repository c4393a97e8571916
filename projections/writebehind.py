"""Write-behind for slow projections: fold each event into a small overlay, store in batches.

A hub feeds its projection one event per call and reads the record it just
changed. SQLite then pays a transaction per event and MongoDB a round trip per
event. Here events are folded at once into an overlay of the records they
touch (so ``get_record`` and ``peek`` see every event), and handed to the
projection every ``batch`` events; any other read flushes first. The log is the
durable copy, so a crash loses nothing: the projection catches up on open.

``WriteBehind`` is itself a projection (middleware, as a storage that wraps a
storage): anything that takes a projection takes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from tasklog.events import Event
from tasklog.lifecycle import TaskState

from . import counts
from .base import Projection, Records, TaskTimes
from .fold import Anomalies, apply_event, refer_buffers, settle, targets
from .paging import Cursor, Page
from .query import Logical

__all__ = ["WriteBehind"]

_EXACT = timedelta(microseconds=1)


class WriteBehind(Projection):
    """Wraps a projection: per-event folds in memory, batched stores, reads that see everything."""

    def __init__(self, inner: Projection, batch: int = 1024) -> None:
        super().__init__()
        self.inner = inner
        self.batch = batch
        self.spec = inner.spec
        self.persistent = inner.persistent
        self.datetime_resolution = inner.datetime_resolution
        self.last_seq = inner.last_seq
        self.log_identity, self.pinned = inner.log_identity, inner.pinned
        self.source, self.buffers = inner.source, inner.buffers
        self._overlay: dict[str, dict[str, Any] | None] = {}
        self._forget_pending()

    def _forget_pending(self) -> None:
        self._changed: set[str] = set()  # overlay records that pending events changed
        self._pending = 0  # events folded into the overlay and not yet stored
        self._anomalies: Anomalies = Counter()  # met while folding them: the projection's once stored
        self._counted: counts.EventCounts = Counter()  # their types, stored with them

    # -- applying: into the overlay, then in batches into the projection ------------------

    def apply_one(self, seq: int, event: Event) -> int:
        """Fold one event into the overlay; store the batch when it is full."""
        with self._lock:
            if seq <= self.last_seq:
                return 0
            overlay = self._overlay
            missing = {m for m in targets(event) if m not in overlay}
            if missing:
                self._read_through(missing, keep=True)  # the fold works on the overlay: always kept
            self._changed.update(apply_event(overlay, seq, event, self._anomalies))
            if self.inner.by_reference:
                refer_buffers(overlay, seq, event)  # the overlay refers to the log, as the projection does
            self._pending += 1
            self._counted[counts.key(seq, event)] += 1
            self.last_seq = seq
            if self._pending >= self.batch:
                self.flush()
            return 1

    def apply(self, batch: Sequence[tuple[int, Event]]) -> int:
        """Store everything pending, then ``batch``, in the projection."""
        with self._lock:
            self.flush()
            self._overlay.clear()  # the projection's records change under it: no stale copies
            done = self.inner.apply(batch)
            self.last_seq = self.inner.last_seq
            return done

    def flush(self) -> None:
        """Store the records the pending events changed (one batch); the overlay stays as a cache."""
        # The overlay's records are what the projection would fold from the same events, from
        # the same records: storing them saves folding every event twice (and the projection's
        # second read of each record).
        with self._lock:
            if self._pending:
                settle(self._overlay, self._changed)
                self.inner.store_folded({m: self._overlay[m] for m in self._changed}, self.last_seq,
                                        self._anomalies, self._pending, self._counted)
            self._forget_pending()
            # Stored now, the overlay's records equal the projection's: the newest stay cached for
            # the results still to come (a Hub's tasks cross a flush between submit and result:
            # reading each back cost a SELECT and a decode). The oldest go, so it stays bounded.
            # Only where the projection keeps the records exactly (MongoDB cuts datetimes to ms).
            overlay = self._overlay
            if self.inner.datetime_resolution != _EXACT:
                overlay.clear()
            elif len(overlay) > 2 * self.batch:
                for m in list(overlay)[:len(overlay) - self.batch]:
                    del overlay[m]

    def rewind(self, msg_ids: set[str], last_seq: int) -> None:
        """Fold ``msg_ids`` and the tasks of every pending event again from the log, into the
        projection, at checkpoint ``last_seq``; the pending state goes (it may hold lost events)."""
        with self._lock:
            # The projection first: if it fails (its disk is full too) nothing here has changed.
            self.inner.rewind(msg_ids | self._changed, last_seq)
            self._forget_pending()
            self._overlay.clear()
            self.last_seq = self.inner.last_seq

    def restore(self, records: Iterable[dict[str, Any]], last_seq: int, anomalies: Anomalies) -> None:
        """Restore a snapshot into the projection."""
        with self._lock:
            self.flush()
            self._overlay.clear()
            self.inner.restore(records, last_seq, anomalies)
            self.last_seq, self.restored_from = self.inner.last_seq, self.inner.restored_from

    # -- the marks are the projection's -------------------------------------------------

    def bind(self, identity: str | None) -> None:
        """Tie the projection to the log ``identity`` (refusing another log's records)."""
        self.inner.bind(identity)
        self.log_identity = self.inner.log_identity

    def read_from(self, source: Any) -> None:
        """Read events from ``source``, here and in the projection."""
        self.inner.read_from(source)
        self.source = source

    def pin(self, seq: int | None) -> None:
        """Pin the projection at ``seq`` (None: let it follow the log)."""
        self.flush()
        self.inner.pin(seq)
        self.pinned = self.inner.pinned

    # -- storage: the overlay first, then the projection ----------------------------------

    def _load(self, msg_ids: set[str]) -> Records:
        out: Records = {}
        rest = set()
        for m in msg_ids:
            if m in self._overlay:
                out[m] = self._overlay[m]
            else:
                rest.add(m)
        settle(out, out)  # the overlay's streams may still be in chunks: joined when read
        if rest:
            # Kept, found or not: the Hub peeks at a new task, then appends its submit; the
            # submit then finds it here instead of asking the projection again. Reads alone
            # (no events, so no flush) must not grow the overlay without end: kept up to a bound.
            out.update(self._read_through(rest, keep=len(self._overlay) < 4 * self.batch))
        return out

    def _read_through(self, msg_ids: set[str], keep: bool) -> Records:
        """The projection's records of ``msg_ids`` (None where it has none), kept in the overlay if ``keep``."""
        loaded = self.inner.records_of(msg_ids)
        found: Records = {m: loaded.get(m) for m in msg_ids}
        if keep:
            self._overlay.update(found)  # trimmed at each flush
        return found

    def _store(self, records: Records, changed: set[str], last_seq: int) -> None:
        raise NotImplementedError("WriteBehind stores through its projection's apply")  # apply is overridden

    def _find(self, node: Logical, keys: list[str] | None) -> list[dict[str, Any]]:
        self.flush()
        return self.inner.find_records(node, keys)

    def _count(self, node: Logical) -> int:
        self.flush()
        return self.inner.count(node)

    def _page(self, node: Logical, sort: str, descending: bool, limit: int, after: Cursor | None) -> Page:
        self.flush()
        return self.inner.find_page(node, sort=sort, descending=descending, limit=limit, after=after)

    def task_times(self, msg_ids: Collection[str] | None = None) -> Iterator[TaskTimes]:
        """The projection's tasks' times, after a flush."""
        self.flush()
        return self.inner.task_times(msg_ids)

    def _history(self) -> list[str]:
        self.flush()
        return self.inner.get_history()

    def _clear(self) -> None:
        self._forget_pending()
        self._overlay.clear()
        self.inner.clear()

    # get_record and peek need no override (nor a flush): base reads through _load, which reads
    # the overlay, then the projection.

    # -- the rest: figures after a flush, and close ------------------------------------------

    def task_states(self) -> Iterator[TaskState]:
        """The projection's tasks' states, after a flush."""
        self.flush()
        return self.inner.task_states()

    def tasks_by(self, name: str) -> Counter[str | None]:
        """The projection's tasks by ``name``, after a flush (its own way: SQLite's is one ``GROUP BY``)."""
        self.flush()
        return self.inner.tasks_by(name)

    def stats(self) -> dict[str, Any]:
        """The projection's figures, after a flush."""
        self.flush()
        return self.inner.stats()

    def close(self) -> None:
        """Flush, then close the projection."""
        self.flush()
        self.inner.close()

    def __repr__(self) -> str:
        return f"<WriteBehind {self.inner!r}, {self._pending} pending>"
