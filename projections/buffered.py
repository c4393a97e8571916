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
from collections.abc import Iterable, Sequence
from typing import Any

from tasklog.events import Event

from .base import Projection, Records
from .fold import Anomalies, apply_event, is_tombstone, targets
from .query import Logical, public_copy

__all__ = ["WriteBehind"]


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
        self._pending: list[tuple[int, Event]] = []
        self._scratch: Anomalies = Counter()  # the inner projection counts anomalies when it applies

    # -- applying: into the overlay, then in batches into the projection ------------------

    def apply_one(self, seq: int, event: Event) -> int:
        """Fold one event into the overlay; store the batch when it is full."""
        with self._lock:
            if seq <= self.last_seq:
                return 0
            overlay = self._overlay
            missing = {m for m in targets(event) if m not in overlay}
            if missing:
                loaded = self.inner.records_of(missing)
                for m in missing:
                    overlay[m] = loaded.get(m)
            apply_event(overlay, seq, event, self._scratch)
            self._pending.append((seq, event))
            self.last_seq = seq
            if len(self._pending) >= self.batch:
                self.flush()
            return 1

    def apply(self, batch: Sequence[tuple[int, Event]]) -> int:
        """Store everything pending, then ``batch``, in the projection."""
        with self._lock:
            self.flush()
            done = self.inner.apply(batch)
            self.last_seq = self.inner.last_seq
            return done

    def flush(self) -> None:
        """Hand the pending events to the projection (one batch) and empty the overlay."""
        with self._lock:
            if self._pending:
                self.inner.apply(self._pending)
            self._pending = []
            self._overlay.clear()

    def restore(self, records: Iterable[dict[str, Any]], last_seq: int, anomalies: Anomalies) -> None:
        """Restore a snapshot into the projection."""
        with self._lock:
            self.flush()
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
        if rest:
            out.update(self.inner.records_of(rest))
        return out

    def _store(self, records: Records, changed: set[str], last_seq: int) -> None:
        raise NotImplementedError("WriteBehind stores through its projection's apply")  # apply is overridden

    def _find(self, node: Logical, keys: list[str] | None) -> list[dict[str, Any]]:
        self.flush()
        return self.inner.find_records(node, keys)

    def _count(self, node: Logical) -> int:
        self.flush()
        return self.inner.count(node)

    def _history(self) -> list[str]:
        self.flush()
        return self.inner.get_history()

    def _clear(self) -> None:
        self._pending = []
        self._overlay.clear()
        self.inner.clear()

    # -- reads that need no flush --------------------------------------------------------

    def get_record(self, msg_id: str) -> dict[str, Any]:
        """A copy of the current record of ``msg_id``; KeyError (the projection's reason) if absent or dropped."""
        self._reading()
        with self._lock:
            rec = self._overlay.get(msg_id) if isinstance(msg_id, str) else None
            if rec is not None and not is_tombstone(rec):
                return self.resolve_buffers(public_copy(rec))
            self.flush()
            return self.inner.get_record(msg_id)

    def stats(self) -> dict[str, Any]:
        """The projection's figures, after a flush."""
        self.flush()
        return self.inner.stats()

    def close(self) -> None:
        """Flush, then close the projection."""
        self.flush()
        self.inner.close()

    def __repr__(self) -> str:
        return f"<WriteBehind {self.inner!r}, {len(self._pending)} pending>"
