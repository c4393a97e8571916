"""Benchmark fixtures: sizes by profile, fresh directories, workloads built before the clock starts."""

from __future__ import annotations

import gc
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent / "tests"))  # the test MongoDB server helper

PROFILE = os.environ.get("TASKLOG_BENCH_PROFILE", "quick")
SIZES: dict[str, dict[str, list[int]]] = {
    # events per run, by scenario family; "quick" takes about 8 minutes on 2 cores
    "quick": {"events": [10_000, 100_000], "one_sync": [1_000], "replay": [100_000], "records": [100_000],
              "mongo_events": [5_000], "baseline_tasks": [1_000, 5_000], "mongo_tasks": [500],
              "live_events": [10_000], "memory_events": [1_000_000]},
    "full": {"events": [10_000, 100_000, 1_000_000], "one_sync": [2_000], "replay": [1_000_000],
             "records": [100_000, 1_000_000], "mongo_events": [100_000], "baseline_tasks": [5_000, 20_000],
             "mongo_tasks": [1_000], "live_events": [100_000], "memory_events": [1_000_000]},
}[PROFILE]


def sizes(kind: str) -> list[int]:
    """The work sizes of a scenario family under the current profile."""
    return SIZES[kind]


KEY = struct.Struct(">Q").pack


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


def record(benchmark: Any, events: int, durability: str, group: str, **extra: Any) -> None:
    """Attach what the summary needs to turn seconds into events/s and ratios; freeze the workload."""
    benchmark.group = group
    benchmark.extra_info.update({"events": events, "durability": durability, **extra})
    # The workload is built before the clock starts and is not part of the store under test: keep
    # the cyclic GC from rescanning it (100k prebuilt hub calls cost the async hub pattern a third
    # of its time in full collections). What the stores allocate is collected as usual.
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    """Give the frozen workload back to the collector after each benchmark."""
    yield
    gc.unfreeze()
    gc.collect()


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TASKLOG_TEST_MONGO_URI, or SecantusDB started on a random loopback port (as in tests/)."""
    from mongo_server import session_server

    with session_server(tmp_path_factory) as uri:
        yield uri
