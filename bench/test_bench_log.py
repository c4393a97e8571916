"""Write throughput: the raw LMDB ceiling against tasklog's append paths (issue 2 targets)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import lmdb
import msgpack
import pytest

from bench.harness import KEY, record, sizes
from tasklog import TaskLog
from tasklog.codec import TYPE_CODES
from tasklog.demo import simulate
from tasklog.events import Complete, Output, Resubmit, Start, Submit

ROUNDS = 3


def _raw_lmdb(path: str, evs: list[Any], batch: int) -> None:
    """The ceiling: the same events as plain msgpack arrays, no validation, no checksum."""
    env = lmdb.open(path, map_size=8 << 30, sync=True, metasync=True, writemap=False)
    pack = msgpack.Packer(datetime=True).pack
    seq = 0
    for s in range(0, len(evs), batch):
        with env.begin(write=True) as txn:
            cur = txn.cursor()
            for e in evs[s:s + batch]:
                seq += 1
                cur.put(KEY(seq), pack((TYPE_CODES[e.type], *e)), append=True)
    env.close()


def workload(n: int) -> list[Any]:
    """n events of the simulated hub (4-6 per task, 5% resubmits), built before the clock starts."""
    return list(simulate(n // 4 + 1, seed=1))[:n]


@pytest.mark.parametrize("n", sizes("events"))
def test_ceiling_batched(benchmark: Any, fresh_dir: Callable[[], str], n: int) -> None:
    evs = workload(n)
    record(benchmark, n, "sync", "write", role="ceiling", batch=1000, scenario="append throughput (events/s)",
           series="raw LMDB ceiling")
    benchmark.pedantic(_raw_lmdb, setup=lambda: ((fresh_dir(), evs, 1000), {}), rounds=ROUNDS)


@pytest.mark.parametrize("n", sizes("one_sync"))
def test_ceiling_one_sync_per_event(benchmark: Any, fresh_dir: Callable[[], str], n: int) -> None:
    evs = workload(n)
    record(benchmark, n, "sync", "write", role="one_sync_per_event", batch=1)
    benchmark.pedantic(_raw_lmdb, setup=lambda: ((fresh_dir(), evs, 1), {}), rounds=ROUNDS)


def _append_many(path: str, evs: list[Any], durability: str) -> None:
    with TaskLog.open(path, durability) as log:
        for s in range(0, len(evs), 1000):
            log.append_many(evs[s:s + 1000])
        log.flush()


@pytest.mark.parametrize("durability", ["sync", "process", "async"])
@pytest.mark.parametrize("n", sizes("events"))
def test_append_many(benchmark: Any, fresh_dir: Callable[[], str], n: int, durability: str) -> None:
    evs = workload(n)
    record(benchmark, len(evs), durability, "write", role=f"append_many_{durability}", batch=1000,
           baseline="ceiling", scenario="append throughput (events/s)", series=f"append_many {durability}")
    benchmark.pedantic(_append_many, setup=lambda: ((fresh_dir(), evs, durability), {}), rounds=ROUNDS)


def hub_calls(n: int) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The simulated hub's events as (method, args, kwargs) calls of the hub-facing API."""
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for ev in simulate(n // 4, seed=2):
        if isinstance(ev, Submit):
            calls.append(("submit", (ev.msg_id,), {"header": ev.header, "buffers": ev.buffers,
                                                   "client_uuid": ev.client_uuid, "queue": ev.queue,
                                                   "submitted": ev.submitted, "label": ev.label}))
        elif isinstance(ev, Start):
            calls.append(("start", (ev.msg_id, ev.engine_uuid, ev.started), {}))
        elif isinstance(ev, Output):
            calls.append(("output", (ev.msg_id, ev.name), {"text": ev.text, "content": ev.content}))
        elif isinstance(ev, Complete):
            calls.append(("complete", (ev.msg_id,), {k: getattr(ev, k) for k in ev._fields[1:]}))
        elif isinstance(ev, Resubmit):
            calls.append(("resubmit", (ev.msg_id, ev.new_msg_id, ev.submitted), {}))
    return calls[:n]


def _hub(path: str, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]], interval: float) -> None:
    with TaskLog.open(path, "async", commit_interval=interval) as log:
        methods = {name: getattr(log, name) for name in ("submit", "start", "output", "complete", "resubmit")}
        for name, args, kwargs in calls:
            methods[name](*args, **kwargs)
        log.flush()


