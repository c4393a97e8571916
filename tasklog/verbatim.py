"""Writing a restore: events at their own sequence numbers with their own commit times."""

from __future__ import annotations

from collections.abc import Callable

import lmdb

from . import codec
from .databases import Databases, append_past_end
from .errors import CommitError
from .streamindex import index_rows

__all__ = ["put_verbatim"]


def put_verbatim(dbs: Databases, events: list[tuple[int, bytes]], commits: list[tuple[int, float]], *,
                 identity: str | None, fork: str | None,
                 own_identity: str | None) -> Callable[[lmdb.Transaction], None]:
    """The write-transaction body that writes a restore's batch of ``events`` and the ``commits``
    that wrote them, indexed like any append (the events are decoded at once, outside it).

    The first batch of an empty log may start past 1 (the original had been pruned) and gives
    the log the original's ``identity`` (its projections and its stream then know it as the
    original) and this copy's ``fork``; every later one must continue the log densely, and name
    the identity the log has (``own_identity``) if it names one.
    """
    rows = index_rows((codec.pack_key(seq), codec.decode(raw, seq)) for seq, raw in events)

    def body(txn: lmdb.Transaction) -> None:
        cur = txn.cursor(db=dbs.events)
        last = codec.unpack_key(cur.key()) if cur.last() else 0
        first = events[0][0]
        if last == 0 and dbs.times.empty(txn):
            if first > 1:
                txn.put(b"start_seq", str(first).encode(), db=dbs.meta)
            if identity is not None:
                txn.put(b"identity", identity.encode(), db=dbs.meta)
            if fork is not None:
                txn.put(b"fork", fork.encode(), db=dbs.meta)
        elif first != last + 1:
            raise CommitError(f"event {first} does not follow the log's last event {last}")
        elif identity is not None and identity != own_identity:
            raise CommitError(f"the log is {own_identity}'s restore, not {identity}'s")
        append_past_end(cur, [(codec.pack_key(seq), raw) for seq, raw in events])
        dbs.times.put(txn, commits)
        if dbs.index is not None:
            dbs.index.add(txn, rows)
    return body
