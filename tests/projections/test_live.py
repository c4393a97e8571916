"""Projections kept in step with a log: live on every commit, checkpoints, catch-up, culling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import projections
from projections.live import attach, detach
from tasklog import TaskLog
from tasklog.demo import simulate
from tests.support import projection_spec, run_cli, stored


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["dict", "sqlite", "mongo"])
def test_live_projection_sees_every_returned_append(tmp_path: Path, request: pytest.FixtureRequest,
                                                    kind: str, mode: str) -> None:
    spec = projection_spec(kind, tmp_path, request)
    with TaskLog.open(str(tmp_path / "log"), mode) as log:
        log.submit("before", client_uuid="c")  # committed before the projection exists
        proj = attach(log, spec)
        assert proj.get_record("before")["client_uuid"] == "c"
        for i in range(30):
            log.output("before", "stdout", text=f"{i},")
            assert proj.get_record("before")["stdout"].endswith(f"{i},")  # no flush by the caller
        log.append_many(list(simulate(50, seed=3)))
        live = sorted(proj.find_records({}), key=lambda r: r["msg_id"])
        detach(proj)
        log.start("after-detach")
        log.flush()
        assert proj.count({"msg_id": "after-detach"}) == 0
        rebuilt = projections.open("dict", log=log)
        rebuilt_records = [r for r in sorted(rebuilt.find_records({}), key=lambda r: r["msg_id"])
                           if r["msg_id"] != "after-detach"]
        assert live == stored(proj, rebuilt_records)  # live equals a replay, record for record
        if kind == "mongo":
            proj.drop_all()  # type: ignore[attr-defined]
        proj.close()


@pytest.mark.parametrize("kind", ["sqlite", "mongo"])
def test_checkpoint_and_catch_up_on_open(tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> None:
    spec = projection_spec(kind, tmp_path, request)
    events = list(simulate(200, seed=4))
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.append_many(events[:300])
        with projections.open(spec, log=log) as p:
            assert p.last_seq == 300
        log.append_many(events[300:])
        with projections.open(spec) as p:  # without the log: the checkpoint, not caught up
            assert p.last_seq == 300
        with projections.open(spec, log=log) as p:
            assert p.last_seq == len(events)
            reference = projections.open("dict", log=log)
            assert p.count({}) == reference.count({})
            for r in reference.find_records({"completed": None}):
                assert p.get_record(r["msg_id"]) == reference.get_record(r["msg_id"])
            if kind == "mongo":
                p.drop_all()  # type: ignore[attr-defined]


def _completed(msg_id: str) -> list[Any]:
    from tasklog import Complete, Submit
    return [Submit(msg_id, buffers=[b"x" * 100]), Complete(msg_id, result_buffers=[b"y" * 100],
                                                          result_content={"status": "ok"})]


def test_dict_without_a_log_evicts_only_completed_tasks_and_says_so(tmp_path: Path) -> None:
    from tasklog import Submit
    p = projections.open("dict?record_limit=10&cull_fraction=0.5")
    events: list[Any] = [Submit(f"running-{i}") for i in range(8)]
    for i in range(20):
        events += _completed(f"done-{i}")
    p.apply(list(enumerate(events, start=1)))
    ids = set(p.get_history())
    assert {f"running-{i}" for i in range(8)} <= ids  # ipyparallel issue 203: never lose a running task
    assert len(ids) <= 10
    evicted = next(f"done-{i}" for i in range(20) if f"done-{i}" not in ids)
    with pytest.raises(KeyError, match=r"evicted .* no log is attached"):
        p.get_record(evicted)
    from tasklog import Output
    p.apply([(len(events) + 1, Output(evicted, "stdout", "late", None))])
    with pytest.raises(KeyError, match="evicted"):  # a late event does not resurrect a stub of it
        p.get_record(evicted)


def test_dict_size_limit_evicts_completed_tasks_and_refolds_them_from_the_log(tmp_path: Path) -> None:
    from tasklog import Submit
    with TaskLog.open(str(tmp_path / "log")) as log:
        unbounded = attach(log, "dict?buffers=inline")
        p = attach(log, "dict?size_limit=1000&buffers=inline")
        log.append_many([Submit(f"running-{i}", buffers=[b"r" * 100]) for i in range(3)])
        for i in range(12):
            log.append_many(_completed(f"done-{i}"))
        assert p.count({}) < 15 and p.evicted_count > 0  # type: ignore[attr-defined]
        assert {f"running-{i}" for i in range(3)} <= set(p.get_history())
        for m in unbounded.get_history():
            assert p.get_record(m) == unbounded.get_record(m)  # evicted or not: the same answer
        log.output("done-0", "stdout", text="late")  # a late event about an evicted task
        assert p.get_record("done-0") == unbounded.get_record("done-0")
        assert p.get_record("done-0")["stdout"] == "late"
        with pytest.raises(KeyError, match="no task 'never'"):
            p.get_record("never")


def test_cli_query(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    run_cli("demo", "--log", log, "--tasks", "300", check=True)
    db = f"sqlite:///{tmp_path / 'q.db'}"
    q = '{"completed": {"$gte": {"$date": "2000-01-01T00:00:00Z"}}, "label": {"$glob": "job-1*"}}'
    out = run_cli("query", "--log", log, "--projection", db, q, "--keys", "label,completed,buffers", check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(r["label"].startswith("job-1") for r in rows)
    assert all(set(r) == {"msg_id", "label", "completed", "buffers"} for r in rows)
    assert "$date" in rows[0]["completed"] and "$binary" in rows[0]["buffers"][0]
    again = run_cli("query", "--log", log, q, "--keys", "label,completed,buffers", check=True)  # dict
    assert sorted(again.stdout.splitlines()) == sorted(out.stdout.splitlines())
    bad = run_cli("query", "--log", log, '{"label": {"$nope": 1}}')
    assert bad.returncode != 0 and "$nope" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    other = run_cli("demo", "--log", str(tmp_path / "log2"), "--tasks", "200", "--projection", db)
    assert other.returncode == 2 and "not from this log" in other.stderr  # q.db belongs to the first log
    assert not (tmp_path / "log2").exists()  # the failed command left nothing behind
    db2 = f"sqlite:///{tmp_path / 'q2.db'}"
    demo = run_cli("demo", "--log", str(tmp_path / "log2"), "--tasks", "200", "--projection", db2, check=True)
    assert "incomplete tasks" in demo.stdout and "records" in demo.stdout
