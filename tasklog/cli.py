"""The ``tasklog`` command line: demo, stats, tail, verify, query, replay, snapshot, prune.

Every error is one line on stderr and a non-zero exit; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from . import inspect, retention
from .demo import simulate
from .errors import InterfaceError, TaskLogError
from .jsonfmt import dumps, event_to_doc
from .log import DURABILITY, TaskLog
from .progress import Progress

__all__ = ["main", "build_parser"]

DEFAULT_LOG = "./tasklog-data"
Command = Callable[[argparse.Namespace], int]


def _open_ro(args: argparse.Namespace) -> TaskLog:
    return TaskLog.open(args.log, readonly=True)


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a hub under heavy load."""
    if args.tasks < 1:
        raise TaskLogError("--tasks must be at least 1")
    with TaskLog.open(args.log, args.durability) as log:
        live = None
        if args.projection:
            from projections.live import attach  # the CLI is an edge: it may compose both

            live = attach(log, args.projection)
        before = log.last_seq
        bar = Progress(None, "demo", "ev")
        t0 = time.perf_counter()
        n = 0
        for event in simulate(args.tasks, seed=args.seed):
            log.append(event)
            n += 1
            if n % 512 == 0:
                bar.update(512)
        bar.update(n % 512)
        log.flush()
        elapsed = time.perf_counter() - t0
        bar.close()
        print(f"{n:,} events for {args.tasks:,} tasks in {elapsed:.2f} s: {n / elapsed:,.0f} events/s "
              f"({args.durability} durability: {DURABILITY[args.durability].promise})")
        print(f"log {log.path}: events {before + 1}..{log.last_seq}, {log.disk_bytes() / 1e6:.1f} MB on disk")
        if live is not None:
            _demo_queries(live)
            live.close()
    return 0


def _demo_queries(projection: Any) -> None:
    from datetime import timedelta

    from .events import utcnow

    hour_ago = utcnow() - timedelta(hours=1)
    samples: list[tuple[str, dict[str, Any]]] = [
        ("incomplete tasks", {"completed": None}),
        ("failed tasks", {"result_content.status": "error"}),
        ("resubmitted tasks", {"resubmitted": {"$ne": None}}),
        ("on engine-0 or engine-1", {"engine_uuid": {"$in": ["engine-0", "engine-1"]}}),
        ("started in the last hour by client-0", {"started": {"$gte": hour_ago}, "client_uuid": "client-0"}),
        ("labels job-1*", {"label": {"$glob": "job-1*"}}),
    ]
    print(f"projection {projection.spec}: {projection.count({}):,} records")
    for title, query in samples:
        print(f"  {title:40s} {dumps(query)}: {projection.count(query):,}")


def cmd_stats(args: argparse.Namespace) -> int:
    """Counts per event type, sequence range, bytes on disk."""
    with _open_ro(args) as log:
        st = inspect.stats(log)
    if args.json:
        print(json.dumps(st.as_dict()))
        return 0
    print(f"log         {log.path}")
    print(f"events      {st.events:,}")
    print(f"first seq   {st.first_seq}")
    print(f"last seq    {st.last_seq}")
    if st.start_seq > 1:
        print(f"pruned      events 1..{st.start_seq - 1}")
    print(f"snapshots   {', '.join(map(str, st.snapshots)) or 'none'}")
    print(f"disk bytes  {st.disk_bytes:,}")
    for name, count in sorted(st.by_type.items()):
        print(f"  {name:10s} {count:,}")
    return 0


def _show(seq: int, event: Any, as_json: bool) -> None:
    if as_json:
        print(dumps(event_to_doc(seq, event)), flush=True)
    else:
        fields = " ".join(f"{k}={v!r:.80}" for k, v in event._asdict().items() if v not in (None, {}, []))
        print(f"{seq:>10} {event.type:9s} {fields}", flush=True)


