"""The SQLite projection: one file, WAL, one transaction per applied batch.

Each record is a msgpack document plus indexed columns for the fields people
filter on. A query is compiled to SQL where SQL can say exactly the same thing
(typed comparisons on those columns); the whole query is then checked on the
decoded documents by the same evaluator as the dict projection, so SQL only
ever narrows the candidates and never changes an answer.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import fields
from datetime import datetime
from typing import Any

import msgpack

from tasklog.errors import StorageFullError, TaskLogError
from tasklog.lifecycle import TaskState
from tasklog.records import FAILED_STATUSES, INDEXED_FIELDS

from ..base import Projection, Records, TaskTimes
from ..catchup import gc_paused
from ..counts import Counted
from ..errors import ProjectionError
from ..fold import RECORD_KEYS, is_tombstone, strip_hidden, task_of
from ..paging import Cursor, Page, cut
from ..query import Logical, compile_predicate
from .sqlquery import (
    COLUMNS,
    EPOCH,
    IRREGULAR,
    MICROSECOND,
    OverBudget,
    budget,
    column_value,
    compile_sql,
    find_columns,
    keyset,
)

__all__ = ["SQLiteProjection", "COLUMNS", "encode_document", "decode_document", "remove_database"]

# 2: documents are arrays in RECORD_KEYS order (version 1 wrote maps, which are still read).
# 3: datetime columns hold microseconds since the epoch (2 held milliseconds: records now keep
#    the microseconds the Hub gave, and a millisecond column would make the SQL prefilter lie).
# 4: a ``state`` column (the task's lifecycle state, for tasks by state) and the events folded,
#    counted by block and type (``projections.counts``), kept with the checkpoint.
SCHEMA_VERSION = 4
INDEXED = tuple(INDEXED_FIELDS)
_CHUNK = 500


def _is_full(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite failed because the disk is full (SQLITE_FULL, 13; the code is there on 3.11+)."""
    return getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc)


def _full(path: str, doing: str, exc: sqlite3.DatabaseError) -> StorageFullError:
    """StorageFullError for a SQLite file the disk could not hold."""
    error = StorageFullError(f"{doing} {path} failed: {exc}")
    error.hint = "free disk space, then run it again"  # the class's hint speaks of the log
    return error


def _open_error(path: str, exc: sqlite3.DatabaseError) -> TaskLogError:
    """One line for a file SQLite could not open or set up: a full disk is StorageFullError."""
    # SQLITE_FULL (13) said "is not a usable SQLite projection" of a file only the disk failed (F6).
    if _is_full(exc):
        return _full(path, "setting up a SQLite projection at", exc)
    return ProjectionError(f"{path} is not a usable SQLite projection: {exc}")


# Columns named: a file made by an earlier version keeps its own column order.
# A task's lifecycle (``tasklog.lifecycle.TaskState``) beside its record: tasks by state, and the
# views' rows, read without unpacking a document.
LIFE = ("state", "reply_status", "reply_error", "resubmitted_from")
# TaskState's fields, in its order: each is a column of ``records`` (times in µs).
_STATE_FIELDS = tuple(f.name for f in fields(TaskState) if f.name != "dropped")
if _STATE_FIELDS[:4] != ("msg_id", "submitted", "started", "completed"):  # what task_states unpacks
    raise ImportError(f"TaskState's fields changed order: {_STATE_FIELDS}")
_INSERT = (f"INSERT OR REPLACE INTO records (msg_id, seq, dropped, irregular, {', '.join(COLUMNS)}, "
           f"{', '.join(LIFE)}, doc) VALUES ({','.join('?' * (len(COLUMNS) + len(LIFE) + 5))})")
_COUNT = ("INSERT INTO event_counts VALUES (?, ?, ?) "
          "ON CONFLICT (block, type) DO UPDATE SET n = n + excluded.n")
_packer = msgpack.Packer(datetime=True)
_ABSENT = object()
# The hidden checkpoint has its own slot: a one-key map per record would cost more than it.
_SLOTS = (*RECORD_KEYS, "_seq")
_TEMPLATE = dict.fromkeys(_SLOTS)


def _life(rec: dict[str, Any]) -> tuple[str | None, ...]:
    """The ``LIFE`` columns of a record (a TaskState's fields: text or None, whatever the record holds)."""
    task = task_of(rec)
    return task.state, task.reply_status, task.reply_error, task.resubmitted_from


