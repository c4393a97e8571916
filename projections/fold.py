"""The one fold: (record, event) -> record, shared by every projection.

A record is a plain dict with the TaskRecord keys of ipyparallel's Hub plus two
hidden keys: ``_seq`` (the last sequence number applied to it, which makes
re-applying an event a no-op) and ``_dropped`` (a tombstone left by a purge, so
a late or replayed event cannot bring a purged task back).

Records keep datetimes exactly as the events carry them (microseconds, UTC), as
ipyparallel's own stores do; only a store that cannot hold them truncates
(MongoDB keeps milliseconds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

from tasklog.errors import LogClosedError
from tasklog.events import Annotate, Complete, Drop, Event, Output, Resubmit, Start, Submit, task_ids
from tasklog.fields import OUTPUT_NAMES
from tasklog.lifecycle import TaskState
from tasklog.records import RECORD_KEYS

from .errors import ProjectionError

__all__ = [
    "RECORD_KEYS",
    "REQUEST_KEYS",
    "HIDDEN",
    "new_record",
    "fold",
    "targets",
    "apply_event",
    "strip_hidden",
    "is_tombstone",
    "task_of",
    "Anomalies",
    "ANOMALIES",
    "ANOMALY_RULES",
    "describe",
    "touched",
    "fold_all",
    "refold_from",
    "settle",
    "BUFFER_KEYS",
    "CARRIERS",
    "buffer_ref",
    "ref_seq",
    "refer_buffers",
    "resolve_buffers",
    "EventSource",
    "Records",
]

# What a submit sets, and what a resubmitted task inherits of it (all but its own time).
# Final: compiled (tasklog.native), a constant is a C static, not a lookup in the module's dict per use.
_SUBMIT_FIELDS: Final = Submit._fields[1:]
_COMPLETE_FIELDS: Final = Complete._fields[1:]
REQUEST_KEYS: Final = tuple(f for f in _SUBMIT_FIELDS if f != "submitted")
HIDDEN: Final = frozenset({"_seq", "_dropped"})
_DEFAULTS: Final[dict[str, Any]] = {k: None for k in RECORD_KEYS} | {"stdout": "", "stderr": ""}

Anomalies = Counter[str]
#: A projection's records by msg_id (None: no record, or one to delete).
Records = dict[str, "dict[str, Any] | None"]

# What each anomaly counter means, in words for people. The first is normal on a real Hub.
ANOMALIES: dict[str, str] = {
    "stub_created": "events arrived before their task's submit (as iopub output can on a real Hub)",
    "after_drop": "events named a purged task (ignored)",
    "drop_unknown": "purges named a task never seen",
    "duplicate_submit": "submits repeated a msg_id already submitted (ignored)",
    "resubmit_to_existing": "resubmits named an existing msg_id as the new one (refused)",
}


def describe(anomalies: Anomalies) -> str:
    """The anomaly counts in words ("none" when there are none)."""
    return "; ".join(f"{n:,} {ANOMALIES.get(name, name)}" for name, n in sorted(anomalies.items()) if n) or "none"


def new_record(msg_id: str) -> dict[str, Any]:
    """An empty TaskRecord with the Hub's defaults ('' for the streams, None for the rest)."""
    rec = dict(_DEFAULTS)
    rec["msg_id"] = msg_id
    rec["_seq"] = 0
    return rec


def is_tombstone(record: dict[str, Any] | None) -> bool:
    """True for what a drop leaves behind."""
    return record is not None and bool(record.get("_dropped"))


def task_of(record: dict[str, Any]) -> TaskState:
    """The lifecycle state of a record or tombstone (``state`` is one of ``tasklog.lifecycle.STATES``)."""
    state = TaskState.of_record(record["msg_id"], record)
    state.dropped = is_tombstone(record)
    return state


def strip_hidden(record: dict[str, Any]) -> dict[str, Any]:
    """Remove the hidden keys from a record the caller owns (a fresh copy); return it."""
    for key in HIDDEN:
        record.pop(key, None)
    return record


def _fill(rec: dict[str, Any], key: str, value: Any) -> None:
    # Order tolerance: a late submit fills what an early output's stub lacks, never clobbers it.
    current = rec.get(key)
    if current is None or (current in ("", {}, []) and value not in (None, {}, [])):
        rec[key] = value


def _submit(rec: dict[str, Any], ev: Submit) -> None:
    for key, value in zip(_SUBMIT_FIELDS, ev[1:]):
        _fill(rec, key, value)


def _start(rec: dict[str, Any], ev: Start) -> None:
    # The reply's engine_uuid and started are the engine's own account: a start that arrives
    # after the complete only fills what is missing, so both orders give the same record.
    _fill(rec, "engine_uuid", ev.engine_uuid)
    _fill(rec, "started", ev.started)


