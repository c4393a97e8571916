"""The read model: a SQLite projection kept beside a log and caught up by whoever reads it.

Whoever asks a log a question answers from a persistent projection caught up from its
checkpoint (only the events since), never from a new fold of the whole log:

1. the Hub's own projection (``projection.db``, which ``TaskLogDB`` keeps current), read-only,
   with the log's newer events folded over it in memory; else
2. ``readmodel.db`` in the log directory, which readers keep: opened for writing, caught up under
   a lock (a second reader waits, then folds only what is left), then read. In a log directory
   this process cannot write (a read-only mount) it lives in the user's cache directory instead
   (``$XDG_CACHE_HOME/tasklog``, ``~/.cache/tasklog``), keyed by the log's identity; where
   neither can be written, the events are folded in memory and ``why_slow`` says why.

It is a cache of the log: it can be deleted at any time and is built again on the next read.
One that disagrees with the log (another log's, pinned by a time-travel replay, past the log's
end after a crash) is rebuilt. A build interrupted by an error or a signal removes the file it
created; one killed outright leaves a consistent partial one, which the next read goes on from.
One that is not a database (damaged) is made again; a link, a FIFO or a device at its path is
never written through: the cache answers instead.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from tasklog.errors import TaskLogError
from tasklog.log import TaskLog
from tasklog.progress import Progress

from . import snapshot
from .backends.dict import DictProjection
from .backends.sqlite import SQLiteProjection
from .base import Projection
from .errors import ProjectionError
from .overlay import Overlay

__all__ = ["HUB_FILE", "FILE", "ReadModel", "open_read_model", "cache_path"]

#: The Hub's projection in a log directory (``TaskLogDB``'s default).
HUB_FILE = "projection.db"
#: The readers' read model in a log directory.
FILE = "readmodel.db"


@dataclass
class ReadModel:
    """A projection caught up to the log, and where it came from."""

    projection: Projection
    #: ``hub``, ``log directory``, ``cache`` or ``memory``.
    kind: str
    #: The file (None in memory).
    path: str | None
    #: Events folded to bring it up to date.
    folded: int
    #: Why it was folded in memory (None otherwise).
    why_slow: str | None = None


def cache_path(log: TaskLog) -> str:
    """Where the read model of a log in a directory this process cannot write lives."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tasklog", f"{log.identity or 'no-identity'}.db")


def open_read_model(log: TaskLog, label: str = "catch-up") -> ReadModel:
    """The freshest persistent projection of ``log``, caught up (a progress bar on a terminal)."""
    hub = _hub(log, label)
    if hub is not None:
        return hub
    reasons = []
    for kind, path in (("log directory", os.path.join(log.path, FILE)), ("cache", cache_path(log))):
        try:
            return _kept(log, path, kind, label)
        except (OSError, ProjectionError) as exc:
            reasons.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
    proj = DictProjection()
    folded = _catch_up(proj, log, label)
    return ReadModel(proj, "memory", None, folded, "no read model could be written (" + "; ".join(reasons) + ")")


def _hub(log: TaskLog, label: str) -> ReadModel | None:
    """The Hub's projection, read-only, with the log's newer events over it (None: none usable)."""
    path = os.path.join(log.path, HUB_FILE)
    if not os.path.exists(path):
        return None
    try:
        inner = SQLiteProjection(path, readonly=True)
    except ProjectionError:
        return None
    proj = Overlay(inner)
    try:
        folded = _catch_up(proj, log, label)
    except ProjectionError:  # another log's, pinned, or ahead of the log: the readers' model instead
        proj.close()
        return None
    return ReadModel(proj, "hub", path, folded)


def _kept(log: TaskLog, path: str, kind: str, label: str) -> ReadModel:
    """The readers' read model at ``path``: made if missing, caught up under its lock."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    made = not os.path.lexists(path)
    try:
        with _locked(path):
            proj = _sqlite(path)
            try:
                if proj.pinned is not None or proj.log_identity not in (None, log.identity) \
                        or proj.last_seq > log.last_seq:
                    proj.clear()  # a cache that disagrees with the log: built again
                folded = _catch_up(proj, log, label)
            except BaseException:
                proj.close()
                raise
    except BaseException:
        if made:
            _remove(path)
        raise
    return ReadModel(proj, kind, path, folded)


def _sqlite(path: str) -> SQLiteProjection:
    """The read model's file opened; one that is not a SQLite database (damaged) is made again."""
    try:
        return SQLiteProjection(path)
    except TaskLogError:
        _remove(path)  # a cache: the next line builds it again, or says why it cannot
        return SQLiteProjection(path)


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """Hold the read model's file while it is caught up: one reader folds, the next waits."""
    while True:
        # Never through a link, never a FIFO or a device: only a regular file of its own.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ProjectionError(f"{path} is not a regular file: the read model is not kept there")
        fcntl.flock(fd, fcntl.LOCK_EX)  # flock, not fcntl's locks, which are SQLite's own
        with suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        os.close(fd)  # the reader it waited for failed and removed the file: lock the new one
    try:
        yield
    finally:
        os.close(fd)


def _catch_up(proj: Projection, log: TaskLog, label: str) -> int:
    bar = Progress(max(log.last_seq - proj.last_seq, 0), label)
    try:
        return snapshot.catch_up(proj, log, progress=bar.update)
    finally:
        bar.close()


def _remove(path: str) -> None:
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        with suppress(FileNotFoundError):
            os.remove(name)
