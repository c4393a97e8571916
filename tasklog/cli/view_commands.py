"""Commands that show what a log holds: stats, timeline, report, export. They answer from the log's read
model (``projections.readmodel``), caught up first, so they fold only the events since it was;
the views then read its tasks' states as a ``Baseline`` (``--to``/``--as-of`` read the log itself
from the snapshot a prune left, as of that event)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from projections.parse import parse, parse_keys
from projections.snapshot import view_base
from projections.summary import log_stats

from .. import verify
from ..baseline import Baseline
from ..errors import CorruptEventError, InterfaceError
from ..log import TaskLog
from ..progress import Progress
from ..stream.stopping import terminating_interrupts
from ..views import export, report, timeline
from ..views.jsonfmt import dumps, printable
from .common import (
    AS_OF_HELP,
    Command,
    add_log,
    add_output,
    at_least,
    iso_time,
    output_to,
    read_model,
    read_query,
    stop_seq,
)

__all__ = ["STATS", "TIMELINE", "REPORT", "EXPORT"]


def _open_ro(args: argparse.Namespace) -> TaskLog:
    terminating_interrupts()  # SIGTERM mid-build: the read model it made is removed, as on Ctrl-C
    return TaskLog.open(args.log, readonly=True)


@contextmanager
def _read_model_base(log: TaskLog, label: str) -> Iterator[Baseline]:
    """The tasks of the log's read model, caught up: where a view starts, the log's later events after."""
    with read_model(log, label) as model:
        yield Baseline(model.projection.last_seq, model.projection.task_states)


# -- stats ----------------------------------------------------------------------------


def _stats_of(log: TaskLog) -> verify.LogStats:
    """The log's figures from its read model; from its events where one cannot be read."""
    try:
        with read_model(log, "stats") as model:
            return log_stats(log, model.projection)
    except CorruptEventError as exc:  # counted from the events, the unreadable ones too
        print(f"tasklog: counting from the log's events: {exc}", file=sys.stderr)
    base = view_base(log, "stats")  # a pruned log's tasks start from its snapshot
    bar = Progress(len(log), "stats")
    st = verify.stats(log, bar, base)
    bar.close()
    return st


def cmd_stats(args: argparse.Namespace) -> int:
    """Counts per event type, sequence range, bytes on disk."""
    with _open_ro(args) as log:
        st = _stats_of(log)
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
    figures = st.as_dict()
    for title in ("engine", "queue"):
        print(f"tasks by {title}")
        for key, n in figures[f"by_{title}"]:
            print(f"  {f'(no {title})' if key is None else printable(key, quoted=not key):12s} {n:,}")
    return 0


def _stats_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("--json", action="store_true", help="one JSON object")


# -- timeline and report --------------------------------------------------------------


def cmd_timeline(args: argparse.Namespace) -> int:
    """Write the log's timeline as Chrome Trace Event Format JSON (Perfetto, chrome://tracing)."""
    since = iso_time(args.since, "--since") if args.since is not None else None
    with _open_ro(args) as log:
        stop = stop_seq(log, args)
        if stop is None:
            with output_to(args.output) as out, _read_model_base(log, "timeline") as base:  # a refused -o first
                n = timeline.write_trace(log, out, None, since, base)
        else:
            base_at = view_base(log, f"timeline up to event {stop}", stop)
            with output_to(args.output) as out:
                n = timeline.write_trace(log, out, stop, since, base_at)
    _wrote(args.output, f"{n:,} trace events -> {args.output} (open it in https://ui.perfetto.dev or chrome://tracing)")
    return 0


def _wrote(output: str, line: str) -> None:
    """Say what was written, unless it went to standard output (where it would be mixed in)."""
    if output != "-":
        print(line)


def _timeline_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    add_output(p, "timeline.json", "trace")
    p.add_argument("--to", type=at_least(0), metavar="SEQ", help="up to this event")
    p.add_argument("--as-of", metavar="ISO_TIME", help=AS_OF_HELP)
    p.add_argument("--since", metavar="ISO_TIME", help="only tasks started at or after this time")


def cmd_report(args: argparse.Namespace) -> int:
    """Write a one-file HTML report of the log (charts embedded): needs the report extra."""
    terminating_interrupts()  # before matplotlib's import: a SIGTERM there killed it without a word
    report.check_extra()  # before a read model is built for nothing
    with _open_ro(args) as log, output_to(args.output) as out, _read_model_base(log, "report") as base:
        tasks = report.write_report(log, out, base=base)
    _wrote(args.output, f"report of {tasks:,} task{'' if tasks == 1 else 's'} -> {args.output}")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    add_output(p, "report.html", "report")


# -- export ---------------------------------------------------------------------------


def _export_format(fmt: str | None, output: str) -> str:
    """The format asked for, or the one the -o file's extension names."""
    if fmt is not None:
        return fmt
    guessed = os.path.splitext(output)[1].lstrip(".").lower()
    if guessed not in export.FORMATS:
        where = "standard output has no file name" if output == "-" else f"-o {output} has none of their extensions"
        raise InterfaceError(f"give --format parquet, jsonl or csv: {where}")
    return guessed


def cmd_export(args: argparse.Namespace) -> int:
    """Write the records matching QUERY to a file (Parquet, JSON Lines or CSV), a batch at a time."""
    fmt = _export_format(args.format, args.output)
    export.check_format(fmt)  # before a read model is built for nothing
    query = read_query(args.query)
    keys = parse_keys([k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None)
    parse(query)  # a bad query is one line before any file is made
    if fmt == "parquet" and args.output == "-" and sys.stdout.isatty():
        raise InterfaceError("Parquet is binary: give -o FILE, or pipe standard output elsewhere")
    with _open_ro(args) as log, output_to(args.output) as out, read_model(log, "export") as model:
        out.flush()
        shown = sys.stderr.isatty() and not (args.output == "-" and sys.stdout.isatty())  # not mixed in
        bar = Progress(None, "export", "rec", enabled=shown)
        records = model.projection.iter_records(query, keys=keys, batch=export.BATCH)
        n = export.write_records(records, fmt, out.buffer, args.buffers, bar.update, keys)
        bar.close()
        out.buffer.flush()
    if args.output != "-":
        print(f"exported {n:,} record{'' if n == 1 else 's'} to {args.output} ({fmt})", file=sys.stderr)
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("query", metavar="QUERY", help='Extended JSON, e.g. \'{"completed": null}\'; '
                   "- reads it from standard input, @FILE from a file")
    p.add_argument("--format", choices=export.FORMATS,
                   help="the file's format (default: the -o file's extension, .parquet, .jsonl or .csv)")
    add_output(p, "-", "records")
    p.add_argument("--keys", metavar="A,B", help="fields to write (msg_id is always included)")
    p.add_argument("--buffers", action="store_true",
                   help="write the buffers' bytes (default: how many and their total size)")


EXPORT = Command("export", "write the records matching a query to a Parquet, JSON Lines or CSV file, "
                 "in bounded memory", _export_args, cmd_export)
REPORT = Command("report", "write a one-file HTML report: throughput, engines, waits and run times, failures, "
                 "the slowest tasks, resubmissions", _report_args, cmd_report)
TIMELINE = Command("timeline", "write the cluster's timeline (engine tracks, queue waits, failures, resubmits) "
                   "as Chrome Trace Event JSON for Perfetto", _timeline_args, cmd_timeline)
STATS = Command("stats", "counts per event type and tasks per state, sequence and time range, bytes on disk",
                _stats_args, cmd_stats)
