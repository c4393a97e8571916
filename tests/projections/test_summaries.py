"""The summaries the read model keeps (issue 22): tasks by state and events by type, kept as events
are folded (by every path that folds: batches, the Hub's write-behind, an overlay), answered by
``stats`` without decoding the log, and the same figures a count of the log's events gives, also
after a prune cut through a block. The views read the read model's task states: the same trace
and the same report rows as from the events."""

from __future__ import annotations

import fcntl
import json
import os
import random
import sqlite3
import struct
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import lmdb
import pytest

import projections
import projections.backends.sqlite
from projections import counts, readmodel, snapshot
from projections.writebehind import WriteBehind
from tasklog import TaskLog, retention, verify
from tasklog.baseline import Baseline
from tasklog.demo import simulate
from tasklog.events import Annotate
from tasklog.lifecycle import Lifecycle
from tasklog.views.report import collect
from tests.support import child_env, readonly_bind, run_cli

TASKS = 3600  # about 19k events: past the first block of counts (counts.BLOCK)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A demo log of two blocks' worth of events."""
    path = str(tmp_path_factory.mktemp("summaries") / "log")
    with TaskLog.open(path) as log:
        events = list(simulate(TASKS, seed=31))
        log.append_many(events)
        done = [ev.msg_id for ev in events if ev.type == "complete"]
        # Purged tasks, one of them resubmitted first: the views draw them as the log does.
        log.resubmit(done[0], "again-0")
        log.drop([done[0], done[1], "again-0"])
        assert log.last_seq > counts.BLOCK
    return path


def _stats(path: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(run_cli("stats", "--log", path, "--json", check=True).stdout)
    return doc


def _counted(path: str, base: Baseline | None = None) -> dict[str, Any]:
    with TaskLog.open(path, readonly=True) as log:
        doc = verify.stats(log, base=base).as_dict()
    back: dict[str, Any] = json.loads(json.dumps(doc, default=str))  # as the CLI's JSON has them, dates aside
    return back


def _same(cli: dict[str, Any], counted: dict[str, Any]) -> None:
    keys = ("events", "first_seq", "last_seq", "start_seq", "by_type", "by_state", "by_engine", "by_queue")
    assert {k: cli[k] for k in keys} == {k: counted[k] for k in keys}


def test_stats_answer_from_the_read_model_what_a_count_of_the_events_gives(big: str) -> None:
    _same(_stats(big), _counted(big))
    assert os.path.exists(os.path.join(big, readmodel.FILE))
    with TaskLog.open(big, readonly=True) as log, readmodel.open_read_model(log).projection as proj:
        assert proj.counted.since == 1 and sum(proj.counted.blocks.values()) == log.last_seq
        assert {block for block, _ in proj.counted.blocks} == {0, 1}


def test_after_a_prune_through_a_block_the_counts_are_of_what_the_log_holds(big: str, tmp_path: Path) -> None:
    path = str(tmp_path / "pruned")
    with TaskLog.open(big, readonly=True) as log:
        events = list(log.read())
    with TaskLog.open(path) as log:
        log.append_many([ev for _, ev in events])
    whole = _stats(path)  # the read model counts every event, before the prune
    cut = counts.BLOCK + 1234  # inside the second block
    with TaskLog.open(path) as log:
        snapshot.take(log, cut - 1)
        retention.prune(log, cut)
        base = snapshot.view_base(log, "test")
    after = _stats(path)
    _same(after, _counted(path, base))
    assert after["start_seq"] == cut and after["by_state"] == whole["by_state"]
    assert sum(after["by_type"].values()) == after["events"] == whole["events"] - (cut - 1)


def test_every_path_that_folds_keeps_the_counts(big: str, tmp_path: Path) -> None:
    with TaskLog.open(big, readonly=True) as log:
        events = list(log.read())
    truth = Counter(ev.type for _, ev in events)
    hub = WriteBehind(projections.open(f"sqlite:///{tmp_path / 'hub.db'}"), batch=500)
    life = Lifecycle()
    for seq, ev in events[:-700]:
        hub.apply_one(seq, ev)  # as a Hub feeds its projection, one event per call
        life.apply(ev)
    assert hub.tasks_by("state") == Counter(task.state for task in life.tasks.values())  # pending ones too
    hub.close()
    with projections.open(f"sqlite:///{tmp_path / 'hub.db'}") as reopened:
        assert reopened.counted.since == 1 and reopened.last_seq == events[-701][0]
        reopened.apply(events[-700:])  # and a batch after it
        by_type = reopened.counted.in_log(1, reopened.last_seq,
                                lambda a, b: pytest.fail("nothing is read from the log"))
    assert by_type == truth
    with projections.open("dict") as memory:
        memory.apply(events)
        assert memory.counted.in_log(1, memory.last_seq,
                             lambda a, b: pytest.fail("nothing is read from the log")) == truth


def test_a_hubs_projection_with_newer_events_over_it_answers_stats(big: str, tmp_path: Path) -> None:
    path = str(tmp_path / "hublog")
    with TaskLog.open(big, readonly=True) as log:
        events = list(log.read())
    with TaskLog.open(path) as log:
        log.append_many([ev for _, ev in events[:-900]])
        projections.replay(log, f"sqlite:///{os.path.join(path, readmodel.HUB_FILE)}").close()
        log.append_many([ev for _, ev in events[-900:]])  # the Hub has not stored these yet
    _same(_stats(path), _counted(path))
    assert "read model (hub:" in run_cli("index", "--log", path, check=True).stdout
    assert _trace(path) == _trace(path, "--to", str(events[-1][0]))  # the overlay's task states too
    assert not os.path.exists(os.path.join(path, readmodel.FILE))


def test_task_states_are_the_lifecycles_on_every_backend(big: str, tmp_path: Path) -> None:
    with TaskLog.open(big, readonly=True) as log:
        events = list(log.read())
    first = events[0][1].msg_id  # type: ignore[union-attr]
    events.append((events[-1][0] + 1, Annotate(first, {"result_content": {"status": 7}})))  # no column holds it
    life = Lifecycle()
    for _, ev in events:
        life.apply(ev)
    truth = sorted(life.tasks.values(), key=lambda t: t.msg_id)
    assert life.tasks[first].reply_status == "7"  # what an annotation may say, as text
    for spec in ("dict", f"sqlite:///{tmp_path / 's.db'}"):
        with projections.open(spec) as proj:
            proj.apply(events)
            assert sorted(proj.task_states(), key=lambda t: t.msg_id) == truth, spec
            assert proj.tasks_by("state") == Counter(t.state for t in truth)


def _trace(path: str, *extra: str) -> list[str]:
    """The trace's events, tracks named by their engines (ids differ with the order they are met), sorted."""
    doc = json.loads(run_cli("timeline", "--log", path, "-o", "-", *extra, check=True).stdout)
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "thread_name"}
    return sorted(json.dumps({**e, "tid": names.get((e.get("pid"), e.get("tid")), e.get("tid"))}, sort_keys=True)
                  for e in doc["traceEvents"])


