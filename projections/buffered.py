"""Write-behind for slow projections: fold each event into a small overlay, store in batches.

A hub feeds its projection one event per call and reads the record it just
changed. SQLite then pays a transaction per event and MongoDB a round trip per
event. Here events are folded at once into an overlay of the records they
touch (so ``get_record`` and ``peek`` see every event), and handed to the
projection every ``batch`` events; any other read flushes first. The log is the
durable copy, so a crash loses nothing: the projection catches up on open.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tasklog.events import Event

from .base import Projection
from .fold import Anomalies, apply_event, is_tombstone, targets
from .query import public_copy

__all__ = ["WriteBehind"]


class WriteBehind:
    """Wraps a projection: per-event folds in memory, batched stores, reads that see everything."""

    def __init__(self, inner: Projection, batch: int = 1024) -> None:
        self.inner = inner
        self.batch = batch
        self._overlay: dict[str, dict[str, Any] | None] = {}
        self._pending: list[tuple[int, Event]] = []
        self._scratch: Anomalies = Counter()  # the inner projection counts anomalies when it applies

    @property
    def last_seq(self) -> int:
        """The last event folded (into the overlay or the projection)."""
        return self._pending[-1][0] if self._pending else self.inner.last_seq

    @property
    def spec(self) -> str:
        """The wrapped projection's spec."""
        return self.inner.spec

    def apply_one(self, seq: int, event: Event) -> int:
        """Fold one event into the overlay; store the batch when it is full."""
        if seq <= self.last_seq:
            return 0
        overlay = self._overlay
        missing = {m for m in targets(event) if m not in overlay}
        if missing:
            loaded = self.inner._load(missing)
            for m in missing:
                overlay[m] = loaded.get(m)
        apply_event(overlay, seq, event, self._scratch)
        self._pending.append((seq, event))
        if len(self._pending) >= self.batch:
            self.flush()
        return 1

    def apply(self, batch: list[tuple[int, Event]]) -> int:
        """Store everything pending, then ``batch``, in the projection."""
        self.flush()
        return self.inner.apply(batch)

    def flush(self) -> None:
        """Hand the pending events to the projection (one batch) and empty the overlay."""
        if self._pending:
            self.inner.apply(self._pending)
        self._pending = []
        self._overlay.clear()

    def peek(self, msg_id: str) -> dict[str, Any] | None:
        """The current record of ``msg_id`` (not a copy; never mutate it), or None."""
        if msg_id in self._overlay:
            rec = self._overlay[msg_id]
            return None if rec is None or is_tombstone(rec) else rec
        return self.inner.peek(msg_id)

    def get_record(self, msg_id: str) -> dict[str, Any]:
        """A copy of the current record of ``msg_id``; KeyError if absent or dropped."""
        if isinstance(msg_id, str) and msg_id in self._overlay:
            rec = self._overlay[msg_id]
            if rec is None or is_tombstone(rec):
                self.flush()
                return self.inner.get_record(msg_id)  # the projection says why it is missing
            return public_copy(rec)
        return self.inner.get_record(msg_id)

    def find_records(self, query: Any = None, keys: Any = None) -> list[dict[str, Any]]:
        """Flush, then query the projection."""
        self.flush()
        return self.inner.find_records(query, keys)

    def count(self, query: Any = None) -> int:
        """Flush, then count in the projection."""
        self.flush()
        return self.inner.count(query)

    def get_history(self) -> list[str]:
        """Flush, then ask the projection."""
        self.flush()
        return self.inner.get_history()

    def close(self) -> None:
        """Flush, then close the projection."""
        self.flush()
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"<WriteBehind {self.inner!r}, {len(self._pending)} pending>"
