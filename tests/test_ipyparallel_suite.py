"""ipyparallel's own client-facing test modules, run against a controller on TaskLogDB.

Each module starts its own controller (and engines) on loopback, stops it, and the next module's
controller starts at once on the same log: so this also restarts a Hub on a log many times.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HERE

from tasklog import TaskLog
from tasklog.verify import verify

MODULES = ["test_client", "test_asyncresult", "test_lbview", "test_view", "test_dependency"]


@pytest.mark.slow
@pytest.mark.parametrize("projection", ["dict", "sqlite"])
def test_ipyparallel_client_suite_passes_on_tasklog(projection: str, tmp_path: Path) -> None:
    location = tmp_path / "db"
    env = {**os.environ, "TASKLOG_IPP_PROJECTION": projection, "TASKLOG_IPP_LOCATION": str(location),
           "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "ipp_plugin", "-p", "no:cacheprovider",
                           "-o", "addopts=", "--pyargs", *(f"ipyparallel.tests.{m}" for m in MODULES)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, f"ipyparallel's suite failed on {projection}:\n{tail}\n{proc.stderr[-2000:]}"
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", summary)) else 0
    assert passed >= 170 and "failed" not in summary and "error" not in summary, summary
    # The controllers really stored the tasks in tasklog, one after another on the same log.
    with TaskLog.open(str(location / "tasklog"), readonly=True) as log:
        assert len(log) > 1000 and verify(log) == []
