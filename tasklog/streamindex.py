"""The stream index (schema 3): each task's events, found from its msg_id, at little cost to a commit.

A task gets a number the first time the log names it. ``task_rows`` holds, keyed by
(number, sequence number), a row per event naming the task and, at sequence number 0, the task's
msg_id: keyed by number, so a commit's writes land in the last pages of the tree. The way back,
msg_id -> number, is ``tasks``, keyed by msg_id: a random insert per task that cost a commit
most of its pages (BENCHMARKS.md, issue 24). So the numbers given since the last merge (the tail,
past meta ``task_marks``'s merged number) are found through an in-memory map (``NumberCache``),
and go into ``tasks`` together, sorted, once ``MERGE`` of them have gathered: each such merge
touches each page of ``tasks`` at most once.

Written in the transaction of each append, read by ``events_of``, pruned with the log's front,
checked by ``verify``, and built once, in chunks, for a log of an older schema by the first writer
that opens it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, cast

import lmdb

from . import codec
from .errors import CorruptEventError
from .events import Drop, Event, Resubmit, task_ids
from .numbers import NAME, Marks, NumberCache

__all__ = ["StreamIndex", "LegacyStreams", "Plan", "Upgrade", "index_rows", "pruned_rows", "Row"]

_CHUNK = 20_000  # events indexed per transaction when a log of an older schema is upgraded
_BUILT_TO = b"task_index_to"  # meta: the last event an interrupted upgrade indexed
MERGE = 65_536  # tail numbers gathered before they go into ``tasks`` at once
_FIRST = codec.pack_key(1)  # the sequence-number half of a task's first possible event row
Row = tuple[bytes, bytes]  # (a msg_id in UTF-8, the packed sequence number of an event naming it)


def index_rows(written: Iterable[tuple[bytes, Event]]) -> list[Row]:
    """The stream-index rows of events given with their packed sequence numbers (built outside
    the write transaction where it can be)."""
    out: list[Row] = []
    append = out.append
    # A plain loop with the one-task events inline: this runs once per appended event.
    for key, ev in written:
        cls = ev.__class__
        if cls is Drop or cls is Resubmit:
            for m in task_ids(ev):
                append((m.encode(), key))
        else:
            append((ev[0].encode(), key))  # type: ignore[union-attr]
    return out


def pruned_rows(seq: int, raw: bytes) -> list[Row]:
    """The stream-index rows of event ``seq`` stored as ``raw`` (none if it cannot be decoded:
    verify reports the entries left pointing at nothing)."""
    try:
        return index_rows([(codec.pack_key(seq), codec.decode(raw, seq))])
    except CorruptEventError:
        return []


class Upgrade(NamedTuple):
    """How ``StreamIndex.build`` ends: whether another writer finished it, and what marks it done."""

    done: Callable[[lmdb.Transaction], bool]
    finish: Callable[[lmdb.Transaction], None]


class Plan(NamedTuple):
    """What ``StreamIndex.write`` puts: the rows, sorted, and whether it numbered tasks."""

    rows: list[Row]
    numbered: bool
    marks: tuple[int, int, int]  # (generation, last merged number, last number given) after it


class StreamIndex:
    """The stream index's databases, read and written inside a caller's transaction."""

    def __init__(self, tasks: Any, rows: Any, meta: Any) -> None:
        self.tasks = tasks
        self.rows = rows
        self.marks = Marks(meta)
        self.cache = NumberCache(rows, self.marks)

    def number(self, txn: lmdb.Transaction, name: bytes) -> bytes | None:
        """The packed number of the task named ``name`` (UTF-8) as of ``txn`` (None: never named)."""
        num = self.cache.lookup(txn, name)
        return num if num is not None else _getter(txn)(name, db=self.tasks)

    def add(self, txn: lmdb.Transaction, rows: list[Row]) -> None:
        """Add events to the streams of the tasks they name, numbering the tasks new to the log."""
        self.write(txn, self.plan(txn, rows))

    def plan(self, txn: lmdb.Transaction, rows: list[Row]) -> Plan:
        """Number the tasks ``rows`` name as of ``txn`` (nothing written): what ``write`` puts."""
        tail = self.cache.tail(txn)
        # Past the merged numbers too: a prune may have taken the highest ones away, and a number
        # at or below the merge point would be looked for in ``tasks`` only (review of issue 24).
        count = max(tail.last, tail.merged)
        numbers, get, tasks, pack = tail.numbers, _getter(txn), self.tasks, codec.pack_key
        fresh: dict[bytes, bytes] = {}  # numbered here: the cache learns them once this commits
        out: list[Row] = []
        for m, key in rows:
            num = numbers.get(m) or fresh.get(m) or get(m, db=tasks)
            if num is None:
                count += 1
                num = fresh[m] = pack(count)
                out.append((num + NAME, m))
            out.append((num + key, b""))
        out.sort()  # in key order: the cursor walks forward through the last pages of the tree
        return Plan(out, bool(fresh), (tail.gen, tail.merged, count))

    def write(self, txn: lmdb.Transaction, plan: Plan) -> None:
        """Put what ``plan`` numbered (in the transaction it was planned in)."""
        txn.cursor(db=self.rows).putmulti(plan.rows)
        gen, merged, count = plan.marks
        if plan.numbered and count - merged >= MERGE:
            cur = txn.cursor(db=self.rows)
            if cur.set_range(codec.pack_key(merged + 1)):  # the tail's names, sorted: each page once
                names = sorted((bytes(v), bytes(k[:8])) for k, v in cur if len(v))
                txn.cursor(db=self.tasks).putmulti(names)
            self.marks.write(txn, gen, count)

    def remove(self, txn: lmdb.Transaction, rows: Iterable[Row]) -> None:
        """Remove the rows of deleted events (``pruned_rows``) from their tasks' streams; a task
        whose stream is left empty loses its number too (a pruned log's index shrinks with it)."""
        tail, gone = self.cache.tail(txn), False  # one look at the tail: numbers do not change here
        cur, get = txn.cursor(db=self.rows), _getter(txn)
        for name, key in rows:
            num = tail.numbers.get(name) or get(name, db=self.tasks)
            if num is None:
                continue
            txn.delete(num + key, db=self.rows)
            if not cur.set_range(num + _FIRST) or cur.key()[:8] != num:  # no event row left
                txn.delete(num + NAME, db=self.rows)
                txn.delete(name, db=self.tasks)
                gone = True
        if gone:  # every process's cache of the tail starts again
            self.marks.write(txn, tail.gen + 1, tail.merged)

    def seqs(self, txn: lmdb.Transaction, msg_id: str) -> list[int]:
        """The sequence numbers of the events naming ``msg_id``, in order."""
        num = self.number(txn, msg_id.encode())
        if num is None:
            return []
        cur, out = txn.cursor(db=self.rows), []
        if cur.set_range(num + NAME):
            for key in cur.iternext(values=False):
                if key[:8] != num:
                    break
                out.append(codec.unpack_key(key[8:]))
        return out[1:]  # past the name row

    def entries(self, txn: lmdb.Transaction) -> Iterator[tuple[str, int]]:
        """Every ``(msg_id, seq)`` the index holds, for ``verify`` (a row without its task's name
        row is given the name "?"; a malformed row is left to ``inconsistencies``)."""
        num, name = b"", "?"
        for key, value in txn.cursor(db=self.rows):
            if len(key) != 16:
                continue
            if key[:8] != num:
                num, name = bytes(key[:8]), "?"
            if key[8:] == NAME:
                name = bytes(value).decode(errors="replace")
            else:
                yield name, codec.unpack_key(key[8:])

    def inconsistencies(self, txn: lmdb.Transaction) -> list[str]:
        """What the index's databases say that cannot all be true (``verify``)."""
        _, merged = self.marks.read(txn)
        out: list[str] = []
        in_map = named = 0
        tail: set[bytes] = set()  # a msg_id twice in the tail; twice merged is a wrong map entry
        for key, value in txn.cursor(db=self.rows):
            if len(key) != 16:
                out.append(f"stream index: a row with a malformed key ({bytes(key)!r:.40})")
                continue
            if key[8:] != NAME:
                continue
            n, num, name, named = codec.unpack_key(key[:8]), bytes(key[:8]), bytes(value), named + 1
            in_map += n <= merged
            shown = name.decode(errors="replace")
            if txn.get(name, db=self.tasks) != (num if n <= merged else None):
                out.append(f"stream index: task {n} ({shown!r}) is not where its number says")
            elif n > merged and name in tail:
                out.append(f"stream index: {shown!r} has two numbers")
            if n > merged:
                tail.add(name)
        mapped = int(txn.stat(self.tasks)["entries"])
        if mapped != in_map:
            out.append(f"stream index: {mapped} msg_ids mapped, but {in_map} of the {named} tasks are merged")
        return out[:20]

    def build(self, write: Callable[[Callable[[lmdb.Transaction], int]], int], events: Any, upgrade: Upgrade,
              progress: Callable[[int], None] | None = None) -> int:
        """Index a log of an older schema in transactions run by ``write``, resuming where an
        interrupted build stopped; ``upgrade.finish`` runs in the transaction that finds nothing
        left (so an event appended meanwhile is either indexed or stops it), and a build stops
        when ``upgrade.done`` (another writer finished it). Return the events indexed."""
        done = 0
        while True:
            count = write(lambda txn: 0 if upgrade.done(txn) else self._step(txn, events, upgrade.finish))
            if not count:
                return done
            done += count
            if progress is not None:
                progress(count)

    def _step(self, txn: lmdb.Transaction, events: Any, finish: Callable[[lmdb.Transaction], None]) -> int:
        count = self._index_chunk(txn, events)
        if not count:
            txn.delete(_BUILT_TO, db=self.marks.meta)
            finish(txn)
        return count

    def _index_chunk(self, txn: lmdb.Transaction, events: Any) -> int:
        raw = txn.get(_BUILT_TO, db=self.marks.meta)
        nxt = codec.unpack_key(raw) + 1 if raw is not None else 1
        cur = txn.cursor(db=events)
        if not cur.set_range(codec.pack_key(nxt)):
            return 0
        batch: list[tuple[bytes, Event]] = []
        for key, value in cur:
            seq = codec.unpack_key(key)
            with contextlib.suppress(CorruptEventError):  # verify names it; its streams cannot be known
                batch.append((bytes(key), codec.decode(bytes(value), seq)))
            nxt = seq
            if len(batch) >= _CHUNK:
                break
        self.add(txn, index_rows(batch))
        txn.put(_BUILT_TO, codec.pack_key(nxt), db=self.marks.meta)
        return len(batch) or 1


class LegacyStreams:
    """Schema 2's index (msg_id -> sequence numbers), read where a log cannot be upgraded (read-only)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def seqs(self, txn: lmdb.Transaction, msg_id: str) -> list[int]:
        """The sequence numbers of the events naming ``msg_id``, in order."""
        return _dups(txn, self.db, msg_id.encode())

    def entries(self, txn: lmdb.Transaction) -> Iterator[tuple[str, int]]:
        """Every ``(msg_id, seq)`` the index holds, for ``verify``."""
        for key, value in txn.cursor(db=self.db):
            yield bytes(key).decode(), codec.unpack_key(value)

    def inconsistencies(self, txn: lmdb.Transaction) -> list[str]:
        """Nothing to cross-check: one database."""
        return []


def _getter(txn: lmdb.Transaction) -> Callable[..., bytes | None]:
    # py-lmdb returns bytes unless a transaction asks for buffers, which these never do.
    return cast("Callable[..., bytes | None]", txn.get)


def _dups(txn: lmdb.Transaction, db: Any, key: bytes) -> list[int]:
    cur = txn.cursor(db=db)
    if not cur.set_key(key):
        return []
    return [codec.unpack_key(v) for v in cur.iternext_dup()]
