"""What every ``tasklog`` command shares: the command record, the --log argument, times, cleanup."""

from __future__ import annotations

import argparse
import errno
import math
import os
import shutil
import sqlite3
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from projections import local_file  # the file a failing command removes, if it made it
from projections.errors import QueryError
from projections.readmodel import ReadModel, damaged, open_read_model

from ..errors import InterfaceError, StorageFullError, TaskLogError
from ..log import TaskLog
from ..store import MARKER
from ..stream import wire
from ..views.jsonfmt import loads

__all__ = ["Command", "DEFAULT_LOG", "add_log", "add_output", "iso_time", "removed_on_failure", "local_file",
           "positive", "at_least", "output_to", "seconds", "add_servers", "add_wait", "read_model",
           "read_query"]

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


def add_output(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    """The -o argument of a command that writes a file (``-`` for standard output)."""
    parser.add_argument("-o", "--output", default=default, metavar="FILE",
                        help=f"where to write the {what} (default {default}; - for standard output)")


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


def read_query(text: str) -> dict[str, Any]:
    """QUERY as given: Extended JSON, ``-`` for standard input, or ``@FILE``."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            with open(text[1:]) as f:
                text = f.read()
        except OSError as exc:
            raise InterfaceError(f"cannot read the query from {text[1:]}: {exc.strerror}") from None
    query = loads(text)
    if not isinstance(query, dict):
        raise QueryError("QUERY must be a JSON object")
    return query


@contextmanager
def removed_on_failure(*paths: str | None) -> Iterator[None]:
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


def _in_a_log(path: str) -> str | None:
    """The log directory ``path`` lies in (a directory holding a tasklog's marker file), if any."""
    folder = os.path.dirname(path)
    while True:
        if os.path.exists(os.path.join(folder, MARKER)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _write_error(path: str, exc: OSError) -> TaskLogError:
    """One line for a file that could not be written (a full disk is StorageFullError)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # Not the class's hint: "the log keeps working once space returns" is about the log,
        # and this is the output file (F6).
        error = StorageFullError(f"writing {path} failed: no space left on device")
        error.hint = "free space there, or write elsewhere"
        return error
    return InterfaceError(f"cannot write {path}: {exc.strerror or exc}")


def _target(path: str) -> tuple[str, os.stat_result | None]:
    """The file ``-o PATH`` names, its symlinks followed, and what is there now (None: nothing);
    InterfaceError for a place it must not or cannot write."""
    if not path:
        raise InterfaceError("-o needs a file name (or - for standard output)")
    real = os.path.realpath(path)
    log_dir = _in_a_log(real)
    if log_dir is not None:  # `-o LOG/data.mdb` replaced the log's own file: the log was gone
        raise InterfaceError(f"-o {path}: refused, it is inside the log directory {log_dir}")
    try:
        st: os.stat_result | None = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _write_error(path, exc) from None
    if st is None and not os.path.isdir(os.path.dirname(real)):
        raise InterfaceError(f"-o {path}: no directory {os.path.dirname(real)} to write it in")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise InterfaceError(f"-o {path} is a directory: name a file")
    return real, st


@contextmanager
def output_to(path: str) -> Iterator[TextIO]:
    """The stream ``-o PATH`` writes through: standard output for ``-``; a FIFO or a device itself
    (replacing /dev/null with a file broke the machine); else a new file beside the one the path
    (its symlinks followed) names, renamed over it when the block ends."""
    if path == "-":
        yield sys.stdout
        return
    real, st = _target(path)
    try:
        with (open(real, "w") if st is not None and not stat.S_ISREG(st.st_mode) else _replacing(real, st)) as out:
            yield out
    except OSError as exc:
        # The stream's own (no file named, or ours) is a write that failed (ENOSPC was a
        # traceback); an error opening some other file is not this one's to explain.
        if exc.filename is None or str(exc.filename).startswith(real):
            raise _write_error(path, exc) from None
        raise


@contextmanager
def _replacing(real: str, old: os.stat_result | None) -> Iterator[TextIO]:
    """A new file beside ``real`` (with the permissions of the file it replaces), synced and renamed
    over it when the block ends: a failed command leaves no half-written file, the old one whole."""
    tmp = f"{real}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with open(fd, "w") as out:
            if old is not None:
                os.fchmod(fd, stat.S_IMODE(old.st_mode))
            yield out
            out.flush()
            os.fsync(fd)
        os.replace(tmp, real)
    except BaseException:
        os.unlink(tmp)
        raise


# -- stream commands ---------------------------------------------------------------


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"needs a number of seconds > 0, got {text!r}")
    return value


def add_servers(p: argparse.ArgumentParser, flag: str, required: bool, dest: str | None = None) -> None:
    """The NATS servers and stream a stream command talks to."""
    p.add_argument(flag, required=required, dest=dest, metavar="nats://HOST:PORT[,...]",
                   help="the NATS servers (any of the cluster's)")
    p.add_argument("--stream", default=wire.DEFAULT_STREAM, metavar="NAME",
                   help=f"the JetStream stream (default {wire.DEFAULT_STREAM})")


def add_wait(p: argparse.ArgumentParser, also: str = "") -> None:
    """How long a stream command waits for a server."""
    p.add_argument("--wait", type=seconds, default=30.0, metavar="SECONDS",
                   help=f"how long to wait for a server to answer before giving up (default 30{also})")


@contextmanager
def read_model(log: TaskLog, label: str = "catch-up") -> Iterator[ReadModel]:
    """The log's read model, caught up (``projections.readmodel``), closed when the block ends;
    saying so on stderr when it is not the Hub's though the Hub keeps one, or was folded in memory.
    A read model SQLite finds damaged while it is read is one line (and removed: built again next)."""
    model = open_read_model(log, label)
    for why in (model.why_not_hub, model.why_elsewhere):
        if why:
            print(f"tasklog: {why}: answering from {model.path or 'memory'}", file=sys.stderr)
    if model.why_slow:
        print(f"tasklog: folded {model.folded:,} events in memory: {model.why_slow}", file=sys.stderr)
    try:
        yield model
    except sqlite3.DatabaseError as exc:
        raise damaged(model, exc) from None
    finally:
        model.projection.close()
