"""The stream index's task numbers: its counters in meta, the last number given, and the
in-memory map of its tail (the numbers given since the last merge, msg_id -> number) that
spares a commit random inserts."""

from __future__ import annotations

import struct
import threading
from typing import Any, NamedTuple

import lmdb

from . import codec
from .errors import StorageError

__all__ = ["NAME", "Marks", "NumberCache", "Tail", "last_number"]

#: The sequence-number half of the key of a task's name row (events are numbered from 1).
NAME = codec.pack_key(0)
_MARKS = b"task_marks"
_TWO = struct.Struct(">QQ")


class Marks:
    """The stream index's counters, one meta value: (generation, last merged number).

    The generation moves when a prune takes numbers away, so every process's cache starts again;
    both change rarely, so a commit reads them and does not write them.
    """

    def __init__(self, meta: Any) -> None:
        self.meta = meta

    def read(self, txn: lmdb.Transaction) -> tuple[int, int]:
        """(generation, last merged number) as of ``txn``."""
        raw = txn.get(_MARKS, db=self.meta)
        if raw is None:
            return 0, 0
        if len(raw) != _TWO.size:  # checked: struct's error said nothing of where (review of issue 24)
            raise StorageError(f"the stream index's counters are damaged ({len(raw)} bytes, not {_TWO.size}); "
                               "`tasklog verify` says what else is")
        gen, merged = _TWO.unpack(raw)
        return int(gen), int(merged)

    def write(self, txn: lmdb.Transaction, gen: int, merged: int) -> None:
        """Store the counters."""
        txn.put(_MARKS, _TWO.pack(gen, merged), db=self.meta)


def last_number(txn: lmdb.Transaction, rows: Any) -> int:
    """The last task number given (0: none), read from the last row's key."""
    cur = txn.cursor(db=rows)
    if not cur.last():
        return 0
    if len(cur.key()) != 16:
        raise StorageError("the stream index's last row is malformed; `tasklog verify` says what else is")
    return codec.unpack_key(cur.key()[:8])


class Tail(NamedTuple):
    """The tail as a transaction sees it: msg_id -> packed number (read, never changed, by
    callers), and the counters read with it."""

    numbers: dict[bytes, bytes]
    gen: int
    merged: int
    last: int  # the last number given


class NumberCache:
    """msg_id -> packed number for the tail, read from the index's name rows as transactions show it.

    Shared by a process's readers and its writer. A transaction's own new numbers are not put
    here: the next transaction reads them back once they are committed, so an aborted commit
    leaves nothing behind. A reader on an older snapshot may find numbers given after it; their
    streams are empty in its snapshot, so it reads what its snapshot holds.
    """

    def __init__(self, rows: Any, marks: Marks) -> None:
        self._rows = rows
        self._marks = marks
        self._lock = threading.Lock()
        self._state = (-1, -1)
        self._count = 0
        self._numbers: dict[bytes, bytes] = {}

    def tail(self, txn: lmdb.Transaction) -> Tail:
        """The tail up to date with ``txn``, with the counters it was read by (once a transaction)."""
        state = self._marks.read(txn)
        count = last_number(txn, self._rows)
        with self._lock:
            if self._state != state:
                self._state, self._count, self._numbers = state, state[1], {}
            if count > self._count:
                numbers = self._numbers
                cur = txn.cursor(db=self._rows)
                if cur.set_range(codec.pack_key(self._count + 1)):
                    for key, value in cur:
                        if len(value):  # a name row; the others are its events'
                            numbers[bytes(value)] = bytes(key[:8])
                self._count = count
            return Tail(self._numbers, *state, count)

    def lookup(self, txn: lmdb.Transaction, name: bytes) -> bytes | None:
        """The packed number of ``name`` if it is in the tail as of ``txn``."""
        return self.tail(txn).numbers.get(name)
