"""The read model: a SQLite projection kept beside a log and caught up by whoever reads it.

Whoever asks a log a question answers from a persistent projection caught up from its
checkpoint (only the events since), never from a new fold of the whole log:

1. the Hub's own projection (``projection.db``, which ``TaskLogDB`` keeps current), read-only,
   with the log's newer events folded over it in memory; else
2. ``readmodel.db`` in the log directory, which readers keep: opened for writing, caught up under
   a lock (a second reader waits, then folds only what is left), then read. In a log directory
   this process cannot write (a read-only mount) it lives in the user's cache directory instead
   (``$XDG_CACHE_HOME/tasklog``, ``~/.cache/tasklog``), under a hash of the log's identity and
   path; where neither can be written (or the disk is full), the events are folded into a SQLite
   database in memory (its documents packed: a fifth of the memory a dict of the records takes)
   and ``why_slow`` says why.

It is a cache of the log: it can be deleted at any time and is built again on the next read.
One that disagrees with the log (another log's, pinned by a time-travel replay, past the log's
end after a crash, or caught up to an event the log does not hold: a copy of the same log that
went its own way) is rebuilt. A build interrupted by an error or a signal removes the file it
created; one killed outright leaves a consistent partial one, which the next read goes on from.
One that is not a database (damaged) is made again; a link, a FIFO or a device at its path is
never written through: the cache answers instead.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import sqlite3
import stat
import time
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass

from tasklog.errors import StorageError, TaskLogError
from tasklog.log import TaskLog
from tasklog.progress import Progress

from . import snapshot
from .backends.sqlite import SQLiteProjection, remove_database
from .base import Projection
from .errors import ProjectionError
from .overlay import Overlay

__all__ = ["HUB_FILE", "FILE", "ReadModel", "open_read_model", "cache_path", "damaged"]

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
    #: Why the Hub's projection in the log directory was not used (None: there is none, or it was).
    why_not_hub: str | None = None
    #: Why a place before this one was passed by though it could keep it (another reader held it).
    why_elsewhere: str | None = None


class _Unusable(Exception):
    """This place cannot keep the read model (not the log's fault): the next place is tried."""


class _Busy(_Unusable):
    """Another reader has held this place's lock too long (a stopped process): the next place."""


def cache_path(log: TaskLog) -> str:
    """Where the read model of a log in a directory this process cannot write lives."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG rule: a relative path is ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    # Hashed, never the identity itself: a crafted identity ("../../x") named a file outside the
    # cache; and the path too, so that copies of one log (same identity) keep caches of their own.
    key = hashlib.sha256(f"{log.identity}\0{os.path.realpath(log.path)}".encode()).hexdigest()[:32]
    return os.path.join(base, "tasklog", f"{key}.db")


def open_read_model(log: TaskLog, label: str = "catch-up") -> ReadModel:
    """The freshest persistent projection of ``log``, caught up (a progress bar on a terminal);
    where none can be kept, the log folded in memory. It is caught up under the read model's lock;
    to catch it up again later, open it again (two processes catching one file up by themselves
    would fold the same events twice)."""
    hub, why_not_hub = _hub(log, label)
    if hub is not None:
        return hub
    reasons, busy = [], []
    for kind, path in (("log directory", os.path.join(log.path, FILE)), ("cache", cache_path(log))):
        try:
            model = _kept(log, path, kind, label)
        except _Unusable as why:
            reasons.append(f"{path}: {why}")
            busy += [reasons[-1]] if isinstance(why, _Busy) else []
            continue
        model.why_not_hub, model.why_elsewhere = why_not_hub, "; ".join(busy) or None
        return model
    proj = SQLiteProjection(":memory:")  # a dict of the records took five times the memory (issue 22)
    try:
        folded = _catch_up(proj, log, label)
    except BaseException:
        proj.close()
        raise
    return ReadModel(proj, "memory", None, folded, "no read model could be written (" + "; ".join(reasons) + ")",
                     why_not_hub)


def _hub(log: TaskLog, label: str) -> tuple[ReadModel | None, str | None]:
    """The Hub's projection, read-only, with the log's newer events over it; else why not (None:
    there is none)."""
    path = os.path.join(log.path, HUB_FILE)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO there hung the open
            return None, f"the Hub's {path} is not a regular file"
        inner = SQLiteProjection(path, readonly=True)
    except FileNotFoundError:
        return None, None
    except (OSError, TaskLogError) as exc:
        return None, f"the Hub's {path} cannot be read ({getattr(exc, 'strerror', None) or exc})"
    why = _unfit(inner, log)
    if why is not None:
        inner.close()
        return None, f"the Hub's {path} {why}"
    proj = Overlay(inner)
    try:
        folded = _catch_up(proj, log, label)
    except BaseException:
        proj.close()
        raise
    return ReadModel(proj, "hub", path, folded), None


def _unfit(hub: SQLiteProjection, log: TaskLog) -> str | None:
    """Why the Hub's projection cannot answer for ``log`` (None: it can)."""
    if hub.pinned is not None:
        return f"is pinned at event {hub.pinned} (a replay --to left it there)"
    if hub.log_identity not in (None, log.identity):
        return f"was built from another log ({hub.log_identity})"
    if hub.counted.since is None:
        # Upgraded from an older tasklog (its purged tasks known by id only, its events uncounted)
        # or after a lost async commit: the readers' model answers every question whole.
        return "keeps no count of its events (an older tasklog's file, or rewound after a lost commit)"
    deadline = time.monotonic() + _AHEAD_WAIT
    # An async Hub stores what it folded before the log's commit of it is visible: a moment later
    # the log holds it (a reader that took this for a crash built a read model beside a live Hub).
    while hub.last_seq > log.last_seq:
        if time.monotonic() > deadline:
            return (f"is at event {hub.last_seq}, past the log's last event {log.last_seq} (events an async "
                    "Hub lost in a crash; the Hub rebuilds it when it opens the log)")
        time.sleep(0.01)
    if log.last_seq - hub.last_seq > _BEHIND:
        # Folded over it in memory at every read, never kept: the readers' model keeps its catch-up.
        return f"is {log.last_seq - hub.last_seq:,} events behind the log (no Hub keeps it current)"
    return None


_AHEAD_WAIT = 2.0  # seconds: many times an async log's commit interval
_BEHIND = 1 << 16  # events: a live Hub's write-behind is a thousand behind at most


def damaged(model: ReadModel, exc: Exception) -> ProjectionError:
    """The error for a read model that failed while it was read (SQLite found a page damaged): a
    file of the readers' own is removed, so that the next command builds it again."""
    if model.kind in ("log directory", "cache") and model.path is not None:
        remove_database(model.path)
        return ProjectionError(f"the read model {model.path} is damaged ({exc}): it was removed, and the "
                               "next command builds it again from the log")
    return ProjectionError(f"the projection {model.path or 'in memory'} cannot be read ({exc})")


def _kept(log: TaskLog, path: str, kind: str, label: str) -> ReadModel:
    """The readers' read model at ``path``: made if missing, caught up under its lock."""
    made = not os.path.lexists(path)
    try:
        with _opened(path) as proj:
            if proj.pinned is not None or proj.log_identity not in (None, log.identity) \
                    or proj.last_seq > log.last_seq or not _same_history(proj, log) or proj.counted.since is None:
                # A cache that disagrees with the log, or an older tasklog's that did not count
                # its events (``stats`` would decode them all at every call): built again.
                proj.clear()
            try:
                folded = _catch_up(proj, log, label)
            except StorageError as exc:  # a full disk: the next place, or memory
                raise _Unusable(str(exc)) from None
            _save_tip(proj, log)
    except BaseException:
        if made:
            remove_database(path)
        raise
    return ReadModel(proj, kind, path, folded)


@contextmanager
def _opened(path: str) -> Iterator[SQLiteProjection]:
    """The read model at ``path``, opened and locked; closed only if what follows fails."""
    with ExitStack() as stack:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            stack.enter_context(_locked(path))
            proj = _sqlite(path)
        except (OSError, TaskLogError) as exc:  # no file can be kept here
            raise _Unusable(getattr(exc, "strerror", None) or str(exc)) from None
        try:
            yield proj
        except BaseException:
            proj.close()
            raise


_TIP = "CREATE TABLE IF NOT EXISTS readmodel_tip (seq INTEGER NOT NULL, crc INTEGER NOT NULL)"


def _same_history(proj: SQLiteProjection, log: TaskLog) -> bool:
    """Whether the event the read model was last caught up to is the log's own (copies of one log
    share an identity and may have different events at the same numbers)."""
    if proj.last_seq == 0:
        return True
    try:
        with closing(sqlite3.connect(proj.path)) as db:
            db.execute(_TIP)
            row = db.execute("SELECT seq, crc FROM readmodel_tip").fetchone()
    except sqlite3.DatabaseError:
        row = None
    if row is None:
        return False  # where it came from is not known: built again
    seq, crc = row
    if seq < log.start_seq:
        return True  # pruned since: the identity is all there is to check
    return _crc_at(log, seq) == int(crc)


def _crc_at(log: TaskLog, seq: int) -> int | None:
    """The CRC-32 of event ``seq`` as the log stores it (None: the log does not hold it)."""
    raw = next(iter(log.read_raw(seq, seq + 1)), None)
    return None if raw is None else zlib.crc32(raw[1])


def _save_tip(proj: SQLiteProjection, log: TaskLog) -> None:
    """Note the event the read model is caught up to (its number and CRC-32), for ``_same_history``."""
    crc = _crc_at(log, proj.last_seq) if proj.last_seq else None
    if crc is None:
        return
    # Not kept (a full disk): the next reader cannot tell its history, and builds it again.
    with suppress(sqlite3.DatabaseError), closing(sqlite3.connect(proj.path)) as db, db:
        db.execute(_TIP)
        db.execute("DELETE FROM readmodel_tip")
        db.execute("INSERT INTO readmodel_tip VALUES (?, ?)", (proj.last_seq, crc))


def _sqlite(path: str) -> SQLiteProjection:
    """The read model's file opened; one that is not a SQLite database (damaged) is made again."""
    try:
        return SQLiteProjection(path)
    except TaskLogError:
        remove_database(path)  # a cache: the next line builds it again, or says why it cannot
        return SQLiteProjection(path)


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """Hold the read model's file while it is caught up: one reader folds, the next waits."""
    while True:
        # Never through a link, never a FIFO or a device: only a regular file of its own.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EEXIST, "not a regular file")
        _wait_for_lock(fd)
        with suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        os.close(fd)  # the reader it waited for failed and removed the file: lock the new one
    try:
        yield
    finally:
        os.close(fd)


def _wait_for_lock(fd: int) -> None:
    """Take the read model's lock (flock, not fcntl's locks, which are SQLite's own), waiting for
    the reader that holds it at most ``_LOCK_WAIT``: a stopped one (Ctrl-Z) held every other reader
    for good, without a word."""
    deadline = time.monotonic() + _LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise _Busy(f"another reader has been catching it up for over {_LOCK_WAIT:.0f} s") from None
            time.sleep(0.05)


_LOCK_WAIT = 60.0  # seconds: a first build at a million events takes about 50


def _catch_up(proj: Projection, log: TaskLog, label: str) -> int:
    # To the log's end as it is now, not as it grows: a reader chasing a producer at full speed
    # answered only once the producer stopped (the dashboard showed no commit for a whole demo
    # run). One ahead of the log (a crash lost its events) is left to catch_up, which rebuilds it.
    end = log.last_seq
    bar = Progress(max(end - proj.last_seq, 0), label)
    try:
        return snapshot.catch_up(proj, log, stop=end if proj.last_seq <= end else None, progress=bar.update)
    finally:
        bar.close()


