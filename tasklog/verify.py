"""Read-only checks over a whole log: ``stats`` and ``verify``."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import lmdb

from . import codec, retention
from .baseline import Baseline
from .errors import TaskLogError
from .events import task_ids
from .lifecycle import STATES, Lifecycle
from .log import TaskLog
from .progress import Progress
from .store import Store
from .streamindex import LegacyStreams, StreamIndex

__all__ = ["LogStats", "STATES", "stats", "with_log_figures", "verify", "check_index", "event_types"]


@dataclass
class LogStats:
    """Counts per event type, the sequence range and the size on disk."""

    events: int = 0
    first_seq: int = 0
    last_seq: int = 0
    disk_bytes: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    start_seq: int = 1
    snapshots: list[int] = field(default_factory=list)
    #: Tasks by their state after the log's events (see STATES), by engine and by queue (None: none).
    by_state: Counter[str | None] = field(default_factory=Counter)
    by_engine: Counter[str | None] = field(default_factory=Counter)
    by_queue: Counter[str | None] = field(default_factory=Counter)
    #: When the first and the last event still in the log were committed (UTC).
    first_commit: datetime | None = None
    last_commit: datetime | None = None
    #: The snapshot the tasks' states start from (a pruned log's; None: from the first event).
    tasks_from: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """An Extended-JSON-ready dict of the figures (the commit times as datetimes: ``$date``)."""
        return {"events": self.events, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "start_seq": self.start_seq, "snapshots": self.snapshots,
                "disk_bytes": self.disk_bytes, "by_type": dict(sorted(self.by_type.items())),
                "by_state": {s: self.by_state.get(s, 0) for s in STATES},
                "by_engine": _named(self.by_engine), "by_queue": _named(self.by_queue),
                "first_commit": self.first_commit, "last_commit": self.last_commit, "tasks_from": self.tasks_from}


def _named(counts: Counter[str | None]) -> list[tuple[str | None, int]]:
    # Pairs, not an object: no key could stand for "none" that an engine could not be named (an
    # engine called "(none)" was merged with the tasks that have no engine).
    return sorted(counts.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))


def stats(log: TaskLog, progress: Progress | None = None, base: Baseline | None = None) -> LogStats:
    """Count the events of ``log`` by type and its tasks by state, every figure from one read transaction
    (the states from the tasks of ``base``, a snapshot, and the events after it, if given)."""
    # Figures read one by one under a live writer disagreed ("events": 13100, "last_seq": 12800).
    by_type: Counter[str] = Counter()
    life = Lifecycle(None if base is None else {task.msg_id: task for task in base.tasks()})
    after = 0 if base is None else base.seq
    with log.view() as view:
        out = LogStats(first_seq=view.first_seq, last_seq=view.last_seq, start_seq=view.start_seq,
                       events=len(view))
        for seq, raw in view.raw():
            try:
                event = codec.decode(raw, seq)
            except TaskLogError:
                by_type["(unreadable)"] += 1
                continue
            by_type[event.type] += 1
            if seq > after:
                life.apply(event)
            if progress is not None:
                progress.update()
    out.by_type = by_type
    out.tasks_from = None if base is None else base.seq
    out.by_state = Counter(task.state for task in life.tasks.values())
    out.by_engine = Counter(task.engine_uuid for task in life.tasks.values())
    out.by_queue = Counter(task.queue for task in life.tasks.values())
    return with_log_figures(out, log)


def with_log_figures(out: LogStats, log: TaskLog) -> LogStats:
    """``out`` with what the log says beside its events: commit times, bytes on disk, snapshots."""
    if out.events:
        times = log.committed_at([out.first_seq, out.last_seq])
        out.first_commit, out.last_commit = times[out.first_seq], times[out.last_seq]
    out.disk_bytes = log.disk_bytes()
    out.snapshots = retention.list_snapshots(log)
    return out


def event_types(log: TaskLog, start: int, stop: int) -> Iterator[str]:
    """The type of each of the log's events ``start..stop-1`` ("(unreadable)" for one that is not)."""
    for seq, raw in log.read_raw(start, stop):
        try:
            yield codec.decode(raw, seq).type
        except TaskLogError:
            yield "(unreadable)"


def verify(log: TaskLog, progress: Progress | None = None) -> list[str]:
    """Decode every event and snapshot, check checksums and density; return the problems found (empty: sound)."""
    problems: list[str] = []
    expected = log.start_seq
    try:
        for seq, raw in log.read_raw():
            if seq != expected:
                problems.append(f"gap: events {expected}..{seq - 1} are missing" if seq > expected
                                else f"event {seq} is out of order")
            expected = seq + 1
            try:
                codec.decode(raw, seq)
            except TaskLogError as exc:
                problems.append(str(exc))
            if progress is not None:
                progress.update()
    except lmdb.Error as exc:
        problems.append(f"LMDB error after event {expected - 1}: {exc}")
    problems += check_index(log)
    for seq in retention.list_snapshots(log):
        try:
            retention.check_snapshot(log, seq)
        except TaskLogError as exc:
            problems.append(str(exc))
    return problems


def check_index(log: TaskLog) -> list[str]:
    """Check the stream index against the events: every entry names an event that names its task,
    and there are as many entries as the events name tasks (so none is missing)."""
    store = log.store
    index = store.stream_index
    if index is None:
        return [] if log.readonly else ["the log has no stream index (a writer builds it on open)"]
    with store.reader() as txn:  # one transaction: a live writer cannot make the two sides disagree
        try:
            problems = _index_problems(txn, store, index)
        except TaskLogError as exc:  # counters too damaged to read: said, not a traceback
            problems = [f"stream index: {exc}"]
        for key, raw in txn.cursor(db=store.kept) if store.kept is not None else ():
            try:
                codec.decode(raw, codec.unpack_key(key))
            except TaskLogError as exc:
                problems.append(f"kept {exc}")
    return problems[:100]


def _index_problems(txn: lmdb.Transaction, store: Store, index: StreamIndex | LegacyStreams) -> list[str]:
    """What the stream index ``index`` says that the events do not."""
    expected = 0
    for key, raw in txn.cursor(db=store.events):
        seq = codec.unpack_key(key)
        with contextlib.suppress(TaskLogError):  # a corrupt event: verify's own pass reports it
            expected += len(set(task_ids(codec.decode(raw, seq))))
    problems: list[str] = list(index.inconsistencies(txn))
    entries = 0
    for msg_id, seq in index.entries(txn):
        entries += 1
        stored = txn.get(codec.pack_key(seq), db=store.events)
        if stored is None:
            problems.append(f"stream index: {msg_id!r} lists event {seq}, which is not in the log")
            continue
        try:
            named = task_ids(codec.decode(stored, seq))
        except TaskLogError:
            entries -= 1  # a corrupt event: verify's own pass reports it, and it is not counted above
            continue
        if msg_id not in named:
            problems.append(f"stream index: {msg_id!r} lists event {seq}, which does not name it")
    if entries != expected:
        problems.append(f"stream index: {entries} entries, but the events name tasks {expected} times")
    return problems
