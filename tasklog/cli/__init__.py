"""The ``tasklog`` command line: one registry naming every command.

The top of the house: its commands compose the log core, ``projections`` and the other edges
(``views``, ``stream``, ``demo``); nothing imports it. One module per kind of command:
``log_commands`` (read a log), ``view_commands`` (show it, from its read model),
``projection_commands`` (fold it), ``feed_commands`` (fold a stream), ``stream_commands`` (ship
and restore), on ``common``.

Every error is one line on stderr and a non-zero exit; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__, native
from ..errors import TaskLogError
from .common import Command
from .feed_commands import FOLLOW
from .log_commands import PRUNE, STORY, TAIL, VERIFY
from .projection_commands import DEMO, INDEX, QUERY, REPLAY, SNAPSHOT
from .serve_commands import SERVE
from .stream_commands import RESTORE, SHIP
from .view_commands import EXPORT, REPORT, STATS, TIMELINE

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS: tuple[Command, ...] = (DEMO, STATS, STORY, TAIL, TIMELINE, REPORT, EXPORT, VERIFY, QUERY, INDEX, REPLAY,
                                 SNAPSHOT, PRUNE,
                                 SERVE, SHIP, FOLLOW, RESTORE)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other error (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tasklog`` command, with every subcommand."""
    parser = _Parser(prog="tasklog", description="An append-only event log of task lifecycles.")
    parser.add_argument("--version", action="version", version=f"tasklog {__version__}, {native.describe()}",
                        help="show the version, and whether its hot path is compiled (mypyc) or pure Python")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
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
