"""The dashboard (issue 23): what a page of ``tasklog serve`` waits for, on the demo's events.

A real server process on a log of the demo's events, asked over HTTP as its pages ask: a page of
100 tasks for queries on indexed fields (first and next pages), the overview, and how long a
commit takes to show in an open page (from its commit to the page's fetch after the notice), at
a Hub's pace and with a producer at full speed. Each figure is a distribution over many requests
(p50/p95/p99) against the ceiling the issue sets; the server's peak RSS last. A Hub (TaskLogDB)
with the dashboard running and watched is timed against the same Hub without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from bench.harness import record, sizes
from bench.test_bench_ipyparallel import _QUIET, _messages, lifecycle
from tasklog import TaskLog
from tasklog.demo import simulate
from tasklog.ipyparallel import TaskLogDB
from tasklog.views.jsonfmt import dumps
from tests.support import child_env, run_cli
from tests.support.served import TOKEN, Served, children, serving

PAGE_MS, OVERVIEW_MS, VISIBLE_MS, RSS_MB = 200, 300, 1000, 300
_WRITER = """
import sys, time
from tasklog import TaskLog, Submit, Start, Complete
from tasklog.fields import utcnow
path, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with TaskLog.open(path, "process") as log:
    for i in range(n):
        m = f"paced-{time.time_ns()}-{i}"
        log.append_many([Submit(m, {"msg_id": m}, {}, {}, [], "client-paced", "task", utcnow()),
                         Start(m, f"engine-{i % 8}", utcnow())])
        time.sleep(pause)
"""


def _ms(samples: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


@pytest.fixture(scope="module", params=sizes("serve_events"))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Served, str, int]]:
    """A server on a demo log (its read model built first, as `tasklog index` does)."""
    tmp = tempfile.mkdtemp(prefix="tasklog-bench-serve-")
    path = os.path.join(tmp, "log")
    with TaskLog.open(path, "process") as log:
        events = list(simulate(request.param * 10 // 52, seed=23))
        for i in range(0, len(events), 10_000):
            log.append_many(events[i:i + 10_000])
        n = log.last_seq
    run_cli("index", "--log", path, check=True, timeout=1800)
    with serving("--log", path, wait=600) as s:
        yield s, path, n
    shutil.rmtree(tmp, ignore_errors=True)


def _timed(served: Served, path: str, params: dict[str, str]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    answer = served.get(path, params)
    elapsed = time.perf_counter() - t0
    assert answer.status == 200, answer.body[:300]
    return elapsed, answer.json()


PAGE_QUERIES = [({}, "-submitted"), ({"engine_uuid": "engine-3"}, "-submitted"),
                ({"client_uuid": "client-1"}, "-submitted"), ({"label": {"$glob": "job-1*"}}, "-submitted"),
                ({"queue": "task"}, "-completed"),
                ({"engine_uuid": {"$in": ["engine-1", "engine-2"]}}, "msg_id"), ({}, "engine_uuid"),
                ({"engine_uuid": "engine-5"}, "-started"), ({"label": "job-7"}, "submitted")]


def test_a_page_of_100_tasks(benchmark: Any, served: tuple[Served, str, int]) -> None:
    server, _, n = served
    samples: list[float] = []

    def run() -> None:
        for query, sort in PAGE_QUERIES:
            params = {"q": dumps(query), "sort": sort, "limit": "100"}
            took, first = _timed(server, "/api/tasks", params)
            samples.append(took)
            if first["after"]:
                samples.append(_timed(server, "/api/tasks", params | {"after": first["after"]})[0])
    record(benchmark, n, "n/a (read)", "dashboard", role="serve_page", unit="events")
    benchmark.pedantic(run, rounds=10)
    benchmark.extra_info.update(_ms(samples), ceiling_ms=PAGE_MS, requests=len(samples))


def test_the_overview(benchmark: Any, served: tuple[Served, str, int]) -> None:
    server, _, n = served
    first, _ = _timed(server, "/api/overview", {})  # the first reads every task's times: the cold start
    samples: list[float] = []
    record(benchmark, n, "n/a (read)", "dashboard", role="serve_overview", unit="events")
    benchmark.pedantic(lambda: samples.append(_timed(server, "/api/overview", {})[0]), rounds=30)
    benchmark.extra_info.update(_ms(samples), ceiling_ms=OVERVIEW_MS, first_ms=round(first * 1000, 1))


def _watch(server: Served, seen: list[tuple[int, float]], stop: threading.Event) -> None:
    """What an open tasks page does: on each commit notice, fetch its first page; note when it came back."""
    req = urllib.request.Request(server.base + "/api/live", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=120) as feed:
        for raw in feed:
            line = raw.decode().strip()
            if line.startswith("data: "):
                server.get("/api/tasks", {"q": "{}", "limit": "100"})
                seen.append((int(line[6:]), time.time()))
            if stop.is_set():
                return


def _visible(path: str, seen: list[tuple[int, float]], start: int) -> list[float]:
    """For each notice, from the commit of the oldest event it newly showed to the page's fetch."""
    out = []
    with TaskLog.open(path, readonly=True) as log:
        prev = start
        for seq, done in seen:
            if seq > prev:
                when = log.committed_at([prev + 1])[prev + 1]
                if when is not None:
                    out.append(done - when.timestamp())
                prev = seq
    return out


