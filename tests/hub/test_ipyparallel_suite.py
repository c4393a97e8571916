"""ipyparallel's own client-facing test modules, run against a controller on TaskLogDB.

Each module starts its own controller (and engines) on loopback, stops it, and the next module's
controller starts at once on the same log: so this also restarts a Hub on a log many times.
tests/support/ipp_plugin.py puts TaskLogDB in ipyparallel's harness and fits the harness to a loaded
machine; the last test here checks that one failed test does not break the tests after it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tasklog import TaskLog
from tasklog.verify import verify
from tests.support import REPO

MODULES = ["test_client", "test_asyncresult", "test_lbview", "test_view", "test_dependency"]
# ipp_plugin.RESTART_MARK (not imported: importing the plugin patches ipyparallel's harness here too).
RESTART_MARK = "tasklog-ipp-restart:"


def _run_with_tasklog(projection: str, tmp: Path, *targets: str, **env_vars: str) -> tuple[int, str]:
    """Run ipyparallel test modules with TaskLogDB under the controller (log in ``tmp``/db, more
    variables in ``env_vars``); the run's exit status and its summary. Its whole output is kept in
    ``tmp``/pytest-output.txt."""
    env = {**os.environ, "TASKLOG_IPP_PROJECTION": projection, "TASKLOG_IPP_LOCATION": str(tmp / "db"),
           "PYTHONPATH": str(REPO), "COLUMNS": "240", **env_vars}  # whole reasons
    out = tmp / "pytest-output.txt"
    with open(out, "w") as sink:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "tests.support.ipp_plugin", "-p",
                               "no:cacheprovider", "-o", "addopts=", *targets],
                              cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                              timeout=1800)
    lines = out.read_text(errors="replace").splitlines()
    for line in lines:
        if line.startswith(RESTART_MARK):  # not a failure, but never hidden: shown in the summary
            warnings.warn(f"ipyparallel's suite on {projection}: {line[len(RESTART_MARK):].strip()}", stacklevel=2)
    # -rfE: the failures' one-line reasons, then the counts; the controllers' and engines' logs
    # (debug level) are in the file.
    start = next((i for i, line in enumerate(lines) if "short test summary" in line), len(lines) - 1)
    return proc.returncode, "\n".join([*lines[start:][-60:], f"(whole output: {out})"])


@pytest.mark.slow
@pytest.mark.parametrize("projection", ["dict", "sqlite"])
def test_ipyparallel_client_suite_passes_on_tasklog(projection: str, tmp_path: Path) -> None:
    location = tmp_path / "db"
    code, summary = _run_with_tasklog(projection, tmp_path, "--pyargs", *(f"ipyparallel.tests.{m}" for m in MODULES))
    assert code == 0, f"ipyparallel's suite failed on {projection}:\n{summary}"
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", summary)) else 0
    assert passed >= 165, summary
    # The controllers really stored the tasks in tasklog, one after another on the same log.
    with TaskLog.open(str(location / "tasklog"), readonly=True) as log:
        assert len(log) > 1000 and verify(log) == []


# Tests run by ipyparallel's harness, as its own are: two break the cluster (an engine busy for good,
# the Hub stopped), the test after each must find a working one.
_BREAKERS = '''
import signal
import time

import psutil
import pytest
from ipyparallel import Client
from ipyparallel.tests import add_engines, launchers
from tests.support import ipp_plugin
from ipyparallel.tests.clienttest import ClusterTestCase
from ipyparallel.tests.conftest import Context, cluster, ipython_dir  # noqa: F401


class TestAfterAFailure(ClusterTestCase):
    engine_count = 1
    test_timeout = 60

    def test_1_fails_leaving_its_engine_busy(self):
        self.client[-1].apply_async(time.sleep, 3600)
        raise AssertionError("on purpose")

    def test_2_runs_on_a_working_cluster(self):
        assert self.client[:].apply_sync(lambda: 2) == [2] * len(self.client)

    def test_3_fails_leaving_the_hub_stopped(self):
        launchers[0].signal(signal.SIGSTOP)  # the controller: the harness starts it first
        raise AssertionError("on purpose")

    def test_4_runs_on_a_working_cluster(self):
        assert self.client[:].apply_sync(lambda: 4) == [4] * len(self.client)
        assert self.client.hub_history()

    def test_5_fails_leaving_its_schedulers_dead(self):
        _kill_the_schedulers()
        with pytest.raises(RuntimeError, match="a scheduler of the test controller exited"):
            add_engines(1)  # found at once, not after the engines' 120 s
        raise AssertionError("on purpose")

    def test_6_runs_on_a_working_cluster(self):
        assert self.client.broadcast_view().apply_sync(lambda: 6) == [6] * len(self.client)

    def test_7_a_failed_start_is_tried_again(self):
        starts = []

        def start_with_dead_schedulers():
            starts.append(len(starts))
            real_start()
            if len(starts) == 1:
                _kill_the_schedulers()
                add_engines(1)

        real_start, ipp_plugin._start_cluster = ipp_plugin._start_cluster, start_with_dead_schedulers
        try:
            ipp_plugin.teardown()
            ipp_plugin.setup()
        finally:
            ipp_plugin._start_cluster = real_start
        assert len(starts) == 2 and "setup: new cluster after a scheduler" in " ".join(ipp_plugin._restarts)
        with Client(profile="iptest") as client:
            client.wait_for_engines(1, timeout=60)
            assert client.broadcast_view().apply_sync(lambda: 7) == [7] * len(client)


    def test_8_leaves_its_engine_deaf(self):
        # sum over a range holds the GIL (no bytecode runs): the engine's control thread waits,
        # its heart (a zmq device, outside the GIL) beats on, and the Hub keeps listing it.
        self.client[-1].apply_async(sum, range(10**13))
        time.sleep(1)

    def test_9_runs_on_a_working_cluster(self):
        assert self.client[:].apply_sync(lambda: 9) == [9] * len(self.client)


def _kill_the_schedulers():
    controller = psutil.Process(launchers[0].process.pid)
    schedulers = controller.children()
    for scheduler in schedulers:
        scheduler.kill()
    deadline = time.monotonic() + 10
    while not all(s.status() == psutil.STATUS_ZOMBIE for s in schedulers) and time.monotonic() < deadline:
        time.sleep(0.1)  # a zombie, not gone: the controller does not reap it
'''


def _survivors(location: Path) -> list[str]:
    """Processes still running with ``location`` in their command line (controllers and their forks)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and str(location) in " ".join(proc.info["cmdline"] or []):
            found.append(f"{proc.pid} {' '.join(proc.info['cmdline'])[:120]}")
    return found


