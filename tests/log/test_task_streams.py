"""Every task a stream (issue 13): the msg_id index, buffers by reference, eviction that re-folds,
prune that keeps what snapshots need, the schema-1 upgrade, and snapshots that run by themselves."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import projections
from projections.live import attach
from projections.maintenance import Maintenance, Policy
from tasklog import (
    Annotate,
    Complete,
    Drop,
    EventError,
    MissingEventError,
    Output,
    Resubmit,
    SchemaVersionError,
    Start,
    Submit,
    TaskLog,
    retention,
    task_ids,
)
from tasklog.codec import LOG_SCHEMA
from tasklog.demo import simulate
from tasklog.verify import verify

IDS = [f"t{i}" for i in range(6)]
_id = st.sampled_from(IDS)
_bufs = st.lists(st.binary(min_size=0, max_size=40), max_size=3)
EVENTS = st.one_of(
    st.builds(lambda m, b: Submit(m, content={"code": m}, buffers=b), _id, _bufs),
    st.builds(lambda m: Start(m, "engine-1"), _id),
    st.builds(lambda m, t: Output(m, "stdout", t), _id, st.text(max_size=5)),
    st.builds(lambda m, b: Complete(m, result_content={"status": "ok"}, result_buffers=b), _id, _bufs),
    st.builds(lambda m, n: Resubmit(m, n), _id, _id),
    st.builds(lambda ms: Drop(ms), st.lists(_id, min_size=1, max_size=2)),
    st.builds(lambda m, v: Annotate(m, {"label": v}), _id, st.text(max_size=3)),
)


def _answers(proj: projections.Projection, ids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in ids:
        try:
            out[m] = proj.get_record(m)
        except KeyError:
            out[m] = KeyError
    return out


def _done(m: str) -> Complete:
    return Complete(m, result_content={"status": "ok"}, result_buffers=[])


# Histories hypothesis found where the bounded dict answered otherwise than a full fold.
# The first: t1, evicted once completed, was re-folded when the next batch named it, from its
# stream up to the log's end -- that batch's own events included -- so t0 then read t1 as it
# was after the second resubmit and took the first resubmit, which the full fold refuses.
PING_PONG = [Start("t0", "engine-1"), Submit("t0", content={"code": "t0"}, buffers=[]), _done("t1"),
             Resubmit("t1", "t0"), Resubmit("t0", "t1")]
# The second: re-folding t0 read t1 once, at their first resubmit, and kept that state for the
# second, past t1's own submit in between, so it took the second resubmit the full fold refuses.
STALE_OTHER_SIDE = [Output("t1", "stdout", "x"), Resubmit("t1", "t0"), Submit("t1", content={"code": "t1"}),
                    Resubmit("t0", "t1"), _done("t0"), _done("t1")]


def _check_bounded_against_full(events: list[Any], mode: str, *, commit_each: bool = False) -> dict[str, Any]:
    """Append ``events`` three at a time (each three a commit of its own with ``commit_each``); check
    streams and the bounded dict; return the full fold's answers."""
    with tempfile.TemporaryDirectory() as tmp, TaskLog.open(os.path.join(tmp, "log"), mode) as log:
        unbounded = attach(log, "dict?buffers=inline")
        bounded = attach(log, "dict?record_limit=1&cull_fraction=1")
        for i in range(0, len(events), 3):
            log.append_many(events[i:i + 3])
            if commit_each:
                log.flush()  # async: the projections get each three as a batch of its own, as sync does
        log.flush()  # read() sees committed events only: unflushed, async compared no task at all
        named = sorted({m for _, ev in log.read() for m in task_ids(ev)})
        assert named
        for m in named:
            assert log.events_of(m) == [(s, ev) for s, ev in log.read() if m in task_ids(ev)]
        full = _answers(unbounded, named)
        assert _answers(bounded, named) == full
        assert log.events_of("never") == []
        assert verify(log) == []
        return full


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENTS, min_size=1, max_size=40), st.sampled_from(["sync", "async"]))
@example(PING_PONG, "sync")
@example(PING_PONG, "async")
@example(STALE_OTHER_SIDE, "sync")
@example(STALE_OTHER_SIDE, "async")
def test_streams_and_bounded_dict_match_a_full_read_on_random_histories(events: list[Any], mode: str) -> None:
    _check_bounded_against_full(events, mode)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_task_readmitted_by_a_batch_is_refolded_as_of_the_projection_not_the_log(mode: str) -> None:
    full = _check_bounded_against_full(PING_PONG, mode, commit_each=True)
    # The README's rule: t0 exists (submitted, another request) when t1 names it as its
    # resubmission, so that resubmit is refused; t0's own resubmit to t1 (a stub) is taken.
    assert full["t0"]["resubmitted_from"] is None and full["t0"]["resubmitted"] == "t1"
    assert full["t1"]["resubmitted_from"] == "t0" and full["t1"]["content"] == {"code": "t0"}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refold_reads_the_other_side_of_every_resubmit_as_it_was_then(mode: str) -> None:
    full = _check_bounded_against_full(STALE_OTHER_SIDE, mode, commit_each=True)
    # t1 was submitted (another request) before t0 named it: refused, t0 stays unlinked.
    assert full["t0"]["resubmitted_from"] == "t1" and full["t0"]["resubmitted"] is None
    assert full["t1"]["content"] == {"code": "t1"} and full["t1"]["resubmitted_from"] is None


