"""Projection tests that are not the shared contract: the query language's coverage, specs,
SQLite's file schemas, and the dict projection's indexes. The contract itself is in
projection_contract.py, run by each backend's test module."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import projections
from projections.errors import ProjectionError
from projections.query import compile_predicate
from tasklog import Annotate, Drop, Submit, TaskLog
from tests.support import stored
from tests.support.projection_contract import IST, QUERIES, T0, _ids, _t, build_events


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A log holding build_events()."""
    path = str(tmp_path_factory.mktemp("history") / "log")
    with TaskLog.open(path) as log:
        log.append_many(build_events())
    return path


def test_every_operator_is_exercised() -> None:
    used = set()

    def walk(q: Any) -> None:
        if isinstance(q, dict):
            for k, v in q.items():
                if k.startswith("$"):
                    used.add(k)
                walk(v)
        elif isinstance(q, list):
            for x in q:
                walk(x)
    for _, q, _ in QUERIES:
        walk(q)
    assert used >= {"$in", "$nin", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$exists", "$all", "$mod",
                    "$regex", "$and", "$or", "$nor", "$not", "$glob", "$ge", "$le"}


def test_bad_specs_fail_fast(tmp_path: Path) -> None:
    for spec in ("", "bogus", "sqlite:/x.db", "sqlite://", f"sqlite:///{tmp_path}/missing/dir/t.db",
                 "dict?record_limit=abc", "dict?colour=red", "mongodb://"):
        with pytest.raises(ProjectionError):
            projections.open(spec)
    with pytest.raises(ProjectionError, match="cannot reach MongoDB"):  # bounded by timeout_ms, not a hang
        projections.open("mongodb://127.0.0.1:1/tasks", timeout_ms=1000)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ProjectionError, match="not a usable SQLite"):
        projections.open(f"sqlite:///{garbage}")


def test_sqlite_reads_documents_of_schema_1(history: str, tmp_path: Path) -> None:
    """A file written as maps (schema 1) reads the same, is marked current, and takes new records."""
    import sqlite3

    import msgpack

    from projections.backends.sqlite import SCHEMA_VERSION, decode_document

    db = str(tmp_path / "v1.db")
    with TaskLog.open(history, readonly=True) as log:
        events = list(log.read())
        p = projections.open(f"sqlite:///{db}")
        p.apply(events[:-3])
        p.close()
        con = sqlite3.connect(db)
        packer = msgpack.Packer(datetime=True)
        for msg_id, blob in con.execute("SELECT msg_id, doc FROM records").fetchall():
            con.execute("UPDATE records SET doc=? WHERE msg_id=?", (packer.pack(decode_document(blob)), msg_id))
        con.execute("UPDATE meta SET value=1 WHERE key='schema'")
        con.commit()
        con.close()
        p = projections.open(f"sqlite:///{db}", log=log)  # catches up the last 3 events
        fresh = projections.open("dict", log=log)
        con = sqlite3.connect(db)
        assert con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == SCHEMA_VERSION == 4
        shapes = {type(msgpack.unpackb(b, timestamp=3)).__name__ for (b,) in con.execute("SELECT doc FROM records")}
        con.close()
        assert shapes == {"dict", "list"}  # old documents left as they were, the caught-up ones rewritten
        assert p.get_history() == fresh.get_history()
        assert {m: p.get_record(m) for m in p.get_history()} == {m: fresh.get_record(m) for m in fresh.get_history()}
        query = {"label": {"$exists": True}}
        assert sorted(p.find_records(query), key=lambda r: r["msg_id"]) == \
            sorted(fresh.find_records(query), key=lambda r: r["msg_id"])
    p.close()


def test_sqlite_document_shapes() -> None:
    """Annotated keys, hidden keys and a record lacking a usual key all survive storage."""
    from projections.backends.sqlite import decode_document, encode_document
    from projections.fold import new_record

    full = new_record("a") | {"tags": ["x"], "_dropped": True, "_seq": 9, "submitted": T0}
    partial = {"msg_id": "b", "_seq": 3, "stdout": "s"}
    for rec in (full, partial):
        assert decode_document(encode_document(rec)) == rec
    assert decode_document(encode_document(full), public=True) == \
        {k: v for k, v in full.items() if not k.startswith("_")}
    assert decode_document(encode_document(partial), public=True) == {"msg_id": "b", "stdout": "s"}


