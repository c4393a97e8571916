"""The shipper child a writer starts beside itself (``Shipping``): ``python -m tasklog.stream.shipper``.

It ships the log's committed events as they come, read-only, until its standard input ends (the
writer closed it, or ended), then ships what is committed and stops. If no server takes them
within ``--grace`` seconds of that, it stops anyway and says from which event the log was not
shipped (the next shipper of the log sends them): a writer killed while the cluster was down
left a child retrying for ever. Errors are one line on standard error, which the writer logs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from ..errors import TaskLogError
from ..log import TaskLog
from . import wire
from .ship import Shipper, ship_until
from .stopping import terminating_interrupts

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Ship ``--log`` to ``--to`` until standard input ends; return the exit status."""
    p = argparse.ArgumentParser(prog="python -m tasklog.stream.shipper", description=__doc__)
    p.add_argument("--log", required=True, metavar="DIR")
    p.add_argument("--to", required=True, metavar="nats://HOST:PORT[,...]")
    p.add_argument("--stream", default=wire.DEFAULT_STREAM, metavar="NAME")
    p.add_argument("--hub", metavar="NAME")
    p.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="how long to go on shipping once standard input ends (default 30)")
    args = p.parse_args(argv)
    terminating_interrupts()
    ended = threading.Event()
    try:
        with TaskLog.open(args.log, readonly=True) as log:
            shipper = Shipper(log, args.to, args.stream, args.hub)

            def writer_gone() -> None:
                shipper.stop(drain=True)
                ended.set()
                timer = threading.Timer(args.grace, os.kill, (os.getpid(), signal.SIGTERM))
                timer.daemon = True
                timer.start()
            stopped = ship_until(shipper, follow=True, on_eof=writer_gone)
            shipped = shipper.stats.last_acked
    except TaskLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if stopped and ended.is_set():
        print(f"error: the writer ended and the events after {shipped} were not shipped within {args.grace:g} s "
              "(no server took them): the next shipper of this log sends them", file=sys.stderr)
        return 1
    return 130 if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
