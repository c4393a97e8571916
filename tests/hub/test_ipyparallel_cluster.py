"""End to end: a real ipyparallel cluster (controller + 2 engines on loopback) storing tasks in tasklog."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ipyparallel as ipp  # a test dependency (make test installs it): missing is a failure, not a skip
import pytest

from tests.support.ports import controller_ports


@contextmanager
def _cluster(tmp: Path, location: Path, n: int) -> Iterator[Any]:
    args = ["--IPController.db_class=tasklog.ipyparallel.TaskLogDB", f"--TaskLogDB.location={location}",
            controller_ports()]
    cluster = ipp.Cluster(n=n, profile_dir=str(tmp / "profile"), controller_args=args,
                          controller_ip="127.0.0.1", log_level=30)
    rc = cluster.start_and_connect_sync(activate=False)
    try:
        rc.wait_for_engines(n, timeout=60)
        yield rc
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def _speak(x: int) -> int:
    import sys

    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    return x * 2


def _boom() -> None:
    raise ValueError("boom")


# Engines cannot import this test module: send the functions by value, as for __main__'s.
_speak.__module__ = _boom.__module__ = "__main__"


def _wait_for_db(rc: Any, query: dict[str, Any], n: int, timeout: float = 20) -> list[dict[str, Any]]:
    # iopub and replies reach the Hub on separate sockets: poll until the records are complete.
    deadline = time.monotonic() + timeout
    while True:
        found: list[dict[str, Any]] = rc.db_query(query)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# The seed's example builds its hour-ago time naive, as the test does; jupyter_client warns about it.
@pytest.mark.filterwarnings("ignore:Interpreting naive datetime:DeprecationWarning")
def test_cluster_records_survive_restart_and_purge(tmp_path: Path) -> None:
    location = tmp_path / "db"
    with _cluster(tmp_path, location, 2) as rc:
        view = rc.load_balanced_view()
        speak = view.map_async(_speak, range(4))
        assert speak.get(timeout=30) == [0, 2, 4, 6]
        bad = view.apply_async(_boom)
        with pytest.raises(ipp.error.RemoteError, match="boom"):
            bad.get(timeout=30)
        again = rc.resubmit(speak.msg_ids[0])
        again.get(timeout=30)
        new_id = again.msg_ids[0]
        ids = [*speak.msg_ids, bad.msg_ids[0], new_id]
        records = _wait_for_db(rc, {"msg_id": {"$in": ids}, "completed": {"$ne": None}, "stdout": {"$ne": ""}}, 5)
        by_id = {r["msg_id"]: r for r in records}
        assert len(by_id) == 5
        first = rc.db_query({"msg_id": speak.msg_ids[0]})[0]
        assert first["stdout"] == "out 0\n" and first["stderr"] == "err 0\n"
        assert first["resubmitted"] == new_id and by_id[new_id]["stdout"] == "out 0\n"
        failed = rc.db_query({"msg_id": bad.msg_ids[0]}, keys=["error", "result_content"])[0]
        assert failed["result_content"]["status"] == "error" and failed["error"]["ename"] == "ValueError"
        # The seed document's example queries, as written there.
        hourago = datetime.now() - timedelta(1.0 / 24)
        me = rc.session.session
        incomplete = rc.db_query({"complete": None}, keys=["msg_id", "started"])  # sic: 'complete'
        assert {r["msg_id"] for r in incomplete} >= set(ids)  # no record has 'complete': all match
        assert rc.db_query({"completed": None}, keys=["msg_id", "started"]) == []
        recent = rc.db_query({"started": {"$gte": hourago}, "client_uuid": me})
        assert {r["msg_id"] for r in recent} >= set(ids)
        assert rc.db_query({"started": {"$le": hourago}, "client_uuid": {"$ne": me}}) == []
        uuids = [rc._engines[e] for e in rc.ids]
        hist = rc.db_query({"engine_uuid": {"$in": uuids}}, keys="result_header")
        assert {r["msg_id"] for r in hist} >= set(ids)
        assert all(set(r) == {"msg_id", "result_header"} and r["result_header"] for r in hist)
        history = rc.hub_history()
        assert set(ids) <= set(history)

    _timeline_and_story_of_a_real_cluster(location / "tasklog", bad.msg_ids[0], speak.msg_ids[0], new_id)

    # A new cluster on the same location: a new client sees the old records.
    with _cluster(tmp_path, location, 1) as rc:
        assert set(ids) <= set(rc.hub_history())
        old = rc.db_query({"msg_id": speak.msg_ids[1]})[0]
        assert old["stdout"] == "out 1\n" and old["completed"] is not None
        assert rc.get_result(speak.msg_ids[1]).get(timeout=30) == [2]  # a map chunk
        rc.purge_hub_results(ids)
        assert rc.db_query({"msg_id": {"$in": ids}}) == []

    # Purged stays purged after another restart.
    with _cluster(tmp_path, location, 1) as rc:
        assert rc.db_query({"msg_id": {"$in": ids}}) == []
        assert not set(ids) & set(rc.hub_history())


def _timeline_and_story_of_a_real_cluster(log: Path, failed: str, original: str, resubmission: str) -> None:
    """Issue 14 on a real Hub's log: engines run one task at a time, so their tracks never overlap."""
    import json

    from tests.support import run_cli
    from tests.support.trace_check import check_trace, overlaps

    out = log.parent / "timeline.json"
    run_cli("timeline", "--log", str(log), "-o", str(out), check=True)
    events = json.loads(out.read_text())["traceEvents"]
    trace = check_trace({"traceEvents": events})
    assert len(trace["tracks"]) == 2 and all(overlaps(s) == [] for s in trace["slices"].values())
    assert [e["args"]["msg_id"] for e in events if e.get("cat") == "failed"] == [failed]
    assert trace["phases"].get("s") == trace["phases"].get("f") == 1  # the resubmit's arrow
    told = run_cli("story", "--log", str(log), resubmission, check=True).stdout
    assert f"resubmit chain: {original} -> {resubmission}" in told
    assert f"{original} resubmitted as {resubmission}" in told and "status ok" in told


