"""The append-only event log: one LMDB key per event, three durability modes.

``TaskLog`` is a facade over its parts: the directory and its shared LMDB environment
(``store``), the writer of its durability mode (``groupcommit`` for sync and process logs,
``asynccommit`` for async ones) and the reader (``reader``). Its appenders (``appending``)
validate and encode events and number them through the writer; it tells listeners about each
commit, and indexes a log an older tasklog wrote when it opens it (``schema``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

from .appending import Appending, RefusingWriter
from .asynccommit import DEFAULT_QUEUE_BYTES, AsyncCommitter, OnLoss, Receipt, check_options
from .errors import InterfaceError, LogClosedError, StorageError
from .events import Event
from .fields import check_msg_id
from .groupcommit import GroupCommit
from .reader import LogView, Reader, check_seq
from .schema import upgrade
from .store import DURABILITY, MARKER, Store, open_here

__all__ = ["TaskLog", "LogView", "Receipt", "DURABILITY", "MARKER", "Listener", "open_here", "DEFAULT_QUEUE_BYTES"]

_MIB = 1 << 20
# The SQLite files projections keep beside a log (a Hub's projection, the read model): not the log's.
_BESIDE = (".db", ".db-wal", ".db-shm", ".db-journal")
Listener = Callable[[Sequence[tuple[int, Event]]], None]


class TaskLog(Appending):
    """An append-only log of task events in an LMDB directory (its appenders: :class:`Appending`)."""

    def __init__(self, path: str, durability: str = "sync", *, commit_interval: float = 0.002,
                 queue_size: int = 100_000, queue_bytes: int = DEFAULT_QUEUE_BYTES, map_size: int = 64 * _MIB,
                 readonly: bool = False, max_map_size: int | None = None, create: bool = True,
                 lock_timeout: float = 0.0) -> None:
        if durability not in DURABILITY:
            raise InterfaceError(f"unknown durability {durability!r}; choose one of {sorted(DURABILITY)}")
        check_options(commit_interval, queue_size, queue_bytes)
        if not lock_timeout >= 0:
            raise InterfaceError(f"lock_timeout must be >= 0, not {lock_timeout!r}")
        self.path = os.path.abspath(path)
        self.durability = durability
        self.readonly = readonly
        self.commit_interval = commit_interval
        self.queue_size = queue_size
        #: An async log's bound on the stored bytes of its uncommitted events (with ``queue_size``).
        self.queue_bytes = queue_bytes
        self._mode = DURABILITY[durability]
        self._closed, self._why_closed = True, "did not open"  # until it has
        #: The directory and its LMDB environment: the layer below the log, for tools that must see
        #: stored bytes (verification, damage tests). Appending through it bypasses every guarantee.
        self.store = Store(self.path, self._mode, readonly=readonly, map_size=map_size,
                           max_map_size=max_map_size, create=create, lock_timeout=lock_timeout)
        self.identity: str | None = self.store.identity
        upgrade(self.store)
        self._reader = Reader(self.store, self._check_readable)
        self._listeners: list[Listener] = []
        self._loss_listeners: list[OnLoss] = []
        self.listener_errors: list[BaseException] = []
        self._committed = threading.Condition()  # notified after every commit: follow() wakes on it
        self._close_lock = threading.Lock()
        self._closed, self._why_closed = False, "is closed"
        if readonly:
            self._writer = RefusingWriter(InterfaceError(f"log {self.path} was opened read-only"))
        elif self._mode.background:
            self._writer = AsyncCommitter(self.store, self._notify, commit_interval, queue_size, self.last_seq,
                                          self._listeners, queue_bytes=queue_bytes, on_loss=self._lost)
        else:
            self._writer = GroupCommit(self.store, self._notify)
        self.store.on_abandon.append(self._leave_to_parent)

    @classmethod
    def open(cls, path: str, durability: str = "sync", **options: Any) -> TaskLog:
        """Create or open the log directory at ``path``."""
        return cls(path, durability, **options)

    @property
    def max_map_size(self) -> int | None:
        """Largest map the log may grow to (None: as large as the disk allows). Raise it to go on."""
        return self.store.max_map_size

    @max_map_size.setter
    def max_map_size(self, value: int | None) -> None:
        self.store.max_map_size = value

    def _leave_to_parent(self) -> None:
        # In a forked child: the writer's locks and thread belong to the parent; touch neither.
        self._closed = True
        self._why_closed = "belongs to the process that opened it; a forked child must open it again"
        self._writer = RefusingWriter(LogClosedError(f"log {self.path} {self._why_closed}"))

    def __enter__(self) -> TaskLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit everything queued, then release the directory; raise (once closed) what failed
        async commits lost that no flush() or receipt reported."""
        with self._close_lock:
            if self._closed:
                return
            try:
                self._writer.close()  # commits what is queued first
            finally:
                self._writer = RefusingWriter(LogClosedError(f"log {self.path} is closed"))
                self._closed = True
                with self._committed:
                    self._committed.notify_all()
                self.store.close()

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    def _check_readable(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self.path} {self._why_closed}")

    # -- listeners (live projections) -----------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each committed batch, before its appends return."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def on_loss(self, listener: OnLoss) -> None:
        """Call ``listener(error, msg_ids)`` from the committer's thread when an async commit fails:
        the loss (``lost``, ``lost_range``; flush() still raises it) and the tasks it named."""
        self._loss_listeners.append(listener)

    def _lost(self, error: StorageError, tasks: set[str]) -> None:
        for listener in list(self._loss_listeners):
            try:
                listener(error, tasks)
            except Exception as exc:  # on the committer's thread: it must go on committing
                self.listener_errors.append(exc)

    def _notify(self, written: Sequence[tuple[int, Event]]) -> None:
        """Called by the writer after each commit, before the appends it holds return."""
        # The events are durable already: a failing listener must not fail the append.
        for listener in list(self._listeners):
            try:
                listener(written)
            except Exception as exc:
                self.listener_errors.append(exc)
        with self._committed:
            self._committed.notify_all()

    def drop_front(self, start: int, stop: int, keep: Collection[int] = ()) -> int:
        """Delete events start <= seq < stop and make ``stop`` the log's start, in one transaction;
        the events numbered in ``keep`` stay readable by ``event()`` (a snapshot needs their buffers)."""
        self._check_writable()
        return self.store.drop_front(start, stop, keep)

    def release_kept(self, keep: Collection[int]) -> int:
        """Forget the kept events not in ``keep``; return how many went."""
        self._check_writable()
        return self.store.release_kept(keep)

    def _check_writable(self) -> None:
        if self.readonly:
            raise InterfaceError(f"log {self.path} was opened read-only")
        self._check_readable()

    # -- reading -----------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence number of the last committed event (0 when empty)."""
        return self._reader.last_seq

    @property
    def start_seq(self) -> int:
        """The sequence number the log's events start from (1 unless a prune removed older ones)."""
        return self._reader.start_seq

    @property
    def first_seq(self) -> int:
        """The sequence number of the first event still in the log (0 when empty)."""
        return self._reader.first_seq

    def seq_at(self, when: datetime) -> int:
        """The last sequence number committed at or before ``when`` (0 if none was)."""
        return self._reader.seq_at(when)

    def event(self, seq: int) -> Event:
        """Event ``seq``: from the log, from the events a prune kept for a snapshot, or (async) not
        yet committed; MissingEventError when it is in none of them."""
        self._check_readable()
        seq = check_seq(seq)
        ev = self._writer.pending(seq)
        return ev if ev is not None else self._reader.event(seq)

    def events_of(self, msg_id: str) -> list[tuple[int, Event]]:
        """The events naming ``msg_id`` (its stream), in order, uncommitted async ones included.

        Costs what the task's own events cost: the log keeps an index from each msg_id to its
        events (a resubmit is in the streams of both its ids, a drop in each one's).
        """
        self._check_readable()
        msg_id = check_msg_id(msg_id)
        # The queue first: an event committed between the two reads is then in the log's read.
        queued = self._writer.pending_of(msg_id)
        found = self._reader.events_of(msg_id)
        if queued:
            seen = {seq for seq, _ in found}
            found += [item for item in queued if item[0] not in seen]
            found.sort(key=lambda item: item[0])
        return found

    def committed_at(self, seqs: Iterable[int]) -> dict[int, datetime | None]:
        """When each event in ``seqs`` was committed (UTC; None where no commit time is known)."""
        self._check_readable()
        out: dict[int, datetime | None] = {}
        with self.store.reader() as txn:
            for seq in seqs:
                when = self.store.committed_at(txn, seq)
                out[seq] = None if when is None else datetime.fromtimestamp(when, timezone.utc)
        return out

    def commits(self, start: int = 1, stop: int | None = None) -> list[tuple[int, float]]:
        """The commits that wrote events start <= seq < stop: ``(first seq, UNIX time)`` each."""
        self._check_readable()
        with self.store.reader() as txn:
            return self.store.commits(txn, start, self.last_seq + 1 if stop is None else stop)

    def put_verbatim(self, events: list[tuple[int, bytes]], commits: list[tuple[int, float]],
                     identity: str | None = None, fork: str | None = None) -> None:
        """Write stored events at their own numbers and commit times (what a restore does); the
        first batch into an empty log also gives it the original's ``identity`` and this copy's ``fork``.

        Only on a sync log that nothing else writes: the numbers are the original's, not new ones.
        """
        self._check_writable()
        if self.durability != "sync":
            raise InterfaceError("a restore writes through a sync log (its numbers are the original's)")
        if events:
            self.store.put_verbatim(events, commits, identity, fork)
            self.identity = self.store.identity

    @property
    def fork(self) -> str | None:
        """This copy's fork id: None for a log as it was created; a restore gives its copy a new one
        (a restored log that is written to is a fork of the original: shipping tells them apart)."""
        self._check_readable()
        return self.store.fork

    def view(self) -> Any:
        """One read transaction (a context manager yielding a LogView): figures that agree."""
        return self._reader.view()

    def read_raw(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, stored bytes)`` for start <= seq < stop, in short read transactions."""
        for chunk in self._reader.raw_chunks(start, stop):
            yield from chunk

    def read_chunks(self, start: int = 1, stop: int | None = None) -> Iterator[list[tuple[int, Event]]]:
        """The events of :meth:`read` in lists of a few thousand (a replay's path: no per-event generator)."""
        return self._reader.read_chunks(start, stop)

    def read(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, Event]]:
        """Yield ``(seq, event)`` in order for start <= seq < stop, never blocking writers."""
        for chunk in self._reader.read_chunks(start, stop):
            yield from chunk

    def follow(self, start: int | None = None, poll: float = 0.05,
               idle_timeout: float | None = None) -> Iterator[tuple[int, Event]]:
        """Yield events from ``start`` (default: the next one) as they are committed, forever."""
        nxt = self.last_seq + 1 if start is None else start
        idle_since = time.monotonic()
        while True:
            got = False
            for seq, event in self.read(nxt):
                got = True
                nxt = seq + 1
                yield seq, event
            if got:
                idle_since = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                return
            with self._committed:
                # Other processes commit too, so wake on our own commits or after ``poll``.
                self._committed.wait(poll)

    def __iter__(self) -> Iterator[tuple[int, Event]]:
        return self.read()

    def __len__(self) -> int:
        return self._reader.count()

    def disk_bytes(self) -> int:
        """Bytes the log takes on disk: its files and snapshots, not the SQLite projections kept
        beside it (a read model built by the first ``stats`` changed the figure the second gave)."""
        total = 0
        for folder, _, names in os.walk(self.path):
            for name in names:
                if name.endswith(_BESIDE):
                    continue
                with contextlib.suppress(OSError):  # gone meanwhile; a link is not followed
                    st = os.lstat(os.path.join(folder, name))
                    total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
        return total

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.durability
        return f"<TaskLog {self.path} {state}>"
