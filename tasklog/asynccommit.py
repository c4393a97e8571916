"""Async durability: numbers at call time, commits in the background, receipts to wait on.

The caller gets its sequence number at once, which is only possible because an async log
holds an exclusive writer lock on the directory (no other process can take a number in
between). A background thread commits every ``commit_interval`` seconds, or at once when
someone waits. A commit that fails (disk full) fails every queued receipt with its error: the
numbers they held are void, and later events reuse them under a new epoch. The loss stays on
record until it is reported: the next flush() or close() raises it, unless every lost event's
receipt already raised it to whoever waited on it.

The queue is bounded in events and in bytes (the stored size of the events not yet committed):
a producer past either bound waits for a commit. Nothing of an event outlives its commit here.
"""

from __future__ import annotations

import numbers
import threading
import time
from collections.abc import Callable, Sequence

import lmdb

from . import codec
from .databases import append_past_end
from .errors import (
    CommitError,
    FlushTimeoutError,
    InterfaceError,
    LogClosedError,
    StorageError,
    StorageFullError,
    same_kind,
)
from .events import Event, task_ids
from .groupcommit import Item
from .store import Store
from .streamindex import index_rows

__all__ = ["AsyncCommitter", "Receipt", "DEFAULT_QUEUE_BYTES", "MAX_COMMIT_INTERVAL", "check_options"]

#: The default bound on the bytes an async log holds uncommitted (their stored size). A Hub's
#: events with two 100 KB buffers each, appended at full speed, queued hundreds of megabytes
#: under the 100,000-event bound alone (issue 20).
DEFAULT_QUEUE_BYTES = 8 << 20
#: The longest ``commit_interval`` an async log takes, in seconds: a larger one (1e10, inf)
#: overflowed the committer's wait and killed its thread, losing every event (issue 20, F4).
MAX_COMMIT_INTERVAL = 3600.0

Notify = Callable[[Sequence[tuple[int, Event]]], None]
#: Told of each failed commit, on the committer's thread: the loss (``lost``, ``lost_range``) and
#: the tasks its events named (what a projection fed before the commit must fold again).
OnLoss = Callable[[StorageError, set[str]], None]
# Past a few thousand events a transaction stops getting cheaper per event and LMDB starts
# spilling dirty pages (BENCHMARKS.md, "Design notes moved from the code").
_MAX_BATCH = 8192
# A transaction's pages sit in LMDB's heap until it commits (writemap is off), so a batch is cut
# by bytes too: a batch of Hub events with 100 KB buffers made one huge transaction (issue 20).
_MAX_BATCH_BYTES = 4 << 20
Pending = tuple[int, bytes, bytes | None, Event]


class _Loss:
    """The events one failed commit voided: its error, the numbers they held, the receipts told."""

    __slots__ = ("error", "first", "last", "reported", "told")

    def __init__(self, error: StorageError, first: int, last: int) -> None:
        # A fresh copy: the original's traceback and context hold the failed commit's frames,
        # and they the whole batch's bytes.
        self.error = same_kind(error, error.args[0] if error.args else str(error))
        self.first, self.last = first, last
        self.told: set[int] = set()  # the lost events whose receipt's wait() raised the error
        self.reported = False  # flush() or close() raised it

    def unreported(self) -> int:
        """How many of its events nobody has been told about."""
        return 0 if self.reported else self.last - self.first + 1 - len(self.told)


def _lost_error(losses: list[_Loss]) -> StorageError:
    """One error for every loss not yet reported: how many events, the numbers they held, why."""
    count = sum(loss.unreported() for loss in losses)
    first, last = min(loss.first for loss in losses), max(loss.last for loss in losses)
    cause = next((loss.error for loss in losses if isinstance(loss.error, StorageFullError)), losses[-1].error)
    commits = f"{len(losses)} failed commits" if len(losses) > 1 else "a failed commit"
    exc = same_kind(cause, f"{count:,} events were never written ({commits}; they held numbers "
                           f"{first:,}..{last:,}, now free for later events): {cause.args[0]}")
    exc.lost, exc.lost_range = count, (first, last)
    return exc


