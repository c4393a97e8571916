"""What the report draws, tallied one task at a time: a few numbers per task in typed arrays
(times as whole microseconds, durations as seconds), never the tasks themselves, so a report of
a million tasks holds tens of megabytes, not a row object per task (issue 22)."""

from __future__ import annotations

import heapq
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from ..fields import EPOCH as _EPOCH
from ..fields import MICROSECOND as _US
from ..fields import at_micros as at
from ..fields import micros
from ..lifecycle import TaskState

__all__ = ["TaskRow", "Tally", "micros", "at", "TIMES", "TOP", "CHAINS"]

#: The times the throughput chart counts (TaskState's fields of those names).
TIMES = ("submitted", "started", "completed")
TOP = 10  # slowest tasks listed
CHAINS = 20  # resubmissions listed


@dataclass(slots=True)
class TaskRow:
    """What the report needs of one task."""

    msg_id: str
    submitted: datetime | None = None
    started: datetime | None = None
    completed: datetime | None = None
    engine: str | None = None
    status: str | None = None
    error: str | None = None
    label: str | None = None
    resubmitted_as: str | None = None
    dropped: bool = False

    @classmethod
    def of(cls, s: TaskState) -> TaskRow:
        """The row of a task's lifecycle state."""
        return cls(s.msg_id, s.submitted, s.started, s.completed, s.engine_uuid, s.status, s.error, s.label,
                   s.resubmitted, s.dropped)

    @property
    def wait(self) -> float | None:
        """Seconds between submission and start."""
        return _secs(self.submitted, self.started)

    @property
    def run(self) -> float | None:
        """Seconds between start and completion."""
        return _secs(self.started, self.completed)


def _secs(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None and b >= a else None


@dataclass
class Tally:
    """The report's figures over the rows ``add``ed so far."""

    tasks: int = 0
    done: int = 0  # completed, not purged
    failed: int = 0  # of those, failed
    dropped: int = 0
    engines_done: set[str] = field(default_factory=set)
    #: Per name in TIMES, each task's time (µs) where it has one.
    times: dict[str, array[int]] = field(default_factory=lambda: {name: array("q") for name in TIMES})
    waits: array[float] = field(default_factory=lambda: array("d"))
    runs: array[float] = field(default_factory=lambda: array("d"))
    #: Tasks that started and completed: engine (an index into ``engines``), start and end (µs), failed.
    engines: dict[str, int] = field(default_factory=dict)
    ran_engine: array[int] = field(default_factory=lambda: array("i"))
    ran_start: array[int] = field(default_factory=lambda: array("q"))
    ran_end: array[int] = field(default_factory=lambda: array("q"))
    ran_failed: bytearray = field(default_factory=bytearray)
    failures: Counter[str] = field(default_factory=Counter)
    _slowest: list[tuple[float, _Desc, TaskRow]] = field(default_factory=list)  # a heap of the TOP longest runs
    _chains: list[tuple[int, _Desc, TaskRow]] = field(default_factory=list)  # a heap of the CHAINS first
    resubmitted: int = 0

    def add(self, task: TaskState) -> None:
        """Count one task."""
        # Each time turned into µs once, the figures appended to arrays: this runs once per task
        # of every report (a million at a million tasks).
        self.tasks += 1
        status, submitted, started, completed = task.status, task.submitted, task.started, task.completed
        failed = task.failed
        if task.dropped:
            self.dropped += 1
        elif completed is not None:
            self.done += 1
            self.failed += failed
            if task.engine_uuid:
                self.engines_done.add(task.engine_uuid)
        sub = None if submitted is None else (submitted - _EPOCH) // _US
        start = None if started is None else (started - _EPOCH) // _US
        end = None if completed is None else (completed - _EPOCH) // _US
        for name, when in (("submitted", sub), ("started", start), ("completed", end)):
            if when is not None:
                self.times[name].append(when)
        if failed:
            self.failures[task.error or status or "?"] += 1
        if task.resubmitted:
            self.resubmitted += 1
            self._chain(task)
        if start is not None:
            self._ran(task, sub, start, end, failed)

    def _chain(self, task: TaskState) -> None:
        """Keep the CHAINS resubmitted tasks submitted first (then by msg_id): the same ones whatever
        order the tasks come in (the read model's and the log's differ)."""
        key = (micros(task.submitted) if task.submitted is not None else -(1 << 62), task.msg_id)
        entry = (-key[0], _Desc(key[1]), TaskRow.of(task))  # a max-heap of the earliest: its top goes first
        if len(self._chains) < CHAINS:
            heapq.heappush(self._chains, entry)
        elif entry[:2] > self._chains[0][:2]:
            heapq.heapreplace(self._chains, entry)

    def _ran(self, task: TaskState, sub: int | None, start: int, end: int | None, failed: bool) -> None:
        """Count the wait and run of a task that started (times in µs)."""
        if sub is not None and start >= sub:
            self.waits.append((start - sub) / 1e6)
        if end is None:
            return
        if end >= start:
            run = (end - start) / 1e6
            self.runs.append(run)
            entry = (run, _Desc(task.msg_id), TaskRow.of(task))  # ties: the smaller msg_id is slower
            if len(self._slowest) < TOP:
                heapq.heappush(self._slowest, entry)
            elif entry[:2] > self._slowest[0][:2]:
                heapq.heapreplace(self._slowest, entry)
        self.ran_engine.append(self.engines.setdefault(task.engine_uuid or "?", len(self.engines)))
        self.ran_start.append(start)
        self.ran_end.append(end)
        self.ran_failed.append(failed)

    @property
    def slowest(self) -> list[TaskRow]:
        """The TOP tasks that ran longest, longest first (ties by msg_id)."""
        return [row for *_, row in sorted(self._slowest, key=lambda e: e[:2], reverse=True)]

    @property
    def chains(self) -> list[TaskRow]:
        """The CHAINS resubmitted tasks submitted first, in that order."""
        return [row for *_, row in sorted(self._chains, key=lambda e: e[:2], reverse=True)]


class _Desc(str):
    """A msg_id that sorts backwards: heap entries whose ties put the smaller id first."""

    __slots__ = ()

    def __lt__(self, other: object) -> bool:
        return str.__gt__(self, other)  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        return str.__lt__(self, other)  # type: ignore[operator]
