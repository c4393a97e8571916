"""The timeline (issue 14): Chrome Trace Event JSON that Perfetto opens, streamed from the log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tasklog import TaskLog
from tasklog.views.timeline import trace_events
from tests.support import run_cli
from tests.support.trace_check import check_trace, overlaps

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)


def _at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def _one_at_a_time(path: str) -> None:
    """Two engines each running one task at a time; a failure; a resubmit; one still running."""
    with TaskLog.open(path) as log:
        for i in range(6):
            m, engine, start = f"t{i}", f"e{i % 2}", 10.0 * (i // 2)
            log.submit(m, submitted=_at(start - 1), label=f"job-{i}")
            log.start(m, engine)
            status = {"status": "error", "ename": "ValueError"} if i == 3 else {"status": "ok"}
            log.complete(m, result_content=status, engine_uuid=engine, started=_at(start), completed=_at(start + 5))
        log.resubmit("t3", "t3b", _at(40))
        log.start("t3b", "e1")
        log.complete("t3b", result_content={"status": "ok"}, engine_uuid="e1", started=_at(41), completed=_at(42))
        log.submit("busy", submitted=_at(50))
        log.start("busy", "e0", _at(51))


def test_timeline_is_a_well_formed_trace_with_a_track_per_engine(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    _one_at_a_time(path)
    out = tmp_path / "t.json"
    done = run_cli("timeline", "--log", path, "-o", str(out), check=True)
    assert "trace events" in done.stdout
    trace = check_trace(json.loads(out.read_text()))
    assert sorted(trace["tracks"].values()) == ["e0", "e1"]
    assert all(overlaps(s) == [] for s in trace["slices"].values())
    assert trace["phases"]["X"] == 7 and trace["phases"]["B"] == 1  # "busy" has not ended
    assert trace["phases"]["s"] == trace["phases"]["f"] == 1  # t3 -> t3b
    events = json.loads(out.read_text())["traceEvents"]
    failed = [e for e in events if e.get("cat") == "failed"]
    assert [e["args"]["msg_id"] for e in failed] == ["t3"] and failed[0]["args"]["error"] == "ValueError"
    t0 = next(e for e in events if e["ph"] == "X" and e["args"]["msg_id"] == "t0")
    assert (t0["name"], t0["ts"], t0["dur"]) == ("job-0", int(_at(0).timestamp() * 1e6), 5_000_000)
    waits = [e for e in events if e["ph"] == "b"]
    assert len(waits) == 7 and all(e["cat"] == "queue" for e in waits)


def test_a_resubmission_is_drawn_with_its_originals_label(tmp_path: Path) -> None:
    # Issue 20 (item 11, seen comparing a pruned log's trace with the whole log's): the original had
    # completed, so its label was no longer held, and t3b was drawn as "task"; its record says job-3.
    path = str(tmp_path / "log")
    _one_at_a_time(path)
    with TaskLog.open(path) as log:
        log.resubmit("t3b", "t3c", _at(60))  # a resubmission's resubmission: the same request again
        log.complete("t3c", result_content={"status": "ok"}, engine_uuid="e0", started=_at(61), completed=_at(62))
    with TaskLog.open(path, readonly=True) as log:
        names = {e["args"]["msg_id"]: e["name"] for e in trace_events(log) if e["ph"] == "X"}
    assert names["t3"] == names["t3b"] == names["t3c"] == "job-3"
    with TaskLog.open(path) as log:  # a loop of resubmits (the fold refuses it; the log holds it) names no label
        log.resubmit("x", "y", _at(70))
        log.resubmit("y", "x", _at(71))
        log.resubmit("x", "z", _at(72))
        log.complete("z", result_content={"status": "ok"}, engine_uuid="e0", started=_at(73), completed=_at(74))
    with TaskLog.open(path, readonly=True) as log:
        assert [e["name"] for e in trace_events(log) if e["ph"] == "X" and e["args"]["msg_id"] == "z"] == ["task"]


def test_timeline_up_to_an_event_and_since_a_time(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    _one_at_a_time(path)
    with TaskLog.open(path, readonly=True) as log:
        early = [e for e in trace_events(log, stop=6) if e["ph"] == "X"]
        assert [e["args"]["msg_id"] for e in early] == ["t0", "t1"]
        late = [e for e in trace_events(log, since=_at(20)) if e["ph"] == "X"]
        assert {e["args"]["msg_id"] for e in late} == {"t4", "t5", "t3b"}
    doc = json.loads(run_cli("timeline", "--log", path, "-o", "-", "--to", "3", check=True).stdout)
    assert [e["args"]["msg_id"] for e in doc["traceEvents"] if e["ph"] == "X"] == ["t0"]


def test_timeline_of_the_demo_log_and_bad_input(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    run_cli("demo", "--log", path, "--tasks", "500", check=True)
    out = tmp_path / "demo.json"
    run_cli("timeline", "--log", path, "-o", str(out), check=True)
    trace = check_trace(json.loads(out.read_text()))
    assert trace["phases"]["X"] >= 450 and len(trace["tracks"]) == 8
    assert all(overlaps(s) == [] for s in trace["slices"].values())  # the demo's engines run one task at a time
    bad = run_cli("timeline", "--log", path, "-o", str(tmp_path / "x.json"), "--since", "yesterday")
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and not (tmp_path / "x.json").exists()
    assert run_cli("timeline", "--log", str(tmp_path / "nope")).returncode != 0
