"""A log's named databases, opened together, and the one way events go past the log's end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lmdb

from .committimes import CommitTimes
from .diskspace import full_disk
from .errors import CommitError, StorageError
from .streamindex import LegacyStreams, StreamIndex

__all__ = ["Databases", "open_databases", "append_past_end", "indexed", "mark_indexed"]


@dataclass(frozen=True)
class Databases:
    """The LMDB databases of one log environment."""

    #: Sequence number -> an event's bytes (codec).
    events: Any
    #: Idempotency keys of async appends -> their sequence numbers.
    keys: Any
    #: schema, identity, fork, start_seq, task_marks, task_index_to.
    meta: Any
    #: Commit times, keyed by each commit's first sequence number: "what did the hub know at T".
    times: CommitTimes
    #: Each task's stream (schema 3); None for an older log opened read-only.
    index: StreamIndex | None
    #: Schema 2's stream index, while a log of that schema is not upgraded (read-only, or mid-upgrade).
    legacy: LegacyStreams | None
    #: Events a prune removed from the log whose bytes a snapshot's records still refer to
    #: (their buffers); None as for ``index``.
    kept: Any | None


def open_databases(env: lmdb.Environment, path: str, *, create: bool) -> Databases:
    """Open (with ``create``: make) the databases of the environment of the log at ``path``."""
    try:
        events = env.open_db(b"events", create=create)
        keys = env.open_db(b"keys", create=create)
        meta = env.open_db(b"meta", create=create)
        times = env.open_db(b"times", create=create)
    except lmdb.Error as exc:
        raise _open_error(exc, path) from None
    tasks = _optional_db(env, path, b"tasks", create)
    rows = _optional_db(env, path, b"task_rows", create)
    index = None if tasks is None or rows is None else StreamIndex(tasks, rows, meta)
    legacy = _optional_db(env, path, b"streams", False, dupsort=True, dupfixed=True)  # schema 2's
    kept = _optional_db(env, path, b"kept", create)
    return Databases(events, keys, meta, CommitTimes(times), index,
                     None if legacy is None else LegacyStreams(legacy), kept)


def _optional_db(env: lmdb.Environment, path: str, name: bytes, create: bool,
                 dupsort: bool = False, dupfixed: bool = False) -> Any:
    try:
        return env.open_db(name, create=create, dupsort=dupsort, dupfixed=dupfixed)
    except lmdb.NotFoundError:
        return None
    except lmdb.Error as exc:
        raise _open_error(exc, path) from None


def _open_error(exc: lmdb.Error, path: str) -> StorageError:
    # A new log's databases are made by a commit: on a full disk that is no damage.
    return full_disk(exc, f"opening {path}", path) or StorageError(f"{path} is damaged or incomplete: {exc}")


def append_past_end(cur: lmdb.Cursor, pairs: list[tuple[bytes, bytes]]) -> None:
    """Append ``(key, value)`` pairs past the end of the cursor's database, all or raise."""
    # putmulti(append=True) skips a key that does not sort last instead of raising: compare counts.
    consumed, added = cur.putmulti(pairs, append=True)
    if consumed != len(pairs) or added != len(pairs):
        raise CommitError(f"only {added} of {len(pairs)} events went past the end of the log")


def indexed(txn: lmdb.Transaction, dbs: Databases, schema: int) -> bool:
    """Whether the log is marked with ``schema`` (another writer finished its upgrade)."""
    return txn.get(b"schema", db=dbs.meta) == str(schema).encode()


def mark_indexed(txn: lmdb.Transaction, dbs: Databases, schema: int) -> None:
    """Mark a log whose stream index was just built with ``schema``; drop what older schemas kept."""
    if dbs.legacy is not None:
        txn.drop(dbs.legacy.db, delete=True)
    txn.delete(b"indexed_to", db=dbs.meta)  # an interrupted schema-1 build's progress
    txn.put(b"schema", str(schema).encode(), db=dbs.meta)
