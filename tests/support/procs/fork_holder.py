"""A helper process: open a log (async, as a Hub does), append, fork a child that outlives us.

Usage: python fork_holder.py LOG REPORT
Prints "<child pid>" once the event is durable and the child runs, then sleeps until killed.
The child, like ipyparallel's forked schedulers, sleeps too; it writes to REPORT what happened
when it tried to use the inherited log.
"""

from __future__ import annotations

import os
import sys
import time

from tasklog import LogClosedError, TaskLog


def main() -> None:
    log = TaskLog.open(sys.argv[1], "async")
    log.submit("before-the-kill")
    log.flush()
    pid = os.fork()
    if pid == 0:
        try:
            log.start("from-the-child")
            outcome = "used the parent's log"
        except LogClosedError as exc:
            outcome = str(exc)
        with open(sys.argv[2], "w") as report:
            report.write(outcome)
        sys.stdout.close()  # the test reads our parent's output to its end
        time.sleep(600)
        os._exit(0)
    print(pid, flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
