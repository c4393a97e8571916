"""Every live task's times, failure and engine in typed arrays, kept current from the events since.

The overview, the timeline and ``/metrics`` chart the whole cluster at every commit. Reading a
million tasks' columns again at each took most of a second (SQLite reads every row past its
document); the table reads them once, then only the tasks the new events touch (a log's source),
so a commit costs what it changed. A source without a log (a stream-fed projection) is read whole
again, at most every few seconds.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from projections.base import Projection
from projections.fold import touched

from ..log import TaskLog

__all__ = ["TaskTable", "Arrays"]

# Past this many new events, reading every task again is cheaper than reading what they touched.
_WHOLE = 200_000
# A source without a log is read whole again at most this often (seconds).
_REREAD_EVERY = 5.0


@dataclass(frozen=True)
class Arrays:
    """Numpy views of the table (µs since the epoch, -1 for none), valid until it next changes."""

    submitted: np.ndarray[Any, Any]
    started: np.ndarray[Any, Any]
    completed: np.ndarray[Any, Any]
    failed: np.ndarray[Any, Any]
    engine: np.ndarray[Any, Any]  # a code into ``engines``; -1 for none
    engines: list[str]
    rows: np.ndarray[Any, Any]  # each task's position in ``ids``
    ids: list[str]

    @property
    def n(self) -> int:
        """How many tasks."""
        return int(self.submitted.size)


class TaskTable:
    """The tasks' times by position; ``index`` maps a msg_id to its position."""

    def __init__(self) -> None:
        self.seq = -1  # the projection's checkpoint the table is as of (-1: never read)
        self._read_at = 0.0
        self._hubs: dict[str, tuple[str, int]] = {}
        self._clear()

    def _clear(self) -> None:
        self.index: dict[str, int] = {}
        self._ids: list[str] = []
        self._cols = [array("q") for _ in range(3)]
        self._failed, self._engine, self._live = array("b"), array("i"), array("b")
        self._codes: dict[str, int] = {}
        self._names: list[str] = []

    def update(self, proj: Projection, log: TaskLog | None, ids: set[str] | None = None) -> None:
        """Bring the table to the projection's checkpoint: the tasks touched since (``ids``, else
        read from the log), or all again."""
        if proj.last_seq == self.seq and not (log is None and proj.hubs != self._hubs):
            return
        behind = proj.last_seq - self.seq
        if log is None or self.seq < 0 or behind < 0 or behind > _WHOLE or self.seq < log.start_seq - 1:
            if log is None and self.seq >= 0 and time.monotonic() - self._read_at < _REREAD_EVERY:
                return
            self._clear()
            for row in proj.task_times():
                self._put(*row)
            self._read_at, self._hubs = time.monotonic(), dict(proj.hubs)
        else:
            self._reread(proj, touched(log.read(self.seq + 1, proj.last_seq + 1)) if ids is None else ids)
        self.seq = proj.last_seq

    def _reread(self, proj: Projection, ids: Collection[str]) -> None:
        # Their times by id, from SQLite's columns: unpacking each record and its state cost a Hub
        # beside a watched overview a sixth of a core (85 µs a task against 5).
        seen = set()
        for row in proj.task_times(ids):
            self._put(*row)
            seen.add(row[0])
        for msg_id in ids:
            if msg_id not in seen:  # purged, or never submitted: not charted
                self._drop(msg_id)

    def _put(self, msg_id: str, submitted: int | None, started: int | None, completed: int | None,
             failed: bool, engine: str | None) -> None:
        values = (-1 if submitted is None else submitted, -1 if started is None else started,
                  -1 if completed is None else completed)
        code = -1 if engine is None else self._code(engine)
        at = self.index.get(msg_id)
        if at is None:
            self.index[msg_id] = len(self._live)
            self._ids.append(msg_id)
            for col, v in zip(self._cols, values):
                col.append(v)
            self._failed.append(bool(failed))
            self._engine.append(code)
            self._live.append(1)
            return
        for col, v in zip(self._cols, values):
            col[at] = v
        self._failed[at], self._engine[at], self._live[at] = bool(failed), code, 1

    def _code(self, engine: str) -> int:
        code = self._codes.get(engine)
        if code is None:
            code = self._codes[engine] = len(self._names)
            self._names.append(engine)
        return code

    def _drop(self, msg_id: str) -> None:
        at = self.index.get(msg_id)
        if at is not None:
            self._live[at] = 0

    def arrays(self) -> Arrays:
        """The live tasks' columns as numpy arrays (copies of the live rows)."""
        live = np.frombuffer(self._live, dtype=np.int8).astype(bool) if len(self._live) else np.zeros(0, bool)

        def view(col: array[int], dtype: Any) -> np.ndarray[Any, Any]:
            return np.frombuffer(col, dtype=dtype)[live] if len(col) else np.zeros(0, dtype)
        sub, start, end = (view(c, np.int64) for c in self._cols)
        return Arrays(sub, start, end, view(self._failed, np.int8).astype(bool), view(self._engine, np.int32),
                      list(self._names), np.flatnonzero(live), self._ids)
