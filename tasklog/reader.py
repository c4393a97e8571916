"""Reading a log: short read transactions that never block writers, and one-transaction views."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import lmdb

from . import codec
from .errors import InterfaceError, MissingEventError
from .events import Event, task_ids
from .fields import utc
from .store import Store

__all__ = ["Reader", "LogView", "READ_CHUNK", "check_seq"]

READ_CHUNK = 2048  # events per read transaction: short ones never hold pages long
_LAST_KEY = (1 << 64) - 1  # the largest number a key holds


def check_seq(seq: Any) -> int:
    """``seq`` if it can number an event (a whole number >= 1); InterfaceError saying why not."""
    # event(-1) and event("1") were struct.errors, event(0) said event 0 "was pruned".
    if isinstance(seq, bool) or not isinstance(seq, numbers.Integral) or seq < 1:
        raise InterfaceError(f"seq must be a whole number >= 1, got {seq!r:.60}")
    return int(seq)


class LogView:
    """The log as one read transaction sees it (``TaskLog.view()``); valid inside that block only."""

    def __init__(self, txn: lmdb.Transaction, events: Any, meta: Any) -> None:
        self._txn, self._events, self._meta = txn, events, meta

    @property
    def first_seq(self) -> int:
        """The first event still in the log (0 when empty)."""
        cur = self._txn.cursor(db=self._events)
        return codec.unpack_key(cur.key()) if cur.first() else 0

    @property
    def last_seq(self) -> int:
        """The last committed event (0 when empty)."""
        return Store.last_key(self._txn, self._events)

    @property
    def start_seq(self) -> int:
        """Where the log's events start (1 unless a prune removed older ones)."""
        raw = self._txn.get(b"start_seq", db=self._meta)
        return int(raw) if raw is not None else 1

    def __len__(self) -> int:
        return int(self._txn.stat(self._events)["entries"])

    def raw(self) -> Iterator[tuple[int, bytes]]:
        """Every ``(seq, stored bytes)`` in order."""
        for key, value in self._txn.cursor(db=self._events):
            yield codec.unpack_key(key), value if isinstance(value, bytes) else bytes(value)


class Reader:
    """The reading side of a log: each call one short read transaction, or a view."""

    def __init__(self, store: Store, check_open: Callable[[], None]) -> None:
        self._store = store
        self._check_open = check_open

    @contextmanager
    def view(self) -> Iterator[LogView]:
        """One read transaction: every figure read through the view describes the same moment."""
        self._check_open()
        with self._store.reader() as txn:
            yield LogView(txn, self._store.events, self._store.meta)

    @property
    def last_seq(self) -> int:
        """The sequence number of the last committed event (0 when empty)."""
        with self.view() as view:
            return view.last_seq

    @property
    def first_seq(self) -> int:
        """The sequence number of the first event still in the log (0 when empty)."""
        with self.view() as view:
            return view.first_seq

    @property
    def start_seq(self) -> int:
        """The sequence number the log's events start from (1 unless a prune removed older ones)."""
        with self.view() as view:
            return view.start_seq

    def count(self) -> int:
        """How many events the log holds."""
        with self.view() as view:
            return len(view)

    def seq_at(self, when: datetime) -> int:
        """The last sequence number committed at or before ``when`` (0 if none was)."""
        self._check_open()
        with self._store.reader() as txn:
            seq = self._store.dbs.times.seq_at(txn, utc(when).timestamp())
            return Store.last_key(txn, self._store.events) if seq is None else seq

    def event(self, seq: int) -> Event:
        """Event ``seq`` from the log, or from the events kept past a prune; MissingEventError if neither."""
        store = self._store
        key = codec.pack_key(min(seq, _LAST_KEY))  # past any key: no event, so "not committed" below
        with store.reader() as txn:
            raw = txn.get(key, db=store.events)
            if raw is None and store.kept is not None:
                raw = txn.get(key, db=store.kept)
            if raw is not None:
                return codec.decode(raw, seq)
            first, last = LogView(txn, store.events, store.meta).first_seq, store.last_key(txn, store.events)
        if seq > last:
            raise MissingEventError(seq, f"is not committed yet: past the end (last is {last})", pruned=False)
        raise MissingEventError(seq, f"was pruned (the log holds {first}..{last}) and no snapshot kept it")

    def events_of(self, msg_id: str) -> list[tuple[int, Event]]:
        """The committed events naming ``msg_id``, in order (a scan of the whole log if it is unindexed)."""
        store, index = self._store, self._store.stream_index
        if index is not None:
            with store.reader() as txn:
                try:
                    seqs = index.seqs(txn, msg_id)
                except lmdb.Error:  # schema 2's index, dropped by a writer's upgrade since this opened
                    seqs = None
                if seqs is not None:
                    out = []
                    for seq in seqs:
                        raw = txn.get(codec.pack_key(seq), db=store.events)
                        if raw is not None:  # a stale entry (an unreadable pruned event) is reported by verify
                            out.append((seq, codec.decode(raw, seq)))
                    return out
        return [(seq, ev) for chunk in self.read_chunks() for seq, ev in chunk if msg_id in task_ids(ev)]

    def raw_chunks(self, start: int, stop: int | None) -> Iterator[list[tuple[int, bytes]]]:
        """``(seq, stored bytes)`` for start <= seq < stop, a few thousand per read transaction."""
        nxt = max(start, 1)
        seq_of = codec.unpack_key
        while stop is None or nxt < stop:
            chunk: list[tuple[int, bytes]] = []
            self._check_open()
            with self._store.reader() as txn:
                cur = txn.cursor(db=self._store.events)
                if not cur.set_range(codec.pack_key(nxt)):
                    return
                for k, v in cur:
                    seq = seq_of(k)
                    if (stop is not None and seq >= stop) or len(chunk) >= READ_CHUNK:
                        break
                    chunk.append((seq, bytes(v) if isinstance(v, memoryview) else v))
            if not chunk:
                return
            yield chunk
            nxt = chunk[-1][0] + 1

    def read_chunks(self, start: int = 1, stop: int | None = None) -> Iterator[list[tuple[int, Event]]]:
        """Decoded events in lists of a few thousand (a replay's path: no per-event generator)."""
        decode = codec.decode
        for chunk in self.raw_chunks(start, stop):
            yield [(seq, decode(raw, seq)) for seq, raw in chunk]
