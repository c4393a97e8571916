"""The query language: the query tree (parsed and validated once by ``projections.parse``) and
its evaluation over Python dicts; SQLite compiles it, MongoDB translates it.

MongoDB is the reference for every semantic question: equality with None
matches a missing field, comparisons only match values of the same type
bracket (numbers with numbers, strings with strings, dates with dates), a
condition on an array matches if any element does, dotted paths reach into
embedded documents and arrays. Two additions: ipyparallel's ``$glob``
(fnmatch, whole string) and the seed document's ``$ge``/``$le``, which its
table defines as ``>`` and ``<``.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .fold import strip_hidden

__all__ = [
    "MISSING",
    "Cond",
    "Not",
    "Logical",
    "Node",
    "compile_predicate",
    "glob_to_regex",
    "clone",
    "is_number",
    "select",
]


class _Missing:
    """A field that is absent, distinct from a field that holds None."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Cond:
    """One operator applied to the values at a dotted path."""

    path: str
    op: str
    arg: Any


@dataclass(frozen=True)
class Not:
    """``{path: {'$not': {...}}}``: true where the inner conditions are not all true."""

    path: str
    inner: tuple[Cond, ...]


@dataclass(frozen=True)
class Logical:
    """``$and``, ``$or`` or ``$nor`` over sub-queries (a whole query is an ``$and``)."""

    op: str
    children: tuple[Node, ...] = field(default_factory=tuple)


Node = Cond | Not | Logical


def glob_to_regex(pattern: str, end: str = r"\Z") -> str:
    """An anchored regex for an fnmatch pattern; ``end`` is ``\\Z`` for Python, ``\\z`` for PCRE."""
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 1 if i < n and pattern[i] in "!]" else i)
            if j < 0:
                out.append(r"\[")
                continue
            body = pattern[i:j].replace("\\", "\\\\")
            i = j + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            out.append(f"[{body}]")
        else:
            out.append(re.escape(c))
    out.append(end)
    return "".join(out)


# -- evaluation over Python dicts ----------------------------------------------

_NUMBER = (int, float)


def is_number(v: Any) -> bool:
    """Whether ``v`` is a number to MongoDB (an int or a float, not a bool)."""
    return isinstance(v, _NUMBER) and not isinstance(v, bool)


# MongoDB's comparison brackets, in its cross-type order: values compare only within one.
# bool precedes the numbers here because bool is an int subclass in Python but not in BSON.
_BRACKETS: tuple[tuple[type | tuple[type, ...], int], ...] = (
    (bool, 6), ((int, float), 1), (str, 2), (dict, 3), (list, 4), (bytes, 5), (datetime, 7), (re.Pattern, 8),
)


def _bracket(v: Any) -> int:
    """The comparison bracket of ``v`` (0 for None and MISSING)."""
    if v is None or v is MISSING:
        return 0
    for kind, bracket in _BRACKETS:
        if isinstance(v, kind):
            return bracket
    return 9


def resolve(doc: Any, parts: list[str]) -> list[Any]:
    """The values at a dotted path, fanning out over arrays; MISSING where there is none."""
    current = [doc]
    for part in parts:
        nxt: list[Any] = []
        for value in current:
            if isinstance(value, dict):
                nxt.append(value.get(part, MISSING))
            elif isinstance(value, list):
                if part.isdigit():
                    idx = int(part)
                    nxt.append(value[idx] if idx < len(value) else MISSING)
                nxt.extend(e.get(part, MISSING) for e in value if isinstance(e, dict))
            else:
                nxt.append(MISSING)
        current = nxt
    return current or [MISSING]


def _eq(value: Any, arg: Any) -> bool:
    if arg is None:
        return value is None or value is MISSING
    if isinstance(arg, re.Pattern):  # a regex inside $in
        return isinstance(value, str) and arg.search(value) is not None
    if _bracket(value) != _bracket(arg):
        return False
    return bool(value == arg)


def _eq_any(value: Any, arg: Any) -> bool:
    if _eq(value, arg):
        return True
    return isinstance(value, list) and any(_eq(e, arg) for e in value)


def _cmp(op: str) -> Callable[[Any, Any], bool]:
    def compare(value: Any, arg: Any) -> bool:
        if arg is None:  # {$gte: null} matches null and missing, as $eq does; $gt/$lt match nothing
            return op in ("$gte", "$lte") and (value is None or value is MISSING)
        if value is MISSING or value is None or _bracket(value) != _bracket(arg):
            return False
        try:
            return bool(_PY_CMP[op](value, arg))
        except TypeError:
            return False
    return compare


_PY_CMP: dict[str, Callable[[Any, Any], Any]] = {"$gt": operator.gt, "$gte": operator.ge,
                                                  "$lt": operator.lt, "$lte": operator.le}


def _elementwise(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def run(value: Any, arg: Any) -> bool:
        if test(value, arg):
            return True
        return isinstance(value, list) and any(test(e, arg) for e in value)
    return run


def _mod(value: Any, arg: list[int]) -> bool:
    if not is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        return False
    return int(math.fmod(int(value), arg[0])) == arg[1]  # truncated, as MongoDB does


def _regex(value: Any, arg: re.Pattern[str]) -> bool:
    return isinstance(value, str) and arg.search(value) is not None


def _glob(value: Any, arg: str) -> bool:
    return isinstance(value, str) and _glob_re(arg).match(value) is not None


@functools.lru_cache(maxsize=1024)  # bounded: patterns come from users' queries
def _glob_re(pattern: str) -> re.Pattern[str]:
    return re.compile(glob_to_regex(pattern), re.DOTALL)


def _all(value: Any, args: list[Any]) -> bool:
    if not args:
        return False
    return all(_eq_any(value, a) for a in args)


# Per-value tests; the candidate list (fan-out over paths) is handled by _leaf.
_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": _eq_any,
    "$gt": _elementwise(_cmp("$gt")), "$gte": _elementwise(_cmp("$gte")),
    "$lt": _elementwise(_cmp("$lt")), "$lte": _elementwise(_cmp("$lte")),
    "$in": lambda v, args: any(_eq_any(v, a) for a in args),
    "$all": _all,
    "$mod": _elementwise(_mod),
    "$regex": _elementwise(_regex),
    "$glob": _elementwise(_glob),
}
_NEGATED = {"$ne": "$eq", "$nin": "$in"}

