"""The stream index (schema 2): each task's msg_id -> the sequence numbers of the events naming it.

A dupsort database, so a task's numbers sit together, in order. Written in the transaction of
each append, read by ``events_of``, pruned with the log's front, checked by ``verify``, and built
once, in chunks, for a schema-1 log by the first writer that opens it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import lmdb

from . import codec
from .errors import CorruptEventError
from .events import Drop, Event, Resubmit, task_ids

__all__ = ["StreamIndex", "index_rows"]

_CHUNK = 20_000  # events indexed per transaction when a schema-1 log is upgraded


def index_rows(written: Iterable[tuple[int, Event]]) -> list[tuple[bytes, bytes]]:
    """The stream-index rows of some events (built outside the write transaction if it can be)."""
    pack = codec.pack_key
    out: list[tuple[bytes, bytes]] = []
    append = out.append
    # A plain loop with the one-task events inline: this runs once per appended event. Not
    # sorted: sorting cost more than it saved LMDB's inserts (BENCHMARKS.md, design notes).
    for seq, ev in written:
        cls = ev.__class__
        if cls is Drop or cls is Resubmit:
            for m in task_ids(ev):
                append((m.encode(), pack(seq)))
        else:
            append((ev[0].encode(), pack(seq)))  # type: ignore[union-attr]
    return out


class StreamIndex:
    """The stream index's database, read and written inside a caller's transaction."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def add(self, txn: lmdb.Transaction, rows: list[tuple[bytes, bytes]]) -> None:
        """Add events to the streams of the tasks they name, in the transaction that writes them."""
        if rows:
            txn.cursor(db=self.db).putmulti(rows, dupdata=True)

    def remove(self, txn: lmdb.Transaction, seq: int, raw: bytes) -> None:
        """Remove event ``seq`` (stored as ``raw``) from its tasks' streams."""
        try:
            event = codec.decode(raw, seq)
        except CorruptEventError:
            return  # its streams cannot be known: verify reports the entries left pointing at nothing
        key = codec.pack_key(seq)
        for m in task_ids(event):
            txn.delete(m.encode(), key, db=self.db)

    def seqs(self, txn: lmdb.Transaction, msg_id: str) -> list[int]:
        """The sequence numbers of the events naming ``msg_id``, in order."""
        cur = txn.cursor(db=self.db)
        if not cur.set_key(msg_id.encode()):
            return []
        return [codec.unpack_key(v) for v in cur.iternext_dup()]

    def build(self, write: Callable[[Callable[[lmdb.Transaction], int]], int], events: Any, meta: Any,
              progress: Callable[[int], None] | None = None) -> int:
        """Index a schema-1 log's ``events`` in transactions run by ``write``, resuming where an
        interrupted build stopped (meta ``indexed_to``); return how many events were indexed."""
        done = 0
        while True:
            count = write(lambda txn: self._index_chunk(txn, events, meta))
            if not count:
                return done
            done += count
            if progress is not None:
                progress(count)

    def _index_chunk(self, txn: lmdb.Transaction, events: Any, meta: Any) -> int:
        raw = txn.get(b"indexed_to", db=meta)
        nxt = int(raw) + 1 if raw is not None else 1
        cur = txn.cursor(db=events)
        if not cur.set_range(codec.pack_key(nxt)):
            return 0
        batch: list[tuple[int, Event]] = []
        for key, value in cur:
            seq = codec.unpack_key(key)
            with contextlib.suppress(CorruptEventError):  # verify names it; its streams cannot be known
                batch.append((seq, codec.decode(bytes(value), seq)))
            nxt = seq
            if len(batch) >= _CHUNK:
                break
        self.add(txn, index_rows(batch))
        txn.put(b"indexed_to", str(nxt).encode(), db=meta)
        return len(batch) or 1