class _Text:
    """A stream's text while events are folded: its chunks, joined once by ``settle``.

    Issue 20 (item 9): ``(rec.get(name) or "") + text`` copied the whole text at every chunk, so
    a long output took time quadratic in its chunks to fold. Records folded one from another share one list
    of chunks, each seeing as many as it holds; the newest appends in place (no older record
    sees past its own count, so each stays as it was), and an older one folded again copies
    its own chunks first.
    """

    __slots__ = ("count", "parts")

    def __init__(self, parts: list[str]) -> None:
        self.parts, self.count = parts, len(parts)

    def plus(self, text: str) -> _Text:
        """This text and then ``text``; this one is unchanged."""
        parts = self.parts if len(self.parts) == self.count else self.parts[:self.count]
        parts.append(text)
        return _Text(parts)

    def __str__(self) -> str:
        return "".join(self.parts if len(self.parts) == self.count else self.parts[:self.count])


def _output(rec: dict[str, Any], ev: Output) -> None:
    if ev.text is None:
        rec[ev.name] = ev.content
        return
    so_far = rec.get(ev.name) or ""
    if type(so_far) is _Text:
        rec[ev.name] = so_far.plus(ev.text)
    elif isinstance(so_far, str):
        rec[ev.name] = _Text([so_far, ev.text])
    else:  # what an annotation put there: concatenated (or refused) as it always was
        rec[ev.name] = so_far + ev.text


def settle(records: dict[str, dict[str, Any] | None], msg_ids: Iterable[str]) -> None:
    """Join the stream text ``apply_event`` left in chunks in the records of ``msg_ids`` (in place).

    Every caller of ``apply_event`` does this before its records leave it (stored, returned or
    read): a record's streams are then plain str again.
    """
    for msg_id in msg_ids:
        rec = records.get(msg_id)
        if rec is not None:
            _join(rec)


def _join(rec: dict[str, Any]) -> None:
    for name in OUTPUT_NAMES:
        value = rec.get(name)
        if type(value) is _Text:
            rec[name] = str(value)


def _complete(rec: dict[str, Any], ev: Complete) -> None:
    for key, value in zip(_COMPLETE_FIELDS, ev[1:]):
        if value is not None:
            rec[key] = value


def _annotate(rec: dict[str, Any], ev: Annotate) -> None:
    rec.update(ev.fields)


_APPLY: Final = {Submit: _submit, Start: _start, Output: _output, Complete: _complete, Annotate: _annotate}
_ONE_TASK: Final = frozenset(_APPLY)  # the events that change their own msg_id's record and no other


