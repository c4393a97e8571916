"""Peak resident memory of the hub pattern with a live projection (issue 6).

Usage: python bench/memory_probe.py EVENTS SPEC LOGDIR
Prints one JSON line: events, seconds, peak RSS in bytes. Runs in its own process so the peak
is this workload's alone.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from projections.live import attach
from tasklog import TaskLog
from tasklog.demo import simulate


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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"events": n, "seconds": time.perf_counter() - t0, "peak_rss": peak}))


if __name__ == "__main__":
    main()
