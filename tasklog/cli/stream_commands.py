"""Commands past one machine: ship a log to NATS JetStream, fold a stream into a projection, restore.

``ship`` and ``restore`` use the log core only; ``follow`` and ``replay --source`` compose it with
``projections`` (a stream-fed projection), as the other projection commands do.

SIGINT and SIGTERM stop every one of them at once, whatever it waits on (issue 20: with no server
answering, two SIGINTs and a SIGTERM were ignored for over a minute). A command that was to end
by itself (``ship``, ``replay --source``, ``restore``) says what it did and exits non-zero; one
that runs until stopped (``ship --follow``, ``follow``) exits 0 once it was under way.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import hashlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar, cast

import projections
from projections.streamfeed import StreamFeed, check_source

from .. import jetstream
from ..errors import InterfaceError, TaskLogError
from ..log import TaskLog
from ..progress import Progress
from ..restore import restore_async, restoring
from ..ship import BATCH_EVENTS, Shipper
from .common import Command, add_log, leave_nothing, local_file, positive

__all__ = ["SHIP", "RESTORE", "FOLLOW", "add_source", "replay_from_stream"]

T = TypeVar("T")


def _stopping(run: Coroutine[Any, Any, T], on_eof: Callable[[], None] | None = None,
              on_stop: Callable[[], None] | None = None) -> T:
    """Run the coroutine ``run``; SIGINT or SIGTERM cancels it wherever it waits and raises
    KeyboardInterrupt. ``on_eof``: called when standard input ends; ``on_stop``: on a signal."""
    interrupted: list[int] = []

    async def main() -> T | None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(run)

        def interrupt(*_: Any) -> None:
            interrupted.append(1)
            if on_stop is not None:
                on_stop()
            loop.call_soon_threadsafe(task.cancel)
        # Not loop.add_signal_handler: a handler that only asked the work to stop left a shipper
        # that could not connect deaf to every signal (issue 20).
        before = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        if on_eof is not None:
            threading.Thread(target=_wait_eof, args=(loop, on_eof), daemon=True).start()
        try:
            return await _until_done(task, interrupted)
        except (asyncio.CancelledError, TaskLogError):
            if not interrupted:
                raise
            return None  # a client that turned the cancel into an error of its own: still a stop
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)
    result = asyncio.run(main())
    if interrupted:
        raise KeyboardInterrupt
    return cast(T, result)


async def _until_done(task: asyncio.Task[T], interrupted: list[int]) -> T:
    """Await ``task``, cancelling it again while it runs on after a signal.

    One cancel was not enough: a follow catching up folded to the end of the stream after a
    SIGINT (issue 20, item 8), the cancel swallowed by the client's wait_for or turned into an
    error its fetch treats as transient.
    """
    while not task.done():
        await asyncio.wait({task}, timeout=0.25)
        if interrupted and not task.done():
            task.cancel()
    return task.result()


def _terminating_interrupts() -> None:
    """SIGTERM as SIGINT from here on: a command stopped between its awaits (opening a log or a
    projection) cleans up and says so instead of dying with what it made half done."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _wait_eof(loop: asyncio.AbstractEventLoop, on_eof: Callable[[], None]) -> None:
    sys.stdin.buffer.read()  # returns when the writer that started this closes the pipe, or ends
    with suppress(RuntimeError):  # the loop has ended already
        loop.call_soon_threadsafe(on_eof)


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"needs a number of seconds > 0, got {text!r}")
    return value


def _add_servers(p: argparse.ArgumentParser, flag: str, required: bool, dest: str | None = None) -> None:
    p.add_argument(flag, required=required, dest=dest, metavar="nats://HOST:PORT[,...]",
                   help="the NATS servers (any of the cluster's)")
    p.add_argument("--stream", default=jetstream.DEFAULT_STREAM, metavar="NAME",
                   help=f"the JetStream stream (default {jetstream.DEFAULT_STREAM})")


def _add_wait(p: argparse.ArgumentParser, also: str = "") -> None:
    p.add_argument("--wait", type=seconds, default=30.0, metavar="SECONDS",
                   help=f"how long to wait for a server to answer before giving up (default 30{also})")


# -- ship -----------------------------------------------------------------------------


def cmd_ship(args: argparse.Namespace) -> int:
    """Publish the log's committed events to a JetStream stream, from where the stream ends."""
    _terminating_interrupts()
    with TaskLog.open(args.log, readonly=True) as log:
        bar = Progress(None if args.follow else max(log.last_seq - log.start_seq + 1, 0), "ship")
        shipper = Shipper(log, args.to, args.stream, args.hub, args.replicas, args.window, progress=bar.update,
                          connect_deadline=None if args.follow else args.wait, batch_events=args.batch)
        try:
            _stopping(shipper.run(follow=args.follow), (lambda: shipper.stop(drain=True)) if args.until_eof else None)
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
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
    _add_wait(p, "; --follow waits for ever")


# -- follow and replay --source ---------------------------------------------------------


