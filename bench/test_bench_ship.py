"""Shipping to NATS JetStream (issue 15): rate with 1 and 3 replicas against the log's own async
append rate, lag from commit to a stream-fed projection under a 10k tasks/s hub pattern, and the
Hub's throughput with ``ship_to`` on against off. Real nats-server processes on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness import record, sizes
from tasklog import TaskLog
from tasklog.demo import simulate
from tasklog.stream import wire
from tasklog.stream.ship import Shipper, Shipping
from tests.support.nats_cluster import NatsCluster

HERE = Path(__file__).parent


ROUNDS = 3
_QUIET = logging.getLogger("bench-ship")
_QUIET.setLevel(logging.CRITICAL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster for the whole module."""
    root = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    c = NatsCluster(root, 3)
    c.start()
    yield c
    c.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def shipped_log() -> Iterator[tuple[str, list[Any]]]:
    """A log of simulated hub events (async, as a Hub writes it) and the events themselves."""
    events = list(simulate(sizes("events")[-1] // 5, seed=3))
    root = tempfile.mkdtemp(prefix="bench-ship-")
    path = os.path.join(root, "log")
    with TaskLog.open(path, "async") as log:
        log.append_many(events)
    yield path, events
    shutil.rmtree(root, ignore_errors=True)


def _new_stream(url: str, replicas: int) -> str:
    name = f"B{uuid.uuid4().hex[:10]}"

    async def make() -> None:
        nc = await wire.connect(wire.parse_servers(url))
        deadline = time.monotonic() + 30
        try:  # a cluster just started elects its JetStream leader first
            await wire.retrying(lambda: wire.ensure_stream(nc.jetstream(), name, replicas),
                                     lambda: time.monotonic() > deadline)
        finally:
            await nc.close()
    asyncio.run(make())
    return name


def test_log_append_async(benchmark: Any, shipped_log: tuple[str, list[Any]],
                          fresh_dir: Callable[[], str]) -> None:
    """The baseline: the same events appended to a new async log and flushed."""
    _, events = shipped_log

    def run(path: str) -> None:
        with TaskLog.open(path, "async") as log:
            log.append_many(events)
    record(benchmark, len(events), "async", "shipping", role="ship_baseline_append", series="log append (async)")
    benchmark.pedantic(run, setup=lambda: ((fresh_dir(),), {}), rounds=ROUNDS)


@pytest.mark.parametrize("replicas", [1, 3])
def test_ship_rate(benchmark: Any, shipped_log: tuple[str, list[Any]], cluster: NatsCluster, replicas: int) -> None:
    """Every event of the log shipped into a new stream (made before the clock starts)."""
    path, events = shipped_log
    with TaskLog.open(path, readonly=True) as log:
        def run(stream: str) -> None:
            stats = Shipper(log, cluster.url, stream, hub="bench").run_sync()
            assert stats.last_acked == log.last_seq
        copies = f"{replicas} replica{'s' if replicas > 1 else ''}"
        record(benchmark, len(events), f"stream of {copies} (acked by a quorum)", "shipping",
               role=f"ship_r{replicas}", baseline="ship_baseline_append", series=f"ship, {copies}")
        benchmark.pedantic(run, setup=lambda: ((_new_stream(cluster.url, replicas),), {}), rounds=ROUNDS)


def test_lag_under_a_hub_pattern(benchmark: Any, cluster: NatsCluster, fresh_dir: Callable[[], str]) -> None:
    """Commit-to-projection lag while a Hub-like writer runs at 10k tasks/s, shipping from its own
    process; a stream-fed projection in another process records each message's lag."""
    seconds, rate = 5.0, 10_000
    stream = _new_stream(cluster.url, 3)
    path = fresh_dir()
    lags: dict[str, float] = {}

    def run() -> None:
        probe = subprocess.Popen([sys.executable, str(HERE / "feed_lag_probe.py"), cluster.url, stream],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        assert probe.stdout is not None and probe.stdout.readline().strip() == "ready"
        with TaskLog.open(path, "async") as log:
            log.flush()  # the log exists, with its identity, before the shipper opens it
            shipping = Shipping(path, cluster.url, stream, hub="lag", logger=_QUIET).start()
            tasks = _paced_hub(log, seconds, rate)
            log.flush()
            shipping.stop()
            last = log.last_seq
        out, _ = probe.communicate(f"{last}\n", timeout=120 + seconds)
        got = dict(line.split("=") for line in out.split())
        lags.update({k: float(v) for k, v in got.items()})
        lags["tasks"], lags["events"] = tasks, last
    record(benchmark, int(seconds * rate), "async log; stream of 3 replicas", "shipping lag", role="ship_lag",
           unit="tasks")
    benchmark.pedantic(run, rounds=1)
    benchmark.extra_info.update({"lag_p50_ms": round(1e3 * lags["p50"], 1), "lag_p99_ms": round(1e3 * lags["p99"], 1),
                                 "lag_max_ms": round(1e3 * lags["max"], 1), "tasks_written": int(lags["tasks"]),
                                 "events_written": int(lags["events"]), "messages_seen": int(lags["messages"])})


def _paced_hub(log: TaskLog, seconds: float, rate: int) -> int:
    """Submit, start, one output and complete per task, ``rate`` tasks a second, one call an event."""
    start, n = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate)
        while n < due:
            m = f"t{n}"
            log.submit(m, buffers=[b"x" * 64])
            log.start(m, "e1")
            log.output(m, "stdout", text="a line of output\n")
            log.complete(m, result_content={"status": "ok"})
            n += 1
        time.sleep(0.001)
    return n


@pytest.mark.parametrize("ship", [False, True], ids=["off", "on"])
def test_hub_with_ship_to(benchmark: Any, cluster: NatsCluster, ship: bool) -> None:
    """ipyparallel's Hub pattern through TaskLogDB (SQLite projection), shipping on or off: the
    Hub's calls are timed; opening and closing (which drains the shipper) are not, and the close
    is reported beside."""
    from test_bench_ipyparallel import _messages, lifecycle

    from tasklog.ipyparallel import TaskLogDB
    n = sizes("baseline_tasks")[-1]
    msgs = _messages(n)
    made: list[str] = []
    dbs: list[Any] = []
    closes: list[float] = []

    def close_last() -> None:
        if dbs:
            start = time.perf_counter()
            dbs.pop().close()  # with ship_to: the shipper first ships what is committed
            closes.append(time.perf_counter() - start)

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        close_last()
        made.append(tempfile.mkdtemp(prefix="bench-ship-hub-"))
        stream = _new_stream(cluster.url, 3) if ship else "TASKLOG"
        dbs.append(TaskLogDB(location=made[-1], log=_QUIET, ship_to=cluster.url if ship else "", ship_stream=stream))
        time.sleep(1.0)  # the shipper child has started (a Hub runs for hours: its start is not the figure)
        return (dbs[-1],), {}
    record(benchmark, n, "async log: synced every 5 ms", "shipping from the Hub", unit="tasks",
           role=f"hub_ship_{'on' if ship else 'off'}", baseline="hub_ship_off" if ship else None,
           series=f"TaskLogDB, ship_to {'on' if ship else 'off'}")
    try:
        benchmark.pedantic(lambda db: lifecycle(db, msgs, 1), setup=setup, rounds=ROUNDS)
        close_last()
        benchmark.extra_info["close_s_median"] = round(sorted(closes)[len(closes) // 2], 3)
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
