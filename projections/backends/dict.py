"""The dict projection: records in memory, with limits that evict completed tasks and lose nothing.

ipyparallel's DictDB culls its oldest records when over a limit, running or
not; the Hub then cannot store their results and clients wait forever
(ipyparallel issue 203), and a culled record is gone. Here only completed tasks
are evicted, least recently used first, and a projection fed from a log re-folds
an evicted task from its own events when it is asked for (or named by a late
event): ``get_record`` answers exactly what an unbounded projection would.
Queries and the history see the resident records only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from operator import itemgetter
from typing import Any

from tasklog.lifecycle import TaskState
from tasklog.records import INDEXED_FIELDS

from ..base import Projection, Records
from ..errors import ProjectionError
from ..fold import BUFFER_KEYS, is_tombstone, task_of
from ..query import Cond, Logical, clone, compile_predicate, msg_id_lookup, public_copy
from .sortedindex import SortedIndex

__all__ = ["DictProjection"]


# Hash indexes on the str fields hubs filter on by value (the datetime ones: the sorted index on
# submitted and the set of incomplete tasks). Only str values are indexed; a record holding
# anything else there (an annotate may set a list) is "irregular" and always a candidate.
INDEXED = tuple(f for f, kind in INDEXED_FIELDS.items() if kind is str)
_WATCHED = itemgetter(*INDEXED, "completed", "submitted")


def _record_bytes(rec: dict[str, Any]) -> int:
    """What size_limit counts: inline buffers and the output streams (a reference counts nothing)."""
    size = 0
    for key in BUFFER_KEYS:
        value = rec.get(key)
        if value.__class__ is list:
            size += sum(len(b) for b in value if b.__class__ is bytes)
    for key in ("stdout", "stderr"):
        text = rec.get(key)
        size += len(text) if text.__class__ is str else 0
    return size


def _completed(rec: dict[str, Any]) -> bool:
    # Any field only a reply sets: the task is done and the Hub will not write to it again.
    return any(rec.get(k) is not None for k in ("completed", "result_header", "result_content"))


class DictProjection(Projection):
    """Records in a dict; optional record_limit, size_limit (bytes of buffers and output) and
    cull_fraction (how far below a limit one eviction goes)."""

    keeps_hubs = True

    def __init__(self, record_limit: int | None = None, size_limit: int | None = None,
                 cull_fraction: float = 0.1) -> None:
        super().__init__()
        self.spec = "dict"
        for name, value, low in (("record_limit", record_limit, 1), ("size_limit", size_limit, 0)):
            if value is not None and (not isinstance(value, int) or value < low):
                raise ProjectionError(f"dict option {name} must be a whole number >= {low}, got {value!r}")
        if not (isinstance(cull_fraction, (int, float)) and 0 < cull_fraction <= 1):
            raise ProjectionError(f"dict option cull_fraction must be in (0, 1], got {cull_fraction!r}")
        self.record_limit = record_limit
        self.size_limit = size_limit
        self.cull_fraction = cull_fraction
        self.evicted_count = 0
        self.refolded_count = 0
        self._clear()

    def _clear(self) -> None:
        """Forget every record (the settings stay)."""
        self._records: dict[str, dict[str, Any]] = {}
        self._tombs: dict[str, dict[str, Any]] = {}
        self._evicted: set[str] = set()
        # Resident completed tasks, least recently used first: the only ones eviction may take.
        self._done: dict[str, None] = {}
        self._index: dict[str, dict[str, set[str]]] = {f: {} for f in INDEXED}
        self._irregular: dict[str, set[str]] = {f: set() for f in INDEXED}
        self._open: set[str] = set()  # records whose completed is None
        self._submitted = SortedIndex("submitted")
        self._size = 0

    def _load(self, msg_ids: set[str]) -> Records:
        out: Records = {}
        for m in msg_ids:
            rec = self._records.get(m) or self._tombs.get(m)
            if rec is None and m in self._evicted:
                rec = self._readmit(m)
            if rec is not None:
                out[m] = rec
                if m in self._done:  # used: to the back of the eviction queue
                    del self._done[m]
                    self._done[m] = None
        return out

    def _readmit(self, m: str) -> dict[str, Any]:
        """Bring an evicted task back, re-folded from its events up to the checkpoint."""
        # As of last_seq, where the records are: re-folded to the log's end, a task brought back by
        # the batch being applied (already in its stream) held that batch's later resubmit, and an
        # earlier one read it as it would be (a hypothesis find); a pinned projection saw past its pin.
        rec = self.refold(m, self.last_seq + 1)
        if rec is None:
            # No log to read (or its events are gone): a late event about it must not resurrect
            # a stub, so it reads as a tombstone, and get_record says why it is missing.
            return {"msg_id": m, "_seq": 1 << 62, "_dropped": True, "_evicted": True}
        self._evicted.discard(m)
        self.refolded_count += 1
        self._store({m: rec}, {m}, self.last_seq)
        return rec

    def store_hubs(self, records: Records, changed: set[str], hubs: dict[str, tuple[str, int]]) -> None:
        self._store(records, changed, self.last_seq)  # the checkpoints live in self.hubs, as the records do

    def _store(self, records: Records, changed: set[str], last_seq: int) -> None:
        sized = self.size_limit is not None
        for m in changed:
            rec = records[m]
            old = self._records.get(m)
            if sized and old is not None:
                self._size -= _record_bytes(old)
            self._done.pop(m, None)
            if rec is None or is_tombstone(rec):
                if self._records.pop(m, None) is not None:
                    self._reindex(m, old, None)
                if rec is not None:
                    self._tombs[m] = rec
                    self._evicted.discard(m)
                continue
            self._records[m] = rec
            self._evicted.discard(m)
            self._reindex(m, old, rec)
            if _completed(rec):
                self._done[m] = None
            if sized:
                self._size += _record_bytes(rec)
        self._evict()

    def _reindex(self, m: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if old is not None and new is not None:
            # Most events change no indexed field (a start, an output): one C-level comparison.
            try:
                if _WATCHED(old) == _WATCHED(new):
                    return
            except KeyError:
                pass
        was_open = old is not None and old.get("completed") is None
        now_open = new is not None and new.get("completed") is None
        if was_open != now_open:
            if now_open:
                self._open.add(m)
            else:
                self._open.discard(m)
        self._submitted.update(m, old.get("submitted") if old is not None else None,
                               new.get("submitted") if new is not None else None)
        for f in INDEXED:
            ov = old.get(f) if old is not None else None
            nv = new.get(f) if new is not None else None
            if ov == nv and ov.__class__ is nv.__class__:
                continue
            if ov.__class__ is str:
                self._index[f][ov].discard(m)
            elif ov is not None:
                self._irregular[f].discard(m)
            if nv.__class__ is str:
                self._index[f].setdefault(nv, set()).add(m)
            elif nv is not None:
                self._irregular[f].add(m)

    def _indexed_ids(self, node: Logical) -> set[str] | None:
        for c in node.children:
            if not isinstance(c, Cond):
                continue
            if c.path == "completed" and c.op == "$eq" and c.arg is None:
                return set(self._open)  # "incomplete tasks", the hub's most common question
            if c.path not in self._index:
                continue
            values = self._index_keys(c)
            if values is not None:
                index = self._index[c.path]
                ids = set(self._irregular[c.path])
                for v in values:
                    ids |= index.get(v, set())
                return ids
        return self._submitted.candidates(node)

    def _index_keys(self, c: Cond) -> list[str] | None:
        """The str values of an indexed field that can satisfy ``c`` (None: the index cannot say)."""
        if c.op in ("$eq", "$in"):
            values = [c.arg] if c.op == "$eq" else c.arg
            return values if values and all(v.__class__ is str for v in values) else None
        if c.op in ("$regex", "$glob"):
            # A pattern never matches a missing or None value: test it once per distinct value
            # instead of once per record (a $glob on label: 100 labels, not 100k records).
            match = compile_predicate(Logical("$and", (c,)))
            return [v for v in self._index[c.path] if match({c.path: v})]
        return None

    def _over(self, fraction: float) -> bool:
        """Whether the resident records exceed a limit scaled by ``fraction``."""
        return ((self.record_limit is not None and len(self._records) > self.record_limit * fraction)
                or (self.size_limit is not None and self._size > self.size_limit * fraction))

    def _evict(self) -> None:
        if not self._done or not self._over(1.0):
            return
        # Down to (1 - cull_fraction) of the limit at once: evicting one record per event over
        # the limit would make every new task pay for an eviction.
        floor = 1.0 - self.cull_fraction
        while self._done and self._over(floor):
            m = next(iter(self._done))
            del self._done[m]
            rec = self._records.pop(m)
            self._reindex(m, rec, None)
            if self.size_limit is not None:
                self._size -= _record_bytes(rec)
            self._evicted.add(m)
            self.evicted_count += 1

    def _missing_reason(self, msg_id: str, record: dict[str, Any] | None) -> str:
        if record is not None and record.get("_evicted"):
            why = ("no log is attached to re-fold it from" if self.source is None
                   else "its events are no longer in the log")
            return (f"task {msg_id!r} was evicted from the dict projection (record_limit="
                    f"{self.record_limit}, size_limit={self.size_limit}) and {why}")
        return super()._missing_reason(msg_id, record)

    def _candidates(self, node: Logical) -> Any:
        ids = msg_id_lookup(node)
        if ids is None:
            indexed = self._indexed_ids(node)
            if indexed is None:
                return self._records.values()
            ids = list(indexed)
        return [r for r in map(self._records.get, ids) if r is not None]

    def _find(self, node: Logical, keys: list[str] | None) -> list[dict[str, Any]]:
        match = compile_predicate(node)
        hits = [r for r in self._candidates(node) if match(r)]
        if keys is None:
            return [public_copy(r) for r in hits]
        return [{k: clone(r[k]) for k in keys if k in r} for r in hits]

    def task_states(self) -> Iterator[TaskState]:
        """Every task's lifecycle state, purged ones included (an evicted task's folded again)."""
        yield from (task_of(rec) for rec in self._records.values())
        yield from (task_of(rec) for rec in self._tombs.values() if not rec.get("_evicted"))
        yield from (task_of(rec) for m in self._evicted if (rec := self.refold(m, self.last_seq + 1)) is not None)

    def _count(self, node: Logical) -> int:
        match = compile_predicate(node)
        return sum(1 for r in self._candidates(node) if match(r))

    def _history(self) -> list[str]:
        def order(rec: dict[str, Any]) -> tuple[Any, ...]:
            sub = rec.get("submitted")
            return (1, sub, rec["msg_id"]) if isinstance(sub, datetime) else (0, rec["msg_id"])
        return [r["msg_id"] for r in sorted(self._records.values(), key=order)]
