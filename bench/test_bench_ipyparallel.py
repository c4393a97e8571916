"""The Hub's call pattern through TaskLogDB against ipyparallel's own DictDB and SQLiteDB (issue 5, 6).

Per task, as the Hub calls its database: add_record (the request), update_record (the
destination engine), get_record + update_record per stdout chunk (the Hub re-sends the
accumulated text), update_record (the result). Messages are built before the clock starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from bench.harness import record, sizes

pytest.importorskip("ipyparallel")

from ipyparallel.controller.dictdb import DictDB
from ipyparallel.controller.hub import init_record
from ipyparallel.controller.mongodb import MongoDB
from ipyparallel.controller.sqlitedb import SQLiteDB

from tasklog.ipyparallel import TaskLogDB

ROUNDS = 3
_QUIET = logging.getLogger("bench-ipp")
_QUIET.setLevel(logging.CRITICAL)


def _messages(n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        mid = str(uuid.uuid4())
        out.append({"header": {"msg_id": mid, "msg_type": "apply_request", "date": datetime.now(timezone.utc),
                               "session": "s1", "username": "u"},
                    "content": {}, "metadata": {}, "buffers": [os.urandom(100)]})
    return out


def lifecycle(db: Any, msgs: list[dict[str, Any]], chunks: int) -> None:
    """Drive ``db`` with the Hub's calls for every task in ``msgs``."""
    now = datetime.now(timezone.utc)
    result = {"result_header": {"msg_id": "r"}, "result_content": {"status": "ok"}, "result_metadata": {},
              "started": now, "completed": now, "received": now, "engine_uuid": "e1",
              "result_buffers": [b"r" * 100]}
    for msg in msgs:
        mid = msg["header"]["msg_id"]
        rec = init_record(msg)
        rec["client_uuid"] = "s1"
        rec["queue"] = "task"
        db.add_record(mid, rec)
        db.update_record(mid, {"engine_uuid": "e1"})
        for _ in range(chunks):
            db.update_record(mid, {"stdout": db.get_record(mid)["stdout"] + "a line of output\n"})
        db.update_record(mid, dict(result))


def _db_name() -> str:
    return f"bench{uuid.uuid4().hex[:10]}"


STORES: dict[str, Callable[[str, str], Any]] = {
    "DictDB": lambda tmp, mongo: _dictdb(),
    "SQLiteDB": lambda tmp, mongo: SQLiteDB(location=tmp, filename="t.db", log=_QUIET),
    "MongoDB": lambda tmp, mongo: MongoDB(connection_args=[mongo], database=_db_name(), log=_QUIET),
    "TaskLogDB-dict": lambda tmp, mongo: TaskLogDB(location=tmp, projection="dict", log=_QUIET),
    "TaskLogDB-sqlite": lambda tmp, mongo: TaskLogDB(location=tmp, projection="sqlite", log=_QUIET),
    "TaskLogDB-mongo": lambda tmp, mongo: TaskLogDB(location=tmp, projection=f"{mongo}/{_db_name()}", log=_QUIET),
}
_ASYNC = "async log: synced every 5 ms"
DURABILITY = {"DictDB": "none (memory only)", "SQLiteDB": "commits every 2 s (a crash loses up to 2 s)",
              "MongoDB": "per call (one round trip each)", "TaskLogDB-dict": _ASYNC, "TaskLogDB-sqlite": _ASYNC,
              "TaskLogDB-mongo": _ASYNC}
BASELINE = {"TaskLogDB-dict": "DictDB", "TaskLogDB-sqlite": "SQLiteDB", "TaskLogDB-mongo": "MongoDB"}


def _dictdb() -> DictDB:
    db = DictDB(log=_QUIET)
    db.record_limit = 10**9
    db.size_limit = 10**12
    return db


@pytest.fixture
def tmpdirs() -> Iterator[Callable[[], str]]:
    """Fresh directories per round."""
    made: list[str] = []

    def make() -> str:
        made.append(tempfile.mkdtemp(prefix="bench-ipp-"))
        return made[-1]
    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def _run(store: str, tmp: str, mongo: str, msgs: list[dict[str, Any]], chunks: int) -> None:
    db = STORES[store](tmp, mongo)
    lifecycle(db, msgs, chunks)
    db.close()  # TaskLogDB: commits what is queued, so the figure includes durability


def _sizes(store: str) -> list[int]:
    return sizes("mongo_tasks") if "ongo" in store else sizes("baseline_tasks")


HUB_CASES = [(store, n) for store in sorted(STORES) for n in _sizes(store)]


@pytest.mark.parametrize(("store", "n"), HUB_CASES, ids=[f"{s}-{n}" for s, n in HUB_CASES])
def test_hub_db(benchmark: Any, tmpdirs: Callable[[], str], request: pytest.FixtureRequest,
                store: str, n: int) -> None:
    mongo = request.getfixturevalue("mongo_uri") if "ongo" in store else ""
    msgs = _messages(n)
    base = BASELINE.get(store)
    record(benchmark, n, DURABILITY[store], "ipyparallel hub pattern", role=f"hub_db_{store}", unit="tasks",
           baseline=f"hub_db_{base}" if base else None, also=["hub_db_DictDB", "hub_db_SQLiteDB"] if base else None,
           scenario="ipyparallel hub pattern (tasks/s)", series=store)
    benchmark.pedantic(_run, setup=lambda: ((store, tmpdirs(), mongo, msgs, 1), {}), rounds=ROUNDS)


@pytest.mark.parametrize("store", ["DictDB", "SQLiteDB", "TaskLogDB-dict", "TaskLogDB-sqlite"])
@pytest.mark.parametrize("chunks", [0, 10, 100])
def test_output_heavy(benchmark: Any, tmpdirs: Callable[[], str], store: str, chunks: int) -> None:
    n = max(100, sizes("baseline_tasks")[-1] // (1 + chunks // 2))
    msgs = [dict(m, buffers=[os.urandom(1024)]) for m in _messages(n)]
    base = BASELINE.get(store)
    record(benchmark, n, DURABILITY[store], "output-heavy tasks", role=f"chunks_{chunks}_{store}", unit="tasks",
           baseline=f"chunks_{chunks}_{base}" if base else None, chunks=chunks,
           scenario="stdout chunks per task (tasks/s)", series=store)
    benchmark.pedantic(_run, setup=lambda: ((store, tmpdirs(), "", msgs, chunks), {}), rounds=ROUNDS)
