"""Benchmark fixtures: sizes by profile, fresh directories, workloads built before the clock starts."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def fresh_dir() -> Iterator[Callable[[], str]]:
    """Make a new empty directory per round; remove them all afterwards."""
    made: list[str] = []

    def make() -> str:
        d = tempfile.mkdtemp(prefix="tasklog-bench-")
        made.append(d)
        return os.path.join(d, "log")
    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    """Give the frozen workload back to the collector after each benchmark."""
    yield
    gc.unfreeze()
    gc.collect()


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TASKLOG_TEST_MONGO_URI, or SecantusDB started on a random loopback port (as in tests/)."""
    from tests.support.mongo_server import session_server

    with session_server(tmp_path_factory) as uri:
        yield uri