@pytest.mark.slow
def test_a_failed_test_leaves_the_next_one_a_working_cluster(tmp_path: Path) -> None:
    """Issue 20: one test that timed out made every later test of its module fail or error."""
    (tmp_path / "test_breakers.py").write_text(_BREAKERS)
    with pytest.warns(UserWarning) as restarts:
        code, summary = _run_with_tasklog("sqlite", tmp_path, "test_breakers.py", TASKLOG_IPP_CHECK_TIMEOUT="10")
    assert code == 1 and re.search(r"\b3 failed, 6 passed in", summary), summary
    seen = [str(w.message).split(": ", 1)[1] for w in restarts]
    expected = [
        "test_breakers.py::TestAfterAFailure::test_2_runs_on_a_working_cluster: new cluster after a failed test",
        "test_breakers.py::TestAfterAFailure::test_4_runs_on_a_working_cluster: new cluster after a failed test",
        "test_breakers.py::TestAfterAFailure::test_6_runs_on_a_working_cluster: new cluster after a failed test",
        "setup: new cluster after a scheduler of the test controller exited while 1 test engine(s) started",
        "TestAfterAFailure::test_9_runs_on_a_working_cluster: new cluster after a clear unanswered for 10 s"]
    assert [line for line in seen if line in expected] == expected, seen
    for line in seen:
        if line not in expected:  # a busy machine's: never hidden
            warnings.warn(f"ipyparallel's suite on sqlite: {line}", stacklevel=1)
    for failed in ("test_1_", "test_3_", "test_5_"):
        assert re.search(rf"FAILED test_breakers.py::TestAfterAFailure::{failed}.* - AssertionError: on purpose",
                         summary), summary
    # The stopped controller was killed; what it had forked (schedulers, heart monitor) is gone too.
    deadline = time.monotonic() + 30
    while (left := _survivors(tmp_path / "db")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []


def test_the_harness_teardown_never_waits_on_unsent_messages() -> None:
    # ipyparallel's teardown destroyed its context after the client's IO thread had closed the
    # sockets with their default linger (for ever): after a test timed out with a request in
    # flight, or sent one towards a scheduler that had died, the suite sat in zmq's term until its
    # 30-minute timeout.
    code = ("import zmq, tests.support.ipp_plugin\n"
            "context = zmq.Context()\n"
            "push = context.socket(zmq.PUSH)\n"
            "push.connect('tcp://127.0.0.1:1')\n"  # nobody listens: the message can never leave
            "push.send(b'unsent')\n"
            "push.close()\n"  # as the IO thread closes it: its own linger
            "context.destroy()\n"
            "print('destroyed')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stdout == "destroyed\n", done.stderr
