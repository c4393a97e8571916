"""Commands that fold the log into projections: demo, query, replay, snapshot.

They compose the log core with ``projections``; ``replay --source`` folds a stream instead
(``feed_commands``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from typing import Any

import projections
from projections import snapshot
from projections.fold import describe
from projections.live import attach
from projections.readmodel import FILE

from ..demo import simulate
from ..errors import InterfaceError, StorageError, same_kind
from ..fields import utcnow
from ..log import DURABILITY, TaskLog
from ..progress import Progress
from ..stream.feed import stream_fed
from ..stream.stopping import terminating_interrupts
from ..views.jsonfmt import dumps
from .common import (
    AS_OF_HELP,
    DEFAULT_LOG,
    Command,
    add_log,
    at_least,
    local_file,
    positive,
    read_model,
    read_query,
    removed_on_failure,
    stop_seq,
)
from .feed_commands import add_source, replay_from_stream

__all__ = ["DEMO", "QUERY", "REPLAY", "SNAPSHOT", "INDEX"]

_NO_RECORDS = "the none projection keeps no records (like ipyparallel's NoDB)"


# -- demo ---------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate a hub under heavy load."""
    spec = args.projection
    new_log = not os.path.exists(args.log)
    with removed_on_failure(args.log, local_file(spec) if spec else None):
        # The projection first: an unreachable server must fail before a log is made for it.
        proj = projections.open(spec) if spec else None
        with TaskLog.open(args.log, args.durability) as log:
            live = attach(log, proj) if proj is not None else None
            _simulate_into(log, args, new_log)
            if live is not None:
                _demo_queries(live)
                live.close()
    return 0


def _simulate_into(log: TaskLog, args: argparse.Namespace, new_log: bool) -> None:
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    before = log.last_seq
    bar = Progress(None, "demo", "ev")
    t0 = time.perf_counter()
    n = 0
    try:
        for event in simulate(args.tasks, seed=seed):  # a new seed each run: new tasks, never the same ids again
            log.append(event)
            n += 1
            if n % 512 == 0:
                bar.update(512)
        bar.update(n % 512)
        # Raises what any failed async commit lost: the demo once printed "15,750 events" and
        # exited 0 on a full disk while the log held 7,977 (issue 20).
        log.flush()
    except StorageError as exc:
        bar.close()
        raise exc if new_log else _what_was_kept(exc, log, before) from None
    elapsed = time.perf_counter() - t0
    bar.close()
    print(f"{n:,} events for {args.tasks:,} tasks in {elapsed:.2f} s: {n / elapsed:,.0f} events/s "
          f"({args.durability} durability: {DURABILITY[args.durability].promise}); seed {seed}")
    print(f"log {log.path}: events {before + 1}..{log.last_seq}, {log.disk_bytes() / 1e6:.1f} MB on disk")


def _what_was_kept(exc: StorageError, log: TaskLog, before: int) -> StorageError:
    """``exc`` saying which of the demo's events a log that was there before keeps (a new log goes)."""
    kept = log.last_seq - before
    where = f" (events {before + 1:,}..{log.last_seq:,})" if kept else ""
    return same_kind(exc, f"{exc.args[0]}; the log keeps {kept:,} of the demo's events{where}")


def _demo_queries(projection: Any) -> None:
    if projection.spec == "none":
        print(f"projection none: {_NO_RECORDS}; no sample queries")
        return
    hour_ago = utcnow() - timedelta(hours=1)
    samples: list[tuple[str, dict[str, Any]]] = [
        ("incomplete tasks", {"completed": None}),
        ("failed tasks", {"result_content.status": "error"}),
        ("resubmitted tasks", {"resubmitted": {"$ne": None}}),
        ("on engine-0 or engine-1", {"engine_uuid": {"$in": ["engine-0", "engine-1"]}}),
        ("started in the last hour by client-0", {"started": {"$gte": hour_ago}, "client_uuid": "client-0"}),
        ("labels job-1*", {"label": {"$glob": "job-1*"}}),
    ]
    print(f"projection {projection.spec}: {projection.count({}):,} records; "
          f"noted while folding: {describe(projection.anomalies)}")
    for title, query in samples:
        print(f"  {title:40s} {dumps(query)}: {projection.count(query):,}")


