"""The read path (issue 22): what a person asking a log pays, on the demo's events, beside the raw
read of the same log (LMDB values msgpack-decoded in a plain loop: the ceiling) in the same run.

Each command runs as a user runs it, a new process (its start included), and its peak RSS is
recorded. ``cold`` removes the read model first; ``warm`` finds it caught up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

import projections
from bench.harness import record, sizes
from projections import readmodel
from projections.backends.sqlite import remove_database
from tasklog import TaskLog
from tasklog.demo import simulate

ROUNDS = 3
_HEAD = 5  # the value's version byte and CRC-32 (tasklog.codec), before the msgpack payload
_PEAK = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


@pytest.fixture(scope="module", params=sizes("read_events"))
def demo_log(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """A log of the demo's events (about 5.2 a task), written before any clock starts."""
    tmp = tempfile.mkdtemp(prefix="tasklog-bench-read-")
    path = os.path.join(tmp, "log")
    with TaskLog.open(path, "process") as log:
        batch: list[Any] = []
        for event in simulate(request.param * 10 // 52, seed=22):
            batch.append(event)
            if len(batch) == 10_000:
                log.append_many(batch)
                batch = []
        log.append_many(batch)
        n = log.last_seq
    yield path, n
    shutil.rmtree(tmp, ignore_errors=True)


def _raw_read(path: str) -> int:
    count = 0
    unpack = msgpack.unpackb
    with TaskLog.open(path, readonly=True) as log, log.view() as view:
        for _, raw in view.raw():
            unpack(memoryview(raw)[_HEAD:])
            count += 1
    return count


def test_raw_read(benchmark: Any, demo_log: tuple[str, int]) -> None:
    path, n = demo_log
    record(benchmark, n, "n/a (read)", "read path", role="raw_read", scenario="read path (events/s)",
           series="raw LMDB + msgpack")
    assert benchmark.pedantic(_raw_read, args=(path,), rounds=ROUNDS) == n


@pytest.mark.parametrize("kind", ["dict", "sqlite"])
def test_replay_of_the_demo(benchmark: Any, demo_log: tuple[str, int], kind: str) -> None:
    """The fold itself, in this process: the log's events into a new projection, against the raw read."""
    path, n = demo_log
    tmp = tempfile.mkdtemp(prefix="tasklog-bench-replay-")

    def run() -> None:
        spec = kind if kind == "dict" else f"sqlite:///{os.path.join(tmp, f'r{len(os.listdir(tmp))}.db')}"
        with TaskLog.open(path, readonly=True) as log:
            projections.open(spec, log=log).close()
    record(benchmark, n, "n/a (read)", "read path", role=f"replay_demo_{kind}", baseline="raw_read",
           scenario="read path (events/s)", series=f"replay into {kind}")
    benchmark.pedantic(run, rounds=ROUNDS)
    shutil.rmtree(tmp, ignore_errors=True)


def _command(*args: str) -> int:
    """Run ``tasklog ARGS`` in a new process; its peak RSS in KiB."""
    done = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "tasklog", *args],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


COMMANDS = {
    "query": ["query", '{"completed": null}', "--keys", "msg_id"],
    "stats": ["stats"],
    "timeline": ["timeline", "-o", os.devnull],
    "report": ["report", "-o", os.devnull],
}


@pytest.mark.parametrize("warmth", ["cold", "warm"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_reading_command(benchmark: Any, demo_log: tuple[str, int], command: str, warmth: str) -> None:
    path, n = demo_log
    model = os.path.join(path, readmodel.FILE)
    if warmth == "warm":
        _command("index", "--log", path)
    peaks: list[int] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        if warmth == "cold":
            remove_database(model)
        return (), {}

    def run() -> None:
        peaks.append(_command(*COMMANDS[command], "--log", path))
    record(benchmark, n, "n/a (read)", "read path", role=f"{command}_{warmth}", baseline="raw_read",
           scenario="read path answer time (seconds)", series=f"{command} ({warmth})", plot="seconds")
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS)
    benchmark.extra_info["peak_rss_mb"] = round(max(peaks) / 1024, 1)
