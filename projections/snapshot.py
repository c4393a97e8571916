"""Snapshots of the folded records, and replays that start from them.

``take`` folds the log (starting from the newest older snapshot, so taking one
every day costs a day of events) and stores the records, tombstones included,
through ``tasklog.retention``; ``catch_up`` brings any projection to a point in
the log, restoring a snapshot first when the events before it were pruned or
when the projection starts empty; ``view_base`` tells the log's own views (timeline, report,
stats) which snapshot a pruned log's tasks start from.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tasklog import retention
from tasklog.baseline import Baseline
from tasklog.lifecycle import TaskState
from tasklog.log import TaskLog

from . import catchup
from .base import Projection
from .catchup import gc_paused
from .errors import ProjectionError
from .fold import BUFFER_KEYS, Anomalies, apply_event, ref_seq, refer_buffers, settle, task_of

__all__ = ["SnapshotInfo", "take", "catch_up", "view_base"]


@dataclass(frozen=True)
class SnapshotInfo:
    """Where a snapshot was written and what it holds."""

    seq: int
    records: int
    path: str
    base: int


def take(log: TaskLog, at: int | None = None, progress: Callable[[int], None] | None = None) -> SnapshotInfo:
    """Fold the log up to event ``at`` (default: the last) and write it as a snapshot."""
    at = log.last_seq if at is None else at
    base = max((s for s in retention.list_snapshots(log) if s <= at), default=0)
    records: dict[str, dict[str, Any] | None] = {}
    anomalies: Anomalies = Counter()
    with gc_paused():
        if base:
            header, items = _read(log, base)
            anomalies = Counter(header.get("anomalies", {}))
            records = {rec["msg_id"]: rec for rec in items}
        elif log.start_seq > 1:
            raise ProjectionError(f"events before {log.start_seq} were pruned and no snapshot covers them")
        for chunk in log.read_chunks(base + 1, at + 1):
            for seq, event in chunk:
                apply_event(records, seq, event, anomalies)
                refer_buffers(records, seq, event)  # buffers stay in the log: a snapshot stays small
            if progress is not None:
                progress(len(chunk))
        settle(records, records)
        header = {"seq": at, "records": len(records), "anomalies": dict(anomalies),
                  "created": datetime.now(timezone.utc), "log_identity": log.identity,
                  "keeps": _referenced(records.values())}
        path = retention.write_snapshot(log, at, header, (r for r in records.values() if r is not None))
        count = len(records)
        # Freed while the collector is still paused: re-enabled with millions of live objects
        # counted as new, its next collection stopped every thread of a Hub (BENCHMARKS.md).
        records.clear()
    return SnapshotInfo(at, count, path, base)


def _referenced(records: Iterable[dict[str, Any] | None]) -> list[int]:
    """The events whose buffers the records refer to: a prune keeps them for this snapshot."""
    seqs = {ref_seq(rec.get(key)) for rec in records if rec is not None for key in BUFFER_KEYS}
    return sorted(s for s in seqs if s is not None)


def _read(log: TaskLog, seq: int) -> tuple[dict[str, Any], Iterator[Any]]:
    """A snapshot of this log: one copied in from another log is refused, not folded in."""
    header, items = retention.read_snapshot(log, seq)
    theirs = header.get("log_identity")
    if theirs is not None and log.identity is not None and theirs != log.identity:
        raise ProjectionError(f"snapshot {seq} in {log.path} was taken of log {theirs}, not of this log "
                              f"({log.identity}); remove it")
    return header, items


def _restore(proj: Projection, log: TaskLog, seq: int) -> None:
    header, items = _read(log, seq)
    proj.restore(items, seq, header.get("anomalies", {}))


def _pick(log: TaskLog, proj: Projection, stop: int | None) -> int | None:
    """The snapshot to start from: needed when events were pruned, worth it when starting empty."""
    gap = proj.last_seq + 1 < log.start_seq
    if not gap and proj.last_seq:
        return None
    fits = [s for s in _usable(log) if s > proj.last_seq and (stop is None or s <= stop)]
    return fits[-1] if fits else None


def _usable(log: TaskLog) -> list[int]:
    """The snapshots the log's events continue from (a state past a prune starts at one of them)."""
    return [s for s in retention.list_snapshots(log) if s >= log.start_seq - 1]


def catch_up(proj: Projection, log: TaskLog, *, start: int | None = None, stop: int | None = None,
             progress: Callable[[int], None] | None = None) -> int:
    """Bring ``proj`` to event ``stop`` (default: the last), from a snapshot when it must or can.

    A projection folded from another log is refused. Without ``stop`` a pinned projection is
    released to follow the log again.
    """
    proj.bind(log.identity)
    proj.read_from(log)
    if stop is None:
        proj.pin(None)
    if proj.last_seq > log.last_seq:
        # The projection applied events an async log had not yet committed when its process died:
        # those numbers will be reused by new events, so the log's own history must be rebuilt.
        warnings.warn(f"{proj.spec} is at event {proj.last_seq}, past the log's last event {log.last_seq} "
                      "(the log lost uncommitted async events in a crash); rebuilding it", stacklevel=2)
        proj.clear()
    if stop is not None and proj.last_seq > stop:
        raise ProjectionError(f"{proj.spec} is already at event {proj.last_seq}, past {stop}; "
                              "replay with --rebuild to see an earlier state")
    snap = _pick(log, proj, stop) if start is None else None
    if snap is not None:
        _restore(proj, log, snap)
    first = max(proj.last_seq + 1, start or 1)
    if first < log.start_seq and (stop is None or stop >= first):
        raise _pruned(log, proj.spec, first)
    return catchup.apply_chunks(proj, log.read_chunks(first, None if stop is None else stop + 1), progress=progress)


def _pruned(log: TaskLog, who: str, first: int) -> ProjectionError:
    usable = _usable(log)
    earliest = f"event {usable[0]} (its oldest snapshot)" if usable else "none: no snapshot covers the gap"
    return ProjectionError(f"{who} needs events {first}..{log.start_seq - 1}, which were pruned; "
                           f"the earliest state the log can rebuild is {earliest}")


def view_base(log: TaskLog, who: str, stop: int | None = None) -> Baseline | None:
    """Where a view of ``log`` up to event ``stop`` starts: None while the log holds every event
    from the first; past a prune, the newest snapshot at or before ``stop`` the log continues from.

    A state no snapshot rebuilds is refused as ``catch_up`` refuses it (``who`` names the view).
    """
    if log.start_seq <= 1:
        return None
    fits = [s for s in _usable(log) if stop is None or s <= stop]
    if not fits:
        raise _pruned(log, who, 1)
    seq = fits[-1]
    _read(log, seq)[1].close()  # type: ignore[attr-defined]  # checked now: a bad one fails before any output

    def tasks() -> Iterator[TaskState]:
        for rec in _read(log, seq)[1]:
            yield task_of(rec)
    return Baseline(seq, tasks)