def fold(record: dict[str, Any] | None, event: Event, seq: int, *, msg_id: str | None = None,
         source: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Return the record after ``event`` (number ``seq``); never mutates ``record``.

    ``msg_id`` names the record being folded when an event touches several
    (a resubmit changes the original and creates the new task, whose fold
    reads the original as ``source``). A tombstone or an already-applied
    sequence number leaves the record as it is; None means "no record".
    """
    after = _fold(record, event, seq, msg_id, source)
    if after is not record and after is not None:
        _join(after)
    return after


def _fold(record: dict[str, Any] | None, event: Event, seq: int, msg_id: str | None,
          source: dict[str, Any] | None) -> dict[str, Any] | None:
    """``fold``, its streams' text left in chunks (``settle`` joins them)."""
    if record is not None and (record["_seq"] >= seq or record.get("_dropped")):
        return record
    target = msg_id or getattr(event, "msg_id", None)
    if isinstance(event, Drop):
        # What the task's lifecycle held stays (the views draw a purged task, as a fold of its
        # events does: it had vanished from a timeline read from the read model); the rest goes.
        return {**TaskState.kept(record), "msg_id": target, "_seq": seq, "_dropped": True}
    rec = dict(record) if record is not None else new_record(str(target))
    rec["_seq"] = seq
    if isinstance(event, Resubmit):
        if target == event.msg_id:
            rec["resubmitted"] = event.new_msg_id
        else:
            for key in REQUEST_KEYS:
                if source is not None and not is_tombstone(source):
                    _fill(rec, key, source.get(key))
            rec["submitted"] = event.submitted
            rec["resubmitted_from"] = event.msg_id
        return rec
    _APPLY[type(event)](rec, event)  # type: ignore[operator]
    return rec


targets = task_ids  # the records an event changes are the tasks it names


# -- buffers by reference ---------------------------------------------------------------------
# A projection fed from a log may keep, in place of a record's buffers, the number of the event
# that carried them: a one-key document every store can hold, never a list of bytes (what the
# field holds otherwise), so the two cannot be confused.
BUFFER_KEYS = ("buffers", "result_buffers")
_REF = "tasklog_event"
# The event field that carries each record key's buffers (the same name on Submit and Complete).
CARRIERS: dict[type, str] = {Submit: "buffers", Complete: "result_buffers"}


def buffer_ref(seq: int) -> dict[str, int]:
    """What a record holds in place of buffers that event ``seq`` carries."""
    return {_REF: seq}


def ref_seq(value: Any) -> int | None:
    """The event number a buffers value refers to (None: the value is the buffers themselves)."""
    if value.__class__ is dict and len(value) == 1 and _REF in value:
        return int(value[_REF])
    return None


def refer_buffers(records: dict[str, dict[str, Any] | None], seq: int, event: Event) -> None:
    """After folding ``event``: replace the buffers it put in its record by a reference to it."""
    key = CARRIERS.get(event.__class__)
    if key is None:
        return
    value = getattr(event, key)
    rec = records.get(event.msg_id)  # type: ignore[union-attr]
    # Only buffers this event set (identity): a duplicate submit leaves the first one's in place.
    if value and rec is not None and rec.get(key) is value:
        rec[key] = buffer_ref(seq)


class EventSource(Protocol):
    """What a projection reads from its log: one event by number, one task's events."""

    @property
    def start_seq(self) -> int:
        """Where the log's events start (past 1: a prune removed older ones)."""

    def event(self, seq: int) -> Event:
        """Event ``seq``."""

    def events_of(self, msg_id: str) -> list[tuple[int, Event]]:
        """The events naming ``msg_id``, in order."""


def resolve_buffers(record: dict[str, Any], source: EventSource | None, spec: str) -> dict[str, Any]:
    """Put the buffers back in a record the caller owns, read from the events that carried them."""
    for key in BUFFER_KEYS:
        seq = ref_seq(record.get(key))
        if seq is not None:
            if source is None:
                raise ProjectionError(f"{spec}: the {key} of {record.get('msg_id')!r} are in the log "
                                      f"(event {seq}); open the projection with its log, or build it "
                                      "with buffers=inline to read it without one")
            try:
                record[key] = list(getattr(source.event(seq), key))
            except LogClosedError:
                raise ProjectionError(f"{spec}: the {key} of {record.get('msg_id')!r} are read from "
                                      "the log, which is closed; read records while it is open, or open "
                                      "the projection with buffers=inline") from None
    return record


# Anomaly rules: (the state of the record before the event, the event, the record's part in
# it) -> the counter it goes to. The one table both paths of apply_event read. A record is
# "missing", "dropped" (a tombstone), "submitted" or a "stub" (events came before its submit);
# its part is "self" (the event names it), "new" (a resubmit's new task) or "original".
_ANY = (Submit, Start, Output, Complete, Annotate, Resubmit, Drop)
ANOMALY_RULES: dict[tuple[str, type, str], str] = {
    **{("missing", kind, "self"): "stub_created" for kind in (Start, Output, Complete, Annotate)},
    ("missing", Resubmit, "original"): "stub_created",
    ("missing", Drop, "self"): "drop_unknown",
    **{("dropped", kind, part): "after_drop" for kind in _ANY for part in ("self", "new", "original")},
    ("submitted", Submit, "self"): "duplicate_submit",
}


def _note(anomalies: Anomalies, before: dict[str, Any] | None, kind: type, part: str, seq: int) -> None:
    if before is None:
        state = "missing"
    elif before.get("_dropped"):
        state = "dropped"
    elif seq <= before["_seq"]:
        return  # applied already (a replay after a crash): nothing new to say
    else:
        state = "stub" if before.get("submitted") is None else "submitted"
    name = ANOMALY_RULES.get((state, kind, part))
    if name is not None:
        anomalies[name] += 1


def apply_event(records: dict[str, dict[str, Any] | None], seq: int, event: Event,
                anomalies: Anomalies) -> list[str]:
    """Fold ``event`` into the loaded ``records`` (msg_id -> record or None); return the ids it changed.

    The changed records' streams may be left in chunks: ``settle`` them before they leave the caller.
    """
    if event.__class__ in _ONE_TASK:
        # Nearly every event names one task and reads no other: the general case below, unrolled
        # for it (a tenth of applying 1M events went to the checks only a resubmit or drop needs).
        msg_id: str = event.msg_id  # type: ignore[union-attr]
        before = records.get(msg_id)
        _note(anomalies, before, event.__class__, "self", seq)
        after = _fold(before, event, seq, None, None)
        if after is before:
            return []
        records[msg_id] = after
        return [msg_id]
    if isinstance(event, Resubmit) and not _may_resubmit(records, event):
        anomalies["resubmit_to_existing"] += 1
        return []
    changed = []
    for msg_id in targets(event):
        before = records.get(msg_id)
        resubmit = isinstance(event, Resubmit)
        part = ("original" if msg_id == event.msg_id else "new") if resubmit else "self"  # type: ignore[union-attr]
        _note(anomalies, before, event.__class__, part, seq)
        source = records.get(event.msg_id) if part == "new" else None  # type: ignore[union-attr]
        after = _fold(before, event, seq, msg_id, source)
        if after is not before:
            records[msg_id] = after
            changed.append(msg_id)
    return changed


def _may_resubmit(records: dict[str, dict[str, Any] | None], event: Resubmit) -> bool:
    """Whether the new msg_id of ``event`` may be given the original's request.

    A new msg_id must be new: an existing task of that id is left as it is. Two existing records
    are the resubmission itself: a stub (its output came first), and the request the Hub records
    under the new id just before it links the two (the same content and header but for msg_id
    and date) -- or one already linked to this original (a replayed event).
    """
    new = records.get(str(event.new_msg_id))
    if new is None or new.get("_dropped") or new.get("submitted") is None:
        return True
    if new.get("resubmitted_from") is not None:
        return bool(new["resubmitted_from"] == event.msg_id)
    source = records.get(event.msg_id)
    if source is None or source.get("_dropped"):
        return False
    return bool(new.get("content") == source.get("content")
                and _request_header(new.get("header")) == _request_header(source.get("header")))


def _request_header(header: Any) -> Any:
    if not isinstance(header, dict):
        return header
    return {k: v for k, v in header.items() if k not in ("msg_id", "date")}


def touched(batch: Iterable[tuple[int, Event]]) -> set[str]:
    """Every msg_id a batch of events reads or changes."""
    ids: set[str] = set()
    for _, event in batch:
        if event.__class__ in _ONE_TASK:
            ids.add(event.msg_id)  # type: ignore[union-attr]
        else:
            ids.update(targets(event))
    return ids


def fold_all(batch: Sequence[tuple[int, Event]], records: dict[str, dict[str, Any] | None] | None = None,
             anomalies: Anomalies | None = None) -> dict[str, dict[str, Any] | None]:
    """Fold a whole batch into a dict of records (a fresh one by default): replay in one call."""
    records = {} if records is None else records
    anomalies = Counter() if anomalies is None else anomalies
    for seq, event in batch:
        apply_event(records, seq, event, anomalies)
    settle(records, records)
    return records


def _begins(stream: list[tuple[int, Event]], msg_id: str) -> bool:
    """Whether a stream starts where its task did: its submit, or the resubmit that made it."""
    if not stream:
        return False
    first = stream[0][1]
    return (isinstance(first, Submit) and first.msg_id == msg_id) or \
        (isinstance(first, Resubmit) and first.new_msg_id == msg_id)


def refold_from(events_of: Callable[[str], list[tuple[int, Event]]], start_seq: int, msg_id: str,
                before: int | None = None, *, refer: bool = False) -> dict[str, Any] | None:
    """The record of ``msg_id`` folded again from its own events (those before ``before``), as a
    full fold holds it, read through ``events_of`` from a log whose events start at ``start_seq``.

    Buffers are references to their events where ``refer``. None: no events, or (a pruned log) a
    stream that does not start where its task did: no partial record, ever.
    """
    return _refold(events_of, start_seq, msg_id, before, refer, {})


def _refold(events_of: Callable[[str], list[tuple[int, Event]]], start_seq: int, msg_id: str,
            before: int | None, refer: bool,
            memo: dict[tuple[str, int | None], dict[str, Any] | None]) -> dict[str, Any] | None:
    if (msg_id, before) in memo:  # a pair resubmitted back and forth: each state folded once, not 2**n times
        return memo[msg_id, before]
    records: dict[str, dict[str, Any] | None] = {}
    stream = events_of(msg_id)
    if start_seq > 1 and not _begins(stream, msg_id):
        stream = []
    for seq, event in stream:
        if before is not None and seq >= before:
            break
        if event.__class__ is Resubmit:
            # The other side as it was just before this resubmit, read again at each one: kept
            # from a pair's first resubmit, it missed the other's own events in between (its
            # submit), so a second resubmit the full fold refused was taken (a hypothesis find).
            other = str(event.new_msg_id) if event.msg_id == msg_id else event.msg_id
            if other != msg_id:
                records[other] = _refold(events_of, start_seq, other, seq, refer, memo)
        apply_event(records, seq, event, Counter())
        if refer:
            refer_buffers(records, seq, event)
    settle(records, [msg_id])
    memo[msg_id, before] = records.get(msg_id)
    return records.get(msg_id)
