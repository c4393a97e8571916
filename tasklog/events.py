"""The seven task events: small immutable values, validated once on the way in.

Each event is a ``NamedTuple`` so the codec can pack it as a plain msgpack
array and rebuild it with ``_make`` -- no per-field dict on the hot path.
Each field is declared once, with its check from ``tasklog.fields``
(``Annotated[type, check.x]``); the table of checks, the validators' codes,
the typed appenders, the ipyparallel adapter's key lists and the fold's request
keys all come from these classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, NamedTuple

from . import fields as check
from .errors import EventError

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
    "CHECKS",
    "validate",
    "task_ids",
    "make",
    "construct",
]


class Submit(NamedTuple):
    """A client's request reached the hub."""

    msg_id: Annotated[str, check.msg_id]
    header: Annotated[dict[str, Any] | None, check.document] = None
    content: Annotated[dict[str, Any] | None, check.document] = None
    metadata: Annotated[dict[str, Any] | None, check.document] = None
    buffers: Annotated[list[bytes] | None, check.buffers] = None
    client_uuid: Annotated[str | None, check.opt_str] = None
    queue: Annotated[str | None, check.queue] = "task"
    submitted: Annotated[datetime | None, check.time_or_now] = None
    label: Annotated[str | None, check.opt_str] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "submit"


class Start(NamedTuple):
    """The task reached an engine."""

    msg_id: Annotated[str, check.msg_id]
    engine_uuid: Annotated[str | None, check.opt_str] = None
    # The time of the call when not given, as submit and complete record theirs: without it the
    # README's own example left `started` null and its task out of every timeline (issue 20).
    # The engine's own `started`, in the complete, still wins in the record.
    started: Annotated[datetime | None, check.time_or_now] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "start"


class Output(NamedTuple):
    """An IOPub output: a stream chunk (text) or a rich output (content)."""

    msg_id: Annotated[str, check.msg_id]
    name: Annotated[str, check.output_name] = "stdout"
    text: Annotated[str | None, check.opt_str] = None
    content: Annotated[Any, check.any_value] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "output"


class Complete(NamedTuple):
    """The engine's reply arrived."""

    msg_id: Annotated[str, check.msg_id]
    result_header: Annotated[dict[str, Any] | None, check.opt_document] = None
    result_content: Annotated[dict[str, Any] | None, check.opt_document] = None
    result_metadata: Annotated[dict[str, Any] | None, check.opt_document] = None
    result_buffers: Annotated[list[bytes] | None, check.opt_buffers] = None
    started: Annotated[datetime | None, check.opt_time] = None
    # The time of the call when not given, as a Hub records it: a finished task must not match
    # {"completed": None}.
    completed: Annotated[datetime | None, check.time_or_now] = None
    received: Annotated[datetime | None, check.opt_time] = None
    engine_uuid: Annotated[str | None, check.opt_str] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "complete"


class Resubmit(NamedTuple):
    """The task runs again under ``new_msg_id`` with the original request."""

    msg_id: Annotated[str, check.msg_id]
    new_msg_id: Annotated[str | None, check.new_msg_id] = None
    submitted: Annotated[datetime | None, check.time_or_now] = None

    @property
    def type(self) -> str:
        """The event type name."""
        return "resubmit"


class Drop(NamedTuple):
    """Records purged by msg_id; kept as a tombstone so replay purges too."""

    msg_ids: Annotated[list[str], check.msg_ids]

    @property
    def type(self) -> str:
        """The event type name."""
        return "drop"


class Annotate(NamedTuple):
    """Other fields a hub sets on a record (label, user keys)."""

    msg_id: Annotated[str, check.msg_id]
    fields: Annotated[dict[str, Any], check.annotated_fields]

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


# Derived from the classes above, where each field is declared once with its type and check.
CHECKS: dict[str, tuple[check.Check, ...]] = {name: check.checks_of(cls) for name, cls in EVENT_TYPES.items()}
_VALIDATORS = check.Validators(EVENT_TYPES, CHECKS, {"output": check.stream_or_content})


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
    ev: Event = _VALIDATORS.validate(event)
    return ev


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
