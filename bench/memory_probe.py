"""Peak resident memory of the hub pattern with a live projection (issue 6), and of a Hub's task
database under a producer at full speed or at a Hub's pace (issue 20).

Usage: python bench/memory_probe.py EVENTS SPEC LOGDIR
       python bench/memory_probe.py hub STORE TASKS PACE DIR
The first prints one JSON line: events, seconds, peak RSS in bytes. The second drives the Hub's
calls for TASKS tasks with two 100 KB buffers each into STORE (DictDB, SQLiteDB or TaskLogDB, as
``hub_rss_probe.py`` makes them) and prints one JSON line: store, pace, tasks, seconds and the
growth of RssAnon (the process's own heap) from before the first task to its highest, sampled
every 50 tasks and after the store is closed. PACE ``full`` makes each buffer by copying one
random block under a unique prefix (distinct bytes at memory speed: the producer runs as fast as
the process can); ``hub`` draws fresh ``os.urandom`` bytes (slower, as ``hub_rss_probe.py`` does).
Each runs in its own process so the figures are this workload's alone.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable

from projections.live import attach
from tasklog import TaskLog
from tasklog.demo import simulate


def _peak_rss() -> int:
    """This process's own peak RSS in bytes."""
    # Not ru_maxrss: Linux carries it across execve from the forked parent, so a probe started
    # by a big pytest process reported the parent's 890 MB. VmHWM belongs to this image alone.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main() -> None:
    """Stream the simulated hub into an async log with ``SPEC`` attached; report the peak RSS."""
    events, spec, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    t0 = time.perf_counter()
    n = 0
    with TaskLog.open(path, "async", commit_interval=0.005) as log:
        proj = attach(log, spec)
        append = log.append
        for ev in simulate(events // 4, seed=11):  # a generator: the workload is never all in memory
            append(ev)
            n += 1
            if n >= events:
                break
        log.flush()
        assert proj.last_seq == log.last_seq
        proj.close()
    peak = _peak_rss()
    print(json.dumps({"events": n, "seconds": time.perf_counter() - t0, "peak_rss": peak}))


def _buffers(pace: str) -> Callable[[int, bytes], bytes]:
    """How a task's buffer is made: ``full`` copies a random block under a unique prefix,
    ``hub`` draws fresh random bytes."""
    from hub_rss_probe import BUFFER

    if pace == "hub":
        return lambda i, tag: os.urandom(BUFFER)
    block = os.urandom(BUFFER)

    def fresh(i: int, tag: bytes) -> bytes:
        b = bytearray(block)
        b[:16] = i.to_bytes(8, "big") + tag
        return bytes(b)
    return fresh


def hub_main(store: str, tasks: int, pace: str, where: str) -> None:
    """Drive ``tasks`` tasks' Hub calls into ``store`` at ``pace``; report RssAnon's growth."""
    from hub_rss_probe import make, one_task, status

    make_buffer = _buffers(pace)
    db = make(store, where)
    start = high = status()["RssAnon"]
    t0 = time.perf_counter()
    for i in range(tasks):
        one_task(db, make_buffer(i, b"request."), make_buffer(i, b"result.."))
        if i % 50 == 0:
            high = max(high, status()["RssAnon"])
    seconds = time.perf_counter() - t0
    high = max(high, status()["RssAnon"])
    db.close()  # a log commits what it still queues: counted too
    high = max(high, status()["RssAnon"])
    print(json.dumps({"store": store, "pace": pace, "tasks": tasks, "seconds": seconds,
                      "rss_anon_growth": high - start}))


if __name__ == "__main__":
    if sys.argv[1] == "hub":
        hub_main(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
