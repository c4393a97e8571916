"""What every ``tasklog`` command shares: the command record, the --log argument, times, cleanup."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from ..errors import InterfaceError
from ..log import TaskLog

__all__ = ["Command", "DEFAULT_LOG", "add_log", "iso_time", "leave_nothing", "local_file", "positive", "at_least"]

DEFAULT_LOG = "./tasklog-data"


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, what it does, its arguments and the function that runs it."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_log(parser: argparse.ArgumentParser) -> None:
    """The --log argument, the same in every command."""
    parser.add_argument("--log", default=DEFAULT_LOG, metavar="DIR",
                        help=f"the log directory (default {DEFAULT_LOG})")


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low``."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"needs a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    convert.__name__ = f"whole number >= {low}"
    return convert


positive = at_least(1)


def iso_time(value: str, flag: str, what: str = "an ISO time") -> datetime:
    """Parse an ISO time given on the command line (``Z`` allowed); the error names the flag."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InterfaceError(f"{flag} needs {what} like 2026-11-25T14:02:00Z, got {value!r}") from None


def local_file(spec: str) -> str | None:
    """The file a projection spec creates when it is new (SQLite), so a failing command can remove it."""
    path = spec[len("sqlite:///"):] if spec.startswith("sqlite:///") else None
    return None if path in (None, "", ":memory:") else path


@contextmanager
def leave_nothing(*paths: str | None) -> Iterator[None]:
    """Remove what a failing command created among ``paths`` (files or directories new to it)."""
    fresh = [p for p in paths if p is not None and not os.path.exists(p)]
    try:
        yield
    except BaseException:
        for path in fresh:
            for made in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
                if os.path.isdir(made):
                    shutil.rmtree(made, ignore_errors=True)
                elif os.path.exists(made):
                    os.unlink(made)
        raise


AS_OF_HELP = "what had been committed by this ISO time (without a zone: local time, as a naive datetime is)"


def stop_seq(log: TaskLog, args: argparse.Namespace) -> int | None:
    """The event --to or --as-of names (None: the end of the log), checked against the log."""
    if args.to is not None and args.as_of is not None:
        raise InterfaceError("give --to or --as-of, not both")
    if args.as_of is not None:
        return log.seq_at(iso_time(args.as_of, "--as-of"))
    if args.to is not None and args.to > log.last_seq:
        raise InterfaceError(f"--to {args.to} is past the log's last event, {log.last_seq}")
    return args.to  # type: ignore[no-any-return]


@contextmanager
def written_aside(path: str) -> Iterator[str]:
    """A temporary name to write ``path`` under, renamed to it when the block ends: a failed
    command leaves no half-written file (and the file it would have replaced stays whole)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
