"""The seven task events: small immutable values, validated once on the way in.

Each event is a ``NamedTuple`` so the codec can pack it as a plain msgpack
array and rebuild it with ``_make`` -- no per-field dict on the hot path.
Each field is declared once, with its check (``Annotated[type, check]``); the
table of checks, the generated validators, the typed appenders, the ipyparallel
adapter's key lists and the fold's request keys all come from these classes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Annotated, Any, NamedTuple, get_type_hints

from .errors import EncodeError, EventError, InterfaceError

__all__ = [
    "Submit",
    "Start",
    "Output",
    "Complete",
    "Resubmit",
    "Drop",
    "Annotate",
    "Event",
    "EVENT_TYPES",
    "QUEUES",
    "FAILED_STATUSES",
    "INDEXED_FIELDS",
    "STREAMS",
    "OUTPUT_NAMES",
    "validate",
    "task_ids",
    "check_msg_id",
    "MAX_ID_BYTES",
    "make",
    "construct",
    "utc",
    "utcnow",
]

QUEUES = frozenset({"mux", "task", "broadcast"})
# The reply statuses that mean a task failed (ipyparallel's engines send "error"; "aborted" when
# a task never ran): stats, the timeline and the report all count failures by this one table.
FAILED_STATUSES = frozenset({"error", "aborted"})
# The record fields hubs filter on, with the type a value must have to be indexed: every
# projection indexes these (the dict projection by value or in order, SQLite in typed columns,
# MongoDB with an index each). Their values come from the events' fields of the same names.
INDEXED_FIELDS: dict[str, type] = {
    "submitted": datetime, "started": datetime, "completed": datetime,
    "engine_uuid": str, "client_uuid": str, "label": str, "queue": str,
}
STREAMS = frozenset({"stdout", "stderr"})
# LMDB keys hold at most 511 bytes, and every msg_id is a key of the log's stream index.
MAX_ID_BYTES = 511
OUTPUT_NAMES = STREAMS | {"error", "execute_input", "execute_result", "display_data"}


class Submit(NamedTuple):
    """A client's request reached the hub."""

    msg_id: Annotated[str, _msg_id]
    header: Annotated[dict[str, Any] | None, _dict] = None
    content: Annotated[dict[str, Any] | None, _dict] = None
    metadata: Annotated[dict[str, Any] | None, _dict] = None
    buffers: Annotated[list[bytes] | None, _buffers] = None
    client_uuid: Annotated[str | None, _opt_str] = None
    queue: Annotated[str | None, _queue] = "task"
    submitted: Annotated[datetime | None, _dt_now] = None
    label: Annotated[str | None, _opt_str] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "submit"


class Start(NamedTuple):
    """The task reached an engine."""

    msg_id: Annotated[str, _msg_id]
    engine_uuid: Annotated[str | None, _opt_str] = None
    # The time of the call when not given, as submit and complete record theirs: without it the
    # README's own example left `started` null and its task out of every timeline (issue 20).
    # The engine's own `started`, in the complete, still wins in the record.
    started: Annotated[datetime | None, _dt_now] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "start"


class Output(NamedTuple):
    """An IOPub output: a stream chunk (text) or a rich output (content)."""

    msg_id: Annotated[str, _msg_id]
    name: Annotated[str, _output_name] = "stdout"
    text: Annotated[str | None, _opt_str] = None
    content: Annotated[Any, _any] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "output"


class Complete(NamedTuple):
    """The engine's reply arrived."""

    msg_id: Annotated[str, _msg_id]
    result_header: Annotated[dict[str, Any] | None, _opt_dict] = None
    result_content: Annotated[dict[str, Any] | None, _opt_dict] = None
    result_metadata: Annotated[dict[str, Any] | None, _opt_dict] = None
    result_buffers: Annotated[list[bytes] | None, _opt_buffers] = None
    started: Annotated[datetime | None, _opt_dt] = None
    # The time of the call when not given, as a Hub records it: a finished task must not match
    # {"completed": None}.
    completed: Annotated[datetime | None, _dt_now] = None
    received: Annotated[datetime | None, _opt_dt] = None
    engine_uuid: Annotated[str | None, _opt_str] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "complete"


