"""Pages of a query's matches in a stable order, and the cursor that goes on from one.

A page is ordered by one sortable field, then by msg_id (so that ties have one order), and a
cursor is the (value, msg_id) of its last record: the next page starts past it (keyset paging),
so a page costs the same at the millionth task as at the first, and a task that arrives between
two pages moves none of the others. Sortable fields are msg_id and the indexed fields; a value
not of its field's type sorts as null (as the SQLite projection's typed columns hold it). Nulls
come first in ascending order and last in descending order, as MongoDB sorts them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tasklog.records import INDEXED_FIELDS

from .errors import QueryError

__all__ = ["SORTABLE", "MAX_LIMIT", "Page", "Cursor", "check_page", "sort_value", "order_key", "page_of", "cut"]

#: The fields a page can be sorted by.
SORTABLE: dict[str, type] = {"msg_id": str, **INDEXED_FIELDS}
#: Where a page ends: its last record's sort value and msg_id.
Cursor = tuple[Any, str]
#: The most records one page holds.
MAX_LIMIT = 10_000


@dataclass(frozen=True)
class Page:
    """Some of a query's matches, in order, and the cursor to the next ones (None: no more)."""

    records: list[dict[str, Any]]
    after: Cursor | None

    def only(self, keys: list[str] | None) -> Page:
        """The page with each record limited to ``keys`` (None: whole)."""
        if keys is None:
            return self
        return Page([{k: r[k] for k in keys if k in r} for r in self.records], self.after)


def check_page(sort: str, limit: int, after: Any) -> None:
    """QueryError for a sort field, a limit or a cursor a page cannot have."""
    if sort not in SORTABLE:
        raise QueryError(f"cannot sort by {sort!r}: sort by one of {', '.join(SORTABLE)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r:.40}")
    if after is None:
        return
    if not (isinstance(after, (tuple, list)) and len(after) == 2 and isinstance(after[1], str)):
        raise QueryError("a cursor is [value, msg_id]")
    value = after[0]
    if value is not None and not isinstance(value, SORTABLE[sort]):
        raise QueryError(f"this cursor does not go with sort {sort!r}: {value!r:.40}")
    if isinstance(value, datetime) and value.tzinfo is None:
        raise QueryError("a cursor's time needs a zone")


def sort_value(record: dict[str, Any], sort: str) -> Any:
    """The value ``record`` is sorted by: its field, or None when it is not of the field's type."""
    value = record.get(sort)
    return value if isinstance(value, SORTABLE[sort]) else None


def order_key(record: dict[str, Any], sort: str) -> tuple[Any, ...]:
    """Where ``record`` comes in ascending order by ``sort``, then msg_id."""
    return _key(sort_value(record, sort), record["msg_id"])


def _key(value: Any, msg_id: str) -> tuple[Any, ...]:
    """A total order: nulls before values (the values of one field are of one type), then msg_id."""
    return (0, "", msg_id) if value is None else (1, value, msg_id)


def page_of(records: Iterable[dict[str, Any]], sort: str, descending: bool, limit: int,
            after: Cursor | None) -> Page:
    """The page of ``records`` (a query's matches, in any order) past ``after``: sorted in memory."""
    keyed = [(_key(sort_value(r, sort), r["msg_id"]), r) for r in records]
    if after is not None:
        mark = _key(after[0], after[1])
        keyed = [kr for kr in keyed if (kr[0] < mark if descending else kr[0] > mark)]
    keyed.sort(key=lambda kr: kr[0], reverse=descending)
    return cut([r for _, r in keyed[:limit + 1]], sort, limit)


def cut(records: list[dict[str, Any]], sort: str, limit: int) -> Page:
    """A page of the first ``limit`` of ``records`` (up to one more, in order), with a cursor if there are more."""
    if len(records) <= limit:
        return Page(records, None)
    last = records[limit - 1]
    return Page(records[:limit], (sort_value(last, sort), last["msg_id"]))
