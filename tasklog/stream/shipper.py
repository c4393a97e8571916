"""The shipper child a writer starts beside itself (``Shipping``): ``python -m tasklog.stream.shipper``.

It ships the log's committed events as they come, read-only, until its standard input ends (the
writer closed it, or ended), then ships what is committed and stops. Errors are one line on
standard error, which the writer logs.
"""

from __future__ import annotations

import argparse
import sys
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
    args = p.parse_args(argv)
    terminating_interrupts()
    try:
        with TaskLog.open(args.log, readonly=True) as log:
            stopped = ship_until(Shipper(log, args.to, args.stream, args.hub), follow=True, until_eof=True)
    except TaskLogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        stopped = True
    return 130 if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
