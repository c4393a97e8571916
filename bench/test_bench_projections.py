"""Projections: apply rates, replay from the log, and queries against ipyparallel's DictDB."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import projections
from bench.harness import record, sizes
from tasklog import TaskLog
from tasklog.demo import simulate

ROUNDS = 3
_IN_FLIGHT_TAIL = 300


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
    record(benchmark, n, "n/a (projection)", "projection", role=f"apply_{kind}", scenario="apply (events/s)",
           series=kind)
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
    record(benchmark, n, "n/a (read from the log)", "replay", role=f"replay_{kind}",
           scenario="replay (events/s)", series=kind)
    benchmark.pedantic(run, rounds=ROUNDS)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("n", sizes("mongo_events"))
def test_replay_mongo(benchmark: Any, mongo_uri: str, n: int) -> None:
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "log")
    with TaskLog.open(path, "process") as log:
        log.append_many([e for _, e in _events(n)])
    made: list[Any] = []

    def run() -> None:
        with TaskLog.open(path, readonly=True) as log:
            made.append(projections.open(f"{mongo_uri}/replay{uuid.uuid4().hex[:10]}", log=log))
    record(benchmark, n, "n/a (read from the log)", "replay", role="replay_mongo", scenario="replay (events/s)",
           series="mongo")
    benchmark.pedantic(run, rounds=ROUNDS)
    for p in made:
        p.drop_all()
        p.close()
    shutil.rmtree(tmp, ignore_errors=True)


def _fill_baselines(records: list[dict[str, Any]], tmp: str, mongo: str | None) -> dict[str, Any]:
    """ipyparallel's DictDB, SQLiteDB (and MongoDB) holding the same records, added as the Hub adds them."""
    from ipyparallel.controller.dictdb import DictDB
    from ipyparallel.controller.sqlitedb import SQLiteDB

    quiet = logging.getLogger("bench")
    quiet.setLevel(logging.CRITICAL)
    ipp = DictDB(log=quiet)
    ipp.record_limit = 10**9
    ipp.size_limit = 10**12
    sql = SQLiteDB(location=tmp, filename="ipp.db", log=quiet)
    for rec in records:
        ipp.add_record(rec["msg_id"], dict(rec))
        sql.add_record(rec["msg_id"], {k: rec.get(k) for k in sql._keys})
    sql._db.commit()
    out = {"DictDB": ipp, "SQLiteDB": sql}
    if mongo is not None:
        from ipyparallel.controller.mongodb import MongoDB

        mdb = MongoDB(connection_args=[mongo], database=f"benchq{uuid.uuid4().hex[:8]}", log=quiet)
        mdb._records.insert_many([dict(r) for r in records])  # what add_record does, in one round trip
        out["MongoDB"] = mdb
    return out