def _demo_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("--tasks", type=positive, default=20000, help="number of tasks (default 20000)")
    p.add_argument("--projection", metavar="SPEC", help="attach a live projection: dict, sqlite:///path, "
                   "mongodb://host:port/db or none, and run sample queries at the end")
    p.add_argument("--durability", choices=sorted(DURABILITY), default="async")
    p.add_argument("--seed", type=int, help="repeat a run's tasks (default: a new seed, so new tasks, each run)")


# -- query --------------------------------------------------------------------------


def cmd_query(args: argparse.Namespace) -> int:
    """Catch the projection up from the log (or build it as of --to/--as-of), then print the matches."""
    terminating_interrupts()  # SIGTERM mid-build: the read model it made is removed, as on Ctrl-C
    query = read_query(args.query)
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
    if args.projection == "none":
        raise InterfaceError(f"{_NO_RECORDS}: query needs dict, sqlite:///PATH or mongodb://HOST/DB")
    spec = args.projection or "dict"
    if spec != "dict" and _answered_from_stream(spec, args, query, keys):
        return 0
    with TaskLog.open(args.log or DEFAULT_LOG, readonly=True) as log, removed_on_failure(local_file(spec)):
        stop = stop_seq(log, args)
        if stop is not None and spec != "dict":
            raise InterfaceError("--to/--as-of build the dict projection; to keep a past state in a file, "
                                 "use `tasklog replay --to/--as-of` and query that file")
        if args.projection is None and stop is None:
            with read_model(log) as model:
                _print_matches(model.projection, query, keys)
        else:
            with _answering(log, spec, stop) as proj:
                _print_matches(proj, query, keys)
    return 0


def _print_matches(proj: projections.Projection, query: dict[str, Any], keys: list[str] | None) -> None:
    for record in proj.find_records(query, keys=keys):
        print(dumps(record))


def _answered_from_stream(spec: str, args: argparse.Namespace, query: dict[str, Any], keys: list[str] | None) -> bool:
    """Answer from a projection folded from a stream of hubs (it has no log); False if it is not one."""
    local = local_file(spec)
    if local is not None and not os.path.exists(local):
        return False
    with projections.open(spec) as proj:
        if not stream_fed(proj):
            return False
        if args.to is not None or args.as_of is not None:
            raise InterfaceError(f"{proj.spec} is folded from {proj.log_identity}: --to/--as-of need a log")
        if args.log is not None:  # it answered and --log was ignored without a word
            raise InterfaceError(f"{proj.spec} is folded from {proj.log_identity}, not from a log: it cannot "
                                 f"answer for --log {args.log} (query it without --log)")
        _print_matches(proj, query, keys)
    return True


def _answering(log: TaskLog, spec: str, stop: int | None) -> projections.Projection:
    """The projection to answer from: caught up, built as of ``stop``, or pinned where a replay left it."""
    proj = projections.open(spec)
    try:
        if proj.pinned is not None:
            proj.bind(log.identity)
            print(f"tasklog query: {proj.spec} is pinned at event {proj.pinned} (built by replay --to/--as-of): "
                  "answering as of then; `tasklog replay` without --to/--as-of moves it on", file=sys.stderr)
            return proj
        bar = Progress(max((log.last_seq if stop is None else stop) - proj.last_seq, 0), "catch-up")
        projections.replay(log, proj, stop=stop, progress=bar.update)
        bar.close()
    except BaseException:
        proj.close()
        raise
    return proj


def _query_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.set_defaults(log=None)  # DEFAULT_LOG, unless a projection folded from a stream answers: then refused if given
    p.add_argument("--projection", metavar="SPEC", help=projections.SPEC_HELP + " (default: the log's read "
                   "model: the Hub's SQLite projection in the log directory, read-only, when there is one; "
                   f"else {FILE} there, caught up from its checkpoint, or in $XDG_CACHE_HOME/tasklog "
                   "(~/.cache/tasklog) when the directory is read-only, or in memory where neither can "
                   "be written)")
    p.add_argument("query", metavar="QUERY", help='Extended JSON, e.g. \'{"completed": null}\'; '
                   "- reads it from standard input, @FILE from a file")
    p.add_argument("--keys", metavar="A,B", help="fields to print (msg_id is always included)")
    p.add_argument("--to", type=at_least(0), metavar="SEQ", help="answer as of this event (dict projection)")
    p.add_argument("--as-of", metavar="ISO_TIME", help=AS_OF_HELP + " (dict projection)")


