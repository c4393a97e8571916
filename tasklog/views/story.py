"""A task's story: every event of one task in order, with when each was committed, the
resubmit chain followed both ways. Read from the task's streams, never the whole log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import InterfaceError
from ..events import Complete, Drop, Event, Output, Resubmit, Start, Submit
from ..log import TaskLog
from .jsonfmt import event_to_doc, printable

__all__ = ["Step", "Story", "story"]


@dataclass(frozen=True)
class Step:
    """One event of the story: its number, its commit time and the event."""

    seq: int
    committed: datetime | None
    event: Event


@dataclass(frozen=True)
class Story:
    """The events of a task and of every task linked to it by resubmits, in log order."""

    msg_id: str
    tasks: list[str]  # the chain, each task before its resubmissions
    steps: list[Step]

    def as_dict(self) -> dict[str, Any]:
        """An Extended-JSON-ready dict: the chain and each event with its commit time."""
        return {"msg_id": self.msg_id, "tasks": self.tasks,
                "events": [{**event_to_doc(s.seq, s.event), "committed": s.committed} for s in self.steps]}

    def lines(self) -> list[str]:
        """The story for people: one line per event, control characters escaped."""
        head = f"task {self.msg_id}"
        if len(self.tasks) > 1:
            head += f" (resubmit chain: {' -> '.join(self.tasks)})"
        out = [head]
        for s in self.steps:
            when = s.committed.isoformat(timespec="milliseconds") if s.committed else "?"
            out.append(f"{s.seq:>10}  {when}  {s.event.type:9s} {describe(s.event, self.msg_id)}")
        return [printable(line) for line in out]  # ids, labels, engines, errors: the log's text, escaped


def story(log: TaskLog, msg_id: str) -> Story:
    """The story of ``msg_id``; InterfaceError when the log holds no event naming it."""
    seen, queue = {msg_id}, [msg_id]
    events: dict[int, Event] = {}
    links: dict[str, str] = {}  # original -> its resubmission
    while queue:
        for seq, ev in log.events_of(queue.pop()):
            events[seq] = ev
            if isinstance(ev, Resubmit) and ev.new_msg_id is not None:
                links[ev.msg_id] = ev.new_msg_id
                for other in (ev.msg_id, ev.new_msg_id):
                    if other not in seen:
                        seen.add(other)
                        queue.append(other)
    if not events:
        raise InterfaceError(f"no event names task {msg_id!r} in {log.path} (never submitted, or pruned)")
    times = log.committed_at(events)
    steps = [Step(seq, times[seq], events[seq]) for seq in sorted(events)]
    return Story(msg_id, _chain(links, seen), steps)


def _chain(links: dict[str, str], tasks: set[str]) -> list[str]:
    """The tasks from the first original through each resubmission (others after, sorted)."""
    firsts = [m for m in tasks if m not in links.values()]
    out: list[str] = []
    for m in sorted(firsts):
        while m not in out:
            out.append(m)
            if m not in links:
                break
            m = links[m]
    return out + sorted(tasks - set(out))


def _sizes(buffers: list[bytes] | None) -> str:
    return f"{len(buffers)} buffers, {sum(map(len, buffers)):,} bytes" if buffers else "no buffers"


def _ran(a: datetime | None, b: datetime | None) -> str:
    return f", ran {(b - a).total_seconds():.3f} s" if a is not None and b is not None else ""


def describe(ev: Event, focus: str) -> str:
    """One line about an event: who, where, how long, how big."""
    task = "" if getattr(ev, "msg_id", focus) == focus else f"[{ev.msg_id}] "  # type: ignore[union-attr]
    if isinstance(ev, Submit):
        label = f", label {ev.label}" if ev.label else ""
        return f"{task}queue {ev.queue}, client {ev.client_uuid}{label}, {_sizes(ev.buffers)}"
    if isinstance(ev, Start):
        return f"{task}engine {ev.engine_uuid}" + (f", started {ev.started.isoformat()}" if ev.started else "")
    if isinstance(ev, Output):
        size = f"{len(ev.text):,} chars" if ev.text is not None else f"keys {sorted(ev.content or {})}"
        return f"{task}{ev.name}: {size}"
    if isinstance(ev, Complete):
        content = ev.result_content or {}
        status = content.get("status", "?")
        error = f" {content.get('ename')}" if status == "error" else ""
        return f"{task}status {status}{error}, engine {ev.engine_uuid}{_ran(ev.started, ev.completed)}, " \
            f"{_sizes(ev.result_buffers)}"
    if isinstance(ev, Resubmit):
        return f"{ev.msg_id} resubmitted as {ev.new_msg_id}"
    if isinstance(ev, Drop):
        return f"purged: {', '.join(ev.msg_ids)}"
    return f"{task}set {', '.join(sorted(ev.fields))}"
