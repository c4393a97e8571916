"""TaskLogDB against ipyparallel's own backend contract (TaskDBTest), on every projection."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timezone
from typing import Any
from unittest import TestCase

import pytest
from ipyparallel.controller.hub import init_record
from ipyparallel.tests.test_db import TaskDBTest
from jupyter_client.session import Session

import projections
from projections.errors import QueryError
from tasklog import EventError, TaskLog
from tasklog.events import Complete, Output, Resubmit, Start, Submit
from tasklog.ipyparallel import TaskLogDB, record_events
from tests.support import PROCS, child_env


class _TaskLogDBTest(TaskDBTest):
    projection = "dict"

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="tasklogdb-")
        super().setUp()

    def create_db(self) -> TaskLogDB:
        return TaskLogDB(location=self.tmp, projection=self.spec())

    def spec(self) -> str:
        return self.projection

    def tearDown(self) -> None:
        self.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_reopen_sees_every_record(self) -> None:
        before = {m: self.db.get_record(m) for m in self.db.get_history()}
        self.db.close()
        self.db = self.create_db()
        assert {m: self.db.get_record(m) for m in self.db.get_history()} == before


class TestTaskLogDBDict(_TaskLogDBTest, TestCase):
    projection = "dict"


class TestTaskLogDBSQLite(_TaskLogDBTest, TestCase):
    projection = "sqlite"


@pytest.mark.usefixtures("mongo_uri_cls")
class TestTaskLogDBMongo(_TaskLogDBTest, TestCase):
    mongo_uri = ""

    def spec(self) -> str:
        return f"{self.mongo_uri}/ipp{uuid.uuid4().hex[:10]}"

    def tearDown(self) -> None:
        self.db.records.inner.drop_all()  # type: ignore[attr-defined]
        super().tearDown()

    def test_reopen_sees_every_record(self) -> None:
        spec = self.db.records.spec
        before = {m: self.db.get_record(m) for m in self.db.get_history()}
        self.db.close()
        self.db = TaskLogDB(location=self.tmp, projection=spec)
        assert {m: self.db.get_record(m) for m in self.db.get_history()} == before


@pytest.fixture(scope="class")
def mongo_uri_cls(request: pytest.FixtureRequest, mongo_uri: str) -> None:
    """Hand the session's MongoDB server to a unittest-style class."""
    request.cls.mongo_uri = mongo_uri


# -- the Hub's calls, turned into events -------------------------------------------


def _request(session: Session) -> dict[str, Any]:
    msg = session.msg("apply_request", content={"a": 1})
    msg["buffers"] = [memoryview(b"buf")]
    rec = init_record(msg)
    rec.update(client_uuid=session.session, queue="task")
    return rec


def _now() -> datetime:
    return datetime.now(timezone.utc)


def test_each_hub_call_becomes_the_right_event(tmp_path: Any) -> None:
    session = Session()
    rec = _request(session)
    mid = rec["msg_id"]
    (sub,) = record_events(mid, rec, None, lambda m: None)
    assert isinstance(sub, Submit) and sub.buffers == [b"buf"] and sub.queue == "task"
    current = {**rec, "stdout": "a\n"}
    (out,) = record_events(mid, {"stdout": "a\nb\n"}, current, lambda m: None)
    assert out == Output(mid, "stdout", "b\n", None)  # only the new part of the accumulated text
    now = _now()
    (done,) = record_events(mid, {"result_header": {"msg_id": "r"}, "result_content": {"status": "ok"},
                                  "result_metadata": {}, "result_buffers": [], "started": now,
                                  "completed": now, "received": now, "engine_uuid": "e1"}, current, lambda m: None)
    assert isinstance(done, Complete) and done.engine_uuid == "e1"
    (start,) = record_events(mid, {"engine_uuid": "e2"}, current, lambda m: None)
    assert start == Start(mid, "e2", None)
    (resub,) = record_events(mid, {"resubmitted": "new"}, current, lambda m: now)
    assert resub == Resubmit(mid, "new", now)
    # The Hub re-sends a whole merged record when iopub came first: unchanged keys give nothing.
    assert record_events(mid, dict(current), current, lambda m: None) == []
    rewrite = record_events(mid, {"stdout": "other", "label": "L", "completed": now}, current, lambda m: None)
    assert [e.type for e in rewrite] == ["annotate", "annotate"]


