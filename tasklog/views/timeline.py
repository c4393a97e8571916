"""The cluster's timeline in Chrome's Trace Event Format: what Perfetto (ui.perfetto.dev) and
chrome://tracing open. Streamed from the log: only tasks still in flight are held, and the few
that take part in a resubmit until their link is drawn.

One track per engine (process "engines", a thread each) with a complete event ("X") per task from
``started`` to ``completed``, named by its label; the queue wait from ``submitted`` to
``started`` as an async slice on the "queue" process; failed tasks in category ``failed`` and
coloured; a resubmit as a flow from the original's slice to its resubmission's. Timestamps are
microseconds since the epoch. A pruned log's trace starts from the tasks of the snapshot it
continues from (a ``Baseline``), then reads the events after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from ..baseline import Baseline
from ..events import Complete, Drop, Event, Resubmit, Submit
from ..fields import utc
from ..lifecycle import Lifecycle, TaskState
from ..log import TaskLog
from .tally import micros

__all__ = ["trace_events", "write_trace"]

_ENGINES, _QUEUE = 1, 2  # the two trace "processes"
_Trace = Iterator[dict[str, Any]]


def _us(when: datetime | None) -> int | None:
    # Exact whole microseconds (a float timestamp times a million came out a microsecond short);
    # a time without a zone (``--since`` as typed) is local time, as everywhere in the CLI.
    if when is None:
        return None
    return micros(when if when.tzinfo is not None else utc(when))


@dataclass
class _State:
    log: TaskLog
    since: int | None
    base: Baseline | None = None
    life: Lifecycle = field(default_factory=Lifecycle)  # tasks in flight; one leaves it as it ends
    #: A resubmission whose original's first events were pruned -> that original: its label, and
    #: where it ran if no later event says, are read from the snapshot, so it is drawn at the end.
    originals: dict[str, str] = field(default_factory=dict)
    engines: dict[str, int] = field(default_factory=dict)
    linked: dict[str, str] = field(default_factory=dict)  # original -> resubmission, both waiting to run
    ran: dict[str, tuple[int, int]] = field(default_factory=dict)  # linked task -> (track, end µs)
    # Tasks that ended with an original to read from the snapshot: (task, original).
    unplaced: list[tuple[TaskState, str]] = field(default_factory=list)

    def track(self, engine: str | None) -> tuple[int, list[dict[str, Any]]]:
        name = engine or "(unknown engine)"
        if name in self.engines:
            return self.engines[name], []
        tid = self.engines[name] = len(self.engines) + 1
        return tid, [{"ph": "M", "name": "thread_name", "pid": _ENGINES, "tid": tid, "args": {"name": name}}]


def trace_events(log: TaskLog, stop: int | None = None, since: datetime | None = None,
                 base: Baseline | None = None) -> _Trace:
    """The trace events of the log up to event ``stop``, of tasks started at or after ``since``
    (starting from the tasks of ``base``, a snapshot, and the events after it, if given)."""
    yield {"ph": "M", "name": "process_name", "pid": _ENGINES, "args": {"name": "engines"}}
    yield {"ph": "M", "name": "process_name", "pid": _QUEUE, "args": {"name": "queue"}}
    state = _State(log, _us(since), base)
    if base is not None:
        yield from _seed(state, base)
    for chunk in log.read_chunks(1 if base is None else base.seq + 1, None if stop is None else stop + 1):
        for _, event in chunk:
            yield from _on(state, event)
    if base is not None:
        yield from _placed_late(state, base)
    yield from _running(state)


def _running(state: _State) -> _Trace:
    for msg_id, task in state.life.tasks.items():  # still running: a slice that has not ended
        started = _us(task.started)
        if started is not None and (state.since is None or started >= state.since):
            tid, meta = state.track(task.engine_uuid)
            yield from meta
            yield {"ph": "B", "name": task.label or "task", "cat": "running", "pid": _ENGINES, "tid": tid,
                   "ts": started, "args": {"msg_id": msg_id, "status": "running"}}


def _on(state: _State, event: Event) -> _Trace:
    state.life.apply(event)  # the task's state by the lifecycle's rules; what it draws, below
    draw = _DRAW.get(event.__class__)
    if draw is not None:
        yield from draw(state, event)


def _resubmit(state: _State, event: Resubmit) -> _Trace:
    new_id = str(event.new_msg_id)
    state.linked[event.msg_id] = new_id
    label, pruned = yield from _ran(state, event.msg_id)
    new = state.life.task(new_id)
    # The resubmission runs the original's request, label included (the original has usually
    # completed and left the tasks in flight: its label was lost, and its resubmission drawn as "task").
    new.label = new.label or label
    if pruned is not None and state.base is not None:
        state.originals[new_id] = pruned


def _drop(state: _State, event: Drop) -> _Trace:
    for m in event.msg_ids:
        state.life.tasks.pop(m, None)
        state.originals.pop(m, None)
    yield from ()


def _complete(state: _State, event: Complete) -> _Trace:
    task = state.life.tasks.pop(event.msg_id)
    original = state.originals.pop(event.msg_id, None)
    if original is not None:
        state.unplaced.append((task, original))
        return
    yield from _ended(state, task)


_DRAW: dict[type, Callable[[_State, Any], _Trace]] = {Complete: _complete, Resubmit: _resubmit, Drop: _drop}


def _ended(state: _State, task: TaskState) -> Generator[dict[str, Any], None, tuple[int, int] | None]:
    """The slice of a task that ended, its queue wait and resubmit arrows; return where it ran
    (track, start), None if it is not drawn."""
    start, end, msg_id = _us(task.started), _us(task.completed), task.msg_id
    if start is None or end is None or (state.since is not None and start < state.since):
        return None
    tid, meta = state.track(task.engine_uuid)
    if meta:  # each test here spares a generator per task: this runs for each of a million
        yield from meta
    args: dict[str, Any] = {"msg_id": msg_id, "status": task.status}
    slice_: dict[str, Any] = {"ph": "X", "name": task.label or "task", "cat": "task", "pid": _ENGINES,
                              "tid": tid, "ts": start, "dur": max(end - start, 1), "args": args}
    if task.failed:
        slice_.update(cat="failed", cname="terrible")  # a colour Chrome's viewer names for failures
        args["error"] = task.error
    yield slice_
    submitted = _us(task.submitted)
    if submitted is not None and submitted <= start:
        yield {"cat": "queue", "name": "queued", "pid": _QUEUE, "tid": 1, "id": msg_id, "ph": "b", "ts": submitted,
               "args": {"msg_id": msg_id}}
        yield {"cat": "queue", "name": "queued", "pid": _QUEUE, "tid": 1, "id": msg_id, "ph": "e", "ts": start}
    if state.linked:
        yield from _flows(state, msg_id, tid, start)
    return tid, start


def _ran(state: _State, msg_id: str) -> Generator[dict[str, Any], None, tuple[str | None, str | None]]:
    """Where the original of a resubmit ran, read from its stream (nothing is kept for every task);
    return its label and, if the event that made it (or its own original) was pruned, whose it was."""
    stream = state.log.events_of(msg_id)
    for _, ev in reversed(stream):
        if isinstance(ev, Complete) and ev.completed is not None:
            tid, meta = state.track(ev.engine_uuid)
            yield from meta
            state.ran[msg_id] = (tid, _us(ev.completed) or 0)
            break
    return _made(state, msg_id, stream)


def _made(state: _State, msg_id: str, stream: list[tuple[int, Event]]) -> tuple[str | None, str | None]:
    """The label of the task ``stream`` is of, and the task whose making was pruned (None: none was)."""
    seen = {msg_id}
    while True:
        made = next((ev for _, ev in stream if (isinstance(ev, Submit) and ev.msg_id == msg_id)
                     or (isinstance(ev, Resubmit) and ev.new_msg_id == msg_id)), None)
        if not isinstance(made, (Submit, Resubmit)):
            return None, msg_id  # the event that made it was pruned (or it never was made: a stub)
        if isinstance(made, Submit):
            return made.label, None
        if made.msg_id in seen:
            return None, None  # a loop of resubmits names no request
        msg_id = made.msg_id  # a resubmission runs its original's request
        seen.add(msg_id)
        stream = state.log.events_of(msg_id)


def _flows(state: _State, msg_id: str, tid: int, start: int) -> _Trace:
    """The resubmit arrows this task closes or opens (flows bind to the slices they sit in)."""
    originals = [o for o, new in state.linked.items() if new == msg_id]
    for original in originals:
        del state.linked[original]
        if original in state.ran:  # else the original never ran: nothing to draw the arrow from
            yield from _arrow(original, state.ran.pop(original), msg_id, (tid, start))


def _arrow(original: str, ran: tuple[int, int], new: str, runs: tuple[int, int]) -> _Trace:
    """The flow from where ``original`` ended, ``ran`` (track, end), to where ``new`` started, ``runs``."""
    ident = {"name": "resubmit", "cat": "resubmit", "id": f"{original}->{new}"}
    yield {**ident, "ph": "s", "pid": _ENGINES, "tid": ran[0], "ts": ran[1] - 1}
    yield {**ident, "ph": "f", "bp": "e", "pid": _ENGINES, "tid": runs[0], "ts": runs[1]}


def _seed(state: _State, base: Baseline) -> _Trace:
    """The snapshot's tasks: a slice for each that ended, the rest in flight; the arrows between them."""
    ended: dict[str, tuple[int, int, int]] = {}  # tasks in a resubmit that ran: (track, start, end)
    links: list[tuple[str, str]] = []  # (original, resubmission)
    for task in base.tasks():
        if task.dropped and task.completed is None:
            continue  # purged in flight: a fold of the events drops it undrawn; one that ended is drawn
        msg_id = task.msg_id
        if task.resubmitted_from is not None:
            links.append((task.resubmitted_from, msg_id))
        end = _us(task.completed)
        if end is None:
            state.life.tasks[msg_id] = task
            continue
        where = yield from _ended(state, task)
        if where is not None and (task.resubmitted is not None or task.resubmitted_from is not None):
            ended[msg_id] = (*where, end)
    for original, new in links:
        if original in ended and new in ended:
            yield from _arrow(original, (ended[original][0], ended[original][2]), new, ended[new][:2])
        elif new in state.life.tasks:  # still to run: the arrow is drawn when it does
            state.linked[original] = new
            if original in ended:
                state.ran[original] = (ended[original][0], ended[original][2])