def _query_stores(n_records: int, mongo: str | None) -> Iterator[dict[str, Any]]:
    # Enough tasks for about n_records records (5% are resubmitted), less the last events: the
    # tasks still in flight then have not completed, as on a live hub.
    evs = list(enumerate(simulate(round(n_records / 1.05), seed=5), start=1))[:-_IN_FLIGHT_TAIL]
    tmp = tempfile.mkdtemp()
    stores: dict[str, Any] = {"dict": projections.open("dict"), "sqlite": projections.open(f"sqlite:///{tmp}/q.db")}
    if mongo is not None:
        stores["mongo"] = projections.open(f"{mongo}/benchp{uuid.uuid4().hex[:8]}")
    for i in range(0, len(evs), 8192):
        for name in ("dict", "sqlite", "mongo"):
            if name in stores:
                stores[name].apply(evs[i:i + 8192])
    records = stores["dict"].find_records({})
    stores.update(_fill_baselines(records, tmp, mongo))
    times = [r["submitted"] for r in records if r["submitted"] is not None]
    yield {"stores": stores, "records": len(records), "t0": min(times), "t1": max(times),
           "ids": [r["msg_id"] for r in records[:: max(1, len(records) // 100)]]}
    for name in ("sqlite", "mongo"):
        if name in stores:
            if name == "mongo":
                stores[name].drop_all()
            stores[name].close()
    if "MongoDB" in stores:
        stores["MongoDB"]._connection.drop_database(stores["MongoDB"].database)
    stores["SQLiteDB"]._db.close()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module", params=sizes("records"))
def query_records(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Our dict and SQLite projections and ipyparallel's DictDB and SQLiteDB, holding the same tasks."""
    yield from _query_stores(request.param, None)


@pytest.fixture(scope="module")
def mongo_query_records(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The same with our MongoDB projection and ipyparallel's MongoDB backend (a smaller set: the test
    server inserts slowly)."""
    yield from _query_stores(max(sizes("mongo_events")) * 4 // 5, request.getfixturevalue("mongo_uri"))


def _queries(data: dict[str, Any]) -> dict[str, tuple[dict[str, Any], list[str] | None]]:
    # A slice of 2% of the submit times, from the middle: the demo submits in bursts over minutes.
    t0, span = data["t0"], data["t1"] - data["t0"]
    return {
        "msg_ids": ({"msg_id": {"$in": data["ids"]}}, None),
        "incomplete": ({"completed": None}, ["msg_id", "started"]),
        "submitted_range": ({"submitted": {"$gte": t0 + span * 0.5, "$lt": t0 + span * 0.52}},
                            ["msg_id", "submitted"]),
        "label_glob": ({"label": {"$glob": "job-4*"}}, ["msg_id", "label"]),
        "engines": ({"engine_uuid": {"$in": ["engine-1", "engine-2"]}}, ["msg_id", "started"]),
        "label_1pct": ({"label": "job-42"}, None),
        "label_1pct_keys": ({"label": "job-42"}, ["msg_id", "started"]),
    }


QNAMES = ["msg_ids", "incomplete", "submitted_range", "label_glob", "engines", "label_1pct", "label_1pct_keys"]
BASE_OF = {"dict": "DictDB", "sqlite": "SQLiteDB", "mongo": "MongoDB"}


def _bench_query(benchmark: Any, data: dict[str, Any], store: str, qname: str) -> None:
    query, keys = _queries(data)[qname]
    db = data["stores"][store]
    try:
        hits = len(db.find_records(query, keys))
    except Exception as exc:  # only ipyparallel's stores: ANCHORS.md lists what each rejects
        pytest.skip(f"ipyparallel's {store} rejects {query}: {type(exc).__name__}: {exc}")
    base = BASE_OF.get(store)
    record(benchmark, data["records"], "n/a (query)", f"query {qname}", role=f"query_{qname}_{store}",
           baseline=f"query_{qname}_{base}" if base else None, hits=hits, unit="records scanned",
           scenario=f"query {qname} (records scanned/s)", series=store)
    result = benchmark.pedantic(db.find_records, args=(query, keys), rounds=5)
    assert len(result) == hits


@pytest.mark.parametrize("store", ["dict", "sqlite", "DictDB", "SQLiteDB"])
@pytest.mark.parametrize("qname", QNAMES)
def test_query(benchmark: Any, query_records: dict[str, Any], store: str, qname: str) -> None:
    _bench_query(benchmark, query_records, store, qname)


@pytest.mark.parametrize("store", ["mongo", "MongoDB"])
@pytest.mark.parametrize("qname", QNAMES)
def test_query_mongo(benchmark: Any, mongo_query_records: dict[str, Any], store: str, qname: str) -> None:
    _bench_query(benchmark, mongo_query_records, store, qname)


_CHUNKS, _CHUNK_BYTES = 20_000, 500


@pytest.fixture(scope="module")
def long_output() -> list[tuple[int, Any]]:
    """One task that writes 20,000 stdout chunks of 500 B (issue 20 item 9: folding it was quadratic)."""
    from tasklog import Complete, Output, Submit
    from tasklog.fields import utcnow

    now = utcnow()
    evs: list[Any] = [Submit("t", {"msg_id": "t"}, {}, {}, [], "c", "task", now, None)]
    evs += [Output("t", "stdout", f"{i:0{_CHUNK_BYTES - 1}d}\n", None) for i in range(_CHUNKS)]
    evs.append(Complete("t", {}, {"status": "ok"}, {}, [], now, now, now, "e"))
    return list(enumerate(evs, start=1))


def _fold_output(evs: list[tuple[int, Any]]) -> None:
    p = projections.open("dict")
    p.catch_up(iter(evs))  # batches of 4096, as a query's replay folds them
    assert len(p.get_record("t")["stdout"]) == _CHUNKS * _CHUNK_BYTES


def _join_output(evs: list[tuple[int, Any]]) -> None:
    assert len("".join(e.text for _, e in evs if e.type == "output")) == _CHUNKS * _CHUNK_BYTES


@pytest.mark.parametrize("how", ["fold", "join"])
def test_long_output(benchmark: Any, long_output: list[tuple[int, Any]], how: str) -> None:
    """A task's stdout folded from its chunks against the least any fold does: joining them once."""
    record(benchmark, _CHUNKS, "n/a (projection)", "long output", role=f"long_output_{how}", unit="chunks",
           baseline="long_output_join" if how == "fold" else None, series=how)
    benchmark.pedantic(_fold_output if how == "fold" else _join_output, args=(long_output,), rounds=ROUNDS)
