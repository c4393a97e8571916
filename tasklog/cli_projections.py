"""CLI commands that compose the log with projections (registered into tasklog.cli).

Only this module and the ipyparallel adapter import both packages; the log core never
imports ``projections``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from . import cli
from .errors import QueryError
from .jsonfmt import dumps, loads
from .log import TaskLog
from .progress import Progress

__all__ = ["cmd_query", "cmd_replay", "cmd_snapshot"]


def cmd_query(args: argparse.Namespace) -> int:
    """Catch the projection up from the log, then print the matching records."""
    import projections

    query = loads(args.query)
    if not isinstance(query, dict):
        raise QueryError("QUERY must be a JSON object")
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
    with TaskLog.open(args.log, readonly=True) as log, projections.open(args.projection) as proj:
        bar = Progress(max(log.last_seq - proj.last_seq, 0), "catch-up")
        projections.replay(log, proj, progress=bar.update)
        bar.close()
        for record in proj.find_records(query, keys=keys):
            print(dumps(record))
    return 0


def _register(add: Callable[[str, cli.Command, str], argparse.ArgumentParser]) -> None:
    import projections

    p = add("query", cmd_query, "catch a projection up from the log, then print matching records "
            "as MongoDB Extended JSON, one per line")
    p.add_argument("--log", default=cli.DEFAULT_LOG)
    p.add_argument("--projection", default="dict", metavar="SPEC", help=projections.SPEC_HELP)
    p.add_argument("query", metavar="QUERY", help='Extended JSON, e.g. \'{"completed": null}\'')
    p.add_argument("--keys", metavar="A,B", help="fields to print (msg_id is always included)")


cli._EXTRA_COMMANDS.append(_register)


def _stop(log: TaskLog, args: argparse.Namespace) -> int | None:
    if args.to is not None and args.as_of is not None:
        raise QueryError("give --to or --as-of, not both")
    if args.to is not None:
        return int(args.to)
    if args.as_of is not None:
        return log.seq_at(cli.iso_time(args.as_of, "--as-of"))
    return None


def cmd_replay(args: argparse.Namespace) -> int:
    """Rebuild a projection from the log, or catch it up; --to/--as-of for an earlier state."""
    import projections

    with TaskLog.open(args.log, readonly=True) as log:
        stop = _stop(log, args)
        end = log.last_seq if stop is None else min(stop, log.last_seq)
        bar = Progress(max(end - (args.from_seq or 1) + 1, 0), "replay")
        proj = projections.replay(log, args.projection, start=args.from_seq, stop=stop,
                                  rebuild=args.rebuild or stop is not None, progress=bar.update)
        bar.close()
        elapsed = bar.elapsed
        with proj:
            st = proj.stats()
            rate = proj.applied / elapsed if elapsed > 0 else 0.0
            print(f"replayed {proj.applied:,} events into {proj.spec} in {elapsed:.2f} s ({rate:,.0f} events/s); "
                  f"at event {proj.last_seq}: {st['records']:,} records, anomalies {st['anomalies'] or 'none'}")
    return 0


def _register_replay(add: Callable[[str, cli.Command, str], argparse.ArgumentParser]) -> None:
    import projections

    p = add("replay", cmd_replay, "rebuild a projection from the log (or catch it up from its checkpoint); "
            "--to/--as-of rebuild the state as of that point")
    p.add_argument("--log", default=cli.DEFAULT_LOG)
    p.add_argument("--projection", required=True, metavar="SPEC", help=projections.SPEC_HELP)
    p.add_argument("--from", dest="from_seq", type=int, metavar="SEQ", help="first event to apply")
    p.add_argument("--to", type=int, metavar="SEQ", help="last event to apply (inclusive)")
    p.add_argument("--as-of", metavar="ISO_TIME", help="apply what was committed by then")
    p.add_argument("--rebuild", action="store_true", help="forget the projection's records first")


cli._EXTRA_COMMANDS.append(_register_replay)


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Fold the log up to an event and write the records as a snapshot in the log directory."""
    from projections import snapshot

    with TaskLog.open(args.log, readonly=True) as log:
        at = log.last_seq if args.at is None else args.at
        bar = Progress(at, "snapshot")
        info = snapshot.take(log, at, progress=bar.update)
        bar.close()
        start = f"from snapshot {info.base}" if info.base else "from the start of the log"
        print(f"snapshot at event {info.seq}: {info.records:,} records ({start}) in {bar.elapsed:.2f} s -> {info.path}")
    return 0


def _register_snapshot(add: Callable[[str, cli.Command, str], argparse.ArgumentParser]) -> None:
    p = add("snapshot", cmd_snapshot, "write the folded records as of an event into the log directory "
            "(replay starts from the newest snapshot; prune may then drop the events it covers)")
    p.add_argument("--log", default=cli.DEFAULT_LOG)
    p.add_argument("--at", type=int, metavar="SEQ", help="the event to snapshot at (default: the last)")


cli._EXTRA_COMMANDS.append(_register_snapshot)
