"""Projections: apply rates, replay from the log, and queries against ipyparallel's DictDB."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import record, sizes

import projections
from tasklog import TaskLog
from tasklog.demo import simulate

ROUNDS = 3


def _events(n: int) -> list[tuple[int, Any]]:
    return list(enumerate(simulate(n // 4 + 1, seed=5), start=1))[:n]


def _apply(spec: str, evs: list[tuple[int, Any]]) -> None:
    p = projections.open(spec)
    for i in range(0, len(evs), 4096):
        p.apply(evs[i:i + 4096])
    p.close()


@pytest.mark.parametrize("kind", ["dict", "sqlite"])
@pytest.mark.parametrize("n", sizes("replay"))
def test_apply(benchmark: Any, kind: str, n: int) -> None:
    evs = _events(n)
    tmp = tempfile.mkdtemp()

    def setup() -> tuple[tuple[str, list[tuple[int, Any]]], dict[str, Any]]:
        db = os.path.join(tmp, "t.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        return ((kind if kind == "dict" else f"sqlite:///{db}", evs), {})
    record(benchmark, n, "n/a (projection)", "projection", role=f"apply_{kind}")
    benchmark.pedantic(_apply, setup=setup, rounds=ROUNDS)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def replay_log() -> Iterator[tuple[str, int]]:
    """One log of the largest replay size, shared by the replay benchmarks."""
    n = max(sizes("replay"))
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "log")
    with TaskLog.open(path, "process") as log:
        evs = [e for _, e in _events(n)]
        for i in range(0, n, 10000):
            log.append_many(evs[i:i + 10000])
    yield path, n
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("kind", ["dict", "sqlite"])
def test_replay(benchmark: Any, replay_log: tuple[str, int], kind: str) -> None:
    path, n = replay_log
    tmp = tempfile.mkdtemp()

    def run() -> None:
        db = os.path.join(tmp, f"r{len(os.listdir(tmp))}.db")
        with TaskLog.open(path, readonly=True) as log:
            projections.open(kind if kind == "dict" else f"sqlite:///{db}", log=log).close()
    record(benchmark, n, "n/a (read from the log)", "replay", role=f"replay_{kind}")
    benchmark.pedantic(run, rounds=ROUNDS)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def query_records() -> Iterator[dict[str, Any]]:
    """A dict projection, a SQLite projection and an ipyparallel DictDB holding the same tasks."""
    from ipyparallel.controller.dictdb import DictDB

    n_tasks = max(sizes("records"))
    evs = _events(n_tasks * 4)
    tmp = tempfile.mkdtemp()
    d = projections.open("dict")
    s = projections.open(f"sqlite:///{tmp}/q.db")
    for i in range(0, len(evs), 8192):
        d.apply(evs[i:i + 8192])
        s.apply(evs[i:i + 8192])
    ipp = DictDB(log=logging.getLogger("bench"))
    ipp.record_limit = 10**9
    ipp.size_limit = 10**12
    for rec in d.find_records({}):
        ipp.add_record(rec["msg_id"], rec)
    yield {"dict": d, "sqlite": s, "DictDB": ipp, "records": d.count({})}
    s.close()
    shutil.rmtree(tmp, ignore_errors=True)


QUERIES = {
    "engines": ({"engine_uuid": {"$in": ["engine-1", "engine-2"]}}, ["msg_id", "started"]),
    "label_1pct": ({"label": "job-42"}, None),
}


@pytest.mark.parametrize("store", ["dict", "sqlite", "DictDB"])
@pytest.mark.parametrize("qname", sorted(QUERIES))
def test_query(benchmark: Any, query_records: dict[str, Any], store: str, qname: str) -> None:
    query, keys = QUERIES[qname]
    db = query_records[store]
    hits = len(db.find_records(query, keys))
    baseline = None if store == "DictDB" else f"query_{qname}_DictDB"
    record(benchmark, query_records["records"], "n/a (query)", f"query {qname}", role=f"query_{qname}_{store}",
           baseline=baseline, hits=hits, unit="records scanned")
    result = benchmark.pedantic(db.find_records, args=(query, keys), rounds=5)
    assert len(result) == hits
