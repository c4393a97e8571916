"""The log's figures (``tasklog stats``) from a projection caught up to it: tasks by state from its
records, events by type from its counts (``projections.counts``), the rest from the log's own
metadata. Nothing here reads the events, but for the block a prune cut through.
"""

from __future__ import annotations

from functools import partial

from tasklog.log import TaskLog
from tasklog.verify import LogStats, event_types, with_log_figures

from .base import Projection

__all__ = ["log_stats"]


def log_stats(log: TaskLog, proj: Projection) -> LogStats:
    """What ``tasklog.verify.stats`` counts, as of ``proj``'s checkpoint (a live writer's later
    events are not counted, so every figure is of the same events)."""
    last = proj.last_seq
    with log.view() as view:
        start = view.start_seq
    first = start if last >= start else 0
    out = LogStats(events=max(last - start + 1, 0), first_seq=first, last_seq=last if first else 0,
                   start_seq=start)
    out.by_type = proj.counted.in_log(start, last, partial(event_types, log))
    out.by_state = proj.tasks_by("state")
    out.by_engine, out.by_queue = proj.tasks_by("engine_uuid"), proj.tasks_by("queue")
    out = with_log_figures(out, log)
    # Named, not read: the read model holds the tasks (a damaged snapshot refused stats alone).
    out.tasks_from = max((seq for seq in out.snapshots if seq < start), default=None) if start > 1 else None
    return out