@pytest.mark.parametrize("n", sizes("events"))
def test_hub_pattern_async(benchmark: Any, fresh_dir: Callable[[], str], n: int) -> None:
    calls = hub_calls(n)
    # Against the ceiling (events/s) and, in tasks/s, ipyparallel's SQLiteDB in the Hub's pattern
    # (bench/test_bench_ipyparallel.py, same run): issue 24's targets.
    record(benchmark, len(calls), "async (5 ms commit interval, flushed at the end)", "hub",
           role="hub_pattern", baseline="ceiling",
           also=["hub_db_SQLiteDB"], tasks=sum(name == "submit" for name, _, _ in calls),
           scenario="hub pattern, async (events/s)", series="no projection")
    benchmark.pedantic(_hub, setup=lambda: ((fresh_dir(), calls, 0.005), {}), rounds=ROUNDS)


def _hub_live(path: str, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]], spec: str) -> None:
    from projections.live import attach

    with TaskLog.open(path, "async", commit_interval=0.005) as log:
        proj = attach(log, spec)
        methods = {name: getattr(log, name) for name in ("submit", "start", "output", "complete", "resubmit")}
        for name, args, kwargs in calls:
            methods[name](*args, **kwargs)
        log.flush()  # the last commit's listener has applied it when flush returns
        assert proj.last_seq == log.last_seq
        proj.close()


@pytest.mark.parametrize("kind", ["dict", "sqlite", "mongo"])
@pytest.mark.parametrize("n", sizes("live_events"))
def test_hub_pattern_live(benchmark: Any, fresh_dir: Callable[[], str], request: pytest.FixtureRequest,
                          kind: str, n: int) -> None:
    """Scenario 6: the hub pattern with a projection applied on every commit."""
    calls = hub_calls(n)
    mongo = request.getfixturevalue("mongo_uri") if kind == "mongo" else ""

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        path = fresh_dir()
        spec = {"dict": "dict", "sqlite": f"sqlite:///{path}.db", "mongo": f"{mongo}/live{uuid.uuid4().hex[:10]}"}
        return (path, calls, spec[kind]), {}
    record(benchmark, len(calls), "async (5 ms commit interval) + live projection", "hub live",
           role=f"hub_live_{kind}", baseline="hub_pattern",
           scenario="hub pattern with a live projection (events/s)", series=kind)
    benchmark.pedantic(_hub_live, setup=setup, rounds=ROUNDS)


def _threads(path: str, per_thread: int, threads: int) -> None:
    with TaskLog.open(path, "sync") as log:
        def work(t: int) -> None:
            for i in range(per_thread):
                log.output(f"task-{t}-{i // 4}", "stdout", text="hello\n")
        ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()


@pytest.mark.parametrize("threads", [8, 64])
@pytest.mark.parametrize("n", sizes("one_sync"))
def test_threads_sync(benchmark: Any, fresh_dir: Callable[[], str], n: int, threads: int) -> None:
    per = max(n * 4 // threads, 1)
    record(benchmark, per * threads, "sync", "write", role=f"threads{threads}_sync", baseline="one_sync_per_event",
           baseline_events=n)
    benchmark.pedantic(_threads, setup=lambda: ((fresh_dir(), per, threads), {}), rounds=ROUNDS)


@pytest.mark.parametrize("case", ["indexed", "unindexed"])
def test_stream_index_cost(benchmark: Any, fresh_dir: Callable[[], str], monkeypatch: pytest.MonkeyPatch,
                           case: str) -> None:
    """What the stream index costs `append_many` (sync, 1,000-event commits): the same log with the
    index put left out is the baseline, measured in the same run (issue 13)."""
    from tasklog.store import Store

    n = max(sizes("events"))
    evs = workload(n)
    if case == "unindexed":
        monkeypatch.setattr(Store, "index", lambda self, txn, rows: None)
    record(benchmark, len(evs), "sync", "stream index", role=f"index_{case}",
           baseline="index_unindexed" if case == "indexed" else None)
    benchmark.pedantic(_append_many, setup=lambda: ((fresh_dir(), evs, "sync"), {}), rounds=ROUNDS)