def remove_database(path: str) -> None:
    """Delete a SQLite file and its journals, whichever exist (what a failed build made)."""
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        with suppress(OSError):  # not there, or never made (a read-only directory)
            os.remove(name)


def encode_document(rec: dict[str, Any]) -> bytes:
    """A record as [RECORD_KEYS values..., _seq, {other keys}]; a record lacking one as a map.

    Why an array: unpacking a map makes and interns every key string of every record, a third
    of the cost of a whole-record query (BENCHMARKS.md, "Design notes moved from the code").
    """
    values = [rec.get(k, _ABSENT) for k in _SLOTS]
    if any(v is _ABSENT for v in values):
        blob: bytes = _packer.pack(rec)
        return blob
    values.append({k: v for k, v in rec.items() if k not in _TEMPLATE} if len(rec) > len(_SLOTS) else {})
    blob = _packer.pack(values)
    return blob


def decode_document(blob: bytes, public: bool = False) -> dict[str, Any]:
    """A stored document as the record the fold made; ``public`` leaves out the hidden keys."""
    doc = msgpack.unpackb(blob, timestamp=3, strict_map_key=False)
    if type(doc) is list:
        # A copy of a presized template, then an update in place: no table grows as it fills.
        rec = _TEMPLATE.copy()
        rec.update(zip(_SLOTS, doc))
        if doc[-1]:
            rec.update(doc[-1])
    else:
        rec = doc
    return strip_hidden(rec) if public else rec