def _placed_late(state: _State, base: Baseline) -> _Trace:
    """The tasks whose originals' first events were pruned, their labels and arrows read from the snapshot."""
    wanted = set(state.originals.values()) | {original for _, original in state.unplaced}
    if not wanted:
        return  # the usual case: the snapshot is read once
    found = {task.msg_id: task for task in base.tasks() if task.msg_id in wanted and not task.dropped}
    nothing = TaskState("")
    for msg_id, original in state.originals.items():
        task = state.life.tasks[msg_id]
        task.label = task.label or found.get(original, nothing).label
    for task, original in state.unplaced:
        known = found.get(original, nothing)
        task.label = task.label or known.label
        done = _us(known.completed)
        if done is not None and original not in state.ran and state.linked.get(original) == task.msg_id:
            tid, meta = state.track(known.engine_uuid)  # it ran before the prune
            yield from meta
            state.ran[original] = (tid, done)
        yield from _ended(state, task)


# One encoder, handed a batch of events at a time: ``json.dumps`` per event built an encoder each
# time, the largest cost of a timeline from the read model.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_BATCH = 2048


def write_trace(log: TaskLog, out: IO[str], stop: int | None = None, since: datetime | None = None,
                base: Baseline | None = None) -> int:
    """Write the trace JSON to ``out`` as it is made; return how many trace events it holds."""
    out.write('{"displayTimeUnit": "ms", "traceEvents": [\n')
    n = 0
    for batch in _batches(trace_events(log, stop, since, base)):
        out.write((",\n" if n else "") + _encode(batch)[1:-1])
        n += len(batch)
    out.write("\n]}\n")
    return n


def _batches(events: _Trace) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for ev in events:
        batch.append(ev)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