# -- replay -------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    """Rebuild a projection from the log, or catch it up; --to/--as-of for an earlier state."""
    if args.source:
        return replay_from_stream(args)
    with TaskLog.open(args.log, readonly=True) as log, removed_on_failure(local_file(args.projection)):
        stop = stop_seq(log, args)
        if args.from_seq is not None and stop is not None and args.from_seq > stop:
            raise InterfaceError(f"--from {args.from_seq} is after the last event to apply, {stop}")
        end = log.last_seq if stop is None else stop
        bar = Progress(max(end - (args.from_seq or 1) + 1, 0), "replay")
        proj = projections.replay(log, args.projection, start=args.from_seq, stop=stop,
                                  rebuild=args.rebuild or stop is not None, progress=bar.update)
        bar.close()
        with proj:
            _report_replay(proj, bar.elapsed)
    return 0


def _report_replay(proj: projections.Projection, elapsed: float) -> None:
    st = proj.stats()
    rate = proj.applied / elapsed if elapsed > 0 else 0.0
    origin = f" after restoring snapshot {proj.restored_from}" if proj.restored_from is not None else ""
    pinned = f" (pinned there: queries answer as of event {proj.pinned})" if proj.pinned is not None else ""
    print(f"replayed {proj.applied:,} events{origin} into {proj.spec} in {elapsed:.2f} s ({rate:,.0f} events/s); "
          f"at event {proj.last_seq}: {st['records']:,} records{pinned}; "
          f"noted while folding: {describe(st['anomalies'])}")


def _replay_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("--projection", required=True, metavar="SPEC", help=projections.SPEC_HELP)
    p.add_argument("--from", dest="from_seq", type=positive, metavar="SEQ", help="first event to apply")
    p.add_argument("--to", type=at_least(0), metavar="SEQ",
                   help="last event to apply (inclusive); the projection stays there until replayed without it")
    p.add_argument("--as-of", metavar="ISO_TIME", help=AS_OF_HELP)
    p.add_argument("--rebuild", action="store_true", help="forget the projection's records first")
    add_source(p)


# -- snapshot -----------------------------------------------------------------------


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Fold the log up to an event and write the records as a snapshot in the log directory."""
    with TaskLog.open(args.log, readonly=True) as log:
        at = log.last_seq if args.at is None else args.at
        bar = Progress(at, "snapshot")
        info = snapshot.take(log, at, progress=bar.update)
        bar.close()
        start = f"from snapshot {info.base}" if info.base else "from the start of the log"
        print(f"snapshot at event {info.seq}: {info.records:,} records ({start}) in {bar.elapsed:.2f} s -> {info.path}")
    return 0


def _snapshot_args(p: argparse.ArgumentParser) -> None:
    add_log(p)
    p.add_argument("--at", type=at_least(0), metavar="SEQ", help="the event to snapshot at (default: the last)")


# -- index ----------------------------------------------------------------------------


def cmd_index(args: argparse.Namespace) -> int:
    """Build the log's read model, or catch it up from its checkpoint, and say where it is."""
    terminating_interrupts()
    with TaskLog.open(args.log, readonly=True) as log:
        started = time.monotonic()
        with read_model(log) as model:
            proj = model.projection
            where = f"{model.kind}: {model.path}" if model.path else "in memory: nowhere to keep it"
            print(f"read model ({where}) at event {proj.last_seq}: folded {model.folded:,} new events "
                  f"in {time.monotonic() - started:.2f} s")
    return 0


def _index_args(p: argparse.ArgumentParser) -> None:
    add_log(p)


DEMO = Command("demo", "simulate a hub under heavy load and report events/s", _demo_args, cmd_demo)
QUERY = Command("query", "catch a projection up from the log (or build it as of --to/--as-of), then print "
                "matching records as MongoDB Extended JSON, one per line", _query_args, cmd_query)
REPLAY = Command("replay", "rebuild a projection from the log (or catch it up from its checkpoint); "
                 "--to/--as-of rebuild the state as of that point; --source folds a JetStream stream of hubs "
                 "instead", _replay_args, cmd_replay)
SNAPSHOT = Command("snapshot", "write the folded records as of an event into the log directory "
                   "(replay starts from the newest snapshot; prune may then drop the events it covers)",
                   _snapshot_args, cmd_snapshot)
INDEX = Command("index", f"build the log's read model ({FILE} in the log directory, or the Hub's projection), "
                "or catch it up from its checkpoint: what query, stats, timeline and report answer from",
                _index_args, cmd_index)
