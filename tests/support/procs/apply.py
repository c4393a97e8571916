"""A helper process: apply a log to a SQLite or MongoDB projection in small batches, forever.

Usage: python apply.py LOG SPEC  (killed by the test with SIGKILL mid-batch)
"""

from __future__ import annotations

import sys

import projections
from tasklog import TaskLog


def main() -> None:
    log_dir, spec = sys.argv[1:3]
    with TaskLog.open(log_dir, readonly=True) as log, projections.open(spec) as proj:
        print("ready", flush=True)
        proj.catch_up(log.read(proj.last_seq + 1), batch_size=37,
                      progress=lambda n: print(n, flush=True))
        print("done", flush=True)


if __name__ == "__main__":
    main()