def cmd_follow(args: argparse.Namespace) -> int:
    """Keep a projection current from a stream (a durable consumer) until interrupted."""
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
    _terminating_interrupts()
    servers, stream = jetstream.parse_servers(args.source), jetstream.check_name("stream", args.stream)
    # Asked before the projection is made: a follow killed while no server answered left its new
    # SQLite file behind, and a hub the stream does not hold gave an empty one (issue 20).
    _stopping(check_source(servers, stream, args.hub, args.wait))
    with leave_nothing(local_file(args.projection)), projections.open(args.projection) as proj, \
            _alone(args.projection):
        if getattr(args, "rebuild", False):
            proj.clear()
        bar = Progress(None, "fold")
        feed = StreamFeed(proj, servers, stream, durable=_durable(args) if follow else None, hubs=args.hub or None,
                          progress=bar.update, connect_deadline=args.wait)
        try:
            _stopping(feed.run(follow=follow), on_stop=feed.stop)
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        bar.close()
        hubs = ", ".join(f"{hub} at {seq}" for hub, seq in sorted(proj.hubs.values())) or "none"
        print(f"folded {feed.stats.applied:,} events from {feed.stream} into {proj.spec} in {bar.elapsed:.2f} s; "
              f"hubs: {hubs}")
        if feed.stats.waiting:
            print(f"tasklog: {feed.stats.waiting} messages wait for an earlier one the stream does not hold yet "
                  "(a shipper that has not resent it); they are folded once it arrives", file=sys.stderr)
        if interrupted and not follow:
            raise KeyboardInterrupt
    return 0


def _durable(args: argparse.Namespace) -> str | None:
    """The durable consumer of a follow: named by the projection it folds into, unless --durable says.

    One default name for every follow made two follows of two projections share one consumer,
    each folding part of the stream (issue 20). A projection in memory gets an ephemeral one.
    """
    if args.durable:
        return str(args.durable)
    base = args.projection.partition("?")[0]
    if base.startswith(("mongodb://", "mongodb+srv://")):
        key = base
    elif local_file(base):
        key = f"sqlite:///{os.path.realpath(local_file(base) or '')}"
    else:
        return None
    return f"tasklog-follow-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


@contextmanager
def _alone(spec: str) -> Iterator[None]:
    """Hold a SQLite projection's file for this fold: a second follow of it would share its
    durable consumer and fold part of the stream each."""
    path = local_file(spec.partition("?")[0])
    if path is None or not os.path.exists(path):
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # SQLite's own locks are fcntl's: apart from these
        except BlockingIOError:
            raise InterfaceError(f"another follow or replay --source is folding into {path}") from None
        yield
    finally:
        os.close(fd)


def add_source(p: argparse.ArgumentParser, required: bool = False) -> None:
    """The arguments a command folding a stream takes (``replay`` adds them beside ``--log``)."""
    _add_servers(p, "--source", required=required)
    p.add_argument("--hub", action="append", metavar="NAME", help="fold only this hub (repeatable)")
    _add_wait(p)


def _follow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--projection", required=True, metavar="SPEC", help=projections.SPEC_HELP)
    add_source(p, required=True)
    p.add_argument("--durable", metavar="NAME",
                   help="the durable consumer's name: a restarted follow goes on where it was (default: "
                        "tasklog-follow- and a digest of the projection's file or database, so each projection "
                        "has its own)")


# -- restore ------------------------------------------------------------------------------


def cmd_restore(args: argparse.Namespace) -> int:
    """Rebuild a hub's log from the stream into a new directory (built aside, renamed when whole)."""
    servers, stream = jetstream.parse_servers(args.source), jetstream.check_name("stream", args.stream)
    hub = jetstream.check_name("hub", args.hub)
    _terminating_interrupts()
    with restoring(args.log) as log:
        bar = Progress(None, "restore")
        n = _stopping(restore_async(log, servers, stream, hub, bar.update, args.wait))
        bar.close()
        start, last, identity = log.start_seq, log.last_seq, log.identity
    gone = f"; events 1..{start - 1} were never shipped (pruned first): queries of it need them" if start > 1 else ""
    print(f"restored {n:,} events ({start}..{last}) of hub {hub} into {args.log} in {bar.elapsed:.2f} s; "
          f"it is log {identity}, as the original was{gone}")
    return 0


def _restore_args(p: argparse.ArgumentParser) -> None:
    _add_servers(p, "--from", required=True, dest="source")
    p.add_argument("--hub", required=True, metavar="NAME", help="the hub whose log to rebuild")
    p.add_argument("--log", required=True, metavar="NEWDIR", help="a new directory for the rebuilt log")
    _add_wait(p)


SHIP = Command("ship", "publish the log's committed events to a NATS JetStream stream, resuming where the "
               "stream ends for this hub", _ship_args, cmd_ship)
FOLLOW = Command("follow", "keep a projection current from a JetStream stream of many hubs (a durable consumer; "
                 "acks after each commit)", _follow_args, cmd_follow)
RESTORE = Command("restore", "rebuild a hub's log from a JetStream stream: same events, numbers and commit times",
                  _restore_args, cmd_restore)