def test_hub_pattern_round_trip_and_durable_log(tmp_path: Any) -> None:
    session = Session()
    db = TaskLogDB(location=str(tmp_path))
    # iopub before the request: the Hub adds a stub, then merges and updates
    early = _request(session)
    mid = early["msg_id"]
    stub = {k: None for k in early} | {"msg_id": mid, "stdout": "early\n", "stderr": ""}
    db.add_record(mid, stub)
    merged = dict(early)
    merged["stdout"] = "early\n"
    db.update_record(mid, merged)
    db.update_record(mid, {"engine_uuid": "e1"})
    db.update_record(mid, {"stdout": db.get_record(mid)["stdout"] + "more\n"})
    db.update_record(mid, {"result_header": {"msg_id": "r"}, "result_content": {"status": "ok"},
                           "result_metadata": {}, "result_buffers": [b"x"], "started": _now(),
                           "completed": _now(), "received": _now()})
    got = db.get_record(mid)
    assert got["stdout"] == "early\nmore\n" and got["engine_uuid"] == "e1" and got["header"]["msg_id"] == mid
    assert got["result_buffers"] == [b"x"] and got["queue"] == "task"
    # a resubmit: the Hub adds the new record (queue unknown), then links the original
    again_msg = session.msg("apply_request", content={"a": 1})
    again_msg["buffers"] = [b"buf"]
    again = init_record(again_msg)
    db.add_record(again["msg_id"], again)
    db.update_record(mid, {"resubmitted": again["msg_id"]})
    assert db.get_record(again["msg_id"])["resubmitted_from"] == mid
    assert db.get_record(again["msg_id"])["queue"] == "task"  # inherited from the original
    db.drop_matching_records({"msg_id": mid})
    with pytest.raises(KeyError):
        db.get_record(mid)
    with pytest.raises(KeyError):
        db.drop_record("no-such-task")
    db.close()
    with TaskLog.open(str(tmp_path / "tasklog"), readonly=True) as log:
        types = [ev.type for _, ev in log.read()]
        assert types == ["output", "submit", "start", "output", "complete", "submit", "resubmit", "drop"]
        replayed = projections.replay(log, "dict")
        assert replayed.get_record(again["msg_id"])["resubmitted_from"] == mid


def test_bad_input_is_refused_and_nothing_is_written(tmp_path: Any) -> None:
    db = TaskLogDB(location=str(tmp_path))
    try:
        with pytest.raises(EventError, match="queue"):
            db.add_record("m1", {"msg_id": "m1", "header": {"msg_id": "m1"}, "queue": "bogus"})
        with pytest.raises(EventError, match="cannot be annotated"):
            db.update_record("m1", {"_private": 1})
        with pytest.raises(QueryError, match=r"\$where"):
            db.find_records({"n": {"$where": 1}})
        assert db.tasklog.last_seq == 0 and db.get_history() == []
    finally:
        db.close()


def test_running_tasks_are_never_culled(tmp_path: Any) -> None:
    """Our culling tests (ipyparallel's own expect running tasks culled: its issue 203)."""
    session = Session()
    db = TaskLogDB(location=str(tmp_path), projection="dict?record_limit=20&cull_fraction=0.2")
    try:
        running = []
        for i in range(40):
            rec = _request(session)
            db.add_record(rec["msg_id"], rec)
            if i % 2:
                running.append(rec["msg_id"])
            else:
                db.update_record(rec["msg_id"], {"result_header": {"msg_id": "r"}, "completed": _now()})
        history = db.get_history()
        assert len(history) <= 24 and set(running) <= set(history)  # limits hold for completed tasks
        assert all(db.get_record(m)["completed"] is None for m in running)
        for m in running:
            db.update_record(m, {"result_header": {"msg_id": "r"}, "completed": _now()})
        rec = _request(session)
        db.add_record(rec["msg_id"], rec)  # now the completed ones may go
        assert len(db.get_history()) <= 20 and rec["msg_id"] in db.get_history()
    finally:
        db.close()


