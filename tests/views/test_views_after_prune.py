"""The log's own views (timeline, report, stats) of a pruned log start from its snapshot (issue 20, item 11).

Each view of a pruned log is compared with the same view of the log as it was before the prune: the
same tasks, states, slices and arrows. A task purged before the snapshot is known by its id only
(the snapshot keeps a tombstone), so it is counted as dropped and not drawn. A state no snapshot
rebuilds is refused with one line, as ``query`` refuses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from projections import readmodel
from projections.snapshot import take
from tasklog import TaskLog, retention
from tasklog.views.report import collect
from tests.support import run_cli

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc)
OK, FAILED = {"status": "ok"}, {"status": "error", "ename": "KeyError"}


def _t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _ran(log: TaskLog, m: str, engine: str, at: float, content: dict[str, Any] = OK) -> None:
    log.start(m, engine, _t(at))
    log.complete(m, result_content=content, engine_uuid=engine, started=_t(at), completed=_t(at + 1.5))


def _before_the_snapshot(log: TaskLog) -> None:
    for i in range(6):
        log.submit(f"a{i}", submitted=_t(i), label=f"job-{i % 2}")
        _ran(log, f"a{i}", f"engine-{i % 2}", i + 0.5, FAILED if i == 2 else OK)
    log.submit("r1", submitted=_t(10), label="retried")
    _ran(log, "r1", "engine-0", 10.5, FAILED)
    log.resubmit("r1", "r1b", _t(12))           # both ran before the snapshot
    _ran(log, "r1b", "engine-1", 12.5)
    log.submit("r2", submitted=_t(14), label="r2-job")
    _ran(log, "r2", "engine-1", 14.5, FAILED)
    log.resubmit("r2", "r2b", _t(16))           # its resubmission runs after it
    log.submit("r3", submitted=_t(17), label="r3-job")
    _ran(log, "r3", "engine-0", 17.5, FAILED)   # resubmitted after the snapshot
    log.submit("long", submitted=_t(18), label="long")
    log.start("long", "engine-2", _t(18.5))     # running across the snapshot
    log.submit("queued", submitted=_t(19))      # waiting across it
    log.submit("gone", submitted=_t(20))
    _ran(log, "gone", "engine-2", 20.5)
    log.drop(["gone"])                          # purged before it


def _after_the_snapshot(log: TaskLog) -> None:
    _ran(log, "r2b", "engine-0", 30)
    log.resubmit("r3", "r3b", _t(31))
    _ran(log, "r3b", "engine-1", 32)
    log.complete("long", result_content=OK, engine_uuid="engine-2", started=_t(18.5), completed=_t(33))
    log.start("queued", "engine-0", _t(34))     # still running at the end
    for i in range(3):
        log.submit(f"b{i}", submitted=_t(35 + i))
        _ran(log, f"b{i}", f"engine-{i}", 36 + i)
    log.resubmit("a1", "a1b", _t(40))           # of a task that ran before the prune...
    log.start("a1b", "engine-1", _t(41))        # ...still running at the end
    log.resubmit("r3b", "r3c", _t(42))          # a resubmission's resubmission
    _ran(log, "r3c", "engine-2", 43)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, int]:
    """(the pruned log, the same log unpruned, the snapshot's event number)."""
    tmp = tmp_path_factory.mktemp("pruned")
    pruned, whole = str(tmp / "pruned"), str(tmp / "whole")
    with TaskLog.open(pruned) as log:
        _before_the_snapshot(log)
        snap = log.last_seq
        _after_the_snapshot(log)
    shutil.copytree(pruned, whole)
    with TaskLog.open(pruned) as log:
        take(log, at=snap)
        retention.prune(log, snap + 1)
        assert log.start_seq == snap + 1
    return pruned, whole, snap


def _trace(path: str, *args: str) -> list[str]:
    """The trace's events, engine tracks named by their engines (the numbering follows first use)."""
    done = run_cli("timeline", "--log", path, "-o", "-", *args, check=True)
    events = json.loads(done.stdout)["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    out = []
    for e in events:
        if e.get("pid") == 1 and "tid" in e:
            e = {**e, "tid": names[e["tid"]]}
        out.append(json.dumps(e, sort_keys=True))
    return sorted(out)


def test_the_timeline_of_a_pruned_log_draws_what_the_whole_log_does(logs: tuple[str, str, int]) -> None:
    pruned, whole, snap = logs
    before = _trace(whole)
    after = _trace(pruned)
    assert any('"ph": "s"' in e and "r1->r1b" in e for e in after)   # an arrow inside the snapshot
    assert any('"ph": "s"' in e and "r2->r2b" in e for e in after)   # from the snapshot to an event
    assert any('"ph": "s"' in e and "r3->r3b" in e for e in after)   # from a pruned complete
    assert after == before  # the purged task too: its tombstone in the snapshot keeps what it held
    # A resubmission runs its original's request, label included (it was drawn as "task" once its
    # original had completed).
    labels = {json.loads(e)["args"]["msg_id"]: json.loads(e)["name"] for e in after if '"ph": "X"' in e}
    assert labels["r1b"] == "retried" and labels["r2b"] == "r2-job" and labels["r3b"] == labels["r3c"] == "r3-job"
    assert any('"ph": "B"' in e and '"a1b"' in e and '"job-1"' in e for e in after)
    # Up to an event past the snapshot: the same again.
    assert _trace(pruned, "--to", str(snap + 4)) == _trace(whole, "--to", str(snap + 4))


def test_a_state_before_the_snapshot_is_refused_with_one_line(logs: tuple[str, str, int], tmp_path: Path) -> None:
    pruned, _, snap = logs
    for to in ("3", str(snap - 1)):
        out = tmp_path / "t.json"
        bad = run_cli("timeline", "--log", pruned, "--to", to, "-o", str(out))
        assert bad.returncode != 0 and bad.stdout == "", bad
        assert bad.stderr.count("\n") == 1 and f"events 1..{snap}, which were pruned" in bad.stderr, bad.stderr
        assert f"event {snap} (its oldest snapshot)" in bad.stderr and not out.exists()
    assert _trace(pruned, "--to", str(snap))  # the snapshot's own state is there to draw


def test_the_report_and_stats_of_a_pruned_log_count_every_task(logs: tuple[str, str, int], tmp_path: Path) -> None:
    pruned, whole, snap = logs
    stats = [json.loads(run_cli("stats", "--log", path, "--json", check=True).stdout) for path in (pruned, whole)]
    assert stats[0]["by_state"] == stats[1]["by_state"]
    assert stats[0]["by_state"] == {"pending": 0, "running": 2, "completed": 11, "failed": 1, "resubmitted": 5,
                                    "dropped": 1}
    said = [run_cli("report", "--log", path, "-o", str(tmp_path / f"{i}.html"), check=True).stdout
            for i, path in enumerate((pruned, whole))]
    assert said[0].split(" -> ")[0] == said[1].split(" -> ")[0] == "report of 20 tasks"
    pages = [(tmp_path / f"{i}.html").read_text() for i in range(2)]
    assert f"events 1..{snap} were pruned" in pages[0] and "were pruned" not in pages[1]
    # Two tasks are running and one purged ("gone", completed first: it was counted twice off the
    # running ones, and as completed in the whole log only).
    for page in pages:
        assert all(card in page for card in ("<b>17</b>completed", "<b>2</b>running or pending", "<b>1</b>purged"))
    from projections.snapshot import view_base

    with TaskLog.open(pruned, readonly=True) as p, TaskLog.open(whole, readonly=True) as w:
        rows = {r.msg_id: r for r in collect(p, base=view_base(p, "report"))}
        every = {r.msg_id: r for r in collect(w)}
    assert rows.keys() == every.keys()
    assert rows.pop("gone").dropped and every.pop("gone").dropped
    assert rows == every


def test_views_refuse_a_pruned_log_no_snapshot_covers(logs: tuple[str, str, int], tmp_path: Path) -> None:
    pruned, _, snap = logs
    bare = str(tmp_path / "bare")
    shutil.copytree(pruned, bare)
    shutil.rmtree(os.path.join(bare, retention.SNAPSHOT_DIR))  # removed by hand
    with contextlib.suppress(FileNotFoundError):  # and the read model the views left: it holds the tasks too
        os.remove(os.path.join(bare, readmodel.FILE))
    for args in (["timeline", "-o", str(tmp_path / "t.json")], ["report", "-o", str(tmp_path / "r.html")],
                 ["stats"]):
        bad = run_cli(args[0], "--log", bare, *args[1:])
        assert bad.returncode != 0 and bad.stdout == "", bad
        assert bad.stderr.count("\n") == 1, bad.stderr
        assert f"needs events 1..{snap}, which were pruned" in bad.stderr and "no snapshot covers" in bad.stderr
    assert sorted(os.listdir(tmp_path)) == ["bare"]  # nothing left behind
