"""The log's write side: the writer protocol, the typed appenders and the idempotency keys.

``Appending`` is the part of :class:`tasklog.log.TaskLog` that turns calls into validated,
encoded events and hands them to the writer of the log's durability mode (``groupcommit`` or
``asynccommit``); the log sets ``_writer`` and swaps it for a ``RefusingWriter`` one when it closes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from . import codec
from .errors import InterfaceError
from .events import Complete, Event, Output, Resubmit, Start, Submit, construct, validate
from .groupcommit import Item, NothingPending

__all__ = ["Appending", "RefusingWriter", "Writer", "build", "idempotency_key"]


class Writer(Protocol):
    """What the log needs of the writer of its durability mode."""

    def append_one(self, payload: bytes, event: Event) -> int | None:
        """Append one keyless event by a shortcut; None: use ``append``."""

    def append(self, items: list[Item]) -> list[int]:
        """Append ``items``; return their sequence numbers (a retried key gets its original one)."""

    def flush(self, timeout: float | None = None) -> int:
        """Make everything appended durable; return the last sequence number."""

    def pending(self, seq: int) -> Event | None:
        """The event ``seq`` if it is numbered but not yet committed (async), else None."""

    def pending_of(self, msg_id: str) -> list[tuple[int, Event]]:
        """The uncommitted events naming ``msg_id``."""

    @property
    def queued_bytes(self) -> int:
        """The stored bytes of the events appended and not yet committed."""

    def close(self) -> None:
        """Refuse new appends and commit what is queued (raise what a failed commit lost)."""


class RefusingWriter(NothingPending):
    """The writer of a log that may not be written here: closed, or left to the parent by a fork."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def append_one(self, payload: bytes, event: Event) -> int | None:
        """Refuse."""
        raise self._error

    def append(self, items: list[Item]) -> list[int]:
        """Refuse."""
        raise self._error

    def flush(self, timeout: float | None = None) -> int:
        """Refuse."""
        raise self._error

    def close(self) -> None:
        """Nothing to close."""


class Appending:
    """The appenders of a log: each validates and encodes its event and hands it to ``_writer``."""

    _writer: Writer

    # The typed appenders take the fields of their event class by keyword: the classes in
    # tasklog.events declare each field once. The class is called directly (this is a Hub's hot
    # path: going through construct() cost a tenth of the async hub pattern); only a call it
    # refuses goes to construct(), which names the unknown field in an EventError.

    def submit(self, msg_id: str, *, key: str | None = None, **fields: Any) -> int:
        """Append a submit event (fields of :class:`Submit`: header, content, metadata, buffers, ...)."""
        return self._one(build(Submit, msg_id, fields), key)

    def start(self, msg_id: str, engine_uuid: str | None = None, started: Any = None, *,
              key: str | None = None) -> int:
        """Append a start event: the task reached an engine (a Start's fields, positional as they always were)."""
        return self._one(Start(msg_id, engine_uuid, started), key)

    def output(self, msg_id: str, name: str = "stdout", *, text: str | None = None, content: Any = None,
               key: str | None = None) -> int:
        """Append an output event: a stdout/stderr chunk (``text=``) or a rich output (``content=``)."""
        # Named here, not taken as **fields: the Hub's most frequent call, and its whole API.
        return self._one(Output(msg_id, name, text, content), key)

    def complete(self, msg_id: str, *, key: str | None = None, **fields: Any) -> int:
        """Append a complete event: the engine's reply reached the hub (fields of :class:`Complete`)."""
        return self._one(build(Complete, msg_id, fields), key)

    def resubmit(self, msg_id: str, new_msg_id: str | None = None, submitted: Any = None, *,
                 key: str | None = None) -> int:
        """Append a resubmit event; the new msg_id is a fresh uuid unless given (a Resubmit's fields)."""
        return self._one(Resubmit(msg_id, new_msg_id, submitted), key)

    def drop(self, msg_ids: Iterable[str], *, key: str | None = None) -> int:
        """Append a drop tombstone for ``msg_ids``."""
        ids = [msg_ids] if isinstance(msg_ids, str) else list(msg_ids)
        return self._one(construct("drop", msg_ids=ids), key)

    def annotate(self, msg_id: str, fields: dict[str, Any] | None = None, *, key: str | None = None,
                 **more: Any) -> int:
        """Append an annotate event setting other record fields (label, user keys)."""
        return self._one(construct("annotate", msg_id=msg_id, fields={**(fields or {}), **more}), key)

    def append(self, event: Event, *, key: str | None = None) -> int:
        """Append one event; with ``key``, a retry returns the original sequence number."""
        return self._one(event, key)

    def append_many(self, events: Iterable[Event], *, keys: Sequence[str | None] | None = None) -> list[int]:
        """Append events all-or-nothing in one commit; return their sequence numbers."""
        items: list[Item] = []
        encode = codec.encode
        for e in events:
            ev = validate(e)
            items.append((encode(ev), None, ev))
        if keys is not None:
            if len(keys) != len(items):
                raise InterfaceError(f"append_many got {len(items)} events but {len(keys)} keys")
            items = [(payload, idempotency_key(k), ev) for (payload, _, ev), k in zip(items, keys)]
        return self._writer.append(items) if items else []

    def append_event(self, event: Event) -> tuple[int, Event]:
        """Append one event; return its sequence number and the validated event a fold must see."""
        ev = validate(event)
        return self._one_checked(ev, None), ev

    def _one(self, event: Event, key: str | None) -> int:
        return self._one_checked(validate(event), key)

    def _one_checked(self, ev: Event, key: str | None) -> int:
        payload = codec.encode(ev)
        if key is None:
            seq = self._writer.append_one(payload, ev)  # the async hub's hot path
            if seq is not None:
                return seq
        return self._writer.append([(payload, idempotency_key(key), ev)])[0]

    def flush(self, timeout: float | None = None) -> int:
        """Commit and sync everything appended so far; return the last durable sequence number.

        On an async log, raise what failed commits lost since the last report, unless each lost
        event's receipt raised it already: a StorageError (StorageFullError for a full disk) whose
        ``lost`` and ``lost_range`` say how many events and which numbers they held.
        """
        return self._writer.flush(timeout)

    @property
    def queued_bytes(self) -> int:
        """The stored bytes of the events appended and not yet committed (async; else 0)."""
        return self._writer.queued_bytes


def build(cls: Any, msg_id: str, fields: dict[str, Any]) -> Event:
    """``cls(msg_id, **fields)``; a field the class refuses becomes an EventError naming it."""
    try:
        event: Event = cls(msg_id, **fields)
    except TypeError:
        event = construct(cls(msg_id).type, msg_id=msg_id, **fields)
    return event


def idempotency_key(key: str | bytes | None) -> bytes | None:
    """An append's idempotency key as stored (None: no key); a key that is not a non-empty str is refused."""
    if key is None:
        return None
    if isinstance(key, bytes):
        return key
    if not isinstance(key, str) or not key:
        raise InterfaceError(f"an idempotency key must be a non-empty str, got {key!r:.60}")
    return key.encode()