def test_a_pinned_bounded_dict_refolds_an_evicted_task_as_of_its_pin(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.append_many([Submit("a"), _done("a"), Submit("b"), _done("b"), Annotate("a", {"label": "later"})])
        pinned = projections.replay(log, "dict?record_limit=1&cull_fraction=1", stop=4)
        assert pinned.evicted_count >= 1  # type: ignore[attr-defined]  # a was evicted, then asked for
        assert pinned.get_record("a")["label"] is None  # event 5 is past the pin
        assert projections.replay(log, "dict", stop=4).get_record("a")["label"] is None


def test_events_of_costs_only_the_tasks_own_events(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log"), "async") as log:
        log.append_many(list(simulate(3000, seed=5)))
        log.flush()
        m = next(ev.msg_id for _, ev in log.read() if isinstance(ev, Complete))
        calls = []
        original = log.read_chunks
        log.read_chunks = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[method-assign]
        mine = log.events_of(m)
        assert calls == []  # no scan: the index names the events
        assert [ev.type for _, ev in mine][:1] == ["submit"] and mine[-1][1].type == "complete"


def test_async_reads_its_own_uncommitted_events(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log"), "async", commit_interval=30) as log:
        log.submit("warm")
        log.flush()
        seq = log.submit("a", buffers=[b"\x00" * 10])
        assert log.last_seq < seq  # not committed yet: the commit interval is 30 s
        assert log.event(seq).buffers == [b"\x00" * 10]  # type: ignore[union-attr]
        assert [s for s, _ in log.events_of("a")] == [seq]
        proj = attach(log, "dict")
        done = log.complete("a", result_buffers=[b"r" * 5])
        assert proj.get_record("a")["result_buffers"] == [b"r" * 5]
        assert proj.peek("a")["result_buffers"] == {"tasklog_event": int(done)}  # type: ignore[index]
        with pytest.raises(MissingEventError, match="not committed"):
            log.event(done + 10)


def test_long_msg_ids_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.submit("é" * 127)  # 254 bytes: fine
        for bad in ("x" * 512, "é" * 300):
            with pytest.raises(EventError, match="at most 511 bytes"):
                log.submit(bad)
            with pytest.raises(EventError, match="at most 511 bytes"):
                log.resubmit("é" * 127, bad)
        assert len(log) == 1 and verify(log) == []


def _snapshot_then_prune(log: TaskLog) -> None:
    from projections import snapshot
    info = snapshot.take(log)
    retention.prune(log, info.seq + 1)


def test_prune_and_compaction_keep_streams_and_the_buffers_snapshots_refer_to(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with TaskLog.open(path) as log:
        log.submit("old", buffers=[b"request"])
        log.complete("old", result_buffers=[b"result"])
        log.submit("gone", buffers=[b"purged"])
        log.drop(["gone"])
        log.append_many(list(simulate(200, seed=2)))
        truth = projections.open("dict?buffers=inline", log=log).find_records({})
        _snapshot_then_prune(log)
        log.submit("new", buffers=[b"n"])
        assert log.start_seq > 5
        assert log.events_of("old") == []  # its events left the log (and its streams)
        assert log.event(1).buffers == [b"request"]  # type: ignore[union-attr]  # kept for the snapshot
        with pytest.raises(MissingEventError, match="was pruned"):
            log.event(3)  # the purged task's request: no snapshot refers to it
        assert verify(log) == []
    retention.compact(path)
    with TaskLog.open(path) as log:
        for m in ("new", *(r["msg_id"] for r in truth[:20])):
            assert log.events_of(m) == [(s, ev) for s, ev in log.read() if m in task_ids(ev)]
        rebuilt = projections.replay(log, "dict")  # from the snapshot: buffers by reference
        assert rebuilt.get_record("old")["buffers"] == [b"request"]
        assert rebuilt.get_record("old")["result_buffers"] == [b"result"]
        assert sorted(rebuilt.find_records({"msg_id": {"$ne": "new"}}), key=lambda r: r["msg_id"]) == \
            sorted(truth, key=lambda r: r["msg_id"])
        log.drop(["old"])  # purged: the next snapshot no longer needs its buffers
        _snapshot_then_prune(log)
        with pytest.raises(MissingEventError):
            log.event(1)
        assert verify(log) == []


def _make_schema_1(path: str) -> None:
    """Turn a log into what an older tasklog wrote: no stream index, schema 1."""
    env = lmdb.open(path, max_dbs=12)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"tasks", txn=txn), delete=True)
        txn.drop(env.open_db(b"task_rows", txn=txn), delete=True)
        txn.drop(env.open_db(b"kept", txn=txn), delete=True)
        txn.put(b"schema", b"1", db=env.open_db(b"meta", txn=txn))
    env.close()
    marker = os.path.join(path, "TASKLOG")
    with open(marker) as f:
        meta = json.load(f)
    with open(marker, "w") as f:
        json.dump({**meta, "schema": 1}, f)


def test_a_log_of_schema_1_is_indexed_once_and_answers_as_before(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with TaskLog.open(path) as log:
        log.append_many(list(simulate(500, seed=9)))
        before = projections.open("dict?buffers=inline", log=log).find_records({})
        ids = [r["msg_id"] for r in before]
    _make_schema_1(path)
    with TaskLog.open(path, readonly=True) as log:  # a reader cannot index: it scans, same answers
        assert not log.store.indexed
        assert log.events_of(ids[0]) == [(s, ev) for s, ev in log.read() if ids[0] in task_ids(ev)]
    with TaskLog.open(path) as log:  # the first writer indexes it
        assert log.store.indexed and log.store.schema == LOG_SCHEMA
        assert verify(log) == []
        for m in ids[:50]:
            assert log.events_of(m) == [(s, ev) for s, ev in log.read() if m in task_ids(ev)]
        after = projections.open("dict", log=log).find_records({})
        assert sorted(after, key=lambda r: r["msg_id"]) == sorted(before, key=lambda r: r["msg_id"])
    with open(os.path.join(path, "TASKLOG")) as f:
        assert json.load(f)["schema"] == LOG_SCHEMA


def test_a_newer_log_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    TaskLog.open(path).close()
    marker = os.path.join(path, "TASKLOG")
    with open(marker) as f:
        meta = json.load(f)
    assert meta["schema"] == LOG_SCHEMA == 3  # what an older tasklog (schema 1 or 2) refuses
    with open(marker, "w") as f:
        json.dump({**meta, "schema": LOG_SCHEMA + 1}, f)
    with pytest.raises(SchemaVersionError, match="schema version 4"):
        TaskLog.open(path)


def test_buffers_without_the_log_are_refused_plainly(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.submit("a", buffers=[b"b"])
        proj = projections.open(f"sqlite:///{tmp_path / 'p.db'}", log=log)
        assert proj.get_record("a")["buffers"] == [b"b"]
        proj.close()
    with projections.open(f"sqlite:///{tmp_path / 'p.db'}") as proj:
        assert proj.find_records({}, keys=["msg_id", "submitted"])[0]["msg_id"] == "a"  # no buffers asked
        with pytest.raises(projections.ProjectionError, match="buffers=inline"):
            proj.get_record("a")
    with pytest.raises(projections.ProjectionError, match="buffers must be one of"):
        projections.open("dict?buffers=maybe")


def test_maintenance_takes_snapshots_and_applies_retention(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log"), "async") as log:
        log.append_many(list(simulate(300, seed=4)))
        log.flush()
        policy = Policy(every_events=500, every_seconds=0, retain_bytes=1, poll=0.05)
        with Maintenance(log, policy) as m:
            deadline = time.monotonic() + 30
            while m.counts.snapshots < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert m.counts.snapshots >= 1 and m.counts.errors == []
        snaps = retention.list_snapshots(log)
        assert snaps and log.start_seq in (snaps[-1], snaps[-1] + 1)  # pruned up to it (the newest event stays)
        assert m.counts.pruned_events > 0
        assert verify(log) == []
    with pytest.raises(Exception, match="every_events must be >= 0"):
        Policy(every_events=-1)


def test_cli_query_answers_from_the_hubs_sqlite_projection_without_writing_it(tmp_path: Path) -> None:
    import hashlib

    from projections.backends.sqlite import SQLiteProjection
    from tests.support import run_cli
    log_dir = tmp_path / "tasklog"
    with TaskLog.open(str(log_dir)) as log:
        hub = projections.open(f"sqlite:///{log_dir / 'projection.db'}", log=log)  # what TaskLogDB keeps
        log.append_many(list(simulate(300, seed=8)))
        hub.close()
        log.submit("newer", buffers=[b"\x01\x02"], label="late")  # past the projection's checkpoint
        log.drop([next(r for _, r in log.read() if r.type == "complete").msg_id])  # type: ignore[union-attr]
        want = sorted(projections.open("dict?buffers=inline", log=log).find_records({}),
                      key=lambda r: r["msg_id"])
    digest = hashlib.sha256((log_dir / "projection.db").read_bytes()).hexdigest()
    out = run_cli("query", "--log", str(log_dir), "{}", check=True).stdout
    from tasklog.views.jsonfmt import loads
    got = sorted((loads(line) for line in out.splitlines()), key=lambda r: r["msg_id"])
    assert [r["msg_id"] for r in got] == [r["msg_id"] for r in want]
    assert next(r for r in got if r["msg_id"] == "newer")["buffers"] == [b"\x01\x02"]
    late = run_cli("query", "--log", str(log_dir), '{"label": "late"}', "--keys", "label", check=True).stdout
    assert [loads(line) for line in late.splitlines()] == [{"msg_id": "newer", "label": "late"}]
    assert hashlib.sha256((log_dir / "projection.db").read_bytes()).hexdigest() == digest  # never written
    ro = SQLiteProjection(str(log_dir / "projection.db"), readonly=True)
    with pytest.raises(projections.ProjectionError, match="read-only"):
        ro.clear()
    ro.close()
