"""ipyparallel's label test (test_label.py) with TaskLogDB variants beside its DictDB/SQLiteDB ones.

Each test stops its controller and the next starts one at once on the same profile, so the new
controller finds the old one still exiting with the log held: it must wait for it and take over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar
from unittest import TestCase

import pytest
from ipyparallel.cluster.launcher import LocalControllerLauncher
from ipyparallel.tests.conftest import temporary_ipython_dir
from ipyparallel.tests.test_label import TaskLabelTest


@pytest.fixture(autouse=True, scope="module")
def ipython_dir() -> Iterator[str]:
    """A fresh IPython directory (its default profile holds the log), as ipyparallel's own conftest does."""
    with temporary_ipython_dir() as path:
        yield path


class _TaskLogLabelTest(TaskLabelTest):
    def clear_db(self) -> None:
        # The Hub purges only the records it has already marked completed. A result that reaches it
        # just after purge_everything() survives: with DictDB or SQLiteDB (a table per controller)
        # it goes with the controller; TaskLogDB keeps history across controllers, so the next test
        # would see it. Wait until the Hub has recorded every result, then purge.
        deadline = time.monotonic() + 30
        while self.rc.db_query({"completed": None}, keys=["msg_id"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        super().clear_db()
        assert self.rc.db_query({}, keys=["msg_id"]) == []

    def tearDown(self) -> None:
        # ipyparallel's tearDown calls the async stop_engines() and stop_controller() without awaiting
        # them ("coroutine ... was never awaited"): its controllers run on, serving, until the Cluster
        # is collected. A log has one async writer, so stop them as the test means to; a controller
        # still exiting when the next starts is then waited for (TaskLogDB.writer_timeout). Its
        # client was left open too, reconnecting for good to ports a later test's controller may
        # bind ("Invalid Signature" logged in an unrelated test of the same worker).
        self.rc.close()
        self.cluster.stop_cluster_sync()


def _launcher(projection: str) -> Any:
    class TaskLogController(LocalControllerLauncher):  # type: ignore[misc]
        controller_args: ClassVar[list[str]] = ["--IPController.db_class=tasklog.ipyparallel.TaskLogDB",
                                                f"--TaskLogDB.projection={projection}"]
    return TaskLogController


@pytest.mark.slow
class TestLabelTaskLogDict(_TaskLogLabelTest, TestCase):
    def get_controller_launcher(self) -> Any:
        return _launcher("dict")


@pytest.mark.slow
class TestLabelTaskLogSQLite(_TaskLogLabelTest, TestCase):
    def get_controller_launcher(self) -> Any:
        return _launcher("sqlite")
