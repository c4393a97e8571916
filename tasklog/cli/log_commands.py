"""Commands over the log alone: tail, verify, prune, story. None of them folds events (the views
that do, from the log's read model, are ``view_commands``)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import retention, verify
from ..errors import TaskLogError
from ..log import TaskLog
from ..progress import Progress
from ..views import story
from ..views.jsonfmt import dumps, event_to_doc, printable
from .common import Command, add_log, at_least, iso_time, positive

__all__ = ["STORY", "TAIL", "VERIFY", "PRUNE"]


def _open_ro(args: argparse.Namespace) -> TaskLog:
    return TaskLog.open(args.log, readonly=True)


def _show(seq: int, event: Any, as_json: bool) -> None:
    if as_json:
        print(dumps(event_to_doc(seq, event)), flush=True)
    else:
        fields = " ".join(f"{k}={printable(v, quoted=True):.80}" for k, v in event._asdict().items()
                          if v not in (None, {}, []))
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
        problems = verify.verify(log, bar)
        bar.close()
        first, last = log.start_seq, log.last_seq
    if problems:
        print(f"{log.path}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"{log.path}: sound, " + (f"events {first}..{last}" if last >= first else "no events"))  # not "1..0"
    return 0


def _before(log: TaskLog, value: str) -> int:
    if value.isdigit():
        return int(value)
    return log.seq_at(iso_time(value, "--before", "a sequence number or an ISO time")) + 1


def cmd_prune(args: argparse.Namespace) -> int:
    """Drop the events before SEQ or ISO_TIME that the newest snapshot covers."""
    with TaskLog.open(args.log, create=False) as log:  # a prune never makes a log
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


def _tail_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("--from", dest="from_seq", type=positive, metavar="SEQ", help="first sequence number")
    p.add_argument("-n", "--lines", type=at_least(0), default=10, help="without --from: the last N events")
    p.add_argument("--follow", "-f", action="store_true", help="wait for new events")
    p.add_argument("--json", action="store_true", help="MongoDB Extended JSON (relaxed)")


def _prune_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("--before", required=True, metavar="SEQ|ISO_TIME",
                   help="drop events before this sequence number or commit time (only what a snapshot covers; "
                        "an ISO time without a zone is local time)")
    p.add_argument("--compact", action="store_true",
                   help="then rewrite data.mdb without free pages (the log must not be open elsewhere)")


def cmd_story(args: argparse.Namespace) -> int:
    """Every event of one task (and its resubmissions) with commit times, from its streams."""
    with _open_ro(args) as log:
        told = story.story(log, args.msg_id)
    if args.json:
        print(dumps(told.as_dict()))
    else:
        print("\n".join(told.lines()))
    return 0


def _story_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("msg_id", metavar="MSG_ID", help="the task")
    p.add_argument("--json", action="store_true", help="Extended JSON: the chain and each event")


STORY = Command("story", "every event of one task, in order, with commit times and its resubmit chain",
                _story_args, cmd_story)
TAIL = Command("tail", "print events, one per line", _tail_args, cmd_tail)
VERIFY = Command("verify", "check checksums and density; exit 1 with the problems listed", add_log, cmd_verify)
PRUNE = Command("prune", "drop events older than the newest snapshot that covers them", _prune_args, cmd_prune)
