"""A sorted index of one datetime field, for the dict projection's range queries."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from datetime import datetime
from operator import itemgetter
from typing import Any

from .query import Cond, Logical

__all__ = ["SortedIndex"]

_FIRST = itemgetter(0)


def _aware(v: Any) -> bool:
    return v.__class__ is datetime and v.tzinfo is not None


class SortedIndex:
    """(value, msg_id) pairs of a datetime field in order; other non-None values kept aside."""

    def __init__(self, field: str) -> None:
        self.field = field
        self._pairs: list[tuple[datetime, str]] = []
        # Values a range over datetimes may still match under MongoDB's rules are not datetimes,
        # but a record holding one (an annotate may set anything) must stay a candidate.
        self._irregular: set[str] = set()

    def update(self, msg_id: str, old: Any, new: Any) -> None:
        """Move ``msg_id`` from the entry for ``old`` to the entry for ``new``."""
        if old == new and old.__class__ is new.__class__:
            return
        if _aware(old):
            i = bisect_left(self._pairs, (old, msg_id))
            if i < len(self._pairs) and self._pairs[i] == (old, msg_id):
                del self._pairs[i]
        elif old is not None:
            self._irregular.discard(msg_id)
        if _aware(new):
            insort(self._pairs, (new, msg_id))  # submissions arrive nearly in order: near the end
        elif new is not None:
            self._irregular.add(msg_id)

    def candidates(self, node: Logical) -> set[str] | None:
        """msg_ids that may satisfy the top-level range conditions on the field (None: no range)."""
        lo, hi = 0, len(self._pairs)
        found = False
        for c in _conjuncts(node):
            if not (c.path == self.field and _aware(c.arg)):
                continue
            if c.op in ("$gt", "$gte"):
                at = (bisect_right if c.op == "$gt" else bisect_left)(self._pairs, c.arg, key=_FIRST)
                lo, found = max(lo, at), True
            elif c.op in ("$lt", "$lte"):
                at = (bisect_left if c.op == "$lt" else bisect_right)(self._pairs, c.arg, key=_FIRST)
                hi, found = min(hi, at), True
        if not found:
            return None
        return {m for _, m in self._pairs[lo:hi]} | self._irregular


def _conjuncts(node: Logical) -> list[Cond]:
    """The conditions every match must meet: top-level ones and those of nested $and."""
    out: list[Cond] = []
    for c in node.children:
        if isinstance(c, Cond):
            out.append(c)
        elif isinstance(c, Logical) and c.op == "$and":
            out.extend(_conjuncts(c))
    return out
