"""Deleting the log's front (a prune), and the kept events a snapshot's records still refer to."""

from __future__ import annotations

from collections.abc import Collection

import lmdb

from . import codec
from .databases import Databases
from .streamindex import Row, pruned_rows

__all__ = ["drop_front", "release_kept"]


def drop_front(txn: lmdb.Transaction, dbs: Databases, start: int, stop: int, keep: Collection[int] = ()) -> int:
    """Delete events start <= seq < stop and make ``stop`` the log's start; return how many went.

    The events numbered in ``keep`` move to the kept database instead of going (a snapshot's
    records refer to their buffers); every deleted event leaves its tasks' streams.
    """
    cur = txn.cursor(db=dbs.events)
    n = 0
    rows: list[Row] = []  # the index's rows of the deleted events, taken out of it at once
    if cur.set_range(codec.pack_key(start)):
        while cur.key() and codec.unpack_key(cur.key()) < stop:
            seq, raw = codec.unpack_key(cur.key()), bytes(cur.value())
            rows += pruned_rows(seq, raw)
            if seq in keep:
                txn.put(codec.pack_key(seq), raw, db=dbs.kept)
            cur.delete()
            n += 1
    if dbs.index is not None:
        dbs.index.remove(txn, rows)
    # The start moves with the deletions: a prune killed between transactions leaves a sound log.
    txn.put(b"start_seq", str(stop).encode(), db=dbs.meta)
    return n


def release_kept(txn: lmdb.Transaction, dbs: Databases, keep: Collection[int]) -> int:
    """Delete the kept events not numbered in ``keep`` (no snapshot refers to them any more)."""
    if dbs.kept is None:
        return 0
    cur = txn.cursor(db=dbs.kept)
    gone = [key for key in cur.iternext(values=False) if codec.unpack_key(key) not in keep]
    for key in gone:
        txn.delete(key, db=dbs.kept)
    return len(gone)
