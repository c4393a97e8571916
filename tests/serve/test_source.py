"""What the server reads, in this process: new commits folded in memory over the read model, the
read model moved on by a child, and the task table kept current from what the events touched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

import projections
from projections.overlay import Overlay
from tasklog import TaskLog
from tasklog.demo import simulate
from tasklog.serve.reading import Reading
from tasklog.serve.source import Rebase, Source
from tasklog.serve.tasks import TaskTable
from tests.support import child_env


def _columns(arrays: Any) -> list[tuple[Any, ...]]:
    """The table's rows by msg_id, whatever their positions."""
    ids = [arrays.ids[i] for i in arrays.rows]
    engines = [arrays.engines[c] if c >= 0 else None for c in arrays.engine]
    return sorted(zip(ids, arrays.submitted.tolist(), arrays.started.tolist(), arrays.completed.tolist(),
                      arrays.failed.tolist(), engines))


def _write(path: str, code: str) -> None:
    """Run ``code`` in a writer process (LMDB: the server's process holds the log read-only)."""
    preamble = ("import sys\nfrom tasklog import *\nfrom tasklog.demo import simulate\n"
                "from tasklog.fields import utcnow\n"
                "log = TaskLog.open(sys.argv[1], 'process')\n"
                "def demo(n, seed, start=0, stop=None):\n"
                "    events = list(simulate(n, seed=seed))[start:stop]\n"
                "    for i in range(0, len(events), 500):\n"
                "        log.append_many(events[i:i + 500])\n")
    subprocess.run([sys.executable, "-c", preamble + code + "\nlog.close()", path], check=True, env=child_env())


def _last(path: str) -> int:
    with TaskLog.open(path, readonly=True) as log:
        return log.last_seq


def test_new_commits_are_folded_in_memory_and_the_table_follows_them(tmp_path: Any) -> None:
    path = str(tmp_path / "log")
    _write(path, "demo(200, 1)")
    reading = Reading(path, None)
    source = reading.source
    try:
        reading.refresh()
        before = source.projection.inner.last_seq  # type: ignore[attr-defined]
        assert isinstance(source.projection, Overlay)
        reading.arrays()
        victim = source.projection.find_page({}, sort="msg_id", limit=1).records[0]["msg_id"]
        _write(path, "demo(100, 2)\nnow = utcnow()\n"
               "log.append_many([Submit('extra', {'msg_id': 'extra'}, {}, {}, [], 'c', 'task', now), "
               "Start('extra', 'engine-x', now), Resubmit('extra', 'extra-2', now), "
               "Complete('extra-2', {}, {'status': 'error'}, {}, [], now, now, now, 'engine-y')])\n"
               f"log.append(Drop([{victim!r}]))")
        last = _last(path)
        assert reading.refresh() == last
        assert source.projection.inner.last_seq == before  # type: ignore[attr-defined]  # folded in memory
        fresh = TaskTable()
        fresh.update(source.projection, None)
        assert _columns(reading.arrays()) == _columns(fresh.arrays())
        rows = {r[0]: r for r in _columns(fresh.arrays())}
        assert victim not in rows and rows["extra-2"][4] is True and rows["extra-2"][5] == "engine-y"
    finally:
        reading.close()


def test_the_readers_model_is_moved_on_by_a_child(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Rebase, "EVENTS", 300)
    path = str(tmp_path / "log")
    _write(path, "demo(50, 3)")
    source = Source(path, None)
    try:
        source.refresh()
        _write(path, "demo(200, 4)")
        last = _last(path)
        source.refresh()  # folded in memory, past the bound: a `tasklog index` child starts
        deadline = time.monotonic() + 60
        while not source._rebase.ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert source.refresh() and source.projection.last_seq == last
        with projections.open(f"sqlite:///{os.path.join(path, 'readmodel.db')}") as kept:
            assert kept.last_seq == last  # the child caught the file up
        assert source.projection.inner.last_seq == last  # type: ignore[attr-defined]
    finally:
        source.close()


def test_the_table_equals_a_fresh_read_after_many_small_refreshes(tmp_path: Any) -> None:
    path = str(tmp_path / "log")
    total = len(list(simulate(300, seed=5)))
    _write(path, "demo(300, 5, 0, 100)")
    reading = Reading(path, None)
    try:
        reading.refresh()
        for i in range(100, total, 137):
            _write(path, f"demo(300, 5, {i}, {i + 137})")
            reading.refresh(table=bool(i % 2))
        fresh = TaskTable()
        fresh.update(reading.source.projection, None)
        got, want = reading.arrays(), fresh.arrays()
        assert _columns(got) == _columns(want) and np.array_equal(np.sort(got.started), np.sort(want.started))
    finally:
        reading.close()
