"""What the server reads: a log's read model with the commits since folded in memory over it, or
a projection folded from a stream of hubs, opened again when its file changes.

All of it lives in the reader process (``tasklog.serve.worker``), one read at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from typing import Any

import projections
from projections.backends.sqlite import SQLiteProjection
from projections.base import Projection
from projections.fold import touched
from projections.overlay import Overlay
from projections.readmodel import open_read_model

from ..errors import InterfaceError, TaskLogError
from ..events import Event
from ..log import TaskLog
from ..store import MARKER

__all__ = ["Source"]

# The commit-to-visible latencies kept for /metrics (the newest).
_KEPT_LATENCIES = 10_000


class Source:
    """The log (or stream-fed projection) the server answers from, caught up on ``refresh``."""

    def __init__(self, log_dir: str | None, spec: str | None) -> None:
        if (log_dir is None) == (spec is None):
            raise InterfaceError("serve needs a log (--log) or a projection folded from a stream (--projection)")
        self.log = TaskLog.open(log_dir, readonly=True) if log_dir is not None else None
        self.spec = spec
        self.model: Projection | None = None
        #: Why the read model is not the Hub's or was folded in memory (shown on the overview).
        self.notes: list[str] = []
        #: Seconds from an event's commit to the moment the server answered with it.
        self.latencies: deque[float] = deque(maxlen=_KEPT_LATENCIES)
        #: When each hub's checkpoint last moved (stream-fed), for its lag.
        self.hub_moved: dict[str, tuple[int, float]] = {}
        self._file_mark: tuple[float, int] | None = None
        self._rebase = Rebase("none", 0)
        #: The tasks the events folded here touched, for the task table.
        self.touched = Touched()

    @property
    def projection(self) -> Projection:
        """What answers now (refresh first)."""
        if self.model is None:
            raise TaskLogError("the server has not read its source yet")
        return self.model

    def refresh(self) -> bool:
        """Open what answers again if something was committed since; whether it changed."""
        if self.log is not None:
            return self._refresh_log(self.log)
        return self._refresh_projection()

    def _refresh_log(self, log: TaskLog) -> bool:
        # The new events are folded in memory over the read model (an Overlay), a few hundred at a
        # time; the read model itself is opened again now and then (a Hub keeps its file current; a
        # `tasklog index` child catches the readers' file up). Opening it again at every commit, a
        # producer at full speed kept the page without news for seconds (each open folded into SQLite).
        if not os.path.exists(os.path.join(log.path, MARKER)):
            # Answering from a deleted log's open files went on for as long as it ran, silently,
            # and kept the disk space they held: closed, and said at each read.
            self._rebase.stop()
            self._swap_out()
            log.close()
            raise InterfaceError(f"the log at {log.path} was removed while it was served")
        last, moved_on = log.last_seq, self._rebase.ready()
        if self.model is not None and last == self.model.last_seq and not moved_on:
            return False
        if self.model is None or moved_on or self._rebase.due(self.model.last_seq):
            self._open(log)
        else:
            for chunk in log.read_chunks(self.model.last_seq + 1, last + 1):
                self.model.apply(chunk)
                self.touched.note(chunk)
            self._rebase.maybe_start(log, self.model.last_seq)
        self._note_latency(log, self.projection.last_seq)
        return True

    def _open(self, log: TaskLog) -> None:
        opened = open_read_model(log, "serve")
        notes = [why for why in (opened.why_not_hub, opened.why_elsewhere, opened.why_slow) if why]
        if notes != self.notes:
            for why in notes:
                print(f"tasklog serve: {why}", file=sys.stderr)
        self.notes = notes
        proj = opened.projection
        if opened.kind != "memory" and not isinstance(proj, Overlay):
            proj = Overlay(proj)  # the readers' file stays as it is: a `tasklog index` child moves it on
            proj.read_from(log)  # buffers kept by reference are read back from the log
        self._swap(proj)
        self._rebase = Rebase(opened.kind, proj.last_seq, opened.path)
        self.touched.lost()  # what the open folded was not seen here

    def _note_latency(self, log: TaskLog, seq: int) -> None:
        if seq > 0:
            when = log.committed_at([seq]).get(seq)
            if when is not None:
                self.latencies.append(max(time.time() - when.timestamp(), 0.0))

    def _refresh_projection(self) -> bool:
        assert self.spec is not None
        path = projections.local_file(self.spec)
        if path is not None:  # a file another process (tasklog follow) keeps: read-only, reopened when it moves
            mark = _file_mark(path)
            if self.model is not None and mark == self._file_mark:
                return False
            self._file_mark = mark
            self._swap(SQLiteProjection(path, readonly=True))
        elif self.model is None:  # MongoDB: one connection, always current
            self._swap(projections.open(self.spec))
        else:
            return False
        now = time.time()
        for identity, (_, seq) in self.projection.hubs.items():
            if self.hub_moved.get(identity, (None, 0.0))[0] != seq:
                self.hub_moved[identity] = (seq, now)
        return True

    def still_for(self, identity: str, now: float) -> float:
        """Seconds since hub ``identity``'s checkpoint last moved (0 for one not seen moving yet)."""
        return now - self.hub_moved.get(identity, (None, now))[1]

    def _swap(self, fresh: Projection) -> None:
        old, self.model = self.model, fresh
        if old is not None:
            old.close()

    def figures(self) -> dict[str, Any]:
        """Where the answers come from and how far behind the log they are."""
        proj = self.projection
        out: dict[str, Any] = {"folded_seq": proj.last_seq, "notes": list(self.notes), "projection": proj.spec}
        if self.log is not None:
            out.update(log=self.log.path, last_seq=self.log.last_seq, start_seq=self.log.start_seq)
        return out

    def close(self) -> None:
        """Close what is open."""
        self._rebase.stop()
        self._swap_out()
        if self.log is not None:
            self.log.close()

    def _swap_out(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None


class Touched:
    """The msg_ids the events folded since ``since`` touched (None: not known: read the log for them)."""

    def __init__(self) -> None:
        self.since: int | None = None
        self.ids: set[str] = set()

    def note(self, chunk: list[tuple[int, Event]]) -> None:
        """Add what a folded chunk touched."""
        if self.since is not None:
            self.ids |= touched(chunk)

    def lost(self) -> None:
        """Events were folded without being seen here."""
        self.since, self.ids = None, set()

    def take(self, since: int, now: int) -> set[str] | None:
        """The ids touched from event ``since`` + 1 to ``now`` (None: not known); then start again at ``now``."""
        ids = self.ids if self.since == since else None
        self.since, self.ids = now, set()
        return ids


class Rebase:
    """When the read model under the in-memory overlay is opened again, and the child that moves it on."""

    #: The most events folded in memory over a read model before it is moved on.
    EVENTS = 50_000

    def __init__(self, kind: str, seq: int, path: str | None = None) -> None:
        self.kind, self.seq, self.path = kind, seq, path
        self._mark = _file_mark(path) if kind == "hub" and path else None
        self._child: subprocess.Popen[bytes] | None = None

    def due(self, seq: int) -> bool:
        """Whether to open the read model again now: a Hub's file the Hub has written since."""
        # A live Hub stores what it folds a batch at a time: opening its file again folds only the
        # events past its last batch, where folding every new event here cost a Hub beside a
        # watched dashboard a quarter of its throughput (two cores, both folding the same events).
        if self.kind != "hub" or self.path is None:
            return False
        try:
            return _file_mark(self.path) != self._mark or seq - self.seq > self.EVENTS
        except InterfaceError:  # the Hub's file is gone: the read model is chosen again
            return True

    def maybe_start(self, log: TaskLog, seq: int) -> None:
        """Start a `tasklog index` child when the overlay over the readers' file holds too much."""
        if self.kind in ("log directory", "cache") and self._child is None and seq - self.seq > self.EVENTS:
            self._child = subprocess.Popen([sys.executable, "-m", "tasklog", "index", "--log", log.path],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE)

    def ready(self) -> bool:
        """Whether the child finished (failed: said, and tried again later)."""
        child = self._child
        if child is None or child.poll() is None:
            return False
        if child.returncode != 0:
            assert child.stderr is not None
            print(f"tasklog serve: catching the read model up failed: {child.stderr.read().decode().strip()}",
                  file=sys.stderr)
            self._child, self.seq = None, self.seq + self.EVENTS  # not again at once
            return False
        return True

    def stop(self) -> None:
        """End the child, if any (the next reader goes on from where it got)."""
        if self._child is not None and self._child.poll() is None:
            self._child.terminate()
            self._child.wait()


def _file_mark(path: str) -> tuple[float, int]:
    """What changes when a SQLite file (WAL mode: the -wal beside it) is written."""
    marks = []
    for name in (path, f"{path}-wal"):
        try:
            st = os.stat(name)
        except FileNotFoundError:
            continue
        marks.append((st.st_mtime, st.st_size))
    if not marks:
        raise InterfaceError(f"{path}: no such projection (start `tasklog follow` to make it)")
    return max(m[0] for m in marks), sum(m[1] for m in marks)
