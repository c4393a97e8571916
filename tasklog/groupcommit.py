"""Group commit for ``sync`` and ``process`` logs: many callers, one transaction and one sync.

The first caller to find no commit in flight becomes the leader and writes everything queued
so far in one transaction, while the others wait for it. Writers in several processes share a
directory; each transaction numbers its events from the log's last key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import lmdb

from . import codec
from .databases import append_past_end
from .errors import CommitError, LogClosedError, StorageError
from .events import Event
from .store import Store
from .streamindex import index_rows

__all__ = ["GroupCommit", "Item", "NothingPending"]

Item = tuple[bytes, bytes | None, Event]  # (stored bytes, idempotency key, the validated event)
Notify = Callable[[Sequence[tuple[int, Event]]], None]
# A leader waits for the callers of the last few batches to rejoin for at most half its last
# commit (a wait as long as the commit would halve the rate), and at least _LINGER.
_LINGER = 0.0002
_MAX_LINGER = 0.002
_CALLERS_SEEN = 8  # batches over which the callers to wait for are counted


class _Batch:
    __slots__ = ("callers", "done", "error", "items", "seqs")

    def __init__(self) -> None:
        self.callers = 0
        self.items: list[Item] = []
        self.seqs: list[int] = []
        self.error: BaseException | None = None
        self.done = False


class NothingPending:
    """The pending side of the writer protocol for a writer that holds nothing uncommitted (group
    commit, once an append returned; a writer that refuses every append)."""

    def pending(self, seq: int) -> Event | None:
        """Nothing is pending here."""
        return None

    def pending_of(self, msg_id: str) -> list[tuple[int, Event]]:
        """Nothing is pending here."""
        return []

    @property
    def queued_bytes(self) -> int:
        """Nothing is pending here."""
        return 0


class GroupCommit(NothingPending):
    """The writer of a sync or process log: leader-follower group commit."""

    def __init__(self, store: Store, notify: Notify) -> None:
        self._store = store
        self._notify = notify
        self._cond = threading.Condition()
        self._closed = False
        self._filling = _Batch()  # the batch being filled
        self._committing = False  # whether a leader is writing
        self._lingering = False
        self._want = 1  # the callers a lingering leader waits for
        self._callers: list[int] = [1]  # of the last few batches: a leader waits for their most
        self._commit_time = 0.0  # seconds the last commit took

    def append_one(self, payload: bytes, event: Event) -> int | None:
        """No shortcut here: None sends one event down the general path, ``append``."""
        return None

    def flush(self, timeout: float | None = None) -> int:
        """Everything appended is committed already: the last sequence number."""
        with self._store.reader() as txn:
            return self._store.last_key(txn, self._store.events)

    def append(self, items: list[Item]) -> list[int]:
        """Write ``items`` in the next group commit; return their sequence numbers."""
        with self._cond:
            if self._closed:
                raise LogClosedError(f"log {self._store.path} is closed")
            batch = self._filling
            first = len(batch.items)
            batch.items.extend(items)
            batch.callers += 1
            if self._lingering and batch.callers >= self._want:
                self._cond.notify_all()  # the leader waits for this many: waking it sooner made it wait again
            while not batch.done:
                if self._committing:
                    self._cond.wait()
                    continue
                self._committing = True
                self._linger(batch)
                self._filling = _Batch()
                self._callers = [*self._callers[1 - _CALLERS_SEEN:], batch.callers]
                self._cond.release()
                try:
                    self._commit_batch(batch)
                finally:
                    self._cond.acquire()
                    self._committing = False
                    batch.done = True
                    self._cond.notify_all()
        if batch.error is not None:
            raise batch.error
        return batch.seqs[first:first + len(items)]

    def _linger(self, batch: _Batch) -> None:
        # The callers of the last batch are only now returning from it; a leader that commits at
        # once commits alone and every other batch holds one event (measured: 8 threads averaged
        # 4 events per commit). Waiting a fraction of a commit for them to rejoin fills the batch;
        # waiting for the last batch's count only kept batches at the size they had (issue 24).
        want = self._want = max(self._callers)
        if batch.callers >= want:
            return
        self._lingering = True
        deadline = time.monotonic() + min(max(_LINGER, self._commit_time / 2), _MAX_LINGER)
        while batch.callers < want:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        self._lingering = False

    def _commit_batch(self, batch: _Batch) -> None:
        start = time.monotonic()
        try:
            batch.seqs, written = self._store.write(lambda txn: self._under_lock(txn, batch.items))
        except StorageError as exc:
            batch.error = exc
            return
        self._commit_time = time.monotonic() - start
        if written:
            self._notify(written)

    def _under_lock(self, txn: lmdb.Transaction, items: list[Item]) -> tuple[list[int], list[tuple[int, Event]]]:
        # py-lmdb releases the GIL around every put: with the next batch's callers running, each
        # put waited for the GIL again. Holding the condition parks them on a lock while the puts
        # run; they queue during the sync at commit, which happens after, outside it.
        with self._cond:
            return self._numbered(txn, items)

    def _numbered(self, txn: lmdb.Transaction, items: list[Item]) -> tuple[list[int], list[tuple[int, Event]]]:
        """Number and put ``items`` past the log's end; return every seq and the events written."""
        store = self._store
        cur = txn.cursor(db=store.events)
        last = codec.unpack_key(cur.key()) if cur.last() else 0
        if all(key is None for _, key, _ in items):
            seqs = list(range(last + 1, last + 1 + len(items)))
            keys = list(map(codec.pack_key, seqs))
            append_past_end(cur, list(zip(keys, [payload for payload, _, _ in items])))
            store.record_commit_time(txn, seqs[0])
            evs = [ev for _, _, ev in items]
            store.index(txn, index_rows(zip(keys, evs)))
            return seqs, list(zip(seqs, evs))
        seqs = []
        written: list[tuple[int, Event]] = []
        seen: dict[bytes, int] = {}
        for payload, key, event in items:
            if key is not None:
                hit = seen.get(key)
                if hit is None:
                    raw = txn.get(key, db=store.keys)
                    hit = codec.unpack_key(raw) if raw is not None else None
                if hit is not None:
                    seqs.append(hit)  # a retry: the original number, nothing written
                    continue
            last += 1
            # put(append=True) reports an out-of-order key by returning False, not raising.
            if not cur.put(codec.pack_key(last), payload, append=True):
                raise CommitError(f"sequence number {last} is not past the end of the log")
            if key is not None:
                txn.put(key, codec.pack_key(last), db=store.keys)
                seen[key] = last
            seqs.append(last)
            written.append((last, event))
        if written:
            store.record_commit_time(txn, written[0][0])
            store.index(txn, index_rows((codec.pack_key(seq), ev) for seq, ev in written))
        return seqs, written

    def close(self) -> None:
        """Refuse new appends; wait until the batches in flight are committed."""
        with self._cond:
            self._closed = True
            # Followers still holding queued items become leaders and commit them first.
            while self._committing or self._filling.items:
                self._cond.wait()
