"""A pytest plugin for running ipyparallel's own test modules against TaskLogDB.

ipyparallel's test harness starts its controller with ``--dictdb``; loaded with
``-p ipp_plugin``, this replaces that flag with TaskLogDB, on the projection named by
``TASKLOG_IPP_PROJECTION`` and the log location named by ``TASKLOG_IPP_LOCATION``. Only the
harness's command line changes: the controller, the Hub and TaskLogDB are the real ones.
"""

from __future__ import annotations

import os
from typing import Any

import ipyparallel.tests as ipp_tests

_start = ipp_tests.TestProcessLauncher.start


def _tasklog_args() -> list[str]:
    return ["--IPController.db_class=tasklog.ipyparallel.TaskLogDB",
            f"--TaskLogDB.projection={os.environ['TASKLOG_IPP_PROJECTION']}",
            f"--TaskLogDB.location={os.environ['TASKLOG_IPP_LOCATION']}"]


def _start_with_tasklog(self: Any) -> Any:
    if "--dictdb" in self.cmd_and_args:
        at = self.cmd_and_args.index("--dictdb")
        self.cmd_and_args = [*self.cmd_and_args[:at], *_tasklog_args(), *self.cmd_and_args[at + 1:]]
    return _start(self)


ipp_tests.TestProcessLauncher.start = _start_with_tasklog
