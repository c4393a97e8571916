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

__all__ = ["cmd_query"]


def cmd_query(args: argparse.Namespace) -> int:
    """Catch the projection up from the log, then print the matching records."""
    import projections

    query = loads(args.query)
    if not isinstance(query, dict):
        raise QueryError("QUERY must be a JSON object")
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
    with TaskLog.open(args.log, readonly=True) as log:
        total = max(log.last_seq, 0)
        with projections.open(args.projection) as proj:
            bar = Progress(max(total - proj.last_seq, 0), "catch-up")
            proj.catch_up(log.read(proj.last_seq + 1), progress=bar.update)
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
