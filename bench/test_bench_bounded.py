"""Issue 13: a Hub's memory against tasks stored, restarts against history, evicted reads.

Each store runs in its own process (``hub_rss_probe.py``); the chart and the points go to
bench/charts/<profile>/ and bench/results/. Figures, not asserts: BENCHMARKS.md reads them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from bench.harness import PROFILE, record
from projections.live import attach
from tasklog import TaskLog
from tasklog.demo import simulate

HERE = Path(__file__).parent
RSS_TASKS = {"quick": (6_000, 1_000), "full": (20_000, 2_000)}[PROFILE]
HISTORY = {"quick": [10_000, 100_000], "full": [10_000, 100_000, 1_000_000]}[PROFILE]
STORES = ("DictDB", "SQLiteDB", "TaskLogDB")


def _probe(store: str, tasks: int, step: int) -> list[dict[str, int]]:
    where = tempfile.mkdtemp(prefix="bench-rss-")
    try:
        out = subprocess.run([sys.executable, str(HERE / "hub_rss_probe.py"), store, str(tasks), str(step), where],
                             check=True, capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _slope(points: list[dict[str, int]]) -> float:
    """Bytes of RssAnon per task, from the first step to the last (the start-up cost left out)."""
    first, last = points[1], points[-1]
    return (last["RssAnon"] - first["RssAnon"]) / max(last["tasks"] - first["tasks"], 1)


def _chart(curves: dict[str, list[dict[str, int]]], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for store, points in curves.items():
        xs = [p["tasks"] for p in points]
        ax.plot(xs, [p["RssAnon"] / 2**20 for p in points], marker="o", label=f"{store} RssAnon")
        ax.plot(xs, [p["VmRSS"] / 2**20 for p in points], linestyle=":", label=f"{store} VmRSS")
    ax.set_xlabel("tasks (two 100 KB buffers each)")
    ax.set_ylabel("MiB")
    ax.set_yscale("log")
    _save(plt, fig, ax, "Hub task database memory against tasks", target)


def _save(plt: Any, fig: Any, ax: Any, title: str, target: Path) -> None:
    """Title, grid and legend, then the PNG at ``target``."""
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=90)
    plt.close(fig)


def test_hub_rss_against_tasks(benchmark: Any) -> None:
    tasks, step = RSS_TASKS
    curves: dict[str, list[dict[str, int]]] = {}

    def run() -> None:
        for store in STORES:
            curves[store] = _probe(store, tasks, step)
    record(benchmark, tasks, "each store as a Hub configures it by default", "memory", unit="tasks",
           role="hub_rss")
    benchmark.pedantic(run, rounds=1)
    slopes = {s: _slope(points) for s, points in curves.items()}
    benchmark.extra_info.update({
        "rss_anon_mb": {s: round(points[-1]["RssAnon"] / 2**20, 1) for s, points in curves.items()},
        "vm_rss_mb": {s: round(points[-1]["VmRSS"] / 2**20, 1) for s, points in curves.items()},
        "slope_kb_per_task": {s: round(v / 1000, 2) for s, v in slopes.items()},
        "slope_ratio_tasklog_to_dictdb": round(slopes["TaskLogDB"] / slopes["DictDB"], 4),
    })
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"hub-rss-{PROFILE}.json").write_text(json.dumps(curves, indent=1))
    _chart(curves, HERE / "charts" / PROFILE / "hub-rss.png")


def _hub_history(path: str, events: int) -> None:
    with TaskLog.open(path, "async") as log:
        _feed(log, events, seed=3)


@pytest.mark.parametrize("events", HISTORY)
def test_restart(benchmark: Any, events: int) -> None:
    """A controller's first db_query after a restart, and `tasklog query`, against history size."""
    from tasklog.ipyparallel import TaskLogDB

    root = tempfile.mkdtemp(prefix="bench-restart-")
    try:
        _hub_history(os.path.join(root, "tasklog"), events)
        TaskLogDB(location=root).close()  # the first start builds the SQLite projection once
        times: dict[str, float] = {}

        def restart() -> None:
            t0 = time.perf_counter()
            db = TaskLogDB(location=root)
            db.find_records({"completed": None}, keys=["msg_id"])
            times["controller"] = time.perf_counter() - t0
            db.close()
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tasklog", "query", "--log", os.path.join(root, "tasklog"),
                            '{"label": "job-7"}', "--keys", "msg_id"], check=True, capture_output=True)
            times["cli_query"] = time.perf_counter() - t0
        record(benchmark, events, "async", "restart", role="restart")
        benchmark.pedantic(restart, rounds=1)
        benchmark.extra_info.update({"controller_first_query_s": round(times["controller"], 3),
                                     "cli_query_s": round(times["cli_query"], 3)})
        _restart_chart(events, times)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _restart_chart(events: int, times: dict[str, float]) -> None:
    """Add this size's point to the run's restart figures and redraw the chart from all of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = HERE / "results" / f"restart-{PROFILE}.json"
    store.parent.mkdir(exist_ok=True)
    points = json.loads(store.read_text()) if store.exists() else {}
    points[str(events)] = times
    store.write_text(json.dumps(points, indent=1))
    sizes = sorted(int(k) for k in points)
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for key, label in (("controller", "controller: start + first db_query"), ("cli_query", "tasklog query")):
        ax.plot(sizes, [points[str(n)][key] for n in sizes], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("events in the log")
    ax.set_ylabel("seconds")
    _save(plt, fig, ax, "Restart against history (TaskLogDB defaults)", HERE / "charts" / PROFILE / "restart.png")


def test_get_record_of_evicted_task(benchmark: Any) -> None:
    events = max(HISTORY)
    root = tempfile.mkdtemp(prefix="bench-evict-")
    try:
        with TaskLog.open(os.path.join(root, "log"), "async") as log:
            proj = attach(log, "dict?record_limit=1000")
            _feed(log, events)
            log.flush()
            ids = _ids(log, 20_000)
            resident = set(proj.get_history())  # peek would re-fold an evicted task: ask what is resident
            evicted = [m for m in ids if m not in resident][:500]
            random.Random(1).shuffle(evicted)
            it = iter(evicted * 10)

            def one() -> None:
                proj.get_record(next(it))
            record(benchmark, 1, "async", "evicted get_record", role="evicted_get_record", unit="reads")
            benchmark.pedantic(one, rounds=200, iterations=1)
            benchmark.extra_info["log_events"] = log.last_seq
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _feed(log: TaskLog, events: int, seed: int = 5) -> None:
    """Append ``events`` events of the simulated Hub, 8,192 per commit."""
    batch: list[Any] = []
    for n, ev in enumerate(simulate(events // 4 + 1, seed=seed)):
        if n >= events:
            break
        batch.append(ev)
        if len(batch) >= 8192:
            log.append_many(batch)
            batch = []
    log.append_many(batch)


def _ids(log: TaskLog, n: int) -> list[str]:
    out: list[str] = []
    for _, ev in log.read():
        if ev.type == "submit":
            out.append(ev.msg_id)  # type: ignore[union-attr]
            if len(out) >= n:
                break
    return out


def test_snapshot_pause(benchmark: Any) -> None:
    """The longest gap a Hub-like loop sees while a snapshot is taken beside it, against none."""
    from projections.maintenance import Maintenance, Policy

    events = max(HISTORY)
    root = tempfile.mkdtemp(prefix="bench-pause-")
    try:
        with TaskLog.open(os.path.join(root, "log"), "async") as log:
            _feed(log, events)
            log.flush()
            gaps: dict[str, float] = {}

            def loop(label: str, seconds: float, maintenance: Maintenance | None) -> None:
                worst, n = 0.0, 0
                last = start = time.perf_counter()
                while time.perf_counter() - start < seconds or (maintenance and not maintenance.counts.snapshots):
                    log.output(f"pause-{n // 10}", "stdout", text="x")
                    n += 1
                    now = time.perf_counter()
                    worst, last = max(worst, now - last), now
                gaps[label] = worst

            def run() -> None:
                loop("without", 2.0, None)
                with Maintenance(log, Policy(every_events=1, every_seconds=0, poll=0.01)) as m:
                    loop("with", 2.0, m)
                gaps["snapshots"] = m.counts.snapshots
            record(benchmark, events, "async", "snapshot pause", role="snapshot_pause", unit="events in the log")
            benchmark.pedantic(run, rounds=1)
            benchmark.extra_info.update({"longest_gap_ms_without": round(1e3 * gaps["without"], 2),
                                         "longest_gap_ms_with_snapshot": round(1e3 * gaps["with"], 2),
                                         "snapshots": gaps["snapshots"]})
    finally:
        shutil.rmtree(root, ignore_errors=True)
