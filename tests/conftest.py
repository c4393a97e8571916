"""Shared fixtures: log directories and a real MongoDB wire-protocol server (helpers: ``tests.support``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# The modules that start ipyparallel clusters (a controller, its schedulers, up to nine engines with
# their nannies). Under pytest-xdist (`-n 2 --dist loadgroup`) they run one after another on one
# worker: two clusters at once on 2 cores starved engines past ipyparallel's own deadlines.
_CLUSTER_MODULES = {"test_ipyparallel_suite.py", "test_ipyparallel_cluster.py", "test_ipyparallel_label.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the tests that start ipyparallel clusters in one xdist group, first under xdist."""
    for item in items:
        if item.path.name in _CLUSTER_MODULES:
            item.add_marker(pytest.mark.xdist_group("ipyparallel"))
    if hasattr(config, "workerinput"):  # an xdist worker: every worker collects, in the same order
        # The group is the longest piece of work: started last, it ran alone at the end.
        items.sort(key=lambda item: item.path.name not in _CLUSTER_MODULES)


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


