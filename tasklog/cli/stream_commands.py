"""Commands that take a log past one machine: ``ship`` it to NATS JetStream, ``restore`` it back.

Both use the log core and ``tasklog.stream`` only (``follow`` and ``replay --source`` fold a
stream into a projection: ``feed_commands``). SIGINT and SIGTERM stop either at once, whatever it
waits on (``tasklog.stream.stopping``); a command stopped before it was done says what it did and
exits non-zero, except ``ship --follow``, which exits 0 once it was under way.
"""

from __future__ import annotations

import argparse

from ..log import TaskLog
from ..progress import Progress
from ..stream import wire
from ..stream.restore import restore_async, restoring
from ..stream.ship import BATCH_EVENTS, Shipper, ship_until
from ..stream.stopping import terminating_interrupts, until_stopped
from .common import Command, add_log, add_servers, add_wait, positive

__all__ = ["SHIP", "RESTORE"]

# -- ship -----------------------------------------------------------------------------


def cmd_ship(args: argparse.Namespace) -> int:
    """Publish the log's committed events to a JetStream stream, from where the stream ends."""
    terminating_interrupts()
    with TaskLog.open(args.log, readonly=True) as log:
        bar = Progress(None if args.follow else max(log.last_seq - log.start_seq + 1, 0), "ship")
        shipper = Shipper(log, args.to, args.stream, args.hub, args.replicas, args.window, progress=bar.update,
                          connect_deadline=None if args.follow else args.wait, batch_events=args.batch)
        interrupted = ship_until(shipper, args.follow, (lambda: shipper.stop(drain=True)) if args.until_eof else None)
        bar.close()
        stats = shipper.stats
        held = f"the stream holds events {log.start_seq}..{stats.last_acked} of this log" if stats.resumed else \
            "interrupted before the stream said where it ends"
        if interrupted and stats.resumed:
            held += " (and perhaps some of those in flight when interrupted)"
        print(f"shipped {stats.shipped:,} events in {stats.messages:,} messages to {shipper.stream}/{shipper.hub} "
              f"in {bar.elapsed:.2f} s ({stats.shipped / max(bar.elapsed, 1e-9):,.0f} events/s); {held}; "
              f"windows sent again after a failure: {stats.retries}")
        if interrupted and not (args.follow and stats.resumed):
            raise KeyboardInterrupt  # one line on stderr, a non-zero exit
    return 0


def _ship_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    add_servers(p, "--to", required=True)
    p.add_argument("--hub", metavar="NAME", help="this hub's name in the stream (default: the log's identity)")
    p.add_argument("--replicas", type=positive, metavar="N",
                   help="replicas of a stream this creates (default: 3 where the cluster has 3 servers, else 1)")
    p.add_argument("--window", type=positive, default=64, metavar="N", help="messages awaiting acks (default 64)")
    p.add_argument("--batch", type=positive, default=BATCH_EVENTS, metavar="N",
                   help=f"events a message holds at most (default {BATCH_EVENTS})")
    p.add_argument("--follow", action="store_true", help="keep shipping new events until interrupted")
    p.add_argument("--until-eof", action="store_true",
                   help="stop, after shipping what is committed, when standard input ends (how a writer that "
                        "started this one says it closed, or ended)")
    add_wait(p, "; --follow waits for ever")


# -- restore ------------------------------------------------------------------------------


def cmd_restore(args: argparse.Namespace) -> int:
    """Rebuild a hub's log from the stream into a new directory (built aside, renamed when whole)."""
    servers, stream = wire.parse_servers(args.source), wire.check_name("stream", args.stream)
    hub = wire.check_name("hub", args.hub)
    terminating_interrupts()
    with restoring(args.log) as log:
        bar = Progress(None, "restore")
        n = until_stopped(restore_async(log, servers, stream, hub, bar.update, args.wait))
        bar.close()
        start, last, identity = log.start_seq, log.last_seq, log.identity
    gone = f"; events 1..{start - 1} were never shipped (pruned first): queries of it need them" if start > 1 else ""
    print(f"restored {n:,} events ({start}..{last}) of hub {hub} into {args.log} in {bar.elapsed:.2f} s; "
          f"it is log {identity}, as the original was{gone}")
    return 0


def _restore_args(p: argparse.ArgumentParser) -> None:
    add_servers(p, "--from", required=True, dest="source")
    p.add_argument("--hub", required=True, metavar="NAME", help="the hub whose log to rebuild")
    p.add_argument("--log", required=True, metavar="NEWDIR", help="a new directory for the rebuilt log")
    add_wait(p)


SHIP = Command("ship", "publish the log's committed events to a NATS JetStream stream, resuming where the "
               "stream ends for this hub", _ship_args, cmd_ship)
RESTORE = Command("restore", "rebuild a hub's log from a JetStream stream: same events, numbers and commit times",
                  _restore_args, cmd_restore)
