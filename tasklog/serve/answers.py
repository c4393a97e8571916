"""The JSON API's answers, computed on the worker thread from the source's projection.

Each returns an Extended-JSON-ready dict (``tasklog.views.jsonfmt.dumps`` encodes it, as the
CLI prints). Charts of the whole cluster read the task table's arrays (``tasklog.serve.tasks``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from projections.base import Projection
from projections.fold import is_tombstone
from projections.paging import Cursor

from ..errors import InterfaceError
from ..lifecycle import STATES, TaskState
from ..views.story import story
from .source import Source
from .tasks import Arrays

__all__ = ["page", "task", "lineage", "sized", "overview", "hubs", "TABLE_KEYS"]

#: The columns the tasks table shows unless asked for others.
TABLE_KEYS = ["msg_id", "submitted", "started", "completed", "engine_uuid", "client_uuid", "queue", "label"]
_BUCKETS = 60
# Durations charted on a log scale, from 100 µs to about 28 hours.
_EDGES = np.logspace(-4, 5, 37)
_ENGINES_LISTED = 40


def overview(source: Source, times: Arrays) -> dict[str, Any]:
    """Tasks by state, throughput over time, queue wait and run time, failures, engines busy."""
    proj = source.projection
    states = proj.tasks_by("state")
    return {"source": source.figures(), "tasks": times.n,
            "states": {s: states.get(s, 0) for s in STATES},
            "throughput": _throughput(times), "wait": _durations(times.started, times.submitted),
            "run": _durations(times.completed, times.started), "engines": _busy(times),
            "failures": _latest_failures(proj, times)}


def _throughput(t: Arrays) -> dict[str, Any]:
    """Tasks submitted, completed and failed per bucket of the log's time span."""
    span = _span(t)
    if span is None:
        return {"start": None, "step_s": 0, "submitted": [], "completed": [], "failed": []}
    lo, hi = span
    step = max((hi - lo + 1) // _BUCKETS + 1, 1)

    def per_bucket(values: np.ndarray[Any, Any]) -> list[int]:
        known = values[values >= 0]
        return np.bincount((known - lo) // step, minlength=_BUCKETS)[:_BUCKETS].tolist()  # type: ignore[no-any-return]
    done = np.where(t.failed, -1, t.completed)
    return {"start": lo, "step_s": step / 1e6, "submitted": per_bucket(t.submitted), "completed": per_bucket(done),
            "failed": per_bucket(np.where(t.failed, t.completed, -1))}


def _span(t: Arrays) -> tuple[int, int] | None:
    """The first and last time any task was submitted, started or completed (µs)."""
    known = [k for k in (a[a >= 0] for a in (t.submitted, t.started, t.completed)) if k.size]
    if not known:
        return None
    return int(min(k.min() for k in known)), int(max(k.max() for k in known))


def _durations(end: np.ndarray[Any, Any], start: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Seconds from ``start`` to ``end`` where both are known: quantiles and a log-scale histogram."""
    both = (end >= 0) & (start >= 0)
    secs = np.maximum(end[both] - start[both], 0) / 1e6
    if not secs.size:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "edges": [], "counts": []}
    p50, p90, p99 = np.quantile(secs, [0.5, 0.9, 0.99]).tolist()
    counts = np.histogram(np.clip(secs, _EDGES[0], _EDGES[-1]), bins=_EDGES)[0]
    return {"n": int(secs.size), "p50": p50, "p90": p90, "p99": p99, "max": float(secs.max()),
            "edges": _EDGES.tolist(), "counts": counts.tolist()}


def _busy(t: Arrays) -> dict[str, Any]:
    """Engines: how many ran tasks, and the tasks running now on the busiest."""
    running = (t.started >= 0) & (t.completed < 0)
    codes = t.engine[running]
    now = Counter({t.engines[c]: int(n) for c, n in enumerate(np.bincount(codes[codes >= 0])) if n})
    known = np.unique(t.engine[t.engine >= 0]).size
    return {"engines": int(known), "busy": len(now), "running": int(running.sum()),
            "top": [[e, n] for e, n in sorted(now.items(), key=lambda en: (-en[1], en[0]))[:_ENGINES_LISTED]]}


def _latest_failures(proj: Projection, t: Arrays, most: int = 10) -> list[dict[str, Any]]:
    """The tasks that failed last, from the task table: a query for them read every record of a
    cluster that never failed (0.75 s an overview, at every commit, beside a Hub)."""
    failed = np.flatnonzero(t.failed)
    latest = failed[np.argsort(-t.completed[failed], kind="stable")[:most]]
    ids = [t.ids[int(t.rows[i])] for i in latest]
    stored = proj.records_of(set(ids))
    return [_failure({**rec, "msg_id": m}) for m in ids  # read, never changed: no copy
            if (rec := stored.get(m)) is not None and not is_tombstone(rec)]


def _failure(rec: dict[str, Any]) -> dict[str, Any]:
    content = rec.get("result_content")
    content = content if isinstance(content, dict) else {}
    return {"msg_id": rec["msg_id"], "engine_uuid": rec.get("engine_uuid"), "completed": rec.get("completed"),
            "label": rec.get("label"), "status": content.get("status"),
            "ename": content.get("ename"), "evalue": content.get("evalue")}


def page(source: Source, query: dict[str, Any], keys: list[str] | None, sort: str, descending: bool,
         limit: int, after: Cursor | None) -> dict[str, Any]:
    """A page of the tasks table: the records, the cursor to the next page, when it was read."""
    found = source.projection.find_page(query, keys=keys or TABLE_KEYS, sort=sort, descending=descending,
                                        limit=limit, after=after)
    return {"records": [sized(r) for r in found.records], "after": found.after,
            "folded_seq": source.projection.last_seq}


def task(source: Source, msg_id: str) -> dict[str, Any]:
    """A task: its record (buffer sizes, not bytes), its story (every event) and its resubmit chain."""
    proj = source.projection
    missing: str | None = None
    try:
        whole = proj.get_record(msg_id)
    except KeyError as exc:
        whole, missing = None, str(exc.args[0]) if exc.args else f"no task {msg_id!r}"
    record = None if whole is None else sized(whole)
    told: dict[str, Any] | None = None
    if source.log is not None:
        try:
            told = sized(story(source.log, msg_id).as_dict())
        except InterfaceError:
            told = None
    if record is None and told is None:
        raise KeyError(missing or f"no task {msg_id!r}")  # the API's 404
    state = "dropped" if whole is None else TaskState.of_record(msg_id, whole).state
    return {"msg_id": msg_id, "state": state, "record": record, "missing": missing, "story": told,
            "chain": told["tasks"] if told else lineage(proj, msg_id), "folded_seq": proj.last_seq}


def lineage(proj: Projection, msg_id: str, most: int = 100) -> list[str]:
    """The resubmit chain through ``msg_id`` from the records' links both ways (a stream-fed view has no log)."""
    chain, seen = [msg_id], {msg_id}
    for link, ahead in (("resubmitted_from", False), ("resubmitted", True)):
        at = msg_id
        while len(chain) < most:
            rec = proj.peek(at)
            nxt = rec.get(link) if rec is not None else None
            if not isinstance(nxt, str) or nxt in seen:
                break
            seen.add(nxt)
            chain.insert(len(chain) if ahead else 0, nxt)
            at = nxt
    return chain


def sized(value: Any) -> Any:
    """``value`` with every bytes object replaced by its size (``{"$size": n}``): what pages show of buffers."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$size": len(value)}
    if isinstance(value, dict):
        return {k: sized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sized(v) for v in value]
    return value


def hubs(source: Source) -> dict[str, Any]:
    """For a stream-fed projection: each hub's checkpoint and how long since it last moved."""
    proj = source.projection
    now = time.time()
    rows = [{"hub": name, "log": identity, "checkpoint": seq, "still_s": round(source.still_for(identity, now), 3)}
            for identity, (name, seq) in sorted(proj.hubs.items(), key=lambda kv: kv[1][0])]
    return {"hubs": rows, "fed": bool(rows), "folded_seq": proj.last_seq}
