"""The checks an event field is declared with, and the validators generated from them.

Each check takes a field's value and returns it normalised, or raises ``ValueError`` saying what
is wrong (``KeyProblem`` when a document holds a key that is not a str). ``tasklog.events``
declares each field once as ``Annotated[type, check]``; ``compile_validator`` turns a class's
checks into one function that tests already-normal values inline.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, get_type_hints

from .errors import EncodeError, EventError, InterfaceError

__all__ = [
    "QUEUES",
    "STREAMS",
    "OUTPUT_NAMES",
    "MAX_ID_BYTES",
    "Check",
    "KeyProblem",
    "check_msg_id",
    "str_keys",
    "utc",
    "utcnow",
    "EPOCH",
    "MICROSECOND",
    "micros",
    "at_micros",
    "checks_of",
    "compile_validator",
    "name_bad_field",
]

QUEUES = frozenset({"mux", "task", "broadcast"})
STREAMS = frozenset({"stdout", "stderr"})
# LMDB keys hold at most 511 bytes, and every msg_id is a key of the log's stream index.
MAX_ID_BYTES = 511
OUTPUT_NAMES = STREAMS | {"error", "execute_input", "execute_result", "display_data"}

Check = Callable[[Any], Any]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


#: Times kept as whole numbers count MICROSECONDs since EPOCH (SQLite's columns, the views' arrays).
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)


def micros(when: datetime) -> int:
    """``when`` (aware) as whole microseconds since the epoch (exact, for every year a datetime holds)."""
    return (when - EPOCH) // MICROSECOND


def at_micros(us: int) -> datetime:
    """The aware datetime ``us`` microseconds after the epoch."""
    return EPOCH + MICROSECOND * us


def utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; a naive datetime is read as local time, as ipyparallel does."""
    if value.tzinfo is None:
        value = value.astimezone()
    return value.astimezone(timezone.utc)


# -- field checks: each returns the normalised value or raises ValueError(problem)


def msg_id(v: Any) -> str:
    """A task's id: a non-empty str that fits a key of the stream index."""
    if not isinstance(v, str) or not v:
        raise ValueError(f"must be a non-empty str, got {v!r:.60}")
    if len(v) > MAX_ID_BYTES // 4 and len(v.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError(f"must be at most {MAX_ID_BYTES} bytes in UTF-8 (the stream index's key), got {v!r:.60}")
    return v


def check_msg_id(value: Any) -> str:
    """``value`` if an event could name it as its task; InterfaceError saying why not."""
    # events_of("") reached LMDB (BadValsizeError) and events_of(5) failed in .encode(): the
    # readers take their msg_id through the rule the events' own field is checked by.
    try:
        return msg_id(value)
    except ValueError as exc:
        raise InterfaceError(f"msg_id {exc}") from None


def opt_str(v: Any) -> str | None:
    """A str or None."""
    if v is not None and not isinstance(v, str):
        raise ValueError(f"must be a str or None, got {type(v).__name__}")
    return v


class KeyProblem(ValueError):
    """A document holds a key that is not a str: msgpack would store it, but no reader could use it."""


def str_keys(value: Any) -> bool:
    """True when every dict inside ``value`` (nested in dicts and lists) has only str keys."""
    cls = value.__class__
    if cls is dict:
        return _dict_keys(value)
    if cls is list or cls is tuple:
        return _item_keys(value)
    return True


# Plain loops with the common cases inline: they run on every submit and complete (three
# header-like dicts each), where a generic recursive walk was slower (BENCHMARKS.md, design notes).
def _dict_keys(d: dict[Any, Any]) -> bool:
    for k in d:
        if k.__class__ is not str:
            return False
    return _item_keys(d.values())


def _item_keys(items: Iterable[Any]) -> bool:
    for v in items:
        cls = v.__class__
        if cls is dict:
            if v and not _dict_keys(v):
                return False
        elif (cls is list or cls is tuple) and v and not _item_keys(v):
            return False
    return True


def _check_keys(v: Any) -> Any:
    # Extended JSON, MongoDB and every reader want str keys; found at append, nothing is written.
    if not str_keys(v):
        raise KeyProblem(f"holds a document key that is not a str (in {v!r:.60})")
    return v


def document(v: Any) -> dict[str, Any]:
    """A dict with str keys ({} for None)."""
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ValueError(f"must be a dict, got {type(v).__name__}")
    return _check_keys(dict(v))  # type: ignore[no-any-return]


def opt_document(v: Any) -> dict[str, Any] | None:
    """A dict with str keys, or None."""
    return None if v is None else document(v)


def buffers(v: Any) -> list[bytes]:
    """A list of bytes ([] for None)."""
    if v is None:
        return []
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"must be a list of bytes, got {type(v).__name__}")
    out = []
    for i, b in enumerate(v):
        if isinstance(b, bytes):
            out.append(b)
        elif isinstance(b, (bytearray, memoryview)):
            out.append(bytes(b))
        else:
            raise ValueError(f"item {i} must be bytes, got {type(b).__name__}")
    return out


def opt_buffers(v: Any) -> list[bytes] | None:
    """A list of bytes, or None."""
    return None if v is None else buffers(v)


