"""The snapshot child ``Maintenance`` starts (``python -m projections.snapshotter --log DIR --at SEQ``).

A child, not a thread, so that folding the log does not take the GIL from the writer. Errors are
one line on standard error and a non-zero exit, which ``Maintenance`` reports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tasklog.errors import TaskLogError
from tasklog.log import TaskLog

from . import snapshot
from .errors import ProjectionError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Snapshot ``--log`` as of event ``--at``; return the exit status."""
    p = argparse.ArgumentParser(prog="python -m projections.snapshotter", description=__doc__)
    p.add_argument("--log", required=True, metavar="DIR")
    p.add_argument("--at", required=True, type=int, metavar="SEQ")
    args = p.parse_args(argv)
    try:
        with TaskLog.open(args.log, readonly=True) as log:
            if not 1 <= args.at <= log.last_seq:  # refused before a fold of the whole log, not after
                raise ProjectionError(f"--at {args.at}: the log holds events 1..{log.last_seq}")
            snapshot.take(log, args.at)
    except TaskLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the writer's process group interrupted: one line, not a traceback
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
