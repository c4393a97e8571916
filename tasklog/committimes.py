"""The commit-time table: each commit's first sequence number -> the UNIX time it was made.

It answers "what did the hub know at T" (``seq_at``) and when an event was written
(``committed_at``); a restore copies the original's times verbatim (``put``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from typing import Any

import lmdb

from . import codec

__all__ = ["CommitTimes"]

_TIME = struct.Struct(">d")


class CommitTimes:
    """The commit-time database, read and written inside a caller's transaction."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def record_now(self, txn: lmdb.Transaction, first_seq: int) -> None:
        """Record the time of the commit whose first event is ``first_seq``: now."""
        txn.put(codec.pack_key(first_seq), _TIME.pack(time.time()), db=self.db)

    def put(self, txn: lmdb.Transaction, commits: Iterable[tuple[int, float]]) -> None:
        """Record commits as given: ``(first seq, UNIX time)`` each (a restore's, the original's)."""
        for at, when in commits:
            txn.put(codec.pack_key(at), _TIME.pack(when), db=self.db)

    def empty(self, txn: lmdb.Transaction) -> bool:
        """Whether no commit has been recorded."""
        return not txn.cursor(db=self.db).last()

    def commits(self, txn: lmdb.Transaction, start: int, stop: int) -> list[tuple[int, float]]:
        """The commits that wrote events start <= seq < stop: ``(first seq, UNIX time)``, in order;
        the first is the commit holding ``start`` (it may begin before it)."""
        cur = txn.cursor(db=self.db)
        out: list[tuple[int, float]] = []
        if not self._to_commit_of(cur, start):
            cur.first()  # ``start`` is before every recorded commit
        for key, raw in cur:
            first = codec.unpack_key(key)
            if first >= stop:
                break
            out.append((first, _TIME.unpack(raw)[0]))
        return out

    def seq_at(self, txn: lmdb.Transaction, limit: float) -> int | None:
        """The last event committed at or before the UNIX time ``limit``; None when every commit was."""
        for key, raw in txn.cursor(db=self.db):
            if _TIME.unpack(raw)[0] > limit:
                return codec.unpack_key(key) - 1
        return None

    def committed_at(self, txn: lmdb.Transaction, seq: int) -> float | None:
        """The UNIX time of the commit that wrote event ``seq`` (None: no time recorded for it)."""
        cur = txn.cursor(db=self.db)
        return float(_TIME.unpack(cur.value())[0]) if self._to_commit_of(cur, seq) else None

    @staticmethod
    def _to_commit_of(cur: lmdb.Cursor, seq: int) -> bool:
        """Put ``cur`` (on the times database) on the commit that wrote ``seq``; False if none did."""
        # Commits are keyed by their first event: the commit of ``seq`` is the last key <= seq.
        if cur.set_range(codec.pack_key(seq)) and codec.unpack_key(cur.key()) == seq:
            return True
        return bool(cur.prev() if cur.key() else cur.last()) and codec.unpack_key(cur.key()) <= seq
