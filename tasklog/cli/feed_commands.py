"""Commands that fold a JetStream stream of many hubs into a projection: ``follow`` and the
``--source`` of ``replay`` (which ``projection_commands`` takes from here)."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import projections

from ..errors import InterfaceError
from ..progress import Progress
from ..stream import wire
from ..stream.feed import StreamFeed, check_source
from ..stream.stopping import terminating_interrupts, until_stopped
from .common import Command, add_servers, add_wait, local_file, removed_on_failure

__all__ = ["FOLLOW", "add_source", "replay_from_stream"]


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
    terminating_interrupts()
    servers, stream = wire.parse_servers(args.source), wire.check_name("stream", args.stream)
    # Asked before the projection is made: a follow killed while no server answered left its new
    # SQLite file behind, and a hub the stream does not hold gave an empty one (issue 20).
    until_stopped(check_source(servers, stream, args.hub, args.wait))
    with removed_on_failure(local_file(args.projection)), projections.open(args.projection) as proj, \
            _alone(args.projection):
        if getattr(args, "rebuild", False):
            proj.clear()
        bar = Progress(None, "fold")
        feed = StreamFeed(proj, servers, stream, durable=_durable(args) if follow else None, hubs=args.hub or None,
                          progress=bar.update, connect_deadline=args.wait)
        try:
            until_stopped(feed.run(follow=follow), on_stop=feed.stop)
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
    add_servers(p, "--source", required=required)
    p.add_argument("--hub", action="append", metavar="NAME", help="fold only this hub (repeatable)")
    add_wait(p)


def _follow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--projection", required=True, metavar="SPEC", help=projections.SPEC_HELP)
    add_source(p, required=True)
    p.add_argument("--durable", metavar="NAME",
                   help="the durable consumer's name: a restarted follow goes on where it was (default: "
                        "tasklog-follow- and a digest of the projection's file or database, so each projection "
                        "has its own)")


FOLLOW = Command("follow", "keep a projection current from a JetStream stream of many hubs (a durable consumer; "
                 "acks after each commit)", _follow_args, cmd_follow)
