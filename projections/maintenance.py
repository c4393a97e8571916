"""Snapshots and retention that run by themselves beside a long-running writer (a Hub).

A daemon thread wakes every few seconds; when ``every_events`` events or ``every_seconds``
seconds have passed since the last snapshot (and something was appended), it takes one, so a
restarted controller or a ``tasklog query`` starts from it instead of the first event. With a
retention policy (off by default) it then prunes the events the snapshot covers that are older
than ``retain_seconds`` or, while the log is over ``retain_bytes``, all of them. A prune keeps
the events whose buffers the snapshot's records still need (see ``tasklog.retention.prune``).

The snapshot itself is folded in a child process (``projections.snapshotter``, which reads the
log read-only beside the writer): folded in a thread, it held the writer's process's GIL, and a
Hub's loop, waiting on the committer, stalled (BENCHMARKS.md, "Snapshots beside a Hub").
``in_process=True`` folds in the thread instead (tests, small logs).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tasklog import retention
from tasklog.errors import InterfaceError, TaskLogError
from tasklog.log import TaskLog

from . import snapshot
from .errors import ProjectionError

__all__ = ["Policy", "Maintenance", "SnapshotFailed"]

_log = logging.getLogger("tasklog.maintenance")


class SnapshotFailed(ProjectionError):
    """The child process that takes a snapshot failed (its last line of stderr says why)."""


@dataclass(frozen=True)
class Policy:
    """When to snapshot and what to prune: 0 turns a setting off."""

    every_events: int = 100_000
    every_seconds: float = 3600.0
    retain_seconds: float = 0.0
    retain_bytes: int = 0
    poll: float = 5.0

    def __post_init__(self) -> None:
        for name in ("every_events", "every_seconds", "retain_seconds", "retain_bytes"):
            if getattr(self, name) < 0:
                raise InterfaceError(f"{name} must be >= 0 (0 turns it off), got {getattr(self, name)!r}")
        if self.poll <= 0:
            raise InterfaceError(f"poll must be > 0, got {self.poll!r}")


@dataclass
class _Counts:
    snapshots: int = 0
    pruned_events: int = 0
    errors: list[str] = field(default_factory=list)


class Maintenance:
    """The thread that takes snapshots and applies a retention policy to one open log."""

    def __init__(self, log: TaskLog, policy: Policy, in_process: bool = False) -> None:
        self.log = log
        self.policy = policy
        self.in_process = in_process
        self.counts = _Counts()
        snaps = retention.list_snapshots(log)
        self._last_seq = snaps[-1] if snaps else 0
        self._last_time = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tasklog-maintenance", daemon=True)

    def start(self) -> Maintenance:
        """Start the thread (nothing to do when both snapshot settings are 0)."""
        if self.policy.every_events or self.policy.every_seconds:
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread; a snapshot in progress finishes first."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def due(self) -> bool:
        """Whether a snapshot is due now."""
        p = self.policy
        fresh = self.log.last_seq - self._last_seq
        if fresh <= 0:
            return False
        return bool((p.every_events and fresh >= p.every_events)
                    or (p.every_seconds and time.monotonic() - self._last_time >= p.every_seconds))

    def run_once(self) -> bool:
        """Snapshot and prune if due; return whether a snapshot was taken."""
        if not self.due():
            return False
        at = self.log.last_seq
        if self.in_process:
            snapshot.take(self.log, at)
        else:
            self._take_in_child(at)
        self._last_seq, self._last_time = at, time.monotonic()
        self.counts.snapshots += 1
        _log.info("tasklog snapshot at event %d", at)
        self._retain(at)
        return True

    def _take_in_child(self, at: int) -> None:
        cmd = [sys.executable, "-m", "projections.snapshotter", "--log", self.log.path, "--at", str(at)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise SnapshotFailed(f"the snapshot at event {at} failed: {why}")

    def _retain(self, snap: int) -> None:
        p = self.policy
        before = 0
        if p.retain_bytes and self.log.disk_bytes() > p.retain_bytes:
            before = snap + 1
        if p.retain_seconds:
            cut = self.log.seq_at(datetime.fromtimestamp(time.time() - p.retain_seconds, timezone.utc))
            before = max(before, min(cut + 1, snap + 1))
        covered = any(self.log.start_seq - 1 <= s < before for s in retention.list_snapshots(self.log))
        if before > self.log.start_seq and covered:
            report = retention.prune(self.log, before)
            self.counts.pruned_events += report.removed
            _log.info("tasklog retention pruned %d events; the log starts at %d", report.removed,
                      report.start_seq)

    def _run(self) -> None:
        while not self._stop.wait(self.policy.poll):
            try:
                self.run_once()
            except (TaskLogError, OSError) as exc:  # ProjectionError is a TaskLogError
                # The Hub goes on: its log is whole, only a snapshot or prune failed (a full disk).
                self.counts.errors.append(str(exc))
                _log.warning("tasklog maintenance failed: %s", exc)

    def __enter__(self) -> Maintenance:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