@pytest.mark.parametrize("pace", ["hub", "full"])
def test_a_commit_shows_in_an_open_page(benchmark: Any, served: tuple[Served, str, int], pace: str) -> None:
    server, path, n = served
    with TaskLog.open(path, readonly=True) as log:
        start = log.last_seq
    seen: list[tuple[int, float]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(server, seen, stop), daemon=True)
    watcher.start()
    time.sleep(1)
    writer = ([sys.executable, "-c", _WRITER, path, "300", "0.02"] if pace == "hub" else
              [sys.executable, "-m", "tasklog", "demo", "--log", path, "--tasks", "20000"])

    def run() -> None:
        subprocess.run(writer, check=True, env=child_env(), stdout=subprocess.DEVNULL)
        time.sleep(2)  # the last commits reach the page
    record(benchmark, n, "process", "dashboard", role=f"serve_visible_{pace}", unit="events")
    benchmark.pedantic(run, rounds=1)
    stop.set()
    lags = _visible(path, [s for s in seen if s[0] > start], start)
    assert lags, "no commit reached the page"
    benchmark.extra_info.update(_ms(lags), ceiling_ms=VISIBLE_MS, notices=len(lags))


def test_the_server_peak_rss(benchmark: Any, served: tuple[Served, str, int]) -> None:
    """Last of the module: the server's high-water mark after every request above (its process and
    its reader's, summed)."""
    server, _, n = served
    pids = [server.proc.pid, *children(server.proc.pid)]
    hwm = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            hwm += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    record(benchmark, n, "n/a (read)", "dashboard", role="serve_rss", unit="events")
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update(peak_rss_mb=round(hwm / 1024, 1), limit_mb=RSS_MB, processes=len(pids))


# A person watching, in a process of its own (as a browser is: a thread here took the GIL from the
# Hub's calls): the overview and the tasks page fetched again at each commit notice.
_VIEWER = """
import sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
def get(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    return urllib.request.urlopen(req, timeout=120)
for raw in get("/api/live"):
    if raw.startswith(b"data: "):
        get("/api/overview").read()
        get("/api/tasks?q=%7B%7D").read()
"""


@pytest.mark.parametrize("dashboard", ["off", "watched"])
def test_a_hub_beside_the_dashboard(benchmark: Any, dashboard: str) -> None:
    """The Hub's calls through TaskLogDB (SQLite), with its dashboard child watched or none."""
    n = sizes("baseline_tasks")[-1] * 4
    msgs = _messages(n)
    made: list[tuple[str, TaskLogDB, subprocess.Popen[bytes] | None]] = []

    def setup() -> tuple[tuple[TaskLogDB], dict[str, Any]]:
        tmp = tempfile.mkdtemp(prefix="bench-serve-hub-")
        db = TaskLogDB(location=tmp, projection="sqlite", log=_QUIET,
                       serve_port=0 if dashboard == "watched" else -1, serve_token=TOKEN)
        viewer = None
        if db.serving is not None and db.serving.url is not None:
            viewer = subprocess.Popen([sys.executable, "-c", _VIEWER, db.serving.url.split("/?token=")[0], TOKEN])
            time.sleep(1)
        made.append((tmp, db, viewer))
        return (db,), {}

    def run(db: TaskLogDB) -> None:
        lifecycle(db, msgs, 1)
        db.records.flush()
    record(benchmark, n, "async log: synced every 5 ms", "dashboard", role=f"hub_dashboard_{dashboard}",
           unit="tasks", baseline="hub_dashboard_off")
    benchmark.pedantic(run, setup=setup, rounds=3)
    for tmp, db, viewer in made:
        if viewer is not None:
            viewer.kill()
            viewer.wait()
        db.close()
        shutil.rmtree(tmp, ignore_errors=True)
