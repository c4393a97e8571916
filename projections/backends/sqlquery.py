"""The SQLite projection's SQL: its typed columns, and queries and pages compiled to them.

A column holds a field's value only when the value has the field's type (times as microseconds
since the epoch); any other value leaves it NULL and marks the row irregular, so SQL can compare
exactly where it compiles and the evaluator checks the rest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from tasklog.fields import EPOCH, MICROSECOND, at_micros, micros
from tasklog.records import INDEXED_FIELDS

from ..paging import Cursor
from ..query import Cond, Logical, Node

__all__ = ["COLUMNS", "IRREGULAR", "EPOCH", "MICROSECOND", "column_value", "compile_sql", "keyset",
           "find_columns", "budget", "OverBudget"]

# Typed columns and the Python type their values must have to be stored there: the indexed
# fields, and two more that queries and `keys` read without unpacking a document.
COLUMNS: dict[str, type] = {**INDEXED_FIELDS, "received": datetime, "resubmitted": str}
#: What ``column_value`` gives for a value its column cannot hold.
IRREGULAR = object()
_SQL_OPS = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def column_value(name: str, value: Any) -> Any:
    """What column ``name`` holds for ``value``: None, the value (a time in µs), or IRREGULAR."""
    if value is None:
        return None
    if COLUMNS[name] is datetime:
        return micros(value) if isinstance(value, datetime) else IRREGULAR
    return value if isinstance(value, str) else IRREGULAR


def keyset(column: str, after: Cursor, descending: bool) -> tuple[str, list[Any]]:
    """SQL selecting the rows past cursor ``after`` in ``ORDER BY column, msg_id`` (nulls first ascending)."""
    value, msg_id = after
    if column == "msg_id":
        return ("msg_id < ?" if descending else "msg_id > ?"), [msg_id]
    if value is None:
        if descending:  # nulls come last: only nulls remain
            return f"{column} IS NULL AND msg_id < ?", [msg_id]
        return f"({column} IS NULL AND msg_id > ?) OR {column} IS NOT NULL", [msg_id]
    v = column_value(column, value)
    if descending:
        return f"{column} < ? OR ({column} = ? AND msg_id < ?) OR {column} IS NULL", [v, v, msg_id]
    return f"{column} > ? OR ({column} = ? AND msg_id > ?)", [v, v, msg_id]


def _typed(name: str, value: Any) -> Any:
    """The column value for an operand, or IRREGULAR when SQL cannot compare it exactly."""
    return IRREGULAR if value is None else column_value(name, value)


def _compile_cond(c: Cond, unindexed: bool) -> tuple[str, list[Any], bool] | None:
    if c.path != "msg_id" and c.path not in COLUMNS:
        return None
    name = c.path
    col = f"+{name}" if unindexed and name != "msg_id" else name  # a unary + keeps SQLite off its index

    def typed(v: Any) -> Any:
        if name == "msg_id":
            return v if isinstance(v, str) else IRREGULAR
        return _typed(name, v)
    if c.op == "$eq" and c.arg is None and name != "msg_id":
        return f"{col} IS NULL", [], True
    if c.op in _SQL_OPS:
        v = typed(c.arg)
        return None if v is IRREGULAR else (f"{col} {_SQL_OPS[c.op]} ?", [v], True)
    if c.op == "$in":
        vals = [typed(a) for a in c.arg if a is not None]
        if any(v is IRREGULAR for v in vals):
            return None
        parts = [f"{col} IN ({','.join('?' * len(vals))})"] if vals else []
        if len(vals) < len(c.arg) and name != "msg_id":
            parts.append(f"{col} IS NULL")
        return (" OR ".join(parts), vals, True) if parts else ("0", [], True)
    if c.op == "$glob" and name != "msg_id" and COLUMNS.get(name) is str and "[" not in c.arg:
        return f"{col} GLOB ?", [c.arg], True  # '*' and '?' mean the same to GLOB and fnmatch
    return None


def compile_sql(node: Node, unindexed: bool = False) -> tuple[str, list[Any], bool] | None:
    """SQL that selects a superset of the matches (exact=True when it selects exactly them);
    ``unindexed``: written so that SQLite uses no index of the fields it tests (msg_id's aside)."""
    if isinstance(node, Cond):
        return _compile_cond(node, unindexed)
    if not isinstance(node, Logical) or node.op == "$nor":
        return None
    parts = [compile_sql(c, unindexed) for c in node.children]
    if node.op == "$or":
        if not parts or any(p is None for p in parts):
            return None
        done = [p for p in parts if p is not None]
        return (" OR ".join(f"({s})" for s, _, _ in done), [x for _, ps, _ in done for x in ps],
                all(e for _, _, e in done))
    kept = [p for p in parts if p is not None]
    if not kept:
        return ("1", [], True) if not parts else None
    exact = len(kept) == len(parts) and all(e for _, _, e in kept)
    return " AND ".join(f"({s})" for s, _, _ in kept), [x for _, ps, _ in kept for x in ps], exact


def find_columns(db: sqlite3.Connection, where: str, params: list[Any], keys: list[str]) -> list[dict[str, Any]]:
    """The ``keys`` of the rows ``where`` selects, from their columns alone (each key a column)."""
    # Every selected field has its own column and no row is irregular: the columns hold the
    # values exactly (datetimes as microseconds), so no document is unpacked (8 µs each).
    cols = [k for k in keys if k != "msg_id"]
    rows = db.execute(f"SELECT {', '.join(['msg_id', *cols])} FROM records WHERE {where}", params)
    times = [COLUMNS[c] is datetime for c in cols]
    out = []
    for msg_id, *values in rows:
        rec = {"msg_id": msg_id}
        for name, is_time, v in zip(cols, times, values):
            rec[name] = at_micros(v) if is_time and v is not None else v
        out.append(rec)
    return out


class OverBudget(Exception):
    """A query stopped by ``budget``."""


@contextmanager
def budget(db: sqlite3.Connection, steps: int) -> Iterator[None]:
    """Stop what ``db`` runs in the block after about ``steps`` thousand SQLite steps (OverBudget)."""
    spent = [0]

    def tick() -> int:
        spent[0] += 1
        return int(spent[0] > steps)
    db.set_progress_handler(tick, 1000)
    try:
        yield
    except sqlite3.OperationalError:
        if spent[0] > steps:
            raise OverBudget() from None
        raise  # not the budget's: the caller's to see
    finally:
        db.set_progress_handler(None, 0)