def test_the_views_from_the_read_model_are_the_views_from_the_events(big: str) -> None:
    with TaskLog.open(big, readonly=True) as log:
        last = log.last_seq
        every = {r.msg_id: r for r in collect(log)}
        with readmodel.open_read_model(log).projection as proj:
            rows = {r.msg_id: r for r in collect(log, base=Baseline(proj.last_seq, proj.task_states))}
    assert rows == every
    assert _trace(big) == _trace(big, "--to", str(last))  # the read model's, and the log's own as of its end


def test_with_nowhere_to_keep_a_read_model_stats_answers_from_memory_saying_so(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with TaskLog.open(str(src / "log")) as log:
        log.append_many(list(simulate(50, seed=3)))
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the cache's parent is a file: nothing can be made under it
    with readonly_bind(src, tmp_path / "ro") as mnt:
        path = str(mnt / "log")
        proc = subprocess.run([sys.executable, "-m", "tasklog", "stats", "--log", path, "--json"], capture_output=True,
                              text=True, env={**child_env(), "XDG_CACHE_HOME": str(blocked)}, check=True)
        assert "events in memory: no read model could be written" in proc.stderr
        _same(json.loads(proc.stdout), _counted(path))


def test_a_log_with_an_unreadable_event_is_counted_from_its_events(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with TaskLog.open(path) as log:
        log.append_many(list(simulate(30, seed=4)))
        last = log.last_seq
    env = lmdb.open(path, max_dbs=16)
    events = env.open_db(b"events")
    with env.begin(write=True) as txn:
        key = struct.pack(">Q", last // 2)
        raw = bytearray(txn.get(key, db=events))
        raw[-1] ^= 0xFF  # a flipped bit: its checksum no longer matches
        txn.put(key, bytes(raw), db=events)
    env.close()
    proc = run_cli("stats", "--log", path, "--json", check=True)
    assert "counting from the log's events" in proc.stderr and "checksum" in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["by_type"]["(unreadable)"] == 1 and sum(doc["by_type"].values()) == last


def _log_of(path: Path, tasks: int = 40, seed: int = 5) -> str:
    with TaskLog.open(str(path)) as log:
        log.append_many(list(simulate(tasks, seed=seed)))
    return str(path)


def test_odd_annotated_values_are_answered_on_every_path(tmp_path: Path) -> None:
    """Issue 22's review: a reply status that is a list broke every SQLite projection (a Hub's
    too), a completed that is a string the timeline; a state reads them as text, or no time."""
    path = _log_of(tmp_path / "log")
    with TaskLog.open(path) as log:
        ids = [ev.msg_id for _, ev in log.read() if ev.type == "complete"][:3]
        log.annotate(ids[0], {"result_content": {"status": ["error"]}})
        log.annotate(ids[1], {"completed": "yesterday", "engine_uuid": ["a", "b"]})
        log.annotate(ids[2], {"result_content": 3, "label": 7})
        last = log.last_seq
    figures = _stats(path)
    _same(figures, _counted(path))
    # Both draw (the log's as each task ended, the read model's as the annotations left it).
    drawn = [{json.loads(e)["args"]["msg_id"] for e in _trace(path, *to) if '"ph": "X"' in e}
             for to in ([], ["--to", str(last)])]
    assert drawn[0] <= drawn[1] and len(drawn[1]) >= 39
    tasks = sum(figures["by_state"].values())
    assert f"report of {tasks} tasks" in run_cli("report", "--log", path, "-o", str(tmp_path / "r.html"),
                                                 check=True).stdout
    with TaskLog.open(path, readonly=True) as log, projections.open(f"sqlite:///{tmp_path / 'p.db'}", log=log) as p:
        assert p.get_record(ids[0])["result_content"] == {"status": ["error"]}
        assert p.count({}) == projections.open("dict", log=log).count({})


def test_a_read_only_projection_answers_as_of_one_commit_of_its_writer(tmp_path: Path) -> None:
    """A live Hub's stats counted a batch twice and its states as of a later one (review, item 2)."""
    path = _log_of(tmp_path / "log", 200)
    with TaskLog.open(path, readonly=True) as log:
        events = list(log.read())
    db = str(tmp_path / "hub.db")
    writer = projections.open(f"sqlite:///{db}")
    writer.apply(events[:400])
    reader = projections.backends.sqlite.SQLiteProjection(db, readonly=True)
    seen = (reader.last_seq, sum(reader.counted.blocks.values()), reader.tasks_by("state"), reader.count({}))
    writer.apply(events[400:])  # committed while the reader reads
    assert (reader.last_seq, sum(reader.counted.blocks.values()), reader.tasks_by("state"), reader.count({})) == seen
    assert seen[:2] == (400, 400) and reader.count({}) < writer.count({})
    reader.close()
    writer.close()


def test_a_hubs_projection_that_cannot_answer_is_passed_by_saying_why(tmp_path: Path) -> None:
    path = _log_of(tmp_path / "log", 60)
    hub = os.path.join(path, readmodel.HUB_FILE)
    with TaskLog.open(path, readonly=True) as log:
        events = list(log.read())
    whole = _stats(path)
    os.remove(os.path.join(path, readmodel.FILE))
    with projections.open(f"sqlite:///{hub}") as p:  # ahead of the log: events a crash lost
        p.bind(events and TaskLog.open(path, readonly=True).identity)
        p.apply([*events, (events[-1][0] + 1, events[-1][1])])
    proc = run_cli("stats", "--log", path, "--json", check=True)
    assert "past the log's last event" in proc.stderr and "Warning" not in proc.stderr
    _same(json.loads(proc.stdout), whole)
    with projections.open(f"sqlite:///{hub}") as p:
        p.clear()
        p.pin(5)
    assert "is pinned at event 5" in run_cli("stats", "--log", path, check=True).stderr


def test_a_damaged_or_tampered_read_model_is_never_an_answer(tmp_path: Path) -> None:
    path = _log_of(tmp_path / "log", 300)
    truth = _stats(path)
    model = os.path.join(path, readmodel.FILE)
    con = sqlite3.connect(model)
    con.execute("UPDATE event_counts SET n = n + 1000 WHERE type = 'submit'")  # counts that cannot be right
    con.commit()
    con.close()
    _same(_stats(path), truth)  # seen, and built again
    size = os.path.getsize(model)
    with open(model, "r+b") as f:  # pages SQLite finds malformed only when it reads them
        f.seek(size // 3)
        f.write(random.Random(1).randbytes(size // 3))
    bad = run_cli("query", "--log", path, "{}")
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1, bad.stderr
    assert "is damaged" in bad.stderr and not os.path.exists(model)
    assert run_cli("query", "--log", path, "{}", check=True).stdout.count("\n") == truth["by_state"]["completed"] + \
        sum(n for state, n in truth["by_state"].items() if state != "completed") - truth["by_state"]["dropped"]
    os.remove(model)
    os.symlink(os.path.join(path, "nowhere"), model)  # a dangling link: passed by, never followed
    _same(_stats(path), truth)


def test_stats_of_a_pruned_log_answers_without_reading_its_snapshot(tmp_path: Path) -> None:
    path = _log_of(tmp_path / "log", 300)
    with TaskLog.open(path) as log:
        cut = log.last_seq // 2
        snapshot.take(log, cut)
        retention.prune(log, cut + 1)
    before = _stats(path)
    for name in os.listdir(os.path.join(path, retention.SNAPSHOT_DIR)):
        with open(os.path.join(path, retention.SNAPSHOT_DIR, name), "r+b") as f:
            f.write(b"garbage")
    after = _stats(path)
    assert after == before and after["tasks_from"] == cut and after["start_seq"] == cut + 1


def test_the_logs_bytes_on_disk_are_its_own(tmp_path: Path) -> None:
    path = _log_of(tmp_path / "log", 100)
    with TaskLog.open(path, readonly=True) as log:
        own = log.disk_bytes()
    assert _stats(path)["disk_bytes"] == own  # the read model the first stats builds is not the log's
    assert os.path.exists(os.path.join(path, readmodel.FILE)) and _stats(path)["disk_bytes"] == own


def test_a_hubs_projection_far_behind_its_log_is_passed_by(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Hub keeps it current: folded over it in memory at every read, its catch-up was never kept."""
    path = _log_of(tmp_path / "log", 60)
    with TaskLog.open(path, readonly=True) as log:
        projections.replay(log, f"sqlite:///{os.path.join(path, readmodel.HUB_FILE)}").close()
    with TaskLog.open(path) as log:
        before = log.last_seq
        log.append_many(list(simulate(20, seed=6)))
        behind = log.last_seq - before
    monkeypatch.setattr(readmodel, "_BEHIND", 50)  # a threshold: the test's log is small
    with TaskLog.open(path, readonly=True) as log:
        model = readmodel.open_read_model(log)
        with model.projection as proj:
            assert model.kind == "log directory" and f"is {behind:,} events behind the log" in str(model.why_not_hub)
            assert proj.count({}) == projections.open("dict", log=log).count({})


def test_a_reader_that_holds_the_lock_too_long_is_passed_by_saying_so(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped reader (Ctrl-Z on a first build) held every other reader for good, without a word."""
    path = _log_of(tmp_path / "log", 30)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(readmodel, "_LOCK_WAIT", 0.3)  # a threshold: a minute in use
    held = os.open(os.path.join(path, readmodel.FILE), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(held, fcntl.LOCK_EX)  # as the stopped reader holds it
    try:
        with TaskLog.open(path, readonly=True) as log:
            model = readmodel.open_read_model(log)
            with model.projection as proj:
                assert model.kind == "cache" and "another reader has been catching it up" in str(model.why_elsewhere)
                assert proj.count({}) == projections.open("dict", log=log).count({})
    finally:
        os.close(held)


def test_stats_lists_an_engine_named_like_no_engine_apart_and_since_takes_local_time(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with TaskLog.open(path) as log:
        for m in ("t0", "t1", "t2", "t3"):
            log.submit(m)
        log.start("t3", "(none)")
    doc = _stats(path)
    assert doc["by_engine"] == [[None, 3], ["(none)", 1]] == _counted(path)["by_engine"]
    text = run_cli("stats", "--log", path, check=True).stdout
    assert "(no engine)  3" in text and "(none)       1" in text
    naive = datetime.now().replace(microsecond=0).isoformat()  # no zone: local time, as --as-of takes it
    assert run_cli("timeline", "--log", path, "--since", naive, "-o", "-", check=True).stdout.startswith("{")
