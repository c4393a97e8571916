"""Private memory of a Hub's task database against tasks stored (issue 13).

Usage: python bench/hub_rss_probe.py STORE TASKS STEP DIR
STORE is DictDB, SQLiteDB or TaskLogDB (its defaults). Drives the Hub's calls (add_record,
the engine's start, the result) with a 100 KB request buffer and a 100 KB result buffer per
task, and prints one JSON line per STEP tasks: tasks, RssAnon and VmRSS in bytes, seconds.
RssAnon is the process's own heap: LMDB's mapped pages are page cache the kernel may reclaim,
counted in VmRSS only. Runs in its own process so the figures are this store's alone.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from ipyparallel.controller.dictdb import DictDB
from ipyparallel.controller.hub import init_record
from ipyparallel.controller.sqlitedb import SQLiteDB

from tasklog.ipyparallel import TaskLogDB

_QUIET = logging.getLogger("hub-rss-probe")
_QUIET.setLevel(logging.CRITICAL)
BUFFER = 100_000


def status() -> dict[str, int]:
    """RssAnon and VmRSS of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("RssAnon", "VmRSS"):
                out[key] = int(line.split()[1]) * 1024
    return out


def make(store: str, where: str) -> Any:
    """The store under test, as a Hub configures it when the user changes nothing (DictDB unlimited)."""
    if store == "DictDB":
        db = DictDB(log=_QUIET)
        db.record_limit, db.size_limit = 10**9, 10**13  # its defaults cull at 1 GB: count what it holds
        return db
    if store == "SQLiteDB":
        return SQLiteDB(location=where, filename="tasks.db", log=_QUIET)
    return TaskLogDB(location=where, log=_QUIET)


def one_task(db: Any, payload: bytes, result: bytes) -> None:
    """The Hub's calls for one task: the request, the engine, the result."""
    mid = str(uuid.uuid4())
    now = datetime.now(timezone.utc)
    msg = {"header": {"msg_id": mid, "msg_type": "apply_request", "date": now, "session": "s1", "username": "u"},
           "content": {}, "metadata": {}, "buffers": [payload]}
    rec = init_record(msg)
    rec["client_uuid"], rec["queue"] = "s1", "task"
    db.add_record(mid, rec)
    db.update_record(mid, {"engine_uuid": "e1"})
    db.update_record(mid, {"result_header": {"msg_id": "r" + mid}, "result_content": {"status": "ok"},
                           "result_metadata": {}, "started": now, "completed": now, "received": now,
                           "engine_uuid": "e1", "result_buffers": [result]})


def main() -> None:
    """Run TASKS tasks through STORE; report memory every STEP tasks."""
    store, tasks, step, where = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    db = make(store, where)
    t0 = time.perf_counter()
    print(json.dumps({"tasks": 0, **status(), "seconds": 0.0}), flush=True)
    for i in range(1, tasks + 1):
        one_task(db, os.urandom(BUFFER), os.urandom(BUFFER))  # fresh bytes each, as real ones are
        if i % step == 0:
            print(json.dumps({"tasks": i, **status(), "seconds": time.perf_counter() - t0}), flush=True)
    db.close()


if __name__ == "__main__":
    main()