def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from projections.backends.sqlite import SCHEMA_VERSION

    db = str(tmp_path / "new.db")
    projections.open(f"sqlite:///{db}").close()
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(ProjectionError, match=f"schema {SCHEMA_VERSION + 1}"):
        projections.open(f"sqlite:///{db}")


def test_dict_indexes_follow_every_change() -> None:
    """The dict projection's indexes (incomplete tasks, label patterns) agree with a full scan at every step."""
    from tasklog.demo import simulate

    raw = list(simulate(400, seed=9))
    submitted = [e.msg_id for e in raw if isinstance(e, Submit)]
    raw.insert(len(raw) // 2, Drop(submitted[:30]))  # purges, completed or not
    raw.append(Annotate(submitted[40], {"completed": None, "label": "job-1x"}))
    raw.append(Annotate(submitted[41], {"submitted": "not a time"}))  # irregular: still a candidate
    events = list(enumerate(raw, start=1))
    p = projections.open("dict")
    t0 = min(e.submitted for e in raw if isinstance(e, Submit))
    queries = [{"completed": None}, {"label": {"$glob": "job-1*"}}, {"label": {"$regex": "^job-[45]$"}},
               {"completed": None, "label": {"$in": ["job-3", "job-30"]}},
               {"submitted": {"$gte": t0 + timedelta(milliseconds=10), "$lt": t0 + timedelta(milliseconds=20)}},
               {"submitted": {"$gt": t0 + timedelta(milliseconds=40)}},
               {"submitted": {"$lte": (t0 + timedelta(milliseconds=5)).astimezone(IST)}}]
    for i in range(0, len(events), 97):
        p.apply(events[i:i + 97])
        everything = p.find_records({})
        for q in queries:
            scan = compile_predicate(projections.parse(q))
            assert _ids(p.find_records(q)) == _ids([r for r in everything if scan(r)]), q
    assert submitted[40] in _ids(p.find_records({"completed": None, "label": {"$glob": "job-1?"}}))


def test_sorted_index_narrows_ranges() -> None:
    from projections.backends.sortedindex import SortedIndex

    idx = SortedIndex("submitted")
    ids = [f"t{i}" for i in range(10)]
    for i, m in enumerate(ids):
        idx.update(m, None, _t(i))
    idx.update("t9", _t(9), _t(0.5))  # moved
    idx.update("odd", None, "yesterday")  # irregular: always a candidate
    assert idx.candidates(projections.parse({"submitted": {"$gte": _t(2), "$lt": _t(5)}})) == {"t2", "t3", "t4", "odd"}
    assert idx.candidates(projections.parse({"submitted": {"$gt": _t(7)}})) == {"t8", "odd"}
    assert idx.candidates(projections.parse({"submitted": {"$lte": _t(0.5).astimezone(IST)}})) == {"t0", "t9", "odd"}
    assert idx.candidates(projections.parse({"label": "x"})) is None


def test_sorted_index_settles_few_or_many_pending_changes() -> None:
    """Changes wait for a range query; a handful are moved one by one, many re-sorted: same answers."""

    from projections.backends.sortedindex import SortedIndex

    rng = random.Random(11)
    idx = SortedIndex("submitted")
    values: dict[str, Any] = {}
    lo, hi = (_t(20)), (_t(40))
    query = projections.parse({"submitted": {"$gte": lo, "$lt": hi}})
    for burst in (3000, 5, 1, 40, 2500, 0, 7):  # above and below a quarter of the entries
        for _ in range(burst):
            m = f"m{rng.randrange(4000)}"
            new = rng.choice([(_t(rng.uniform(0, 60))), (_t(rng.uniform(0, 60))), None, "odd"])
            idx.update(m, values.get(m), new)
            values[m] = new
        want = {m for m, v in values.items() if v == "odd" or (v.__class__ is datetime and lo <= v < hi)}
        assert idx.candidates(query) == want, burst
        assert len(idx) == sum(v.__class__ is datetime for v in values.values())


def test_sorted_index_keeps_order_across_bucket_splits() -> None:

    from projections.backends.sortedindex import SortedIndex

    rng = random.Random(3)
    idx = SortedIndex("submitted")
    values = {f"m{i}": (_t(rng.uniform(0, 60))) for i in range(5000)}
    for m, v in values.items():
        idx.update(m, None, v)
    for m in list(values)[::3]:  # moves and removals
        new = (_t(rng.uniform(0, 60))) if rng.random() < 0.5 else None
        idx.update(m, values[m], new)
        values[m] = new
    assert len(idx) == sum(v is not None for v in values.values())
    lo, hi = (_t(10)), (_t(20))
    cases = [({"$gte": lo, "$lt": hi}, lambda v: lo <= v < hi), ({"$gt": lo, "$lte": hi}, lambda v: lo < v <= hi),
             ({"$gt": lo, "$gte": lo}, lambda v: v > lo), ({"$lt": lo}, lambda v: v < lo)]
    for q, test in cases:
        want = {m for m, v in values.items() if v is not None and test(v)}
        assert idx.candidates(projections.parse({"submitted": q})) == want, q


def test_sqlite_file_of_schema_3_gains_states_and_stops_counting(history: str, tmp_path: Path) -> None:
    """A schema-3 file (no state column, no event counts) gets each task's state on open, and
    its events are marked not counted (``stats`` reads them from the log), until it is rebuilt."""
    import sqlite3

    from projections.backends.sqlite import SCHEMA_VERSION

    db = str(tmp_path / "v3.db")
    with TaskLog.open(history, readonly=True) as log:
        projections.open(f"sqlite:///{db}", log=log).close()
        con = sqlite3.connect(db)
        con.execute("DROP INDEX records_state")
        con.execute("ALTER TABLE records DROP COLUMN state")
        con.execute("DROP TABLE event_counts")
        con.execute("DELETE FROM meta WHERE key='counted_from'")
        con.execute("UPDATE meta SET value=3 WHERE key='schema'")
        con.commit()
        con.close()
        with projections.open(f"sqlite:///{db}", log=log) as p, projections.open("dict", log=log) as fresh:
            assert p.tasks_by("state") == fresh.tasks_by("state") and sum(p.tasks_by("state").values()) > 0
            assert p.counted.since is None and not p.counted.blocks
        assert sqlite3.connect(db).execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == SCHEMA_VERSION
        with projections.open(f"sqlite:///{db}", log=log) as p:
            p.clear()
            projections.replay(log, p)
            assert p.counted.since == 1 and sum(p.counted.blocks.values()) == log.last_seq


def test_sqlite_millisecond_columns_of_schema_2_are_upgraded(history: str, tmp_path: Path) -> None:
    """A schema-2 file (datetimes cut to ms, columns in ms) is moved to microsecond columns on open."""
    import sqlite3
    from types import SimpleNamespace

    from projections.backends.sqlite import COLUMNS, decode_document, encode_document

    db = str(tmp_path / "v2.db")
    in_ms = SimpleNamespace(datetime_resolution=timedelta(milliseconds=1))
    with TaskLog.open(history, readonly=True) as log:
        projections.open(f"sqlite:///{db}?buffers=inline", log=log).close()
    con = sqlite3.connect(db)
    for msg_id, blob in con.execute("SELECT msg_id, doc FROM records").fetchall():
        con.execute("UPDATE records SET doc=? WHERE msg_id=?", (encode_document(stored(in_ms, decode_document(blob))),
                                                              msg_id))
    times = [c for c, t in COLUMNS.items() if t is datetime]
    con.execute("UPDATE records SET " + ", ".join(f"{c} = {c} / 1000" for c in times))
    con.execute("UPDATE meta SET value=2 WHERE key='schema'")
    con.commit()
    con.close()
    p = projections.open(f"sqlite:///{db}")
    assert sqlite3.connect(db).execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == 4
    everything = p.find_records({})
    for q in ({"submitted": {"$gte": _t(3), "$lt": _t(8)}}, {"completed": {"$lte": _t(4)}},
              {"started": {"$gt": _t(2.5)}}):
        scan = compile_predicate(projections.parse(q))
        assert _ids(p.find_records(q)) == _ids([r for r in everything if scan(r)]) != [], q
        assert sorted(p.find_records(q, keys=["started"]), key=lambda r: r["msg_id"]) == \
            sorted(({"msg_id": r["msg_id"], "started": r["started"]} for r in everything if scan(r)),
                   key=lambda r: r["msg_id"])
    p.close()

