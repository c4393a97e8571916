"""A task's lifecycle: its state after the events that name it, each rule written once.

``report``, ``timeline`` and ``stats`` each worked a task's lifecycle out with a chain of
``isinstance`` checks of their own (issue 21), and they disagreed on the anomalies: a second
submit, a start after the reply, an event for a purged task. They now fold a log's events into
``TaskState`` with one ``Lifecycle``, whose rules are those of the projections' fold
(``projections/fold.py``, which keeps whole TaskRecords and stays as it is: it is the hot path of
replay); ``tests/log/test_lifecycle.py`` checks over random logs that the two agree on every field they
share. A state's field names are the TaskRecord keys and event fields they come from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from .events import Annotate, Complete, Drop, Event, Output, Resubmit, Start, Submit
from .records import FAILED_STATUSES

__all__ = ["STATES", "TaskState", "Lifecycle", "SameRequest"]

# A task's state after the events seen so far, in the order a task goes through them. A task
# whose reply has a status in FAILED_STATUSES has failed; a resubmitted one was replaced; dropped
# (purged) and resubmitted are final.
STATES = ("pending", "running", "completed", "failed", "resubmitted", "dropped")


@dataclass(slots=True)
class TaskState:
    """What the views and ``stats`` know of one task: its times, where it ran, how it ended."""

    msg_id: str
    submitted: datetime | None = None
    started: datetime | None = None
    completed: datetime | None = None
    engine_uuid: str | None = None
    queue: str | None = None
    label: str | None = None
    #: The ``status`` and ``ename`` of the last reply content (None: no content said).
    reply_status: str | None = None
    reply_error: str | None = None
    #: The msg_id this task was resubmitted as, and the one it is a resubmission of.
    resubmitted: str | None = None
    resubmitted_from: str | None = None
    #: Purged: every later event for it is ignored (the fold's tombstone); what it held is kept.
    dropped: bool = False

    @property
    def status(self) -> str | None:
        """The reply's status once the task completed ("ok" unless the reply said), else None."""
        return None if self.completed is None else self.reply_status or "ok"

    @property
    def error(self) -> str | None:
        """The error name of a completed task's reply (None: none, or not completed)."""
        return None if self.completed is None else self.reply_error

    @property
    def failed(self) -> bool:
        """Whether it completed with a reply whose status is in FAILED_STATUSES."""
        return self.status in FAILED_STATUSES

    @property
    def state(self) -> str:
        """One of STATES."""
        if self.dropped:
            return "dropped"
        if self.resubmitted is not None:
            return "resubmitted"
        if self.completed is not None:
            return "failed" if self.failed else "completed"
        return "running" if self.started is not None or self.engine_uuid is not None else "pending"

    @classmethod
    def of_record(cls, msg_id: str, record: dict[str, Any] | None) -> TaskState:
        """The state of a TaskRecord (a snapshot's or a projection's; None: a purged task, of which
        nothing is kept)."""
        if record is None:
            return cls(msg_id, dropped=True)
        state = cls(msg_id)
        for key in _RECORD_KEYS:
            _set(state, key, record.get(key))
        _reply(state, record.get("result_content"))
        return state

    @staticmethod
    def kept(record: dict[str, Any] | None) -> dict[str, Any]:
        """What of a TaskRecord its state reads: what a purged task's tombstone keeps, so that the
        views draw it as a fold of its events does (its reply cut to status and error name)."""
        if record is None:
            return {}
        kept = {key: record.get(key) for key in _RECORD_KEYS}
        content = record.get("result_content")
        if isinstance(content, dict):
            kept["result_content"] = {k: content[k] for k in _REPLY if k in content}
        return kept


_RECORD_KEYS = tuple(f.name for f in fields(TaskState) if f.name not in ("msg_id", "reply_status",
                                                                        "reply_error", "dropped"))
# What an annotation may set that a state holds (it sets any key of the record, as the fold does).
_ANNOTATED = frozenset(_RECORD_KEYS)

#: Whether the task ``new`` (already submitted) holds the request of ``original``: (original, new).
SameRequest = Callable[[str, str], bool]


def _fill(current: Any, value: Any) -> Any:
    # Order tolerance, the fold's: a late event fills what an early one left empty, never clobbers it.
    return value if current is None or (current == "" and value is not None) else current


_TIMES = frozenset(f.name for f in fields(TaskState) if "datetime" in str(f.type))


def _set(state: TaskState, key: str, value: Any) -> None:
    """Set a field to what a record or an annotation holds, as the field's type allows: a time that
    is not a datetime is no time, other values are text (an annotation may put anything there)."""
    if key in _TIMES:
        value = value if isinstance(value, datetime) else None
    elif value is not None and not isinstance(value, str):
        value = str(value)
    setattr(state, key, value)


