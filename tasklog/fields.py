"""The checks an event field is declared with, and the validators driven by them.

Each check takes a field's value and returns it normalised, or raises ``ValueError`` saying what
is wrong (``KeyProblem`` when a document holds a key that is not a str). ``tasklog.events``
declares each field once as ``Annotated[type, check]``; ``Validators`` reads a class's checks
into a table of codes (``fast_codes``) and tests already-normal values inline, one loop for
every class (``normalised``). Compiled with mypyc (``tasklog.native``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final, get_type_hints

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
    "fast_codes",
    "normalised",
    "Rule",
    "Validators",
    "name_bad_field",
    "stream_or_content",
]

# Final: compiled, a constant is a C static rather than a lookup in the module's dict per use.
QUEUES: Final = frozenset({"mux", "task", "broadcast"})
STREAMS: Final = frozenset({"stdout", "stderr"})
# LMDB keys hold at most 511 bytes, and every msg_id is a key of the log's stream index.
MAX_ID_BYTES: Final = 511
OUTPUT_NAMES: Final = STREAMS | {"error", "execute_input", "execute_result", "display_data"}

Check = Callable[[Any], Any]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


#: Times kept as whole numbers count MICROSECONDs since EPOCH (SQLite's columns, the views' arrays).
EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND: Final = timedelta(microseconds=1)
_UTC: Final = timezone.utc
_DATETIME: Final = datetime


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
    """True when every dict inside ``value`` (nested in dicts, lists and tuples) has only str keys."""
    cls = type(value)
    if cls is dict:
        return _dict_keys(value)
    if cls is list:
        return _list_keys(value)
    if cls is tuple:
        return _tuple_keys(value)
    return True


# One loop per container type, exact types only: these run on every submit and complete (three
# header-like dicts each), and compiled (tasklog.native) each is a native loop over the container.
def _dict_keys(d: dict[Any, Any]) -> bool:
    for k, v in d.items():
        if type(k) is not str:
            return False
        cls = type(v)
        if (cls is dict or cls is list or cls is tuple) and v and not str_keys(v):
            return False
    return True


def _list_keys(items: list[Any]) -> bool:
    for v in items:
        cls = type(v)
        if (cls is dict or cls is list or cls is tuple) and v and not str_keys(v):
            return False
    return True


def _tuple_keys(items: tuple[Any, ...]) -> bool:
    for v in items:
        cls = type(v)
        if (cls is dict or cls is list or cls is tuple) and v and not str_keys(v):
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


def stream_or_content(ev: Any) -> None:
    """An output's rule across its fields: a stream chunk has text and no content, others the reverse."""
    name = ev.name
    if name in STREAMS:
        if ev.text is None or ev.content is not None:
            raise EventError("output", "text", f"a {name} chunk needs text (str) and no content")
    elif ev.text is not None or ev.content is None:
        raise EventError("output", "content", f"{name} output needs content and no text")


# -- validators driven by the checks


def checks_of(cls: type[Any]) -> tuple[Check, ...]:
    """Each field's check, in field order, from the ``Annotated`` declaration of the field."""
    hints = get_type_hints(cls, include_extras=True)
    return tuple(hints[name].__metadata__[0] for name in cls._fields)


# The checks whose already-normal values ``normalised`` tests inline, so the common case costs one
# test per field instead of a call; any other check is always called (code 0).
_FAST: Final[dict[Check, int]] = {msg_id: 1, opt_str: 2, document: 3, opt_document: 4, buffers: 5, opt_buffers: 6,
                                  opt_time: 7, time_or_now: 8, queue: 9, output_name: 10, any_value: 11,
                                  new_msg_id: 12}


def fast_codes(checks: tuple[Check, ...]) -> tuple[int, ...]:
    """The code ``normalised`` tests each field by, in field order (0: always call the check)."""
    return tuple(_FAST.get(c, 0) for c in checks)


_SHORT_ID: Final = MAX_ID_BYTES // 4  # so short that it fits the key, whatever its characters


def _all_bytes(items: list[Any]) -> bool:
    for b in items:  # noqa: SIM110 (a native loop, compiled)
        if type(b) is not bytes:
            return False
    return True


def normalised(values: tuple[Any, ...], codes: tuple[int, ...], checks: tuple[Check, ...]) -> list[Any] | None:
    """None when each of ``values`` is already normal, else the values each check returned;
    ValueError from the first check that refuses its value."""
    # Each code's test of an already-normal value, inline: one test a field, no call (interpreted,
    # a call a field cost more than the tests themselves).
    out: list[Any] | None = None
    for i, x in enumerate(values):
        code = codes[i]
        if code == 1 or code == 12:  # msg_id, new_msg_id (whose None its check makes a new uuid)
            normal = type(x) is str and 0 < len(x) <= _SHORT_ID
        elif code == 2:
            normal = x is None or type(x) is str
        elif code == 3 or code == 4:
            normal = (code == 4 and x is None) or (type(x) is dict and _dict_keys(x))
        elif code == 8 or code == 7:
            normal = (code == 7 and x is None) or (type(x) is _DATETIME and x.tzinfo is _UTC)
        elif code == 9:
            normal = x is None or x in QUEUES
        elif code == 5 or code == 6:
            normal = (code == 6 and x is None) or (type(x) is list and _all_bytes(x))
        elif code == 10:
            normal = x in OUTPUT_NAMES
        else:
            normal = code == 11 and str_keys(x)
        if not normal:
            if out is None:
                out = list(values)
            out[i] = checks[i](x)
    return out


Rule = Callable[[Any], None]
_Entry = tuple[str, tuple[int, ...], tuple[Check, ...], Rule | None]


class Validators:
    """The validators of a family of ``NamedTuple`` classes (by name), from their fields' checks
    (``checks``, by class name, as ``checks_of`` reads them).

    ``rules`` adds, by class name, a test of a whole normalised value (fields that depend on
    each other); it raises what it finds.
    """

    def __init__(self, classes: Mapping[str, type[Any]], checks: Mapping[str, tuple[Check, ...]],
                 rules: Mapping[str, Rule]) -> None:
        self.entries: dict[type[Any], _Entry] = {}
        for name, cls in classes.items():
            self.entries[cls] = (name, fast_codes(checks[name]), checks[name], rules.get(name))
        self.unknown = f"unknown event type; expected one of {sorted(classes)}"

    def validate(self, event: Any) -> Any:
        """The event itself when every value is already normal, else a normalised copy; EventError
        (EncodeError for a key that is not a str) naming the first field refused."""
        cls = type(event)
        entry = self.entries.get(cls)
        if entry is None:
            raise EventError(str(getattr(event, "type", cls.__name__)), None, self.unknown)
        name, codes, checks, rule = entry
        try:
            values = normalised(event, codes, checks)
        except ValueError:
            name_bad_field(name, checks, event)
            raise
        ev = event if values is None else cls._make(values)
        if rule is not None:
            rule(ev)
        return ev


def name_bad_field(name: str, checks: tuple[Check, ...], event: Any) -> None:
    """Raise EventError (EncodeError for a key that is not a str) naming the first field of
    ``event`` (of type ``name``) that its check refuses; return if none does."""
    for field, check, value in zip(event._fields, checks, event):
        try:
            check(value)
        except KeyProblem as problem:  # its own name: compiled, one name has one type
            raise EncodeError(name, field, str(problem)) from None
        except ValueError as exc:
            raise EventError(name, field, str(exc)) from None