class SQLiteProjection(Projection):
    """Records in one SQLite file; ``path`` may be ':memory:'."""

    persistent = True
    keeps_hubs = True

    def __init__(self, path: str, readonly: bool = False) -> None:
        super().__init__()
        self.path = path
        self.spec = f"sqlite:///{path}"
        #: Opened for reading only (``mode=ro``): a file another process (a Hub) keeps writing.
        self.readonly = readonly
        if path != ":memory:":
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise ProjectionError(f"cannot create {path}: directory {parent} does not exist")
        fresh = not os.path.exists(path)  # ":memory:" is never a file here
        try:
            if readonly:
                uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
                # One read transaction for as long as it is open: the marks, the counts and every
                # record as of one commit of the writer (read one by one, a live Hub's stats
                # counted a batch twice, and its tasks by state as of a later batch).
                self._db.execute("BEGIN")
                self._read_marks()
            else:
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
                self._setup()
        except sqlite3.DatabaseError as exc:
            self._abandon(fresh)
            raise _open_error(path, exc) from None
        except ProjectionError:  # refused (another schema, damaged marks): closed, never left open
            self._abandon(fresh)
            raise

    def _abandon(self, fresh: bool) -> None:
        """A failed open: close the file, and delete it (with its journals) if this open made it."""
        # A full disk left the connection open (its tmpfs could not be unmounted) and an empty
        # p.db behind a command that failed (F6).
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        if fresh and self.path != ":memory:":
            remove_database(self.path)

    def _setup(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # the log is the durable copy; a lost tail is replayed
        cols = ", ".join(f"{c} {'INTEGER' if t is datetime else 'TEXT'}" for c, t in COLUMNS.items())
        with self._transaction():
            db.execute(f"CREATE TABLE IF NOT EXISTS records (msg_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, "
                       f"dropped INTEGER NOT NULL DEFAULT 0, irregular INTEGER NOT NULL DEFAULT 0, {cols}, "
                       # The document last: a column after it is read past its overflow pages (the
                       # views read the lifecycle columns of every task).
                       f"{', '.join(c + ' TEXT' for c in LIFE)}, doc BLOB NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)")
            db.execute("CREATE TABLE IF NOT EXISTS event_counts (block INTEGER NOT NULL, type TEXT NOT NULL, "
                       "n INTEGER NOT NULL, PRIMARY KEY (block, type))")
            for c in INDEXED:
                db.execute(f"CREATE INDEX IF NOT EXISTS records_{c} ON records ({c})")
            db.execute("CREATE INDEX IF NOT EXISTS records_irregular ON records (irregular) WHERE irregular = 1")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('last_seq', 0), ('counted_from', 1)",
                       (SCHEMA_VERSION,))
        try:
            schema = int(db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0])
        except (ValueError, TypeError) as exc:
            raise ProjectionError(f"{self.path} is not a usable SQLite projection: schema {exc}") from None
        if schema > SCHEMA_VERSION:
            raise ProjectionError(f"{self.path} has projection schema {schema}; this tasklog reads {SCHEMA_VERSION}")
        if schema < SCHEMA_VERSION:
            self._upgrade(schema)
        db.execute("CREATE INDEX IF NOT EXISTS records_state ON records (state)")
        self._read_marks()

    def _read_marks(self) -> None:
        """The checkpoint and marks (read-only: the schema must be this tasklog's, nothing is upgraded)."""
        db = self._db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if str(meta.get("schema", 0)) != str(SCHEMA_VERSION):
            raise ProjectionError(f"{self.path} has projection schema {meta.get('schema')}; reading it "
                                  f"without writing needs schema {SCHEMA_VERSION}")
        try:
            self.last_seq = int(meta["last_seq"])
            self.log_identity, self.pinned = meta.get("log_identity"), meta.get("pinned")
            # Fed from a stream: "hub:<log identity>" -> "<seq> <hub name>", one row per hub.
            self.hubs = {k[4:]: (v.split(" ", 1)[1], int(v.split(" ", 1)[0]))
                         for k, v in meta.items() if k.startswith("hub:")}
            since = None if meta.get("counted_from") is None else int(meta["counted_from"])
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise ProjectionError(f"{self.path} is not a usable SQLite projection: its marks are damaged "
                                  f"({type(exc).__name__}: {exc})") from None
        blocks = Counter({(block, kind): n for block, kind, n in db.execute("SELECT block, type, n FROM event_counts")})
        if since is not None and sum(blocks.values()) != max(self.last_seq - since + 1, 0):
            since = None  # counts that cannot be all of its events are not trusted: the log counts them
        self.counted = Counted(blocks, since)

    def _upgrade(self, schema: int) -> None:
        with self._transaction() as db:  # one transaction: all or nothing
            _upgrade(db, schema)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        if self.readonly:
            raise ProjectionError(f"{self.spec} was opened read-only")
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            # A full disk while storing reached the Hub as a raw sqlite3 error (issue 20, item 2).
            if _is_full(exc):
                raise _full(self.spec, "storing into", exc) from None
            raise

    def _clear(self) -> None:
        """Delete every record and reset the checkpoint, in one transaction."""
        with self._transaction() as db:
            db.execute("DELETE FROM records")
            db.execute("DELETE FROM event_counts")
            db.execute("UPDATE meta SET value=0 WHERE key='last_seq'")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('counted_from', 1)")
            db.execute("DELETE FROM meta WHERE key LIKE 'hub:%'")

    def _save_marks(self) -> None:
        """Store which log the records come from and the event they are pinned at."""
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [("log_identity", self.log_identity), ("pinned", self.pinned)])

    def _load(self, msg_ids: set[str]) -> Records:
        out: Records = {}
        ids = list(msg_ids)
        for i in range(0, len(ids), _CHUNK):
            part = ids[i:i + _CHUNK]
            rows = self._db.execute(f"SELECT msg_id, doc FROM records WHERE msg_id IN ({','.join('?' * len(part))})",
                                    part)
            for msg_id, blob in rows:
                out[msg_id] = decode_document(blob)
        return out

    def _row(self, rec: dict[str, Any]) -> tuple[Any, ...]:
        irregular = 0
        values = []
        for name in COLUMNS:
            v = column_value(name, rec.get(name))
            if v is IRREGULAR:
                irregular, v = 1, None
            values.append(v)
        return (rec["msg_id"], rec["_seq"], 1 if is_tombstone(rec) else 0, irregular, *values, *_life(rec),
                encode_document(rec))

    def _store(self, records: Records, changed: set[str], last_seq: int) -> None:
        self._write(records, changed, [("last_seq", last_seq)])

    def store_hubs(self, records: Records, changed: set[str], hubs: dict[str, tuple[str, int]]) -> None:
        self._write(records, changed, [(f"hub:{identity}", f"{seq} {hub}") for identity, (hub, seq) in hubs.items()])

    def _write(self, records: Records, changed: set[str], checkpoint: list[tuple[str, Any]]) -> None:
        """The ``changed`` records and the ``checkpoint`` rows of meta (the log's, or each hub's)."""
        rows = [self._row(rec) for m in changed if (rec := records[m]) is not None]
        gone = [(m,) for m in changed if records[m] is None]  # a rewind's task with no events left
        counted = [(block, kind, n) for (block, kind), n in self.counted.pending.items()]
        # Records, checkpoint and counts in one transaction: a crash leaves all old or all new.
        with self._transaction() as db:
            db.executemany("DELETE FROM records WHERE msg_id = ?", gone)
            db.executemany(_INSERT, rows)
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           [*checkpoint, ("counted_from", self.counted.since)])
            if self.counted.since is None:
                db.execute("DELETE FROM event_counts")
            else:
                db.executemany(_COUNT, counted)

    def _where(self, node: Logical, unindexed: bool = False) -> tuple[str, list[Any], bool]:
        compiled = compile_sql(node, unindexed)
        if compiled is None:
            return "dropped = 0", [], False
        sql, params, exact = compiled
        if not self._has_irregular():  # as it is almost always: the planner may then use the column's index
            return f"dropped = 0 AND ({sql})", params, exact
        return f"dropped = 0 AND (({sql}) OR irregular = 1)", params, False

    def _has_irregular(self) -> bool:
        return self._db.execute("SELECT 1 FROM records WHERE irregular = 1 LIMIT 1").fetchone() is not None

    def _find(self, node: Logical, keys: list[str] | None) -> list[dict[str, Any]]:
        where, params, exact = self._where(node)
        if exact and keys is not None and all(k in COLUMNS or k == "msg_id" for k in keys):
            return find_columns(self._db, where, params, keys)
        rows = self._db.execute(f"SELECT doc FROM records WHERE {where}", params)
        with gc_paused():  # thousands of fresh, acyclic dicts: nothing for the collector to find
            if exact:
                docs = [decode_document(blob, public=True) for (blob,) in rows]
            else:  # the predicate sees the hidden keys, as it does on the dict projection
                match = compile_predicate(node)
                docs = [strip_hidden(d) for (blob,) in rows if match(d := decode_document(blob))]
        if keys is None:
            return docs
        return [{k: d[k] for k in keys if k in d} for d in docs]

    def _page(self, node: Logical, sort: str, descending: bool, limit: int, after: Cursor | None) -> Page:
        # ORDER BY the sort field's column (an index) and LIMIT: a page reads about its own rows,
        # where the generic page sorted every match in Python. With a filter, SQLite takes the
        # filtered field's index and sorts all its matches (250 ms for a client's 70,000 tasks of
        # a million events): walking the sort field's index instead finds a page of a common
        # value in a few hundred rows, so that is tried first, for a bounded number of steps.
        walk, plain = self._where(node, True), self._where(node)
        if walk[0] != plain[0]:
            with suppress(OverBudget), budget(self._db, _WALK_STEPS):
                return self._page_by(walk, node, sort, descending, limit, after)
        return self._page_by(plain, node, sort, descending, limit, after)

    def _page_by(self, compiled: tuple[str, list[Any], bool], node: Logical, sort: str, descending: bool, limit: int,
                 after: Cursor | None) -> Page:
        where, params, exact = compiled
        if after is not None:
            more, values = keyset(sort, after, descending)
            where, params = f"{where} AND ({more})", [*params, *values]
        order = "DESC" if descending else "ASC"
        sql = f"SELECT doc FROM records WHERE {where} ORDER BY {sort} {order}, msg_id {order}"
        if exact:
            sql, params = f"{sql} LIMIT ?", [*params, limit + 1]
        match = None if exact else compile_predicate(node)
        found: list[dict[str, Any]] = []
        for (blob,) in self._db.execute(sql, params):
            doc = decode_document(blob)
            if match is None or match(doc):
                found.append(strip_hidden(doc))
                if len(found) > limit:
                    break
        return cut(found, sort, limit)

    def _count(self, node: Logical) -> int:
        where, params, exact = self._where(node)
        if exact:
            return int(self._db.execute(f"SELECT COUNT(*) FROM records WHERE {where}", params).fetchone()[0])
        return len(self._find(node, ["msg_id"]))

    def _history(self) -> list[str]:
        # Irregular rows have a NULL column whatever the field holds: sort them by the document.
        rows = self._db.execute("SELECT msg_id FROM records WHERE dropped = 0 "
                                "ORDER BY submitted IS NOT NULL, submitted, msg_id")
        return [m for (m,) in rows]

    def task_states(self) -> Iterator[TaskState]:
        """Every task's lifecycle state, purged ones included, streamed from the columns."""
        rows = self._db.execute(f"SELECT dropped, CASE irregular WHEN 1 THEN doc END, {', '.join(_STATE_FIELDS)} "
                                "FROM records")
        epoch, us = EPOCH, MICROSECOND
        # Unpacked by name, not zipped with a table: this runs once per task of every view.
        for dropped, doc, msg_id, submitted, started, completed, *rest in rows:
            if doc is not None:  # a value no column holds: the document says
                yield task_of(decode_document(doc))
            else:
                task = TaskState(msg_id, None if submitted is None else epoch + us * submitted,
                                 None if started is None else epoch + us * started,
                                 None if completed is None else epoch + us * completed, *rest)
                task.dropped = bool(dropped)
                yield task

    def task_times(self, msg_ids: Collection[str] | None = None) -> Iterator[TaskTimes]:
        """``Projection.task_times`` straight from the columns (a value of another type is None)."""
        failed = ", ".join(f"'{s}'" for s in sorted(FAILED_STATUSES))  # TaskState.failed, whatever came after
        sql = (f"SELECT msg_id, submitted, started, completed, reply_status IN ({failed}), engine_uuid "
               "FROM records WHERE dropped = 0")
        if msg_ids is None:
            return iter(self._db.execute(sql))
        ids = list(msg_ids)
        return (row for i in range(0, len(ids), _CHUNK) for row in self._db.execute(
            f"{sql} AND msg_id IN ({','.join('?' * len(ids[i:i + _CHUNK]))})", ids[i:i + _CHUNK]))

    def tasks_by(self, name: str) -> Counter[str | None]:
        """Tasks, purged ones included, by ``state`` or another TaskState field: one ``GROUP BY``
        (a row whose column could not hold the value is read from its document)."""
        if name not in _STATE_FIELDS and name not in LIFE:
            return super().tasks_by(name)  # not a column: AttributeError for what a TaskState lacks
        # The column's own index alone (a filter on another column read every row: a second at 1M
        # events); then the few irregular rows moved to what their documents say.
        out: Counter[str | None] = Counter(dict(self._db.execute(
            f"SELECT {name}, COUNT(*) FROM records GROUP BY {name}").fetchall()))
        for column, blob in self._db.execute(f"SELECT {name}, doc FROM records WHERE irregular = 1"):
            out[column] -= 1
            out[getattr(task_of(decode_document(blob)), name)] += 1
        return +out

    def close(self) -> None:
        """Close the database file."""
        self._db.close()


