"""``/metrics``: the log's figures in Prometheus' text exposition format, through prometheus_client.

Computed at each scrape from what the server reads (one registry per scrape, nothing global),
so they agree with ``tasklog stats`` as of the same commit. Names follow Prometheus' conventions
(base units, ``_total`` for counters, ``_bytes``/``_seconds``); the table below is the reference.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from projections.summary import log_stats

from ..errors import InterfaceError
from ..lifecycle import STATES

if TYPE_CHECKING:
    from .source import Source
    from .tasks import Arrays

__all__ = ["exposition", "METRICS"]

#: Every metric: name -> (type, help). README's table is made from the same names.
METRICS: dict[str, tuple[str, str]] = {
    # A gauge, not a counter: a prune removes events, and a counter must never go down.
    "tasklog_log_events": ("gauge", "Events the log holds, by type (a prune removes the oldest)."),
    "tasklog_tasks": ("gauge", "Tasks by lifecycle state (pending, running, completed, failed, resubmitted, dropped)."),
    "tasklog_task_queue_wait_seconds": ("histogram", "Seconds from a task's submission to its start."),
    "tasklog_task_run_seconds": ("histogram", "Seconds from a task's start to its completion."),
    "tasklog_log_size_bytes": ("gauge", "Bytes the log takes on disk (its snapshots included)."),
    "tasklog_log_last_seq": ("gauge", "The sequence number of the log's last committed event."),
    "tasklog_last_commit_timestamp_seconds": ("gauge", "When the log's last event was committed (UNIX time)."),
    "tasklog_folded_seq": ("gauge", "The last event folded into what the server answers from."),
    "tasklog_fold_lag_events": ("gauge", "Events committed to the log but not yet folded into the read model."),
    "tasklog_commit_visible_seconds": ("histogram", "Seconds from a commit to the server answering with it."),
    "tasklog_hub_checkpoint": ("gauge", "A stream-fed projection: the last event of each hub's log folded."),
    "tasklog_hub_checkpoint_age_seconds": ("gauge", "A stream-fed projection: seconds since each hub's checkpoint "
                                                    "last moved (its shipping lag, when the hub is busy)."),
}
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def exposition(source: Source, arrays: Arrays) -> tuple[bytes, str]:
    """The metrics of ``source`` (its task table ``arrays``) in Prometheus' text format, and its content type."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
    except ImportError:
        raise InterfaceError("/metrics needs prometheus_client: pip install 'tasklog[serve]'") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(list(_families(source, arrays))))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        return self.families


def _families(source: Source, arrays: Arrays) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    proj = source.projection
    events = GaugeMetricFamily("tasklog_log_events", METRICS["tasklog_log_events"][1], labels=["type"])
    tasks = GaugeMetricFamily("tasklog_tasks", METRICS["tasklog_tasks"][1], labels=["state"])
    if source.log is not None:
        st = log_stats(source.log, proj)
        for kind, n in sorted(st.by_type.items()):
            events.add_metric([kind], n)
        yield events
        yield _gauge("tasklog_log_size_bytes", st.disk_bytes)
        yield _gauge("tasklog_log_last_seq", source.log.last_seq)
        if st.last_commit is not None:
            yield _gauge("tasklog_last_commit_timestamp_seconds", st.last_commit.timestamp())
        yield _gauge("tasklog_fold_lag_events", max(source.log.last_seq - proj.last_seq, 0))
        by_state = st.by_state
    else:
        by_state = proj.tasks_by("state")
        yield from _hub_families(source)
    for state in STATES:  # every state, none left out for being 0 (an alert on "running" would see no series)
        tasks.add_metric([state], by_state.get(state, 0))
    yield tasks
    yield _gauge("tasklog_folded_seq", proj.last_seq)
    yield _histogram("tasklog_task_queue_wait_seconds", arrays.started, arrays.submitted, _DURATION_BUCKETS)
    yield _histogram("tasklog_task_run_seconds", arrays.completed, arrays.started, _DURATION_BUCKETS)
    seen = np.array(source.latencies, dtype=np.float64)
    yield _from_values("tasklog_commit_visible_seconds", seen, _LATENCY_BUCKETS)


def _gauge(name: str, value: float) -> Any:
    from prometheus_client.core import GaugeMetricFamily
    return GaugeMetricFamily(name, METRICS[name][1], value=value)


def _histogram(name: str, end: np.ndarray[Any, Any], start: np.ndarray[Any, Any], buckets: tuple[float, ...]) -> Any:
    both = (end >= 0) & (start >= 0)
    return _from_values(name, np.maximum(end[both] - start[both], 0) / 1e6, buckets)


def _from_values(name: str, values: np.ndarray[Any, Any], buckets: tuple[float, ...]) -> Any:
    from prometheus_client.core import HistogramMetricFamily
    counts = [int(np.count_nonzero(values <= b)) for b in buckets]
    pairs = [(repr(b), c) for b, c in zip(buckets, counts)] + [("+Inf", int(values.size))]
    return HistogramMetricFamily(name, METRICS[name][1], buckets=pairs, sum_value=float(values.sum()))


def _hub_families(source: Source) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    checkpoint = GaugeMetricFamily("tasklog_hub_checkpoint", METRICS["tasklog_hub_checkpoint"][1],
                                   labels=["hub", "log"])
    age = GaugeMetricFamily("tasklog_hub_checkpoint_age_seconds", METRICS["tasklog_hub_checkpoint_age_seconds"][1],
                            labels=["hub", "log"])
    now = time.time()
    for identity, (name, seq) in sorted(source.projection.hubs.items()):
        checkpoint.add_metric([name, identity], seq)
        age.add_metric([name, identity], source.still_for(identity, now))
    yield checkpoint
    yield age