Predicate = Callable[[dict[str, Any]], bool]


def _leaf(cond: Cond) -> Predicate:
    parts = cond.path.split(".")
    arg = cond.arg
    if cond.op == "$exists":
        want = bool(arg)
        return lambda doc: any(v is not MISSING for v in resolve(doc, parts)) == want
    if cond.op in _NEGATED:
        positive = _leaf(Cond(cond.path, _NEGATED[cond.op], arg))
        return lambda doc: not positive(doc)
    test = _TESTS[cond.op]
    if len(parts) > 1:
        return lambda doc: any(test(v, arg) for v in resolve(doc, parts))
    key = parts[0]
    fast = _fast_leaf(cond.op, key, arg, test)
    if fast is not None:
        return fast
    return lambda doc: test(doc.get(key, MISSING), arg)


_SCALARS = (str, datetime)


def _fast_leaf(op: str, key: str, arg: Any, test: Callable[[Any, Any], bool]) -> Predicate | None:
    """Shortcuts for a top-level field holding a str or datetime, the fields hubs filter on.

    Each answers exactly as ``test`` would for such a value and defers to it for anything else.
    """
    if op == "$eq" and arg.__class__ in _SCALARS:
        cls = arg.__class__

        def eq(doc: dict[str, Any]) -> bool:
            v = doc.get(key, MISSING)
            return v == arg if v.__class__ is cls else test(v, arg)
        return eq
    if op == "$eq" and arg is None:
        def is_none(doc: dict[str, Any]) -> bool:
            v = doc.get(key, MISSING)
            return True if v is None or v is MISSING else test(v, arg)
        return is_none
    if op == "$in" and arg and all(a.__class__ is str for a in arg):
        members = frozenset(arg)

        def isin(doc: dict[str, Any]) -> bool:
            v = doc.get(key, MISSING)
            return v in members if v.__class__ is str else test(v, arg)
        return isin
    if op in _PY_CMP and arg.__class__ in _SCALARS:
        cls, cmp = arg.__class__, _PY_CMP[op]

        def compare(doc: dict[str, Any]) -> bool:
            v = doc.get(key, MISSING)
            return bool(cmp(v, arg)) if v.__class__ is cls else test(v, arg)
        return compare
    return None


def compile_predicate(node: Node) -> Predicate:
    """A Python function that tells whether a record matches ``node``."""
    if isinstance(node, Cond):
        return _leaf(node)
    if isinstance(node, Not):
        inner = [_leaf(c) for c in node.inner]
        return lambda doc: not all(p(doc) for p in inner)
    preds = [compile_predicate(c) for c in node.children]
    if node.op == "$and":
        if len(preds) == 1:
            return preds[0]
        return lambda doc: all(p(doc) for p in preds)
    if node.op == "$or":
        return lambda doc: any(p(doc) for p in preds)
    return lambda doc: not any(p(doc) for p in preds)


def select(records: Iterable[dict[str, Any]], node: Node, keys: list[str] | None,
           prepare: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``records`` matching ``node``, each passed through ``prepare`` first, limited to ``keys``."""
    match = compile_predicate(node)
    hits = [rec for rec in records if match(prepare(rec))]
    return hits if keys is None else [{k: r[k] for k in keys if k in r} for r in hits]


def fields_of(node: Node) -> set[str]:
    """The top-level record fields a query tree reads."""
    if isinstance(node, Logical):
        return {f for child in node.children for f in fields_of(child)}
    return {node.path.split(".", 1)[0]}


def clone(value: Any) -> Any:
    """A deep copy of dicts and lists (the immutable leaves are shared): faster than copy.deepcopy."""
    cls = value.__class__
    # A C-level shallow copy, then only the nested containers replaced: most values are scalars,
    # and a comprehension paid a Python step per leaf.
    if cls is dict:
        out = value.copy()
        for k, v in out.items():
            if v.__class__ in _CONTAINERS:
                out[k] = clone(v)  # same keys: replacing values while iterating is allowed
        return out
    if cls is list:
        items = value.copy()
        for i, v in enumerate(items):
            if v.__class__ in _CONTAINERS:
                items[i] = clone(v)
        return items
    return value


_CONTAINERS = frozenset({dict, list})


def public_copy(record: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a record without its hidden keys (what every read hands out)."""
    return strip_hidden(clone(record))


def msg_id_lookup(node: Logical) -> list[str] | None:
    """The msg_ids a query is restricted to by a top-level ``msg_id`` $eq/$in, if it is."""
    for child in node.children:
        if isinstance(child, Cond) and child.path == "msg_id":
            if child.op == "$eq" and isinstance(child.arg, str):
                return [child.arg]
            if child.op == "$in" and all(isinstance(a, str) for a in child.arg):
                return list(dict.fromkeys(child.arg))
    return None