class Resubmit(NamedTuple):
    """The task runs again under ``new_msg_id`` with the original request."""

    msg_id: Annotated[str, _msg_id]
    new_msg_id: Annotated[str | None, _new_id] = None
    submitted: Annotated[datetime | None, _dt_now] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "resubmit"


class Drop(NamedTuple):
    """Records purged by msg_id; kept as a tombstone so replay purges too."""

    msg_ids: Annotated[list[str], _msg_ids]

    @property
    def type(self) -> str:
        """The event type name."""
        return "drop"


class Annotate(NamedTuple):
    """Other fields a hub sets on a record (label, user keys)."""

    msg_id: Annotated[str, _msg_id]
    fields: Annotated[dict[str, Any], _fields]

    @property
    def type(self) -> str:
        """The event type name."""
        return "annotate"


Event = Submit | Start | Output | Complete | Resubmit | Drop | Annotate
EVENT_TYPES: dict[str, type[Any]] = {
    "submit": Submit,
    "start": Start,
    "output": Output,
    "complete": Complete,
    "resubmit": Resubmit,
    "drop": Drop,
    "annotate": Annotate,
}


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; a naive datetime is read as local time, as ipyparallel does."""
    if value.tzinfo is None:
        value = value.astimezone()
    return value.astimezone(timezone.utc)


# -- field checks: each returns the normalised value or raises ValueError(problem)


def _msg_id(v: Any) -> str:
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
        return _msg_id(value)
    except ValueError as exc:
        raise InterfaceError(f"msg_id {exc}") from None


def _opt_str(v: Any) -> str | None:
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
# header-like dicts each), where a generic recursive walk cost two microseconds an event.
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


def _dict(v: Any) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ValueError(f"must be a dict, got {type(v).__name__}")
    return _check_keys(dict(v))  # type: ignore[no-any-return]


def _opt_dict(v: Any) -> dict[str, Any] | None:
    return None if v is None else _dict(v)


def _buffers(v: Any) -> list[bytes]:
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


def _opt_buffers(v: Any) -> list[bytes] | None:
    return None if v is None else _buffers(v)


def _opt_dt(v: Any) -> datetime | None:
    if v is None:
        return None
    if not isinstance(v, datetime):
        raise ValueError(f"must be a datetime, got {type(v).__name__}")
    return v if v.tzinfo is timezone.utc else utc(v)


def _dt_now(v: Any) -> datetime:
    return _opt_dt(utcnow() if v is None else v)  # type: ignore[return-value]


def _queue(v: Any) -> str | None:
    # None: not known yet (ipyparallel's Hub records a resubmitted request before its queue).
    if v is not None and v not in QUEUES:
        raise ValueError(f"must be one of {sorted(QUEUES)} or None, got {v!r:.60}")
    return v if v is None else str(v)


def _output_name(v: Any) -> str:
    if v not in OUTPUT_NAMES:
        raise ValueError(f"must be one of {sorted(OUTPUT_NAMES)}, got {v!r:.60}")
    return str(v)


def _any(v: Any) -> Any:
    return _check_keys(v)


def _new_id(v: Any) -> str:
    return str(uuid.uuid4()) if v is None else _msg_id(v)


def _msg_ids(v: Any) -> list[str]:
    if not isinstance(v, (list, tuple, set, frozenset)) or not v:
        raise ValueError("must be a non-empty list of msg_ids")
    return [_msg_id(m) for m in v]


def _fields(v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise ValueError(f"must be a dict, got {type(v).__name__}")
    for k in v:
        if not isinstance(k, str) or not k or k == "msg_id" or k[0] in "$_" or "." in k:
            raise ValueError(f"key {k!r} cannot be annotated")
    return _check_keys(dict(v))  # type: ignore[no-any-return]


Check = Callable[[Any], Any]


def _checks_of(cls: type[Any]) -> tuple[Check, ...]:
    """Each field's check, in field order, from the ``Annotated`` declaration of the field."""
    hints = get_type_hints(cls, include_extras=True)
    return tuple(hints[name].__metadata__[0] for name in cls._fields)


# Derived from the classes above, where each field is declared once with its type and check.
CHECKS: dict[str, tuple[Check, ...]] = {name: _checks_of(cls) for name, cls in EVENT_TYPES.items()}