# What a state reads of a reply's content: its key -> the state's field.
_REPLY = {"status": "reply_status", "ename": "reply_error"}


def _reply(state: TaskState, content: Any) -> None:
    said = content if isinstance(content, dict) else {}
    for key, name in _REPLY.items():
        _set(state, name, said.get(key))


def _submit(state: TaskState, ev: Submit) -> None:
    if state.submitted is None:  # a time is never "": _fill's first test, unrolled on the hot path
        state.submitted = ev.submitted
    state.queue = _fill(state.queue, ev.queue)
    state.label = _fill(state.label, ev.label)


def _start(state: TaskState, ev: Start) -> None:
    # The reply's engine and start time are the engine's own account: a start that arrives after
    # the complete only fills what is missing, so both orders give the same state.
    state.engine_uuid = _fill(state.engine_uuid, ev.engine_uuid)
    if state.started is None:
        state.started = ev.started


def _complete(state: TaskState, ev: Complete) -> None:
    # A reply overwrites what it says (a duplicate reply's fields win), never with nothing.
    if ev.started is not None:
        state.started = ev.started
    if ev.completed is not None:
        state.completed = ev.completed
    if ev.engine_uuid is not None:
        state.engine_uuid = ev.engine_uuid
    if ev.result_content is not None:
        _reply(state, ev.result_content)


def _annotate(state: TaskState, ev: Annotate) -> None:
    for key in _ANNOTATED.intersection(ev.fields):
        _set(state, key, ev.fields[key])
    if "result_content" in ev.fields:
        _reply(state, ev.fields["result_content"])


def _output(state: TaskState, ev: Output) -> None:
    """Output changes no lifecycle field: it only makes its task known (a stub, before a submit)."""


_ONE_TASK: dict[type, Callable[[TaskState, Any], None]] = {
    Submit: _submit, Start: _start, Output: _output, Complete: _complete, Annotate: _annotate,
}


class Lifecycle:
    """Tasks' states, folded event by event: ``apply`` each event in log order; ``tasks`` holds them.

    ``same_request`` says whether a resubmit's new msg_id, already submitted, holds the original's
    request (only what keeps requests can tell: the fold). Without it such a resubmit is taken as
    the Hub's own order (it records the request under the new id, then links the two).
    """

    def __init__(self, tasks: dict[str, TaskState] | None = None, same_request: SameRequest | None = None) -> None:
        self.tasks: dict[str, TaskState] = {} if tasks is None else tasks
        self.same_request = same_request
        self._by_class: dict[type, Callable[[Any], None]] = {Resubmit: self._resubmit, Drop: self._drop}

    def task(self, msg_id: str) -> TaskState:
        """The state of ``msg_id``, made (a stub: events may come before a submit) if unknown."""
        state = self.tasks.get(msg_id)
        if state is None:
            state = self.tasks[msg_id] = TaskState(msg_id)
        return state

    def apply(self, event: Event) -> None:
        """Move the tasks ``event`` names to their state after it."""
        one = _ONE_TASK.get(event.__class__)
        if one is None:
            self._by_class[event.__class__](event)
            return
        tasks, msg_id = self.tasks, event.msg_id  # type: ignore[union-attr]
        state = tasks.get(msg_id)
        if state is None:
            state = tasks[msg_id] = TaskState(msg_id)
        elif state.dropped:
            return
        if one is not _output:
            one(state, event)

    def _drop(self, event: Drop) -> None:
        for msg_id in event.msg_ids:
            self.task(msg_id).dropped = True

    def _resubmit(self, event: Resubmit) -> None:
        new_id = str(event.new_msg_id)
        if not self._may_link(event.msg_id, new_id):
            return
        original = self.task(event.msg_id)
        if not original.dropped:
            original.resubmitted = new_id
        new = self.task(new_id)
        if new is original or new.dropped:
            return
        if not original.dropped:  # a resubmission runs its original's request
            new.queue, new.label = _fill(new.queue, original.queue), _fill(new.label, original.label)
        new.submitted, new.resubmitted_from = event.submitted, event.msg_id

    def _may_link(self, original_id: str, new_id: str) -> bool:
        """Whether a resubmit may make ``new_id`` the resubmission of ``original_id``: a new msg_id
        must be new, a stub, or already this original's resubmission (a replayed event)."""
        new = self.tasks.get(new_id)
        if new is None or new.dropped or new.submitted is None:
            return True
        if new.resubmitted_from is not None:
            return new.resubmitted_from == original_id
        if self.same_request is None:
            return True
        original = self.tasks.get(original_id)
        return original is not None and not original.dropped and self.same_request(original_id, new_id)