def cmd_tail(args: argparse.Namespace) -> int:
    """Print events, one per line; --follow waits for more."""
    with _open_ro(args) as log:
        start = args.from_seq if args.from_seq is not None else max(log.last_seq - args.lines + 1, 1)
        source = log.follow(start) if args.follow else log.read(start)
        try:
            for seq, event in source:
                _show(seq, event, args.json)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every event's checksum and the density of sequence numbers."""
    try:
        log = _open_ro(args)
    except TaskLogError as exc:
        print(f"{args.log}: unsound: {exc}")
        return 1
    with log:
        bar = Progress(max(log.last_seq - log.start_seq + 1, 0), "verify")
        problems = inspect.verify(log, bar)
        bar.close()
        first, last = log.start_seq, log.last_seq
    if problems:
        print(f"{log.path}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"{log.path}: sound, events {first}..{last}")
    return 0


def iso_time(value: str, flag: str, what: str = "an ISO time") -> datetime:
    """Parse an ISO time given on the command line (``Z`` allowed); the error names the flag."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InterfaceError(f"{flag} needs {what} like 2026-11-25T14:02:00Z, got {value!r}") from None


def _before(log: TaskLog, value: str) -> int:
    if value.isdigit():
        return int(value)
    return log.seq_at(iso_time(value, "--before", "a sequence number or an ISO time")) + 1


def cmd_prune(args: argparse.Namespace) -> int:
    """Drop the events before SEQ or ISO_TIME that the newest snapshot covers."""
    with TaskLog.open(args.log) as log:
        before = _before(log, args.before)
        bar = Progress(max(min(before, log.last_seq) - log.start_seq, 0), "prune")
        report = retention.prune(log, before, progress=bar.update)
        bar.close()
        print(f"pruned {report.removed:,} events: the log now starts at event {report.start_seq} "
              f"(covered by snapshot {report.snapshot}; {report.snapshots_removed} older snapshot(s) removed)")
    if args.compact:
        before, after = retention.compact(args.log)
        print(f"compacted data.mdb: {before:,} -> {after:,} bytes")
    else:
        print("freed pages are reused by later appends; --compact shrinks the file now")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tasklog`` command."""
    parser = argparse.ArgumentParser(prog="tasklog", description="An append-only event log of task lifecycles.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("demo", cmd_demo, "simulate a hub under heavy load and report events/s")
    p.add_argument("--log", default=DEFAULT_LOG, help=f"log directory (default {DEFAULT_LOG})")
    p.add_argument("--tasks", type=int, default=20000, help="number of tasks (default 20000)")
    p.add_argument("--projection", metavar="SPEC", help="attach a live projection: dict, sqlite:///path, "
                   "mongodb://host:port/db or none, and run sample queries at the end")
    p.add_argument("--durability", choices=sorted(DURABILITY), default="async")
    p.add_argument("--seed", type=int, default=0)

    p = add("stats", cmd_stats, "counts per event type, sequence range, bytes on disk")
    p.add_argument("--log", default=DEFAULT_LOG)
    p.add_argument("--json", action="store_true", help="one JSON object")

    p = add("tail", cmd_tail, "print events, one per line")
    p.add_argument("--log", default=DEFAULT_LOG)
    p.add_argument("--from", dest="from_seq", type=int, metavar="SEQ", help="first sequence number")
    p.add_argument("-n", "--lines", type=int, default=10, help="without --from: the last N events")
    p.add_argument("--follow", "-f", action="store_true", help="wait for new events")
    p.add_argument("--json", action="store_true", help="MongoDB Extended JSON (relaxed)")

    p = add("verify", cmd_verify, "check checksums and density; exit 1 with the problems listed")
    p.add_argument("--log", default=DEFAULT_LOG)

    p = add("prune", cmd_prune, "drop events older than the newest snapshot that covers them")
    p.add_argument("--log", default=DEFAULT_LOG)
    p.add_argument("--before", required=True, metavar="SEQ|ISO_TIME",
                   help="drop events before this sequence number or commit time (only what a snapshot covers)")
    p.add_argument("--compact", action="store_true",
                   help="then rewrite data.mdb without free pages (the log must not be open elsewhere)")

    for extra in _EXTRA_COMMANDS:
        extra(add)
    return parser


# Commands that need the projections package register here (tasklog.cli_projections).
_EXTRA_COMMANDS: list[Callable[[Callable[[str, Command, str], argparse.ArgumentParser]], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    from . import cli_projections  # noqa: F401  (registers query, replay, snapshot, prune)

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TaskLogError as exc:
        print(f"tasklog {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print(f"tasklog {args.command}: interrupted", file=sys.stderr)
        return 130