def _check_output(ev: Output) -> None:
    if ev.name in STREAMS:
        if ev.text is None or ev.content is not None:
            raise EventError("output", "text", f"a {ev.name} chunk needs text (str) and no content")
    elif ev.text is not None or ev.content is None:
        raise EventError("output", "content", f"{ev.name} output needs content and no text")


# An expression per check that is true when the value is already normal, so the
# common case costs one inlined test per field instead of a function call.
_ALREADY_NORMAL: dict[Check, str] = {
    _msg_id: "{x}.__class__ is str and 0 < len({x}) <= 127",
    _opt_str: "{x} is None or {x}.__class__ is str",
    _dict: "{x}.__class__ is dict and _dict_keys({x})",
    _opt_dict: "{x} is None or ({x}.__class__ is dict and _dict_keys({x}))",
    _buffers: "{x}.__class__ is list and _all_bytes({x})",
    _opt_buffers: "{x} is None or ({x}.__class__ is list and _all_bytes({x}))",
    _opt_dt: "{x} is None or ({x}.__class__ is datetime and {x}.tzinfo is UTC)",
    _dt_now: "{x}.__class__ is datetime and {x}.tzinfo is UTC",
    _queue: "{x} is None or {x} in QUEUES",
    _output_name: "{x} in OUTPUT_NAMES",
    _any: "_str_keys({x})",
}


def _all_bytes(items: list[Any]) -> bool:
    # A plain loop: all() over a generator costs twice as much on this hot path.
    for b in items:  # noqa: SIM110
        if b.__class__ is not bytes:
            return False
    return True


def _compile_fast(name: str, checks: tuple[Check, ...]) -> Callable[[Any], Any]:
    """Generate a validator for one event type from its row in CHECKS."""
    env: dict[str, Any] = {"datetime": datetime, "UTC": timezone.utc, "QUEUES": QUEUES, "OUTPUT_NAMES": OUTPUT_NAMES,
                           "_all_bytes": _all_bytes, "_str_keys": str_keys, "_dict_keys": _dict_keys,
                           "cls": EVENT_TYPES[name]}
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


_BY_CLASS = {EVENT_TYPES[name]: (name, _compile_fast(name, checks)) for name, checks in CHECKS.items()}


def task_ids(event: Event) -> list[str]:
    """The msg_ids an event names: the task of its stream (a resubmit names two, a drop each one)."""
    cls = event.__class__
    if cls is Drop:
        return list(event.msg_ids)  # type: ignore[union-attr]
    if cls is Resubmit:
        return [event.msg_id, str(event.new_msg_id)]  # type: ignore[union-attr]
    return [event.msg_id]  # type: ignore[union-attr]


def validate(event: Any) -> Event:
    """Return a normalised copy of ``event``, or raise :class:`EventError` naming the field."""
    entry = _BY_CLASS.get(event.__class__)
    if entry is None:
        raise EventError(str(getattr(event, "type", type(event).__name__)), None,
                         f"unknown event type; expected one of {sorted(EVENT_TYPES)}")
    name, fast = entry
    try:
        ev: Event = fast(event)
    except ValueError:
        _name_bad_field(name, event)
        raise
    if name == "output":
        _check_output(ev)  # type: ignore[arg-type]
    return ev


def _name_bad_field(name: str, event: Any) -> None:
    for field, check, value in zip(event._fields, CHECKS[name], event):
        try:
            check(value)
        except KeyProblem as exc:
            raise EncodeError(name, field, str(exc)) from None
        except ValueError as exc:
            raise EventError(name, field, str(exc)) from None


def make(event_type: str, **fields: Any) -> Event:
    """Build and validate an event of ``event_type`` from keyword fields."""
    return validate(construct(event_type, **fields))


def construct(event_type: str, **fields: Any) -> Event:
    """Build an event of ``event_type`` from keyword fields, naming unknown or missing ones."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise EventError(str(event_type), None, f"unknown event type; expected one of {sorted(EVENT_TYPES)}")
    try:
        built: Event = cls(**fields)
        return built
    except TypeError:
        pass  # say which field, below
    unknown = set(fields) - set(cls._fields)
    if unknown:
        raise EventError(event_type, sorted(unknown)[0], "unknown field")
    missing = [f for f in cls._fields if f not in fields and f not in cls._field_defaults]
    if missing:
        raise EventError(event_type, missing[0], "missing")
    ev: Event = cls(**fields)
    return ev
