"""What the benchmarks share: the sizes of each scenario family by profile, the key packer, and
``record``, which labels a benchmark's result for the summary (``bench/report.py``)."""

from __future__ import annotations

import gc
import os
import struct
from typing import Any

__all__ = ["PROFILE", "KEY", "sizes", "record"]

PROFILE = os.environ.get("TASKLOG_BENCH_PROFILE", "quick")
SIZES: dict[str, dict[str, list[int]]] = {
    # events per run, by scenario family; "quick" takes about 8 minutes on 2 cores
    "quick": {"events": [10_000, 100_000], "one_sync": [1_000], "replay": [100_000], "records": [100_000],
              "mongo_events": [5_000], "baseline_tasks": [1_000, 5_000], "mongo_tasks": [500],
              "live_events": [10_000], "memory_events": [1_000_000], "read_events": [100_000],
              "serve_events": [100_000]},
    "full": {"events": [10_000, 100_000, 1_000_000], "one_sync": [2_000], "replay": [1_000_000],
             "records": [100_000, 1_000_000], "mongo_events": [100_000], "baseline_tasks": [5_000, 20_000],
             "mongo_tasks": [1_000], "live_events": [100_000], "memory_events": [1_000_000],
             "read_events": [100_000, 1_000_000], "serve_events": [1_000_000]},
}[PROFILE]


def sizes(kind: str) -> list[int]:
    """The work sizes of a scenario family under the current profile."""
    return SIZES[kind]


KEY = struct.Struct(">Q").pack


def record(benchmark: Any, events: int, durability: str, group: str, **extra: Any) -> None:
    """Attach what the summary needs to turn seconds into events/s and ratios; freeze the workload."""
    benchmark.group = group
    benchmark.extra_info.update({"events": events, "durability": durability, **extra})
    # The workload is built before the clock starts and is not part of the store under test: keep
    # the cyclic GC from rescanning it (100k prebuilt hub calls cost the async hub pattern a third
    # of its time in full collections). What the stores allocate is collected as usual.
    gc.collect()
    gc.freeze()
