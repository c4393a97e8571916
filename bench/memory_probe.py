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


if __name__ == "__main__":
    main()
