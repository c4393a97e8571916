"""Commands over the log alone: stats, tail, verify, prune, story, timeline, report. None of them folds
events; the views of a pruned log start from its snapshot's tasks (``projections.snapshot`` reads them)."""

from __future__ import annotations

import argparse
from typing import Any

from projections.snapshot import view_base

from .. import retention, verify
from ..errors import TaskLogError
from ..log import TaskLog
from ..progress import Progress
from ..views import report, story, timeline
from ..views.jsonfmt import dumps, event_to_doc, printable
from .common import AS_OF_HELP, Command, add_log, at_least, iso_time, output_to, positive, stop_seq

__all__ = ["STATS", "TAIL", "VERIFY", "PRUNE"]


def _open_ro(args: argparse.Namespace) -> TaskLog:
    return TaskLog.open(args.log, readonly=True)


def cmd_stats(args: argparse.Namespace) -> int:
    """Counts per event type, sequence range, bytes on disk."""
    with _open_ro(args) as log:
        base = view_base(log, "stats")  # a pruned log's tasks start from its snapshot
        bar = Progress(len(log), "stats")
        st = verify.stats(log, bar, base)
        bar.close()
    if args.json:
        print(dumps(st.as_dict()))  # Extended JSON, as the README says (the dates were plain strings)
        return 0
    print(f"log         {log.path}")
    print(f"identity    {log.identity or 'none yet (a writer gives it one)'}")
    print(f"events      {st.events:,}")
    print(f"first seq   {st.first_seq}")
    print(f"last seq    {st.last_seq}")
    if st.start_seq > 1:
        print(f"pruned      events 1..{st.start_seq - 1} (tasks by state from snapshot {st.tasks_from})")
    print(f"snapshots   {', '.join(map(str, st.snapshots)) or 'none'}")
    print(f"disk bytes  {st.disk_bytes:,}")
    if st.first_commit is not None and st.last_commit is not None:
        print(f"committed   {st.first_commit.isoformat(timespec='seconds')} .. "
              f"{st.last_commit.isoformat(timespec='seconds')}")
    print("events by type")
    for name, count in sorted(st.by_type.items()):
        print(f"  {name:12s} {count:,}")
    print("tasks by state")
    for name in verify.STATES:
        print(f"  {name:12s} {st.by_state.get(name, 0):,}")
    return 0


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


def _stats_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("--json", action="store_true", help="one JSON object")


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


def cmd_timeline(args: argparse.Namespace) -> int:
    """Write the log's timeline as Chrome Trace Event Format JSON (Perfetto, chrome://tracing)."""
    since = iso_time(args.since, "--since") if args.since is not None else None
    with _open_ro(args) as log:
        stop = stop_seq(log, args)
        base = view_base(log, "timeline" if stop is None else f"timeline up to event {stop}", stop)
        with output_to(args.output) as out:
            n = timeline.write_trace(log, out, stop, since, base)
    if args.output != "-":
        print(f"{n:,} trace events -> {args.output} (open it in https://ui.perfetto.dev or chrome://tracing)")
    return 0


def _timeline_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("-o", "--output", default="timeline.json", metavar="FILE",
                   help="where to write the trace (default timeline.json; - for standard output)")
    p.add_argument("--to", type=at_least(0), metavar="SEQ", help="up to this event")
    p.add_argument("--as-of", metavar="ISO_TIME", help=AS_OF_HELP)
    p.add_argument("--since", metavar="ISO_TIME", help="only tasks started at or after this time")


def cmd_report(args: argparse.Namespace) -> int:
    """Write a one-file HTML report of the log (charts embedded): needs the report extra."""
    with _open_ro(args) as log:
        base = view_base(log, "report")
        bar = Progress(len(log) if base is None else log.last_seq - base.seq, "report")
        with output_to(args.output) as out:
            tasks = report.write_report(log, out, bar.update, base)
        bar.close()
    if args.output != "-":
        print(f"report of {tasks:,} tasks -> {args.output}")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("-o", "--output", default="report.html", metavar="FILE",
                   help="where to write the report (default report.html; - for standard output)")


REPORT = Command("report", "write a one-file HTML report: throughput, engines, waits and run times, failures, "
                 "the slowest tasks, resubmissions", _report_args, cmd_report)
TIMELINE = Command("timeline", "write the cluster's timeline (engine tracks, queue waits, failures, resubmits) "
                   "as Chrome Trace Event JSON for Perfetto", _timeline_args, cmd_timeline)
STORY = Command("story", "every event of one task, in order, with commit times and its resubmit chain",
                _story_args, cmd_story)
STATS = Command("stats", "counts per event type and tasks per state, sequence and time range, bytes on disk",
                _stats_args, cmd_stats)
TAIL = Command("tail", "print events, one per line", _tail_args, cmd_tail)
VERIFY = Command("verify", "check checksums and density; exit 1 with the problems listed", add_log, cmd_verify)
PRUNE = Command("prune", "drop events older than the newest snapshot that covers them", _prune_args, cmd_prune)
