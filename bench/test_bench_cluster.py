"""A real cluster (controller and 2 engines on 127.0.0.1) with each task database (issue 13).

The three clusters run side by side, idle but for the one being measured, and the rounds are
interleaved (DictDB, SQLiteDB, TaskLogDB, DictDB, ...) so a slow moment of this shared machine
falls on every store alike. Reported: wall tasks/s and the controller process's own CPU per
task (user + system of the Hub's process, not its forked schedulers).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

import psutil
import pytest

from bench.harness import PROFILE, record

ipp = pytest.importorskip("ipyparallel")  # a bench extra; `make bench` installs it

DBS = {"DictDB": "ipyparallel.controller.dictdb.DictDB", "SQLiteDB": "ipyparallel.controller.sqlitedb.SQLiteDB",
       "TaskLogDB": "tasklog.ipyparallel.TaskLogDB"}
TASKS, ROUNDS = {"quick": (1_000, 3), "full": (3_000, 5)}[PROFILE]
# Extra TaskLogDB settings to compare, each as its own cluster: NAME=--TaskLogDB.x=y,... (profiling aid).
VARIANTS = dict(v.split("=", 1) for v in os.environ.get("TASKLOG_BENCH_CLUSTER_VARIANTS", "").split(";") if v)


def _round(rc: Any, pid: int, tasks: int) -> tuple[float, float]:
    proc = psutil.Process(pid)
    view = rc.load_balanced_view()
    cpu0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
    view.map_sync(abs, range(tasks), chunksize=1)  # a builtin: engines import nothing of ours
    return time.perf_counter() - t0, sum(proc.cpu_times()[:2]) - cpu0


def test_cluster_controller_cpu_per_task(benchmark: Any) -> None:
    root = tempfile.mkdtemp(prefix="bench-cluster-")
    clusters: dict[str, Any] = {}
    clients: dict[str, Any] = {}
    for name in VARIANTS:
        DBS[name] = DBS["TaskLogDB"]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in DBS}
    try:
        for name, cls in DBS.items():
            args = [f"--IPController.db_class={cls}"]
            if name.startswith("TaskLogDB"):
                args.append(f"--TaskLogDB.location={root}/{name}")
                args += [a for a in VARIANTS.get(name, "").split(",") if a]
            cluster = ipp.Cluster(n=2, profile_dir=f"{root}/{name}-profile", controller_args=args,
                                  controller_ip="127.0.0.1", log_level=40)
            clients[name] = cluster.start_and_connect_sync(activate=False)
            clients[name].wait_for_engines(2, timeout=120)
            clusters[name] = cluster
            _round(clients[name], cluster.controller.process.pid, 100)  # warm up

        def run() -> None:
            for _ in range(ROUNDS):
                for name in DBS:
                    results[name].append(_round(clients[name], clusters[name].controller.process.pid, TASKS))
        record(benchmark, TASKS * ROUNDS, "each store's default", "cluster", unit="tasks per store",
               role="cluster")
        benchmark.pedantic(run, rounds=1)
        per_task = {n: 1e3 * sum(c for _, c in r) / (TASKS * len(r)) for n, r in results.items()}
        benchmark.extra_info.update({
            "tasks_per_s": {n: round(TASKS * len(r) / sum(w for w, _ in r), 1) for n, r in results.items()},
            "controller_cpu_ms_per_task": {n: round(v, 4) for n, v in per_task.items()},
            "tasklog_cpu_ratio_to_dictdb": round(per_task["TaskLogDB"] / per_task["DictDB"], 3),
        })
    finally:
        for name, cluster in clusters.items():
            clients[name].close()
            cluster.stop_cluster_sync()
        shutil.rmtree(root, ignore_errors=True)