# About 3,000 rows of the sort field's index with their filters, some 30 ms (thousands of SQLite
# steps): a value in more than about one task in thirty fills a page within it.
_WALK_STEPS = 300


def _upgrade(db: sqlite3.Connection, schema: int) -> None:
    """Bring a file of an older schema to this one, inside the caller's transaction."""
    # Older documents stay readable as they are (their datetimes were cut to milliseconds,
    # which the columns then hold exactly in microseconds); the mark stops an older tasklog
    # from misreading what is written from now on.
    if schema < 3:
        times = [c for c, t in COLUMNS.items() if t is datetime]
        db.execute("UPDATE records SET " + ", ".join(f"{c} = {c} * 1000" for c in times))
    if schema < 4:
        have = {row[1] for row in db.execute("PRAGMA table_info(records)")}
        for c in LIFE:
            if c not in have:
                db.execute(f"ALTER TABLE records ADD COLUMN {c} TEXT")
        rows = db.execute("SELECT msg_id, doc FROM records").fetchall()
        db.executemany(f"UPDATE records SET {', '.join(c + ' = ?' for c in LIFE)} WHERE msg_id = ?",
                       [(*_life(decode_document(blob)), m) for m, blob in rows])
        # Its events were never counted: counts are kept only if it holds none yet; else
        # stats counts its events from the log until it is rebuilt (the readers' own is).
        db.execute("INSERT OR REPLACE INTO meta VALUES ('counted_from', "
                   "(SELECT CASE value WHEN 0 THEN 1 END FROM meta WHERE key = 'last_seq'))")
    db.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
