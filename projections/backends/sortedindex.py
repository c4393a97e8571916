"""A sorted index of one datetime field, for the dict projection's range queries.

Entries live in buckets of a few hundred, so an insert moves a few hundred pointers rather
than half the index: with a plain sorted list, tasks submitted out of order (the demo's
workload) made each insert a memmove of the whole tail (BENCHMARKS.md, "Design notes moved
from the code").

Changes are not put in the buckets as they come but when a range query needs them: a hub
(and a replay) changes the index once per submitted task and asks a range question rarely,
and keeping the buckets in order on every change was a tenth of applying 1M events. Many
pending changes are applied by sorting everything afresh, a few by moving entries one by one.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from datetime import datetime
from operator import itemgetter
from typing import Any

from ..query import Cond, Logical

__all__ = ["SortedIndex"]

_FIRST = itemgetter(0)
_LOAD = 512  # a bucket splits in two past twice this
Entry = tuple[datetime, str]


def _aware(v: Any) -> bool:
    return v.__class__ is datetime and v.tzinfo is not None


class SortedIndex:
    """(value, msg_id) entries of a datetime field in order; other non-None values kept aside."""

    def __init__(self, field: str) -> None:
        self.field = field
        self._buckets: list[list[Entry]] = []
        self._maxes: list[Entry] = []
        # A record holding something else there (an annotate may set anything) stays a candidate.
        self._irregular: set[str] = set()
        self._values: dict[str, datetime] = {}  # every msg_id's value, pending changes included
        self._pending: dict[str, datetime | None] = {}  # changed msg_id -> its value in the buckets

    def __len__(self) -> int:
        return len(self._values)

    def update(self, msg_id: str, old: Any, new: Any) -> None:
        """Move ``msg_id`` from the entry for ``old`` to the entry for ``new``."""
        if old == new and old.__class__ is new.__class__:
            return
        old_time, new_time = _aware(old), _aware(new)
        if old_time or new_time:
            if msg_id not in self._pending:
                self._pending[msg_id] = self._values.get(msg_id)
            if new_time:
                self._values[msg_id] = new
            else:
                self._values.pop(msg_id, None)
        if old is not None and not old_time:
            self._irregular.discard(msg_id)
        if new is not None and not new_time:
            self._irregular.add(msg_id)

    def _settle(self) -> None:
        """Put the pending changes into the buckets."""
        pending, self._pending = self._pending, {}
        if 4 * len(pending) > len(self._values):
            entries = sorted((v, m) for m, v in self._values.items())
            self._buckets = [entries[i:i + _LOAD] for i in range(0, len(entries), _LOAD)]
            self._maxes = [b[-1] for b in self._buckets]
            return
        for msg_id, was in pending.items():
            if was is not None:
                self._remove((was, msg_id))
            now = self._values.get(msg_id)
            if now is not None:
                self._insert((now, msg_id))

    def _insert(self, entry: Entry) -> None:
        if not self._buckets:
            self._buckets.append([entry])
            self._maxes.append(entry)
            return
        i = min(bisect_left(self._maxes, entry), len(self._maxes) - 1)
        bucket = self._buckets[i]
        insort(bucket, entry)
        self._maxes[i] = bucket[-1]
        if len(bucket) > 2 * _LOAD:
            self._buckets[i:i + 1] = [bucket[:_LOAD], bucket[_LOAD:]]
            self._maxes[i:i + 1] = [bucket[_LOAD - 1], bucket[-1]]

    def _remove(self, entry: Entry) -> None:
        i = bisect_left(self._maxes, entry)
        if i == len(self._maxes):
            return
        bucket = self._buckets[i]
        j = bisect_left(bucket, entry)
        if j < len(bucket) and bucket[j] == entry:
            del bucket[j]
            if bucket:
                self._maxes[i] = bucket[-1]
            else:
                del self._buckets[i], self._maxes[i]

    def candidates(self, node: Logical) -> set[str] | None:
        """msg_ids that may satisfy the range conditions every match must meet (None: no range)."""
        lo: tuple[datetime, bool] | None = None  # (bound, inclusive)
        hi: tuple[datetime, bool] | None = None
        for c in _conjuncts(node):
            if c.path != self.field or not _aware(c.arg):
                continue
            if c.op in ("$gt", "$gte"):
                lo = _tighter(lo, (c.arg, c.op == "$gte"), higher=True)
            elif c.op in ("$lt", "$lte"):
                hi = _tighter(hi, (c.arg, c.op == "$lte"), higher=False)
        if lo is None and hi is None:
            return None
        if self._pending:
            self._settle()
        return set(self._range(lo, hi)) | self._irregular

    def _range(self, lo: tuple[datetime, bool] | None, hi: tuple[datetime, bool] | None) -> Iterator[str]:
        first = 0 if lo is None else (bisect_left if lo[1] else bisect_right)(self._maxes, lo[0], key=_FIRST)
        for bucket in self._buckets[first:]:
            start = 0 if lo is None else (bisect_left if lo[1] else bisect_right)(bucket, lo[0], key=_FIRST)
            for value, msg_id in bucket[start:]:
                if hi is not None and (value > hi[0] or (value == hi[0] and not hi[1])):
                    return
                yield msg_id


def _tighter(current: tuple[datetime, bool] | None, new: tuple[datetime, bool],
             higher: bool) -> tuple[datetime, bool]:
    if current is None or (new[0] > current[0] if higher else new[0] < current[0]):
        return new
    if new[0] == current[0]:
        return current[0], current[1] and new[1]  # an exclusive bound wins a tie
    return current


def _conjuncts(node: Logical) -> list[Cond]:
    """The conditions every match must meet: top-level ones and those of nested $and."""
    out: list[Cond] = []
    for c in node.children:
        if isinstance(c, Cond):
            out.append(c)
        elif isinstance(c, Logical) and c.op == "$and":
            out.extend(_conjuncts(c))
    return out
