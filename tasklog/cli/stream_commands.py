"""Commands past one machine: ship a log to NATS JetStream, fold a stream into a projection, restore.

``ship`` and ``restore`` use the log core only; ``follow`` and ``replay --source`` compose it with
``projections`` (a stream-fed projection), as the other projection commands do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import projections
from projections.streamfeed import StreamFeed

from .. import jetstream
from ..errors import InterfaceError
from ..log import TaskLog
from ..progress import Progress
from ..ship import BATCH_EVENTS, Shipper, restore
from .common import Command, add_log, leave_nothing, local_file, positive

__all__ = ["SHIP", "RESTORE", "FOLLOW", "add_source", "replay_from_stream"]


def _stopping(run: Any, stop: Callable[[bool], None], until_eof: bool = False) -> Any:
    """Run the coroutine ``run``: a first SIGINT or SIGTERM asks ``stop(True)`` (finish what is in
    hand), a second ``stop(False)`` (now); with ``until_eof``, the end of standard input is a first."""
    async def main() -> Any:
        loop = asyncio.get_running_loop()
        asked: list[int] = []

        def ask() -> None:
            asked.append(1)
            stop(len(asked) == 1)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, ask)
        if until_eof:
            def wait_eof() -> None:
                sys.stdin.buffer.read()  # returns when the writer that started this closes the pipe, or ends
                loop.call_soon_threadsafe(ask)
            threading.Thread(target=wait_eof, daemon=True).start()
        return await run
    return asyncio.run(main())


# -- ship -----------------------------------------------------------------------------


def cmd_ship(args: argparse.Namespace) -> int:
    """Publish the log's committed events to a JetStream stream, from where the stream ends."""
    with TaskLog.open(args.log, readonly=True) as log:
        bar = Progress(None if args.follow else max(log.last_seq - log.start_seq + 1, 0), "ship")
        shipper = Shipper(log, args.to, args.stream, args.hub, args.replicas, args.window, progress=bar.update,
                          connect_deadline=None if args.follow else args.wait, batch_events=args.batch)
        stats = _stopping(shipper.run(follow=args.follow), shipper.stop, args.until_eof)
        bar.close()
        print(f"shipped {stats.shipped:,} events in {stats.messages:,} messages to {shipper.stream}/{shipper.hub} "
              f"in {bar.elapsed:.2f} s ({stats.shipped / max(bar.elapsed, 1e-9):,.0f} events/s); the stream holds "
              f"events {log.start_seq}..{stats.last_acked} of this log; windows sent again after a failure: "
              f"{stats.retries}")
    return 0


def _ship_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    _add_servers(p, "--to", required=True)
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
    p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for a server to answer before giving up (default 30; "
                        "--follow waits for ever)")


def _add_servers(p: argparse.ArgumentParser, flag: str, required: bool, dest: str | None = None) -> None:
    p.add_argument(flag, required=required, dest=dest, metavar="nats://HOST:PORT[,...]",
                   help="the NATS servers (any of the cluster's)")
    p.add_argument("--stream", default=jetstream.DEFAULT_STREAM, metavar="NAME",
                   help=f"the JetStream stream (default {jetstream.DEFAULT_STREAM})")


# -- follow and replay --source ---------------------------------------------------------


def cmd_follow(args: argparse.Namespace) -> int:
    """Keep a projection current from a stream (a durable consumer) until interrupted."""
    if not args.source:
        raise InterfaceError("follow needs --source nats://HOST:PORT[,...]")
    return _feed(args, follow=True)


def replay_from_stream(args: argparse.Namespace) -> int:
    """``tasklog replay --source``: fold what the stream holds into the projection, then stop."""
    for flag, value in (("--from", args.from_seq), ("--to", args.to), ("--as-of", args.as_of)):
        if value is not None:
            raise InterfaceError(f"{flag} selects events of a log; --source folds every hub of a stream")
    return _feed(args, follow=False)


def _feed(args: argparse.Namespace, follow: bool) -> int:
    if args.projection == "none":
        raise InterfaceError("the none projection keeps no records: fold a stream into dict, sqlite or mongodb")
    with leave_nothing(local_file(args.projection)), projections.open(args.projection) as proj:
        if getattr(args, "rebuild", False):
            proj.clear()
        bar = Progress(None, "fold")
        feed = StreamFeed(proj, args.source, args.stream, durable=getattr(args, "durable", None),
                          hubs=args.hub or None, progress=bar.update)
        stats = _stopping(feed.run(follow=follow), lambda _: feed.stop())
        bar.close()
        hubs = ", ".join(f"{hub} at {seq}" for hub, seq in sorted(proj.hubs.values())) or "none"
        print(f"folded {stats.applied:,} events from {feed.stream} into {proj.spec} in {bar.elapsed:.2f} s; "
              f"hubs: {hubs}")
        if stats.waiting:
            print(f"tasklog: {stats.waiting} messages wait for an earlier one the stream does not hold yet "
                  "(a shipper that has not resent it); they are folded once it arrives", file=sys.stderr)
    return 0


def add_source(p: argparse.ArgumentParser) -> None:
    """The arguments a command folding a stream takes (``replay`` adds them beside ``--log``)."""
    _add_servers(p, "--source", required=False)  # replay reads a log without it; follow checks it
    p.add_argument("--hub", action="append", metavar="NAME", help="fold only this hub (repeatable)")


def _follow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--projection", required=True, metavar="SPEC", help=projections.SPEC_HELP)
    add_source(p)
    p.add_argument("--durable", default="tasklog-follow", metavar="NAME",
                   help="the durable consumer's name: a restarted follow goes on where it was (default "
                        "tasklog-follow; one per projection)")


# -- restore ------------------------------------------------------------------------------


def cmd_restore(args: argparse.Namespace) -> int:
    """Rebuild a hub's log from the stream into a new directory."""
    if os.path.exists(args.log) and (not os.path.isdir(args.log) or os.listdir(args.log)):
        raise InterfaceError(f"{args.log} exists and is not empty: restore into a new directory")
    with leave_nothing(args.log), TaskLog.open(args.log) as log:
        bar = Progress(None, "restore")
        n = restore(log, args.source, args.stream, args.hub, progress=bar.update)
        bar.close()
        print(f"restored {n:,} events ({log.start_seq}..{log.last_seq}) of hub {args.hub} into {args.log} "
              f"in {bar.elapsed:.2f} s; it is log {log.identity}, as the original was")
    return 0


def _restore_args(p: argparse.ArgumentParser) -> None:
    _add_servers(p, "--from", required=True, dest="source")
    p.add_argument("--hub", required=True, metavar="NAME", help="the hub whose log to rebuild")
    p.add_argument("--log", required=True, metavar="NEWDIR", help="a new directory for the rebuilt log")


SHIP = Command("ship", "publish the log's committed events to a NATS JetStream stream, resuming where the "
               "stream ends for this hub", _ship_args, cmd_ship)
FOLLOW = Command("follow", "keep a projection current from a JetStream stream of many hubs (a durable consumer; "
                 "acks after each commit)", _follow_args, cmd_follow)
RESTORE = Command("restore", "rebuild a hub's log from a JetStream stream: same events, numbers and commit times",
                  _restore_args, cmd_restore)
