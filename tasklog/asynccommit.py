"""Async durability: numbers at call time, commits in the background, receipts to wait on.

The caller gets its sequence number at once, which is only possible because an async log
holds an exclusive writer lock on the directory (no other process can take a number in
between). A background thread commits every ``commit_interval`` seconds, or at once when
someone waits. A commit that fails (disk full) fails every queued receipt with its error: the
numbers they held are void, and later events reuse them under a new epoch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import lmdb

from . import codec
from .errors import CommitError, FlushTimeoutError, LogClosedError, StorageError
from .events import Event, task_ids
from .groupcommit import Item
from .store import Store, put_run

__all__ = ["AsyncCommitter", "Receipt"]

Notify = Callable[[Sequence[tuple[int, Event]]], None]
# Past a few thousand events a transaction stops getting cheaper per event and LMDB starts
# spilling dirty pages: a 95k-event async batch took 3x longer per event than 8k batches.
_MAX_BATCH = 8192
Pending = tuple[int, bytes, bytes | None, Event]


class Receipt(int):
    """The sequence number of an async append, with a handle to wait until it is durable."""

    _committer: AsyncCommitter
    _epoch: int

    def wait(self, timeout: float | None = None) -> int:
        """Block until this event is committed and synced; raise if its commit failed."""
        self._committer.wait_durable(int(self), self._epoch, timeout)
        return int(self)

    @property
    def done(self) -> bool:
        """True once the event is committed (or its commit failed)."""
        return self._committer.settled(int(self), self._epoch)


class AsyncCommitter:
    """The writer of an async log: a queue of numbered events and the thread that commits them."""

    def __init__(self, store: Store, notify: Notify, commit_interval: float, queue_size: int,
                 last_seq: int, listeners: Sequence[object] = ()) -> None:
        self._store = store
        self._notify = notify
        self._listeners = listeners  # the log's own list: the committed events are built only for them
        self.commit_interval = commit_interval
        self.queue_size = queue_size
        # A plain Lock under the Condition: entering it directly is a C call, which the async
        # hot path uses (Condition.__enter__ is Python-level and showed up in profiles).
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._closed = False
        self._pending: list[Pending] = []
        # The batch being committed: out of the queue, not yet readable from LMDB. Reads of
        # uncommitted events (a Hub reading its own writes) look here and in the queue.
        self._inflight: list[Pending] = []
        self._pending_keys: dict[bytes, int] = {}
        self._durable_seq = last_seq  # durable_seq trails the numbers handed out
        self._next_seq = last_seq + 1
        self._epoch = 0
        self._failed: dict[int, tuple[BaseException, int]] = {}
        self._flush_wanted = False
        self._thread = threading.Thread(target=self._commit_loop, name="tasklog-commit", daemon=True)
        self._thread.start()

    def _receipt(self, seq: int, epoch: int) -> Receipt:
        receipt = Receipt(seq)
        receipt._committer, receipt._epoch = self, epoch
        return receipt

    def append_one(self, payload: bytes, event: Event) -> Receipt | None:
        """The hub's hot path: one keyless event, queue not full. None means: take the general path."""
        with self._mutex:
            pending = self._pending
            if self._closed or len(pending) >= self.queue_size:
                return None
            seq = self._next_seq
            self._next_seq = seq + 1
            pending.append((seq, payload, None, event))
            if len(pending) == 1:
                self._cond.notify_all()  # wake the committer on the first item of a batch
            epoch = self._epoch
        receipt = Receipt(seq)  # inline, not a helper call: this runs once per Hub call
        receipt._committer, receipt._epoch = self, epoch
        return receipt

    def append(self, items: list[Item]) -> list[int]:
        """Number ``items`` now (a key the log holds gets its original number); commit them soon."""
        with self._cond:
            self._check_open()
            while len(self._pending) >= self.queue_size:  # back-pressure
                self._flush_wanted = True
                self._cond.notify_all()
                self._cond.wait()
                self._check_open()
            out: list[int] = []
            fresh: dict[bytes, int] = {}
            for payload, key, event in items:
                seq = self._known_key(key, fresh) if key is not None else None
                if seq is None:
                    seq = self._next_seq
                    self._next_seq += 1
                    self._pending.append((seq, payload, key, event))
                    if key is not None:
                        fresh[key] = seq
                out.append(self._receipt(seq, self._epoch))
            self._pending_keys.update(fresh)
            if len(self._pending) == len(items):
                self._cond.notify_all()  # wake the committer on the first item of a batch
            return out

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self._store.path} is closed")

    def _known_key(self, key: bytes, fresh: dict[bytes, int]) -> int | None:
        hit = fresh.get(key) or self._pending_keys.get(key)
        if hit is not None:
            return hit
        with self._store.reader() as txn:
            raw = txn.get(key, db=self._store.keys)
        return codec.unpack_key(raw) if raw is not None else None

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                deadline = time.monotonic() + self.commit_interval
                while not (self._closed or self._flush_wanted) and len(self._pending) < _MAX_BATCH:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._pending[:_MAX_BATCH]
                del self._pending[:_MAX_BATCH]
                self._inflight = batch
                self._flush_wanted = bool(self._pending)
                self._cond.notify_all()  # room in the queue again
            self._commit(batch)

    def _commit(self, batch: list[Pending]) -> None:
        store = self._store
        pairs = [(codec.pack_key(seq), payload) for seq, payload, _, _ in batch]
        rows = store.index_rows((seq, ev) for seq, _, _, ev in batch)

        def body(txn: lmdb.Transaction) -> None:
            # py-lmdb releases the GIL around every put; with a producer thread running, each
            # put then waits for the GIL (8192 puts: 2 ms alone, 630 ms beside a busy thread).
            # Holding the condition parks producers on a lock, so the puts run uncontended;
            # the sync at commit happens after, outside it.
            with self._cond:
                cur = txn.cursor(db=store.events)
                last = codec.unpack_key(cur.key()) if cur.last() else 0
                if last + 1 != batch[0][0]:
                    raise CommitError(f"log end moved to {last} under an async writer")
                put_run(cur, pairs)
                store.index(txn, rows)
                store.stamp(txn, batch[0][0])
                for seq, _, key, _ in batch:
                    if key is not None:
                        txn.put(key, codec.pack_key(seq), db=store.keys)
        try:
            store.write(body)
        except StorageError as exc:
            with self._cond:
                # Every queued number is void now: later events reuse them under a new epoch.
                self._failed[self._epoch] = (exc, self._durable_seq)
                self._epoch += 1
                self._pending = []
                self._inflight = []
                self._pending_keys.clear()
                self._next_seq = self._durable_seq + 1
                self._cond.notify_all()
            return
        self._notify([(seq, ev) for seq, _, _, ev in batch] if self._listeners else ())
        with self._cond:
            self._durable_seq = batch[-1][0]
            self._inflight = []
            for _, _, key, _ in batch:
                if key is not None:
                    self._pending_keys.pop(key, None)
            self._cond.notify_all()

    def pending(self, seq: int) -> Event | None:
        """The event ``seq`` if it is numbered but not yet readable from the log (else None)."""
        with self._mutex:
            if seq <= self._durable_seq:
                return None
            for queue in (self._inflight, self._pending):
                if queue and queue[0][0] <= seq <= queue[-1][0]:
                    # Numbers in a queue are dense and ascending: index, no search.
                    item = queue[seq - queue[0][0]]
                    return item[3] if item[0] == seq else None
        return None

    def pending_of(self, msg_id: str) -> list[tuple[int, Event]]:
        """The uncommitted events that name ``msg_id``, in order."""
        with self._mutex:
            queued = [*self._inflight, *self._pending]
        return [(seq, ev) for seq, _, _, ev in queued if msg_id in task_ids(ev)]

    def settled(self, seq: int, epoch: int) -> bool:
        """Whether the event ``seq`` of ``epoch`` is committed, or its commit failed."""
        with self._cond:
            return epoch in self._failed or (epoch == self._epoch and self._durable_seq >= seq)

    def wait_durable(self, seq: int, epoch: int, timeout: float | None) -> None:
        """Wait until event ``seq`` is durable; raise its commit's error, or FlushTimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if epoch in self._failed:
                    exc, durable = self._failed[epoch]
                    if seq <= durable:
                        return
                    raise exc
                if self._durable_seq >= seq:
                    return
                if self._closed and not self._thread.is_alive():
                    raise LogClosedError(f"log {self._store.path} closed before event {seq} was committed")
                self._flush_wanted = True
                self._cond.notify_all()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise FlushTimeoutError(f"event {seq} not committed within {timeout} s")
                self._cond.wait(left)

    def flush(self, timeout: float | None = None) -> int:
        """Commit and sync everything queued so far; return the last number handed out."""
        with self._cond:
            target, epoch = self._next_seq - 1, self._epoch
        if target > 0:
            self.wait_durable(target, epoch, timeout)
        return target

    def close(self) -> None:
        """Refuse new appends, commit everything queued, stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
