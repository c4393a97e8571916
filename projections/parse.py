"""MongoDB-style query documents parsed into the query tree (``projections.query``): every
operator's argument checked and normalised once, so the evaluator, SQLite's compiler and the
MongoDB translation never see an unchecked query.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from bson.regex import Regex

from .errors import QueryError
from .query import Cond, Logical, Node, Not, is_number

__all__ = ["parse", "parse_keys", "OPERATORS", "ALIASES", "MAX_DEPTH"]

# The seed document's table: '$ge' is '>' and '$le' is '<' (not >= and <=).
ALIASES = {"$ge": "$gt", "$le": "$lt"}


def _list_arg(op: str, arg: Any) -> list[Any]:
    if not isinstance(arg, (list, tuple, set, frozenset)):
        raise QueryError(f"{op} needs a list, got {type(arg).__name__}")
    return [_normalise(a) for a in arg]


def _check_mod(op: str, arg: Any) -> list[Any]:
    if not isinstance(arg, (list, tuple)) or len(arg) != 2 or not all(is_number(a) for a in arg):
        raise QueryError("$mod needs [divisor, remainder], two numbers")
    divisor, remainder = (int(a) for a in arg)
    if divisor == 0:
        raise QueryError("$mod divisor must not be 0")
    return [divisor, remainder]


def _check_exists(op: str, arg: Any) -> bool:
    if not isinstance(arg, (bool, int)):
        raise QueryError(f"$exists needs true or false, got {arg!r:.40}")
    return bool(arg)


def _check_str(op: str, arg: Any) -> Any:
    if isinstance(arg, (re.Pattern, Regex)) and op == "$regex":
        return _normalise(arg)
    if not isinstance(arg, str):
        raise QueryError(f"{op} needs a string, got {type(arg).__name__}")
    return arg


def _check_any(op: str, arg: Any) -> Any:
    return _normalise(arg)


# Operator table: name -> argument check (and normaliser).
OPERATORS: dict[str, Callable[[str, Any], Any]] = {
    "$eq": _check_any, "$ne": _check_any, "$gt": _check_any, "$gte": _check_any, "$lt": _check_any,
    "$lte": _check_any, "$in": _list_arg, "$nin": _list_arg, "$all": _list_arg, "$exists": _check_exists,
    "$mod": _check_mod, "$regex": _check_str, "$glob": _check_str,
}
# MongoDB's $options letters; "u" (Unicode) is what a Python str pattern always is.
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "u": 0}
# How deep $and/$or/$nor/$not may nest: every projection answers up to here (SQLite's parser
# overflowed at 50 levels of $or, Python's recursion limit at a few hundred).
MAX_DEPTH = 20


def _normalise(value: Any) -> Any:
    """Operands compare as records do: aware UTC datetimes (a naive one is local time), exact."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.astimezone(timezone.utc)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Regex):  # a BSON regex (Extended JSON's $regularExpression, pymongo's Regex)
        return _bson_regex(value)
    return value


def _bson_regex(value: Regex[Any]) -> re.Pattern[str]:
    if not isinstance(value.pattern, str):
        raise QueryError(f"a regex pattern must be a str, got {type(value.pattern).__name__}")
    try:
        return re.compile(value.pattern, value.flags & ~re.UNICODE)
    except (re.error, ValueError) as exc:
        raise QueryError(f"bad regex {value.pattern!r:.40}: {exc}") from None


def parse(query: Any, depth: int = 0) -> Logical:
    """Validate ``query`` and return its tree; raise QueryError naming what is wrong."""
    if query is None:
        query = {}
    if not isinstance(query, Mapping):
        raise QueryError(f"a query must be a dict, got {type(query).__name__}")
    return Logical("$and", tuple(_parse_key(k, v, depth) for k, v in query.items()))


def _deeper(depth: int, what: str) -> int:
    if depth >= MAX_DEPTH:
        raise QueryError(f"{what} nests deeper than {MAX_DEPTH} levels of $and/$or/$nor/$not")
    return depth + 1


def _parse_key(key: Any, value: Any, depth: int) -> Node:
    if not isinstance(key, str) or not key:
        raise QueryError(f"query keys must be non-empty strings, got {key!r:.40}")
    if key in ("$and", "$or", "$nor"):
        if not isinstance(value, (list, tuple)) or not value:
            raise QueryError(f"{key} needs a non-empty list of queries")
        inner = _deeper(depth, key)
        return Logical(key, tuple(parse(q, inner) for q in value))
    if key.startswith("$"):
        raise QueryError(f"unknown operator {key} at the top level of the query")
    if isinstance(value, Regex):
        value = _bson_regex(value)
    if isinstance(value, re.Pattern):
        return Cond(key, "$regex", value)
    if isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value):
        if not all(isinstance(k, str) and k.startswith("$") for k in value):
            raise QueryError(f"{key}: cannot mix operators and fields in {dict(value)!r:.80}")
        return _parse_ops(key, value, depth)
    return Cond(key, "$eq", _normalise(value))


def _parse_ops(path: str, ops: Mapping[str, Any], depth: int) -> Node:
    conds: list[Node] = []
    for op, arg in ops.items():
        if op == "$options":
            if "$regex" not in ops:
                raise QueryError(f"{path}: $options needs $regex")
            continue
        if op == "$not":
            conds.append(_parse_not(path, arg, _deeper(depth, "$not")))
            continue
        op = ALIASES.get(op, op)
        check = OPERATORS.get(op)
        if check is None:
            raise QueryError(f"unknown operator {op} on field {path}")
        arg = check(op, arg)
        if op == "$regex":
            arg = _compile_regex(path, arg, ops.get("$options", ""))
        conds.append(Cond(path, op, arg))
    return conds[0] if len(conds) == 1 else Logical("$and", tuple(conds))


def _parse_not(path: str, arg: Any, depth: int) -> Not:
    if isinstance(arg, (re.Pattern, Regex)):
        return Not(path, (Cond(path, "$regex", _normalise(arg)),))
    if not isinstance(arg, Mapping) or not arg:
        raise QueryError(f"{path}: $not needs an operator document or a regex")
    if "$not" in arg:  # MongoDB refuses it too; parsed, it became a condition that matched nothing
        raise QueryError(f"{path}: $not cannot hold another $not")
    inner = _parse_ops(path, arg, depth)
    conds = inner.children if isinstance(inner, Logical) else (inner,)
    return Not(path, tuple(c for c in conds if isinstance(c, Cond)))


def _compile_regex(path: str, arg: Any, options: Any) -> re.Pattern[str]:
    if isinstance(arg, re.Pattern):
        return arg
    if not isinstance(options, str) or set(options) - set(_REGEX_FLAGS):
        raise QueryError(f"{path}: $options must be letters from 'imsx', got {options!r:.20}")
    flags = 0
    for letter in options:
        flags |= _REGEX_FLAGS[letter]
    try:
        return re.compile(arg, flags)
    except re.error as exc:
        raise QueryError(f"{path}: bad $regex {arg!r:.40}: {exc}") from None


def parse_keys(keys: Any) -> list[str] | None:
    """Validate a ``keys`` selection (a list of field names, or one name); msg_id always comes first."""
    if keys is None:
        return None
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) and k for k in keys):
        raise QueryError(f"keys must be a list of field names, got {keys!r:.60}")
    bad = [k for k in keys if "." in k or k.startswith("$") or k.startswith("_")]
    if bad:
        raise QueryError(f"keys must be top-level field names, got {bad[0]!r}")
    return ["msg_id", *[k for k in dict.fromkeys(keys) if k != "msg_id"]]