@pytest.mark.slow
def test_a_controller_killed_with_sigkill_can_be_started_again(tmp_path: Path) -> None:
    """The controller's forked schedulers outlive a SIGKILL; they must not keep the log from the next one."""
    import contextlib
    import os
    import signal

    import psutil

    location = tmp_path / "db"
    args = ["--IPController.db_class=tasklog.ipyparallel.TaskLogDB", f"--TaskLogDB.location={location}"]
    first = ipp.Cluster(n=1, profile_dir=str(tmp_path / "p1"), controller_args=[*args, controller_ports()],
                        controller_ip="127.0.0.1", log_level=30)
    rc = first.start_and_connect_sync(activate=False)
    orphans: list[psutil.Process] = []
    try:
        rc.wait_for_engines(1, timeout=60)
        done = rc.load_balanced_view().map_async(_speak, range(3), chunksize=1)
        assert done.get(timeout=30) == [0, 2, 4]
        ids = done.msg_ids
        _wait_for_db(rc, {"msg_id": {"$in": ids}, "completed": {"$ne": None}, "stdout": {"$ne": ""}}, 3)
        time.sleep(0.5)  # past the commit interval: everything the client was told is on disk
        controller = psutil.Process(first.controller.process.pid)
        orphans = controller.children(recursive=True)
        controller.kill()  # SIGKILL, the controller process alone
        controller.wait(10)
        assert any(p.is_running() for p in orphans), "no forked scheduler outlived the controller"
        rc.close()
        with contextlib.suppress(Exception):
            first.stop_engines_sync()
        # No waiting allowed: a lock still held by an orphan would fail this controller at once.
        again = ipp.Cluster(n=1, profile_dir=str(tmp_path / "p2"), controller_ip="127.0.0.1", log_level=30,
                            controller_args=[*args, "--TaskLogDB.writer_timeout=0", controller_ports()])
        rc2 = again.start_and_connect_sync(activate=False)
        try:
            rc2.wait_for_engines(1, timeout=60)
            assert set(ids) <= set(rc2.hub_history())
            old = rc2.db_query({"msg_id": ids[1]})[0]
            assert old["stdout"] == "out 1\n" and old["completed"] is not None
            assert rc2.get_result(ids[1]).get(timeout=30) == [2]  # a map chunk
        finally:
            rc2.close()
            again.stop_cluster_sync()
    finally:
        for p in orphans:
            with contextlib.suppress(psutil.Error):
                os.kill(p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            first.stop_cluster_sync()


@pytest.mark.slow
def test_ipcluster_with_the_profile_config_the_readme_documents(tmp_path: Path) -> None:
    """ipcluster does not forward --IPController.db_class; the profile's ipcontroller_config.py works."""
    import subprocess
    import sys

    from tasklog import TaskLog

    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "ipcontroller_config.py").write_text(
        'c.IPController.db_class = "tasklog.ipyparallel.TaskLogDB"\n'
        'c.TaskLogDB.projection = "sqlite"\n'
        'c.IPController.ip = "127.0.0.1"\n')
    ipcluster = [sys.executable, "-m", "ipyparallel.cluster", "--profile-dir", str(profile)]
    subprocess.run([*ipcluster[:3], "start", *ipcluster[3:], "-n", "1", "--daemonize"], check=True, timeout=120)
    try:
        rc = ipp.Client(profile_dir=str(profile), timeout=60)
        try:
            rc.wait_for_engines(1, timeout=60)
            ar = rc.load_balanced_view().apply_async(_speak, 21)
            assert ar.get(timeout=30) == 42
            assert _wait_for_db(rc, {"msg_id": ar.msg_ids[0], "stdout": "out 21\n"}, 1)
        finally:
            rc.close()
    finally:
        subprocess.run([*ipcluster[:3], "stop", *ipcluster[3:]], check=False, timeout=120)
    with TaskLog.open(str(profile / "tasklog"), readonly=True) as log:
        assert any(getattr(e, "msg_id", None) == ar.msg_ids[0] for _, e in log.read())
    assert (profile / "tasklog" / "projection.db").exists()