def check_options(commit_interval: float, queue_size: int, queue_bytes: int) -> None:
    """Refuse an interval or a queue bound the committer cannot keep, in one line (InterfaceError)."""
    # NaN passes every `<=` test unrefused: it disabled the interval (or the byte bound) in silence.
    if (isinstance(commit_interval, bool) or not isinstance(commit_interval, numbers.Real)
            or not 0 < commit_interval <= MAX_COMMIT_INTERVAL):
        raise InterfaceError(f"commit_interval must be a number of seconds > 0 and <= {MAX_COMMIT_INTERVAL:g}, "
                             f"not {commit_interval!r}")
    for name, value in (("queue_size", queue_size), ("queue_bytes", queue_bytes)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InterfaceError(f"{name} must be a whole number >= 1, not {value!r}")


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
                 last_seq: int, listeners: Sequence[object] = (), *,
                 queue_bytes: int = DEFAULT_QUEUE_BYTES, on_loss: OnLoss | None = None) -> None:
        self._store = store
        self._notify = notify
        self._on_loss = on_loss
        self._listeners = listeners  # the log's own list: the committed events are built only for them
        self.commit_interval = commit_interval
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self._queued_bytes = 0  # stored bytes numbered and not yet committed: queued and in flight
        self._pending_bytes = 0  # of which still queued
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
        self._failed: dict[int, _Loss] = {}  # by epoch
        self._unreported: list[_Loss] = []  # until flush() or close() raises them
        self._flush_wanted = False
        self._broken: CommitError | None = None  # why the thread stopped, if it did on an error
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
            size = len(payload)
            queued = self._queued_bytes + size
            if self._closed or len(pending) >= self.queue_size or queued > self.queue_bytes:
                return None
            seq = self._next_seq
            self._next_seq = seq + 1
            pending.append((seq, payload, None, event))
            self._queued_bytes = queued
            self._pending_bytes += size
            if len(pending) == 1:
                self._cond.notify_all()  # wake the committer on the first item of a batch
            epoch = self._epoch
        receipt = Receipt(seq)  # inline, not a helper call: this runs once per Hub call
        receipt._committer, receipt._epoch = self, epoch
        return receipt

    def append(self, items: list[Item]) -> list[int]:
        """Number ``items`` now (a key the log holds gets its original number); commit them soon."""
        size = sum(len(payload) for payload, _, _ in items)
        with self._cond:
            self._check_open()
            while self._full(size):  # back-pressure
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
                    self._queued_bytes += len(payload)
                    self._pending_bytes += len(payload)
                    if key is not None:
                        fresh[key] = seq
                out.append(self._receipt(seq, self._epoch))
            self._pending_keys.update(fresh)
            if len(self._pending) == len(items):
                self._cond.notify_all()  # wake the committer on the first item of a batch
            return out

    def _full(self, size: int) -> bool:
        """Whether ``size`` more bytes must wait for a commit (an event bigger than the bound
        waits for an empty queue, then goes alone)."""
        queued = self._queued_bytes
        return len(self._pending) >= self.queue_size or (queued > 0 and queued + size > self.queue_bytes)

    @property
    def queued_bytes(self) -> int:
        """The stored bytes of the events numbered and not yet committed (queued or in flight)."""
        with self._mutex:
            return self._queued_bytes

    def _check_open(self) -> None:
        if self._broken is not None:
            raise CommitError(self._broken.args[0])
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
        batch: list[Pending] = []
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closed:
                        self._cond.wait()
                    if not self._pending and self._closed:
                        return
                    self._linger()
                    batch, size = self._take()
                self._commit(batch, size)
                batch = []  # emptied by the commit; held here it kept the last batch's events (issue 20)
        except BaseException as exc:  # any death is a loss to report, or the waiters hang
            self._die(exc, batch)

    def _die(self, exc: BaseException, batch: list[Pending]) -> None:
        """The thread stops on an error: all queued is lost as in a failed commit; appends are refused."""
        # Dying in silence (a wait overflowed) lost every event and hung the waiters (issue 20, F4).
        error = CommitError(f"the async committer stopped on {type(exc).__name__}: {exc}")
        with self._cond:
            self._broken, self._closed = error, True  # closed: append_one sends callers to append
            loss = self._void(error, batch) if self._next_seq - 1 > self._durable_seq else None
        if loss is not None and self._on_loss is not None:
            self._on_loss(*loss)

    def _linger(self) -> None:
        """Give a batch up to the commit interval to fill, unless someone waits or it is full."""
        deadline = time.monotonic() + self.commit_interval
        while (not (self._closed or self._flush_wanted) and len(self._pending) < _MAX_BATCH
               and self._pending_bytes < _MAX_BATCH_BYTES):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)

    def _take(self) -> tuple[list[Pending], int]:
        """The next batch off the queue, now in flight, and its bytes: at most _MAX_BATCH events
        and _MAX_BATCH_BYTES bytes, at least one event."""
        pending = self._pending
        n, size = min(len(pending), _MAX_BATCH), self._pending_bytes
        if n < len(pending) or size > _MAX_BATCH_BYTES:
            n, size = _cut(pending, n)
        batch = pending[:n]
        del pending[:n]
        self._pending_bytes -= size
        self._inflight = batch
        self._flush_wanted = bool(pending)
        self._cond.notify_all()  # room in the queue again
        return batch, size

    def _commit(self, batch: list[Pending], size: int) -> None:
        store = self._store
        pack = codec.pack_key
        pairs = [(pack(seq), payload) for seq, payload, _, _ in batch]
        rows = index_rows(zip([key for key, _ in pairs], [ev for _, _, _, ev in batch]))

        def body(txn: lmdb.Transaction) -> None:
            # py-lmdb releases the GIL around every get and put: beside a running producer each
            # waited for it again (BENCHMARKS.md, design notes; issue 24: the index's gets). With
            # the condition held, producers wait on a lock instead; the sync comes after, outside.
            with self._cond:
                cur = txn.cursor(db=store.events)
                last = codec.unpack_key(cur.key()) if cur.last() else 0
                if last + 1 != batch[0][0]:
                    raise CommitError(f"log end moved to {last} under an async writer")
                append_past_end(cur, pairs)
                store.index(txn, rows)
                store.record_commit_time(txn, batch[0][0])
                for seq, _, key, _ in batch:
                    if key is not None:
                        txn.put(key, codec.pack_key(seq), db=store.keys)
        try:
            store.write(body)
        except StorageError as exc:
            with self._cond:
                lost, tasks = self._void(exc, batch)
            if self._on_loss is not None:
                self._on_loss(lost, tasks)  # outside the lock: the listener may log, or append
            return
        # A temporary, not a name: the events must be gone once the waiters hear of the commit.
        self._notify([(seq, ev) for seq, _, _, ev in batch] if self._listeners else ())
        self._done(batch, size)

    def _done(self, batch: list[Pending], size: int) -> None:
        """The batch is durable: tell its waiters, and let go of its events."""
        with self._cond:
            for _, _, key, _ in batch:
                if key is not None:
                    self._pending_keys.pop(key, None)
            self._durable_seq = batch[-1][0]
            self._inflight = []
            self._queued_bytes -= size
            batch.clear()
            self._cond.notify_all()

    def _void(self, exc: StorageError, batch: list[Pending]) -> tuple[StorageError, set[str]]:
        """With the lock held: the batch's commit failed; void every number queued, and keep the
        loss until it is reported; return it as an error, with the tasks the lost events named."""
        # Every queued number is void now: later events reuse them under a new epoch.
        loss = _Loss(exc, self._durable_seq + 1, self._next_seq - 1)
        tasks = {m for queue in (batch, self._pending) for _, _, _, ev in queue for m in task_ids(ev)}
        self._failed[self._epoch] = loss
        self._unreported.append(loss)
        self._epoch += 1
        self._pending, self._inflight = [], []
        batch.clear()
        self._pending_keys.clear()
        self._queued_bytes = self._pending_bytes = 0
        self._next_seq = self._durable_seq + 1
        self._cond.notify_all()
        return _lost_error([loss]), tasks

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

    def _settle(self, seq: int, epoch: int, timeout: float | None) -> _Loss | None:
        """With the lock held: wait until event ``seq`` of ``epoch`` is durable (None) or lost (its
        loss); FlushTimeoutError past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            loss = self._failed.get(epoch)
            if loss is not None:
                return loss if seq >= loss.first else None
            if self._durable_seq >= seq:
                return None
            if self._broken is not None:
                raise CommitError(self._broken.args[0])
            if self._closed and not self._thread.is_alive():
                raise LogClosedError(f"log {self._store.path} closed before event {seq} was committed")
            self._flush_wanted = True
            self._cond.notify_all()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise FlushTimeoutError(f"event {seq} not committed within {timeout} s")
            self._cond.wait(left)

    def wait_durable(self, seq: int, epoch: int, timeout: float | None) -> None:
        """Wait until event ``seq`` is durable; raise its commit's error, or FlushTimeoutError."""
        with self._cond:
            loss = self._settle(seq, epoch, timeout)
            if loss is None:
                return
            if not loss.reported:
                loss.told.add(seq)  # told here: flush() and close() need not tell it again
            raise same_kind(loss.error, loss.error.args[0])

    def flush(self, timeout: float | None = None) -> int:
        """Commit and sync everything queued so far; return the last number that covered. Raise
        what failed commits lost since the last report, if nobody was told (count and numbers)."""
        with self._cond:
            target = self._next_seq - 1
            loss = self._settle(target, self._epoch, timeout) if target > 0 else None
            _report(self._unreported)
            return target if loss is None else loss.first - 1

    def close(self) -> None:
        """Refuse new appends, commit everything queued, stop the thread; then raise what
        failed commits lost that nobody was told about."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            _report(self._unreported)


def _report(unreported: list[_Loss]) -> None:
    """With the committer's lock held: raise, once, the losses nobody has been told about (and
    empty ``unreported``)."""
    losses = [loss for loss in unreported if loss.unreported()]
    error = _lost_error(losses) if losses else None
    for loss in unreported:
        loss.reported = True
        loss.told.clear()
    unreported.clear()
    if error is not None:
        raise error


def _cut(pending: list[Pending], most: int) -> tuple[int, int]:
    """How many of the first ``most`` queued events fit in _MAX_BATCH_BYTES (at least one), and their bytes."""
    n = size = 0
    for _, payload, _, _ in pending[:most]:
        if n and size + len(payload) > _MAX_BATCH_BYTES:
            break
        n += 1
        size += len(payload)
    return n, size
