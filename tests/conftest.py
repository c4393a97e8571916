"""Shared fixtures: log directories and a real MongoDB wire-protocol server (helpers: ``tests.support``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """A cache directory of the run's own: a read model of a read-only log is kept in the user's
    cache (projections.readmodel), which a test must never write to (each xdist worker has one)."""
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="tasklog-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's cache directory."""
    shutil.rmtree(os.environ.get("XDG_CACHE_HOME", ""), ignore_errors=True)

# The modules that start ipyparallel clusters (a controller, its schedulers, up to nine engines with
# their nannies). Under pytest-xdist (`make test`: `-n 3 --dist loadgroup`) each of ipyparallel's
# own suites (a projection each, the longest tests by far) runs on a worker of its own, and the
# other cluster tests one after another on a third, all three started first: the rest of the
# suite fills the workers around them. Each suite has its own IPYTHONDIR (ipyparallel's conftest)
# and its harness waits 120 s for engines (tests.support.ipp_plugin), so two at once do not collide.
_CLUSTER_MODULES = {"test_ipyparallel_suite.py", "test_ipyparallel_cluster.py", "test_ipyparallel_label.py"}
_OWN_SUITE = "test_ipyparallel_client_suite_passes_on_tasklog"


def _cluster_group(item: pytest.Item) -> str | None:
    """The xdist group of a test that starts clusters; None for any other."""
    if item.path.name not in _CLUSTER_MODULES:
        return None
    if item.name.startswith(_OWN_SUITE):
        return f"ipyparallel-suite-{item.name[len(_OWN_SUITE):].strip('[]')}"
    return "ipyparallel"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the tests that start ipyparallel clusters in their xdist groups, first under xdist."""
    for item in items:
        group = _cluster_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):  # an xdist worker: every worker collects, in the same order
        # The groups are the longest pieces of work: started last, they ran alone at the end.
        items.sort(key=lambda item: _cluster_group(item) is None)


@pytest.fixture
def log_dir(tmp_path: Path) -> str:
    """A path where a new log may be created."""
    return str(tmp_path / "log")


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB wire-protocol server: TASKLOG_TEST_MONGO_URI, or SecantusDB on a random loopback port."""
    from tests.support.mongo_server import session_server

    with session_server(tmp_path_factory) as uri:
        yield uri