def test_location_defaults_and_is_documented(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db = TaskLogDB()
    try:
        assert os.path.isdir(tmp_path / "tasklog")  # no IPython app: the current directory
        assert "profile directory" in TaskLogDB.location.help
    finally:
        db.close()


@pytest.mark.parametrize("backend", ["dict", "sqlite"])
def test_killed_hub_loses_nothing_it_flushed(tmp_path: Any, backend: str) -> None:
    """SIGKILL a Hub process after a flush: the write-behind batch was never stored, the log has it."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, str(PROCS / "ipp_hub.py"), str(tmp_path), backend, "300"],
                            stdout=subprocess.PIPE, text=True,
                            env=child_env())
    assert proc.stdout is not None
    ids = []
    for line in proc.stdout:
        if line.strip() == "flushed":
            break
        ids.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(ids) == 300
    if backend == "sqlite":  # the batch of 1,024 events was never handed over: the file lags the log
        lagging = projections.open(f"sqlite:///{tmp_path / 'tasklog' / 'projection.db'}")
        assert lagging.last_seq < 1200
        lagging.close()
    db = TaskLogDB(location=str(tmp_path), projection=backend)
    try:
        assert sorted(db.get_history()) == sorted(ids)  # (ties in the millisecond go by msg_id)
        for i, mid in enumerate(ids):
            rec = db.get_record(mid)
            assert rec["stdout"] == f"line {i}\n" and rec["engine_uuid"] == "e1"
            assert rec["result_content"] == {"status": "ok"}
    finally:
        db.close()


def test_a_new_controller_waits_for_the_old_writer_and_says_so(tmp_path: Any, caplog: Any) -> None:
    import logging
    import threading

    from tasklog import LogBusyError

    old = TaskLog.open(str(tmp_path / "tasklog"), "async")
    old.submit("from-the-old-hub")
    log = logging.getLogger("tasklog-test")
    with pytest.raises(LogBusyError, match=r"waited 0\.2 s"):
        TaskLogDB(location=str(tmp_path), writer_timeout=0.2, log=log)
    threading.Timer(0.5, old.close).start()  # the old controller finishes exiting
    with caplog.at_level(logging.INFO, logger="tasklog-test"):
        db = TaskLogDB(location=str(tmp_path), writer_timeout=30, log=log)
    try:
        assert "held by another writer" in caplog.text and "waiting up to 30 s" in caplog.text
        assert "the previous writer is gone" in caplog.text
        assert db.get_record("from-the-old-hub")["msg_id"] == "from-the-old-hub"
    finally:
        db.close()


def test_a_pinned_projection_follows_the_hub_again(tmp_path: Any) -> None:
    path = str(tmp_path / "tasklog")
    spec = f"sqlite:///{tmp_path / 'records.db'}"
    with TaskLog.open(path) as log:
        for i in range(5):
            log.submit(f"t{i}")
        projections.replay(log, spec, stop=2).close()  # time travel: pinned at event 2
    db = TaskLogDB(location=str(tmp_path), projection=spec)
    try:
        db.add_record("t9", {"msg_id": "t9", "header": {"msg_id": "t9"}, "submitted": _now()})
        assert set(db.get_history()) == {"t0", "t1", "t2", "t3", "t4", "t9"}
    finally:
        db.close()
    with projections.open(spec) as after:
        assert after.pinned is None and after.last_seq == 6


def test_a_hub_can_serve_its_dashboard_from_a_child(tmp_path: Any, caplog: Any) -> None:
    """serve_port starts `tasklog serve` beside the Hub: its URL logged, the Hub's records live, gone on close."""
    from tests.support.served import TOKEN, Served

    caplog.set_level(logging.INFO, "hub-with-dashboard")
    db = TaskLogDB(location=str(tmp_path), serve_port=0, serve_token=TOKEN, log=logging.getLogger("hub-with-dashboard"))
    try:
        assert db.serving is not None and db.serving.url is not None
        assert db.serving.url in caplog.text and db.serving.url.startswith("http://127.0.0.1:")
        rec = _request(Session())
        db.add_record(rec["msg_id"], rec)
        db.update_record(rec["msg_id"], {"engine_uuid": "e1"})
        served = Served(db.serving.url.split("/?token=")[0], db.serving.url, None)  # type: ignore[arg-type]
        deadline = time.monotonic() + 20
        while not served.api("/api/tasks", q="{}")["records"] and time.monotonic() < deadline:
            time.sleep(0.2)
        [row] = served.api("/api/tasks", q="{}")["records"]
        assert row["msg_id"] == rec["msg_id"] and row["engine_uuid"] == "e1"
        assert served.get("/api/tasks", token="wrong-token-0123456789").status == 403
    finally:
        db.close()
    assert db.serving.returncode is not None


def test_a_controller_on_an_older_log_says_it_indexes_it_first(tmp_path: Any, caplog: Any) -> None:
    import logging
    import shutil

    from tests.support import SCHEMA_2_LOG

    shutil.copytree(SCHEMA_2_LOG, tmp_path / "tasklog")
    log = logging.getLogger("tasklog-test")
    with caplog.at_level(logging.INFO, logger="tasklog-test"):
        db = TaskLogDB(location=str(tmp_path), log=log)
    try:
        assert "written with log schema 2: indexing its streams for schema 3 once" in caplog.text
        assert db.tasklog.store.indexed and db.find_records({})
    finally:
        db.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tasklog-test"):
        TaskLogDB(location=str(tmp_path), log=log).close()
    assert "indexing" not in caplog.text  # once
