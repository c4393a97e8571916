"""Scenario: peak resident memory of the hub pattern at 1M events with a live SQLite projection."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import record, sizes

HERE = Path(__file__).parent
LIMIT = 300 * 1024 * 1024  # issue 6: the log is on disk, not in memory


@pytest.mark.parametrize("n", sizes("memory_events"))
def test_peak_rss_hub_pattern_sqlite(benchmark: Any, n: int) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-rss-")
    out: dict[str, Any] = {}

    def run() -> None:
        shutil.rmtree(os.path.join(tmp, "log"), ignore_errors=True)
        proc = subprocess.run([sys.executable, str(HERE / "memory_probe.py"), str(n),
                               f"sqlite:///{tmp}/p{len(os.listdir(tmp))}.db", os.path.join(tmp, "log")],
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    record(benchmark, n, "async (5 ms) + live sqlite projection, own process", "memory", role="peak_rss_sqlite")
    benchmark.pedantic(run, rounds=1)
    benchmark.extra_info["peak_rss_mb"] = round(out["peak_rss"] / 2**20, 1)
    benchmark.extra_info["limit_mb"] = LIMIT // 2**20
    shutil.rmtree(tmp, ignore_errors=True)
    assert out["events"] == n
