"""The projection contract, written once: each backend's test module subclasses ProjectionContract.

Every query's answer is compared with the answer of the MongoDB server itself, on the same
records, queried directly through pymongo. A subclass says only how to open its projection.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson.regex import Regex

import projections
from projections.errors import QueryError
from projections.paging import SORTABLE
from projections.parse import MAX_DEPTH
from tasklog import Annotate, Complete, Drop, Output, Resubmit, Start, Submit, TaskLog
from tests.support import stored

T0 = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=timezone.utc)


IST = timezone(timedelta(hours=5, minutes=30))


def _t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def build_events() -> list[Any]:
    """A small hub history with every shape a query can meet."""
    ev: list[Any] = []
    for i in range(12):
        m = f"task-{i:02d}"
        if i == 3:  # IOPub before the request: a stub first
            ev.append(Output(m, "stdout", "early\n", None))
        ev.append(Submit(m, {"msg_id": m, "msg_type": "apply_request" if i % 4 else "execute_request",
                             "date": _t(i)}, {"code": f"x = {i}"}, {"n": i}, [bytes([i]) * 4],
                         f"client-{i % 3}", "task" if i % 2 else "mux", _t(i), f"job-{i}" if i < 10 else None))
        if i < 9:
            ev.append(Start(m, f"engine-{i % 4}", _t(i + 0.5)))
        if i < 7:
            ev.append(Output(m, "stdout", f"out {i}\n", None))
            ev.append(Output(m, "stderr", "warn\n" if i % 2 else "", None))
            status = "error" if i == 5 else "ok"
            if i == 5:
                ev.append(Output(m, "error", None, {"ename": "ValueError", "evalue": "bad"}))
            ev.append(Complete(m, {"msg_id": f"r{i}", "date": _t(i + 1)}, {"status": status},
                               {"engine": f"engine-{i % 4}"}, [b"r" * i], _t(i + 0.5),
                               _t(i + 1).astimezone(IST), _t(i + 1.01), f"engine-{i % 4}"))
    ev.append(Annotate("task-01", {"tags": ["a", "b"], "score": 3.5, "n": 7}))
    ev.append(Annotate("task-02", {"tags": ["b", "c"], "score": 10, "n": None, "extra": {"k": [1, 2]}}))
    ev.append(Annotate("task-04", {"tags": "a", "score": -4, "flag": True}))
    ev.append(Annotate("task-05", {"score": "high", "n": 2.0}))
    ev.append(Annotate("task-08", {"label": ["job-8", "extra"]}))  # an indexed field holding a list
    ev.append(Resubmit("task-05", "task-05b", _t(20)))
    ev.append(Start("task-05b", "engine-1", _t(20.5)))
    ev.append(Resubmit("task-05b", "task-05c", _t(30)))
    ev.append(Drop(["task-06"]))
    ev.append(Output("task-06", "stdout", "after the drop\n", None))  # must not resurrect it
    ev.append(Start("ghost", "engine-9", _t(40)))  # a task the hub never saw submitted
    return ev


HOUR_AGO = _t(6)


QUERIES: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
    # (name, our query, the same question in plain MongoDB when ours uses an extension)
    ("all", {}, None),
    ("eq", {"engine_uuid": "engine-1"}, None),
    ("eq-$eq", {"engine_uuid": {"$eq": "engine-1"}}, None),
    ("two-keys", {"client_uuid": "client-1", "queue": "task"}, None),
    ("eq-none-missing", {"completed": None}, None),
    ("eq-none-annotated", {"n": None}, None),
    ("ne", {"engine_uuid": {"$ne": "engine-1"}}, None),
    ("ne-none", {"completed": {"$ne": None}}, None),
    ("gt-time", {"submitted": {"$gt": _t(5)}}, None),
    ("gte-time", {"submitted": {"$gte": _t(5)}}, None),
    ("lt-time-other-tz", {"completed": {"$lt": _t(4).astimezone(IST)}}, None),
    ("lte-time", {"completed": {"$lte": _t(4)}}, None),
    ("time-range", {"submitted": {"$gte": _t(2), "$lt": _t(8)}}, None),
    ("naive-datetime", {"submitted": {"$gte": _t(3).astimezone().replace(tzinfo=None)}}, None),
    ("gt-number", {"score": {"$gt": 3}}, None),
    ("lt-number-no-strings", {"score": {"$lt": 100}}, None),
    ("gt-string-bracket", {"score": {"$gt": "a"}}, None),
    ("gte-int-float", {"n": {"$gte": 2}}, None),
    ("in", {"engine_uuid": {"$in": ["engine-1", "engine-2"]}}, None),
    ("eq-indexed-array", {"label": "extra"}, None),
    ("in-indexed-array", {"label": {"$in": ["extra", "job-2"]}}, None),
    ("in-with-none", {"label": {"$in": ["job-1", None]}}, None),
    ("in-array-field", {"tags": {"$in": ["c"]}}, None),
    ("in-regex", {"label": {"$in": [re.compile(r"^job-[12]$")]}}, None),
    ("nin", {"engine_uuid": {"$nin": ["engine-1", "engine-2"]}}, None),
    ("nin-array", {"tags": {"$nin": ["a"]}}, None),
    ("exists-true", {"tags": {"$exists": True}}, None),
    ("exists-false", {"score": {"$exists": False}}, None),
    ("exists-null-field", {"n": {"$exists": True}}, None),
    ("all", {"tags": {"$all": ["a", "b"]}}, None),
    ("all-scalar", {"tags": {"$all": ["a"]}}, None),
    ("mod", {"metadata.n": {"$mod": [3, 1]}}, None),
    ("mod-float", {"n": {"$mod": [2, 0]}}, None),
    ("regex", {"label": {"$regex": r"^job-[0-4]$"}}, None),
    ("regex-options", {"header.msg_type": {"$regex": "EXECUTE", "$options": "i"}}, None),
    ("regex-compiled", {"label": re.compile(r"-1")}, None),
    ("regex-array", {"tags": {"$regex": "^c"}}, None),
    ("regex-bson", {"label": Regex("^JOB-[12]$", "i")}, None),
    ("regex-bson-op", {"label": {"$regex": Regex("-1$")}}, None),
    ("regex-options-u", {"header.msg_type": {"$regex": "^apply", "$options": "iu"}}, None),
    ("regex-and-ne", {"label": {"$regex": "^job-", "$ne": "job-2"}}, None),
    ("in-bson-regex", {"label": {"$in": [Regex("^job-[34]$"), "job-9"]}}, None),
    ("not-bson-regex", {"label": {"$not": Regex("^job-1")}}, None),
    ("not-regex-op", {"label": {"$not": {"$regex": "^JOB-1", "$options": "i"}}}, None),
    ("and", {"$and": [{"queue": "task"}, {"completed": {"$ne": None}}]}, None),
    ("or", {"$or": [{"engine_uuid": "engine-0"}, {"label": "job-9"}]}, None),
    ("nor", {"$nor": [{"engine_uuid": "engine-0"}, {"completed": None}]}, None),
    ("not", {"engine_uuid": {"$not": {"$in": ["engine-0", "engine-1"]}}}, None),
    ("not-gt", {"score": {"$not": {"$gt": 3}}}, None),
    ("not-regex", {"label": {"$not": re.compile("^job-1")}}, None),
    ("dotted", {"result_content.status": "ok"}, None),
    ("dotted-header", {"header.msg_type": "execute_request"}, None),
    ("dotted-missing", {"result_content.status": None}, None),
    ("dotted-array", {"extra.k": 2}, None),
    ("dotted-time", {"header.date": {"$gte": _t(8)}}, None),
    ("array-index", {"tags.0": "b"}, None),
    ("embedded-doc", {"result_content": {"status": "error"}}, None),
    ("bool", {"flag": True}, None),
    ("bool-not-int", {"flag": 1}, None),
    ("msg-id-in", {"msg_id": {"$in": ["task-01", "task-05b", "task-06", "nope"]}}, None),
    ("resubmit-chain", {"resubmitted_from": {"$ne": None}}, None),
    ("stdout", {"stdout": "out 1\n"}, None),
    ("stderr-empty", {"stderr": ""}, None),
    ("bytes", {"buffers": bytes([2]) * 4}, None),
    ("glob", {"label": {"$glob": "job-1*"}}, {"label": {"$regex": "^job-1"}}),
    ("glob-class", {"engine_uuid": {"$glob": "engine-[!01]"}}, {"engine_uuid": {"$regex": "^engine-[^01]$"}}),
    ("glob-question", {"label": {"$glob": "job-?"}}, {"label": {"$regex": r"^job-.$"}}),
    ("seed-le", {"started": {"$le": HOUR_AGO}}, {"started": {"$lt": HOUR_AGO}}),
    ("seed-ge", {"started": {"$ge": HOUR_AGO}}, {"started": {"$gt": HOUR_AGO}}),
    ("seed-example-1", {"started": {"$gte": HOUR_AGO}, "client_uuid": "client-0"}, None),
    ("seed-example-2", {"started": {"$le": HOUR_AGO}, "client_uuid": {"$ne": "client-0"}},
     {"started": {"$lt": HOUR_AGO}, "client_uuid": {"$ne": "client-0"}}),
    ("seed-example-3", {"engine_uuid": {"$in": ["engine-2", "engine-3"]}}, None),
]


def _ids(records: list[dict[str, Any]]) -> list[str]:
    return sorted(r["msg_id"] for r in records)


def _nested(op: str, depth: int) -> dict[str, Any]:
    q: dict[str, Any] = {"label": "job-1"}
    for _ in range(depth):
        q = {op: [q, {"label": "nope"}]} if op == "$or" else {op: [q]}
    return q


def _not_chain(depth: int) -> Any:
    return {"$not": {"$eq": "x"}} if depth <= 1 else {"$not": _not_chain(depth - 1)}


BAD_QUERIES: list[tuple[Any, str]] = [
    ({"label": {"$bogus": 1}}, r"\$bogus"),
    ({"$where": "1"}, r"\$where"),
    ({"label": {"$in": "job-1"}}, r"\$in needs a list"),
    ({"n": {"$mod": [0, 1]}}, "divisor"),
    ({"n": {"$mod": [2]}}, r"\$mod"),
    ({"label": {"$regex": "("}}, "bad \\$regex"),
    ({"label": {"$regex": "a", "$options": "q"}}, r"\$options"),
    ({"label": {"$exists": "yes"}}, r"\$exists"),
    ({"$or": []}, r"\$or"),
    ({"$and": {"a": 1}}, r"\$and"),
    ({"label": {"$gt": 1, "plain": 2}}, "mix"),
    (["label"], "must be a dict"),
    ({"label": {"$not": 5}}, r"\$not"),
    ({"label": {"$glob": 5}}, r"\$glob"),
    ({"label": {"$not": {"$not": {"$eq": "job-1"}}}}, r"\$not cannot hold another \$not"),
    ({"label": Regex("(")}, "bad regex"),
    ({"label": {"$not": Regex("[")}}, "bad regex"),
    ({"label": {"$in": [Regex("a"), Regex("(")]}}, "bad regex"),
    ({"label": {"$regex": "a", "$options": "z"}}, r"\$options"),
    (_nested("$or", MAX_DEPTH + 1), "deeper than 20"),
    (_nested("$and", 600), "deeper than 20"),
    ({"label": _not_chain(MAX_DEPTH + 1)}, r"\$not"),
]


class ProjectionContract:
    """What every projection that keeps records must do. Subclass it and implement ``make``."""

    @classmethod
    def make(cls, log: TaskLog, tmp: Path, request: pytest.FixtureRequest) -> projections.Projection:
        """The projection under test, caught up from ``log``."""
        raise NotImplementedError

    @classmethod
    def dispose(cls, proj: projections.Projection) -> None:
        """Release what ``make`` made (a MongoDB subclass drops its database)."""
        proj.close()

    @pytest.fixture(scope="class")
    @classmethod
    def history(cls, tmp_path_factory: pytest.TempPathFactory) -> str:
        """A log holding build_events()."""
        path = str(tmp_path_factory.mktemp("history") / "log")
        with TaskLog.open(path) as log:
            log.append_many(build_events())
        return path

    @pytest.fixture(scope="class")
    @classmethod
    def proj(cls, request: pytest.FixtureRequest, history: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[projections.Projection]:
        """The projection under test, caught up from the history (whose log stays open: buffers by reference)."""
        with TaskLog.open(history, readonly=True) as log:
            p = cls.make(log, tmp_path_factory.mktemp("projection"), request)
            yield p
            cls.dispose(p)

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, history: str, mongo_uri: str) -> Iterator[pymongo.collection.Collection[dict[str, Any]]]:
        """The dict projection's records inserted straight into the MongoDB server, untranslated."""
        with TaskLog.open(history, readonly=True) as log:
            records = projections.open("dict", log=log).find_records({})
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_uri, tz_aware=True)
        coll = client[f"ref{uuid.uuid4().hex[:10]}"]["records"]
        coll.insert_many([dict(r) for r in records])
        yield coll
        client.drop_database(coll.database.name)
        client.close()

    @pytest.mark.parametrize(("name", "query", "plain"), QUERIES, ids=[q[0] for q in QUERIES])
    def test_query_matches_mongodb(self, proj: projections.Projection, reference: Any, name: str,
                                   query: dict[str, Any], plain: dict[str, Any] | None) -> None:
        want = sorted(d["msg_id"] for d in reference.find(plain or query, {"msg_id": 1}))
        got = _ids(proj.find_records(query))
        assert got == want, f"{proj.spec}: {name}"
        assert proj.count(query) == len(want)

    def test_records_identical_everywhere(self, proj: projections.Projection, history: str) -> None:
        with TaskLog.open(history, readonly=True) as log:
            expected = projections.open("dict", log=log)
            for msg_id in expected.get_history():
                assert proj.get_record(msg_id) == stored(proj, expected.get_record(msg_id))
            assert proj.get_history() == expected.get_history()
            assert sorted(proj.find_records({}), key=lambda r: r["msg_id"]) == \
                sorted(stored(proj, expected.find_records({})), key=lambda r: r["msg_id"])

    def test_datetimes_keep_their_microseconds(self, proj: projections.Projection) -> None:
        """What the Hub gave comes back (ipyparallel's serial_time depends on it); MongoDB keeps ms."""
        r1 = proj.get_record("task-01")
        assert r1["submitted"] == stored(proj, _t(1)) and r1["header"]["date"] == stored(proj, _t(1))
        exact = proj.datetime_resolution == timedelta(microseconds=1)
        assert (r1["submitted"].microsecond == 123456) is exact
        assert proj.count({"submitted": _t(1)}) == 1  # on MongoDB the operand is cut to ms as well
        assert proj.count({"submitted": _t(1) + timedelta(microseconds=1)}) == (0 if exact else 1)

    def test_record_contents(self, proj: projections.Projection) -> None:
        r3 = proj.get_record("task-03")
        assert r3["stdout"] == "early\nout 3\n" and r3["stderr"] == "warn\n"  # stub filled, not clobbered
        assert r3["buffers"] == [b"\x03" * 4] and r3["queue"] == "task" and r3["label"] == "job-3"
        assert r3["completed"] == stored(proj, _t(4)) and r3["completed"].tzinfo is not None
        assert r3["result_content"] == {"status": "ok"}
        r5 = proj.get_record("task-05")
        assert r5["error"] == {"ename": "ValueError", "evalue": "bad"} and r5["resubmitted"] == "task-05b"
        r5b = proj.get_record("task-05b")
        assert r5b["resubmitted_from"] == "task-05" and r5b["resubmitted"] == "task-05c"
        assert r5b["header"] == r5["header"] and r5b["buffers"] == r5["buffers"] and r5b["label"] == "job-5"
        assert r5b["submitted"] == stored(proj, _t(20)) and r5b["completed"] is None and r5b["stdout"] == ""
        assert proj.get_record("task-05c")["resubmitted_from"] == "task-05b"
        r11 = proj.get_record("task-11")
        assert r11["engine_uuid"] is None and r11["stdout"] == "" and r11["label"] is None
        assert proj.get_record("ghost")["engine_uuid"] == "engine-9"
        with pytest.raises(KeyError, match="dropped"):
            proj.get_record("task-06")
        with pytest.raises(KeyError, match="no task"):
            proj.get_record("never")
        assert "task-06" not in proj.get_history()

    def test_keys_and_copies(self, proj: projections.Projection) -> None:
        rows = proj.find_records({"engine_uuid": {"$in": ["engine-2", "engine-3"]}}, keys="result_header")
        assert rows and all(set(r) == {"msg_id", "result_header"} for r in rows)
        rows = proj.find_records({"msg_id": "task-01"}, keys=["started", "msg_id", "tags"])
        assert rows == [{"msg_id": "task-01", "started": stored(proj, _t(1.5)), "tags": ["a", "b"]}]
        rows[0]["tags"].append("mutated")
        rec = proj.get_record("task-02")
        rec["extra"]["k"].append(99)
        rec["header"]["msg_type"] = "mutated"
        assert proj.get_record("task-02")["extra"] == {"k": [1, 2]}
        assert proj.get_record("task-02")["header"]["msg_type"] == "apply_request"
        assert proj.find_records({"msg_id": "task-01"}, keys=["tags"])[0]["tags"] == ["a", "b"]

    @pytest.mark.parametrize(("query", "match"), BAD_QUERIES, ids=[str(i) for i in range(len(BAD_QUERIES))])
    def test_bad_queries_raise(self, proj: projections.Projection, query: Any, match: str) -> None:
        with pytest.raises(QueryError, match=match):
            proj.find_records(query)
        with pytest.raises(QueryError):
            proj.count(query)

    def test_buffers_round_trip_byte_exact(self, proj: projections.Projection, history: str) -> None:
        """Every buffer comes back as the events carried it, by reference or inline, whole or by keys."""
        with TaskLog.open(history, readonly=True) as log:
            want = {r["msg_id"]: r for r in projections.open("dict?buffers=inline", log=log).find_records({})}
        carried = [m for m, r in want.items() if r.get("buffers") or r.get("result_buffers")]
        assert carried
        for m in carried:
            rec = proj.get_record(m)
            assert (rec["buffers"], rec["result_buffers"]) == (want[m]["buffers"], want[m]["result_buffers"])
            assert all(type(b) is bytes for b in rec["buffers"] + (rec["result_buffers"] or []))
        for rec in proj.find_records({"msg_id": {"$in": carried}}, keys=["buffers", "result_buffers"]):
            assert (rec["buffers"], rec["result_buffers"]) == (want[rec["msg_id"]]["buffers"],
                                                                want[rec["msg_id"]]["result_buffers"])
        stored = proj.records_of(set(carried)) if not hasattr(proj, "inner") else {}
        by_ref = proj.buffers == "ref" and proj.source is not None
        for rec in stored.values():
            assert rec is not None
            assert isinstance(rec["buffers"], dict) == (by_ref and bool(want[rec["msg_id"]]["buffers"]))

    def test_bad_keys(self, proj: projections.Projection) -> None:
        for keys in (["result_content.status"], [3], {"a": 1}):
            with pytest.raises(QueryError):
                proj.find_records({}, keys=keys)

    def test_reapplying_changes_nothing(self, proj: projections.Projection, history: str) -> None:
        before = {m: proj.get_record(m) for m in proj.get_history()}
        with TaskLog.open(history, readonly=True) as log:
            events = list(log.read())
        # At-least-once delivery: the whole log again, in pieces, even below the checkpoint.
        saved = proj.last_seq
        proj.last_seq = 0
        proj.apply(events[:10])
        proj.apply(events)
        proj.last_seq = saved
        assert {m: proj.get_record(m) for m in proj.get_history()} == before

    def test_nesting_up_to_the_limit_works_everywhere(self, proj: projections.Projection, reference: Any) -> None:
        """The documented depth is answered by every projection (SQLite's parser overflowed at 50)."""
        for op in ("$or", "$and", "$nor"):
            query = _nested(op, MAX_DEPTH)
            want = sorted(d["msg_id"] for d in reference.find(query, {"msg_id": 1}))
            assert _ids(proj.find_records(query)) == want, op

    # -- pages (``projections.paging``): the same order on every backend ------------------------

    @pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
    @pytest.mark.parametrize("sort", list(SORTABLE))
    def test_pages_walk_every_match_once_in_order(self, proj: projections.Projection, sort: str,
                                                  descending: bool) -> None:
        for query in PAGE_QUERIES:
            want = [r["msg_id"] for r in sorted(proj.find_records(query), key=lambda r: _order(r, sort),
                                                 reverse=descending)]
            got, after, pages = [], None, 0
            while True:
                page = proj.find_page(query, keys=["label"], sort=sort, descending=descending, limit=3, after=after)
                assert len(page.records) <= 3 and all(set(r) <= {"msg_id", "label"} for r in page.records)
                got += [r["msg_id"] for r in page.records]
                pages += 1
                if page.after is None:
                    break
                after = page.after
            assert got == want, f"{proj.spec}: {query} by {sort}"
            assert pages == max(-(-len(want) // 3), 1) or (len(want) % 3 == 0 and pages == len(want) // 3 + 1)

    def test_a_page_holds_whole_records_and_every_match_streams(self, proj: projections.Projection) -> None:
        page = proj.find_page({"msg_id": "task-03"})
        assert page.records == [proj.get_record("task-03")] and page.after is None
        assert sorted(r["msg_id"] for r in proj.iter_records({}, keys=["msg_id"], batch=2)) == \
            _ids(proj.find_records({}))

    @pytest.mark.parametrize(("sort", "limit", "after"), [("stdout", 10, None), ("submitted", 0, None),
                                                          ("submitted", True, None), ("label", 10, (5, "x")),
                                                          ("submitted", 10, ("2026", "x")), ("label", 10, "x")])
    def test_bad_pages_raise(self, proj: projections.Projection, sort: str, limit: Any, after: Any) -> None:
        with pytest.raises(QueryError):
            proj.find_page({}, sort=sort, limit=limit, after=after)

    def test_task_times_are_the_task_states(self, proj: projections.Projection) -> None:
        def us(t: datetime | None) -> int | None:
            return None if t is None else (t - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
        want = {(s.msg_id, us(s.submitted), us(s.started), us(s.completed), s.failed, s.engine_uuid)
                for s in proj.task_states() if not s.dropped}
        assert {(*row[:4], bool(row[4]), row[5]) for row in proj.task_times()} == want
        assert "task-06" not in {row[0] for row in proj.task_times()}
        some = ["task-01", "task-05", "task-06", "ghost", "never", "task-05b"]  # a purged one, an unknown one
        assert {(*row[:4], bool(row[4]), row[5]) for row in proj.task_times(some)} == {w for w in want if w[0] in some}


PAGE_QUERIES: list[dict[str, Any]] = [{}, {"engine_uuid": {"$in": ["engine-1", "engine-2"]}}, {"completed": None},
                                      {"score": {"$gt": 0}}, {"label": {"$glob": "job-*"}}]


def _order(record: dict[str, Any], sort: str) -> tuple[Any, ...]:
    """The documented order: a value of the field's type, else null; nulls first; then msg_id."""
    value = record.get(sort)
    if not isinstance(value, SORTABLE[sort]):
        return (0, "", record["msg_id"])
    return (1, value, record["msg_id"])
