"""The cluster's timeline in Chrome's Trace Event Format: what Perfetto (ui.perfetto.dev) and
chrome://tracing open. Streamed from the log: only tasks still in flight are held, and the few
that take part in a resubmit until their link is drawn.

One track per engine (process "engines", a thread each) with a complete event ("X") per task from
``started`` to ``completed``, named by its label; the queue wait from ``submitted`` to
``started`` as an async slice on the "queue" process; failed tasks in category ``failed`` and
coloured; a resubmit as a flow from the original's slice to its resubmission's. Timestamps are
microseconds since the epoch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from .events import FAILED_STATUSES, Complete, Drop, Event, Resubmit, Start, Submit
from .log import TaskLog

__all__ = ["trace_events", "write_trace"]

_ENGINES, _QUEUE = 1, 2  # the two trace "processes"


def _us(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1_000_000)


@dataclass
class _Task:
    submitted: int | None = None
    started: int | None = None
    engine: str | None = None
    label: str | None = None


@dataclass
class _State:
    log: TaskLog
    since: int | None
    tasks: dict[str, _Task] = field(default_factory=dict)
    engines: dict[str, int] = field(default_factory=dict)
    linked: dict[str, str] = field(default_factory=dict)  # original -> resubmission, both waiting to run
    ran: dict[str, tuple[int, int]] = field(default_factory=dict)  # linked task -> (track, end µs)

    def track(self, engine: str | None) -> tuple[int, list[dict[str, Any]]]:
        name = engine or "(unknown engine)"
        if name in self.engines:
            return self.engines[name], []
        tid = self.engines[name] = len(self.engines) + 1
        return tid, [{"ph": "M", "name": "thread_name", "pid": _ENGINES, "tid": tid, "args": {"name": name}}]


def trace_events(log: TaskLog, stop: int | None = None, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The trace events of the log up to event ``stop``, of tasks started at or after ``since``."""
    yield {"ph": "M", "name": "process_name", "pid": _ENGINES, "args": {"name": "engines"}}
    yield {"ph": "M", "name": "process_name", "pid": _QUEUE, "args": {"name": "queue"}}
    state = _State(log, _us(since))
    for chunk in log.read_chunks(1, None if stop is None else stop + 1):
        for _, event in chunk:
            yield from _on(state, event)
    for msg_id, task in state.tasks.items():  # still running: a slice that has not ended
        if task.started is not None and (state.since is None or task.started >= state.since):
            tid, meta = state.track(task.engine)
            yield from meta
            yield {"ph": "B", "name": task.label or "task", "cat": "running", "pid": _ENGINES, "tid": tid,
                   "ts": task.started, "args": {"msg_id": msg_id, "status": "running"}}


def _on(state: _State, event: Event) -> Iterator[dict[str, Any]]:
    if isinstance(event, Submit):
        task = state.tasks.setdefault(event.msg_id, _Task())
        task.submitted, task.label = _us(event.submitted), event.label
    elif isinstance(event, Start):
        task = state.tasks.setdefault(event.msg_id, _Task())
        task.engine = event.engine_uuid or task.engine
        task.started = task.started or _us(event.started)
    elif isinstance(event, Complete):
        yield from _complete(state, event)
    elif isinstance(event, Resubmit) and event.new_msg_id is not None:
        state.linked[event.msg_id] = event.new_msg_id
        yield from _ran(state, event.msg_id)
        new = state.tasks.setdefault(event.new_msg_id, _Task())
        new.submitted = _us(event.submitted)
        new.label = new.label or (state.tasks.get(event.msg_id) or _Task()).label
    elif isinstance(event, Drop):
        for m in event.msg_ids:
            state.tasks.pop(m, None)


def _complete(state: _State, event: Complete) -> Iterator[dict[str, Any]]:
    task = state.tasks.pop(event.msg_id, None) or _Task()
    start = _us(event.started) or task.started
    end = _us(event.completed)
    if start is None or end is None or (state.since is not None and start < state.since):
        return
    status = (event.result_content or {}).get("status", "ok")
    tid, meta = state.track(event.engine_uuid or task.engine)
    yield from meta
    args: dict[str, Any] = {"msg_id": event.msg_id, "status": status}
    slice_: dict[str, Any] = {"ph": "X", "name": task.label or "task", "cat": "task", "pid": _ENGINES,
                              "tid": tid, "ts": start, "dur": max(end - start, 1), "args": args}
    if status in FAILED_STATUSES:
        slice_.update(cat="failed", cname="terrible")  # a colour Chrome's viewer names for failures
        args["error"] = (event.result_content or {}).get("ename")
    yield slice_
    if task.submitted is not None and task.submitted <= start:
        ident = {"cat": "queue", "name": "queued", "pid": _QUEUE, "tid": 1, "id": event.msg_id}
        yield {**ident, "ph": "b", "ts": task.submitted, "args": {"msg_id": event.msg_id}}
        yield {**ident, "ph": "e", "ts": start}
    yield from _flows(state, event.msg_id, tid, start)


def _ran(state: _State, msg_id: str) -> Iterator[dict[str, Any]]:
    """Where the original of a resubmit ran, read from its stream (nothing is kept for every task)."""
    for _, ev in reversed(state.log.events_of(msg_id)):
        if isinstance(ev, Complete) and ev.completed is not None:
            tid, meta = state.track(ev.engine_uuid)
            yield from meta
            state.ran[msg_id] = (tid, _us(ev.completed) or 0)
            return


def _flows(state: _State, msg_id: str, tid: int, start: int) -> Iterator[dict[str, Any]]:
    """The resubmit arrows this task closes or opens (flows bind to the slices they sit in)."""
    originals = [o for o, new in state.linked.items() if new == msg_id]
    for original in originals:
        del state.linked[original]
        if original not in state.ran:
            continue  # the original never ran: nothing to draw the arrow from
        o_tid, o_end = state.ran.pop(original)
        ident = {"name": "resubmit", "cat": "resubmit", "id": f"{original}->{msg_id}"}
        yield {**ident, "ph": "s", "pid": _ENGINES, "tid": o_tid, "ts": o_end - 1}
        yield {**ident, "ph": "f", "bp": "e", "pid": _ENGINES, "tid": tid, "ts": start}


def write_trace(log: TaskLog, out: IO[str], stop: int | None = None, since: datetime | None = None) -> int:
    """Write the trace JSON to ``out`` as it is made; return how many trace events it holds."""
    out.write('{"displayTimeUnit": "ms", "traceEvents": [\n')
    n = 0
    for ev in trace_events(log, stop, since):
        out.write((",\n" if n else "") + json.dumps(ev, separators=(",", ":")))
        n += 1
    out.write("\n]}\n")
    return n
