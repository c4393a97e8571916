"""What the worker process answers: every read the API makes, by name, from the source it holds.

``Reading`` is the worker's state (the source and the task table); ``OPS`` names each read the
API asks for, and ``answer`` runs one after bringing the source up to the log. Nothing here
knows about HTTP: the worker (``tasklog.serve.worker``) carries requests and answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from projections.summary import log_stats

from ..lifecycle import STATES
from ..views.export import write_records
from . import answers, lanes, metrics
from .source import Source
from .tasks import Arrays, TaskTable

__all__ = ["Reading", "OPS", "answer"]


class Reading:
    """The worker's state: the source it reads and the task table kept from it."""

    def __init__(self, log_dir: str | None, spec: str | None) -> None:
        self.source = Source(log_dir, spec)
        self.table = TaskTable()

    def refresh(self, table: bool = False) -> int:
        """Bring the source up to the log (and the task table too, for the pages watching); its checkpoint."""
        self.source.refresh()
        if table:
            self._update_table()
        return self.source.projection.last_seq

    def arrays(self) -> Arrays:
        """The task table as of the source's projection."""
        self._update_table()
        return self.table.arrays()

    def _update_table(self) -> None:
        proj = self.source.projection
        ids = self.source.touched.take(self.table.seq, proj.last_seq)
        self.table.update(proj, self.source.log, ids)

    def stats(self) -> dict[str, Any]:
        """What ``tasklog stats --json`` prints for the log; a stream-fed projection's own figures."""
        proj = self.source.projection
        if self.source.log is not None:
            return log_stats(self.source.log, proj).as_dict()
        return {"projection": proj.spec, "by_state": {s: proj.tasks_by("state").get(s, 0) for s in STATES},
                "hubs": [[name, identity, seq] for identity, (name, seq) in sorted(proj.hubs.items())]}

    def export(self, query: dict[str, Any], keys: list[str] | None, fmt: str, path: str) -> int:
        """Write the matches of ``query`` to ``path`` (a stream-fed projection's; a log's go through a child)."""
        with open(path, "wb") as out:
            return write_records(self.source.projection.iter_records(query, keys=keys), fmt, out, keys=keys)

    def close(self) -> None:
        """Close the source."""
        self.source.close()


def _metrics(r: Reading) -> tuple[bytes, str]:
    return metrics.exposition(r.source, r.arrays())


#: Every read the API asks the worker for: name -> what answers it.
OPS: dict[str, Callable[..., Any]] = {
    "refresh": Reading.refresh,
    "page": lambda r, **kw: answers.page(r.source, **kw),
    "count": lambda r, query: r.source.projection.count(query),
    "task": lambda r, msg_id: answers.task(r.source, msg_id),
    "overview": lambda r: answers.overview(r.source, r.arrays()),
    "timeline": lambda r, **kw: lanes.lanes(r.arrays(), **kw),
    "hubs": lambda r: answers.hubs(r.source),
    "stats": Reading.stats,
    "metrics": _metrics,
    "export": Reading.export,
    "log_path": lambda r: None if r.source.log is None else r.source.log.path,
}


def answer(reading: Reading, op: str, kwargs: dict[str, Any]) -> Any:
    """Run read ``op``, the source brought up to the log first."""
    if op != "refresh":
        reading.source.refresh()
    return OPS[op](reading, **kwargs)