def opt_time(v: Any) -> datetime | None:
    """A datetime in UTC, or None."""
    if v is None:
        return None
    if not isinstance(v, datetime):
        raise ValueError(f"must be a datetime, got {type(v).__name__}")
    return v if v.tzinfo is timezone.utc else utc(v)


def time_or_now(v: Any) -> datetime:
    """A datetime in UTC; the time of the call for None."""
    return opt_time(utcnow() if v is None else v)  # type: ignore[return-value]


def queue(v: Any) -> str | None:
    """One of QUEUES, or None."""
    # None: not known yet (ipyparallel's Hub records a resubmitted request before its queue).
    if v is not None and v not in QUEUES:
        raise ValueError(f"must be one of {sorted(QUEUES)} or None, got {v!r:.60}")
    return v if v is None else str(v)


def output_name(v: Any) -> str:
    """One of OUTPUT_NAMES."""
    if v not in OUTPUT_NAMES:
        raise ValueError(f"must be one of {sorted(OUTPUT_NAMES)}, got {v!r:.60}")
    return str(v)


def any_value(v: Any) -> Any:
    """Any value msgpack stores whose documents have str keys."""
    return _check_keys(v)


def new_msg_id(v: Any) -> str:
    """A msg_id; a new uuid4 for None."""
    return str(uuid.uuid4()) if v is None else msg_id(v)


def msg_ids(v: Any) -> list[str]:
    """A non-empty list of msg_ids."""
    if not isinstance(v, (list, tuple, set, frozenset)) or not v:
        raise ValueError("must be a non-empty list of msg_ids")
    return [msg_id(m) for m in v]


def annotated_fields(v: Any) -> dict[str, Any]:
    """A dict of record fields a hub may set (no msg_id, no '$'/'_' prefix, no '.')."""
    if not isinstance(v, Mapping):
        raise ValueError(f"must be a dict, got {type(v).__name__}")
    for k in v:
        if not isinstance(k, str) or not k or k == "msg_id" or k[0] in "$_" or "." in k:
            raise ValueError(f"key {k!r} cannot be annotated")
    return _check_keys(dict(v))  # type: ignore[no-any-return]


# -- validators generated from the checks


def checks_of(cls: type[Any]) -> tuple[Check, ...]:
    """Each field's check, in field order, from the ``Annotated`` declaration of the field."""
    hints = get_type_hints(cls, include_extras=True)
    return tuple(hints[name].__metadata__[0] for name in cls._fields)


# An expression per check that is true when the value is already normal, so the
# common case costs one inlined test per field instead of a function call.
_ALREADY_NORMAL: dict[Check, str] = {
    msg_id: "{x}.__class__ is str and 0 < len({x}) <= 127",
    opt_str: "{x} is None or {x}.__class__ is str",
    document: "{x}.__class__ is dict and _dict_keys({x})",
    opt_document: "{x} is None or ({x}.__class__ is dict and _dict_keys({x}))",
    buffers: "{x}.__class__ is list and _all_bytes({x})",
    opt_buffers: "{x} is None or ({x}.__class__ is list and _all_bytes({x}))",
    opt_time: "{x} is None or ({x}.__class__ is datetime and {x}.tzinfo is UTC)",
    time_or_now: "{x}.__class__ is datetime and {x}.tzinfo is UTC",
    queue: "{x} is None or {x} in QUEUES",
    output_name: "{x} in OUTPUT_NAMES",
    any_value: "_str_keys({x})",
}


def _all_bytes(items: list[Any]) -> bool:
    # A plain loop: all() over a generator is slower on this hot path (BENCHMARKS.md, design notes).
    for b in items:  # noqa: SIM110
        if b.__class__ is not bytes:
            return False
    return True


def compile_validator(cls: type[Any], checks: tuple[Check, ...]) -> Callable[[Any], Any]:
    """Generate the validator of one event class from its fields' checks: the event itself when
    every value is already normal, else a normalised copy; ValueError from a failing check."""
    env: dict[str, Any] = {"datetime": datetime, "UTC": timezone.utc, "QUEUES": QUEUES, "OUTPUT_NAMES": OUTPUT_NAMES,
                           "_all_bytes": _all_bytes, "_str_keys": str_keys, "_dict_keys": _dict_keys, "cls": cls}
    args = [f"a{i}" for i in range(len(checks))]
    lines = ["def fast(event):", f"    {', '.join(args)}, = event", "    changed = False"]
    for i, check in enumerate(checks):
        env[f"c{i}"] = check
        test = _ALREADY_NORMAL.get(check)
        if test is None:
            lines.append(f"    a{i} = c{i}(a{i}); changed = True")
        else:
            lines.append(f"    if not ({test.format(x=f'a{i}')}): a{i} = c{i}(a{i}); changed = True")
    lines.append(f"    return cls({', '.join(args)}) if changed else event")
    exec("\n".join(lines), env)
    fast: Callable[[Any], Any] = env["fast"]
    return fast


def name_bad_field(name: str, checks: tuple[Check, ...], event: Any) -> None:
    """Raise EventError (EncodeError for a key that is not a str) naming the first field of
    ``event`` (of type ``name``) that its check refuses; return if none does."""
    for field, check, value in zip(event._fields, checks, event):
        try:
            check(value)
        except KeyProblem as exc:
            raise EncodeError(name, field, str(exc)) from None
        except ValueError as exc:
            raise EventError(name, field, str(exc)) from None
