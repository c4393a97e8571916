"""One log directory on disk: its files and locks, the LMDB environment shared in a process,
map growth, and transactions that retry what growth interrupted. What the databases hold is
their own modules' (``databases``, ``streamindex``, ``committimes``, ``front``, ``verbatim``).

LMDB forbids opening one environment twice in a process and using one across fork(): the
environment is shared, counted, and left behind by a forked child (see ``_after_fork_in_child``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import lmdb

from . import codec, front
from .databases import Databases, indexed, mark_indexed, open_databases
from .diskspace import back_lock_file, full_disk, storage_error
from .errors import (
    LogBusyError,
    NotATaskLogError,
    ReadOnlyLogError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
)
from .marker import MARKER, read_schema, write_marker
from .streamindex import LegacyStreams, StreamIndex, Upgrade
from .verbatim import put_verbatim

__all__ = ["Store", "DURABILITY", "MARKER", "open_here"]

_LMDB_FILES = ("data.mdb", "lock.mdb")
_OWN_FILES = frozenset({MARKER, "writer.lock", "users.lock", *_LMDB_FILES})
_MAX_READERS = 512


@dataclass(frozen=True)
class _Mode:
    sync: bool
    metasync: bool
    background: bool
    lock: int
    promise: str


# What each mode costs and what it promises, as data rather than branches.
DURABILITY: dict[str, _Mode] = {
    "sync": _Mode(True, True, False, fcntl.LOCK_SH,
                  "a returned append survives power loss"),
    "process": _Mode(False, False, False, fcntl.LOCK_SH,
                     "a returned append survives a killed process, not a power loss"),
    "async": _Mode(True, True, True, fcntl.LOCK_EX,
                   "an append survives power loss once its receipt or flush() returns; "
                   "a crash loses at most the last commit interval"),
}


class _SharedEnv:
    __slots__ = ("env", "flags", "gate", "users")

    def __init__(self, env: lmdb.Environment, flags: tuple[bool, bool, bool]) -> None:
        self.env = env
        self.gate = _ReadersOrResize()
        self.flags = flags
        self.users = 1


_ENVS: dict[str, _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()
_OPEN: weakref.WeakSet[Store] = weakref.WeakSet()


def open_here(path: str) -> bool:
    """Whether this process has the log at ``path`` open."""
    with _ENVS_LOCK:
        return os.path.abspath(path) in _ENVS


def _after_fork_in_child() -> None:
    """Leave the parent's logs to the parent: a forked child holds none of their locks.

    ipyparallel forks its schedulers after the Hub opened its log; they inherited the flocks,
    and after a SIGKILL of the controller those orphans kept the next controller out. LMDB
    forbids using an environment across fork() anyway.
    """
    global _ENVS_LOCK
    _ENVS_LOCK = threading.Lock()  # another thread may have held it at the fork
    for shared in _ENVS.values():
        # Never close the parent's environment here: mdb_env_close clears the reader slots of the
        # pid that opened it -- the parent's, still in use. So it must never be freed in the child.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(shared.env))
    _ENVS.clear()
    for store in list(_OPEN):
        store.leave_to_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _ReadersOrResize:
    """Many short read transactions, or one map resize: LMDB forbids both at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing or self._readers:
                self._cond.wait()
            self._resizing = True
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


def _share_users_lock(path: str) -> int | None:
    """Hold ``users.lock`` shared while the log is open, so a compaction knows it is alone."""
    name = os.path.join(path, "users.lock")
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only directory or filesystem: nobody can compact it either
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return None
        raise
    # Blocking: a compaction in progress swaps data.mdb, which must not be opened half-way.
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _check_path(path: str) -> str | None:
    """None when ``path`` does not exist, "empty" for a directory a log may be made in, "log" for
    a tasklog; raise if it is something else."""
    if not os.path.exists(path):
        return None
    if not os.path.isdir(path):
        raise NotATaskLogError(f"{path} is not a tasklog: it is a file, not a directory")
    names = set(os.listdir(path))
    if MARKER in names:
        version = read_schema(path)
        if version > codec.LOG_SCHEMA:
            raise SchemaVersionError(
                f"{path} was written with schema version {version}; this tasklog reads {codec.LOG_SCHEMA}")
        return "log"
    if "data.mdb" in names:
        raise NotATaskLogError(f"{path} is not a tasklog: it holds another LMDB environment")
    if names - _OWN_FILES:
        raise NotATaskLogError(f"{path} is not a tasklog: the directory is not empty")
    return "empty"


def _writable(path: str) -> bool:
    """Whether this process may create and change files in ``path`` (False on a read-only mount)."""
    return os.access(path, os.W_OK)


def _share_env(path: str, mode: _Mode, readonly: bool, map_size: int) -> _SharedEnv:
    """The environment of the log at ``path`` this process shares, opened if it is the first user."""
    # LMDB forbids opening one environment twice in a process: share it, counted.
    with _ENVS_LOCK:
        shared = _ENVS.get(path)
        if shared is not None:
            if not readonly and shared.flags != (mode.sync, mode.metasync, False):
                raise LogBusyError(f"{path} is already open in this process read-only or with "
                                   "other durability settings; share that TaskLog")
            shared.users += 1
            return shared
        shared = _SharedEnv(_new_env(path, mode, readonly, map_size), (mode.sync, mode.metasync, readonly))
        _ENVS[path] = shared
        return shared


def _new_env(path: str, mode: _Mode, readonly: bool, map_size: int) -> lmdb.Environment:
    data = os.path.join(path, "data.mdb")
    size = max(map_size, 2 * os.path.getsize(data)) if os.path.exists(data) else map_size
    # A log on a read-only filesystem (an archive, a backup, a snapshot mount) cannot take
    # LMDB's reader table in lock.mdb; nothing can write it there either, so none is needed.
    lockfile = os.path.join(path, "lock.mdb")
    lock = os.access(lockfile, os.W_OK) if os.path.exists(lockfile) else _writable(path)
    if lock and not back_lock_file(path, _MAX_READERS) and not readonly:
        # A reader goes on as before (its slot is most likely on a page in use already).
        raise StorageFullError(f"cannot open {path}: no space left on device for LMDB's lock file")
    try:
        env = lmdb.open(path, map_size=size, max_dbs=12, max_readers=_MAX_READERS, subdir=True,
                        sync=mode.sync, metasync=mode.metasync, writemap=False,
                        readonly=readonly, lock=lock, readahead=False)
    except lmdb.Error as exc:
        raise full_disk(exc, f"opening {path}", path) or StorageError(f"cannot open {path}: {exc}") from None
    # Reading a page past the end of a truncated file is a SIGBUS, not an exception.
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    have = os.path.getsize(data) if os.path.exists(data) else 0
    if have < need:
        env.close()
        raise StorageError(f"{data} is truncated: {have} bytes, its last page ends at {need}")
    return env


def _unshare_env(path: str, shared: _SharedEnv) -> None:
    """One user fewer of the shared environment of ``path``; the last closes it."""
    with _ENVS_LOCK:
        shared.users -= 1
        if shared.users == 0:
            _ENVS.pop(path, None)
            shared.env.close()


class Store:
    """The LMDB environment of one log directory, opened for reading or writing: its locks, map
    growth and retried transactions, in which it runs the pieces that know the databases (``dbs``)."""

    def __init__(self, path: str, mode: _Mode, *, readonly: bool, map_size: int, max_map_size: int | None,
                 create: bool, lock_timeout: float) -> None:
        self.path = path
        self.mode = mode
        self.readonly = readonly
        #: Largest map the log may grow to (None: as large as the disk allows). Raise it to go on.
        self.max_map_size = max_map_size
        #: Called when a forked child leaves the store to its parent (the log refuses further use).
        self.on_abandon: list[Callable[[], None]] = []
        self._lockfile: int | None = None
        self._userlock: int | None = None
        # Every step that takes something registers its undo: a failed open leaves nothing behind
        # (not even the directory it made) and holds nothing.
        with ExitStack() as undo:
            self._take_directory(undo, create, lock_timeout)
            self._shared = _share_env(path, mode, readonly, map_size)
            undo.callback(_unshare_env, path, self._shared)
            self.env = self._shared.env
            self.gate = self._shared.gate
            self._open_dbs()
            self.identity: str | None = self._check_schema()
            undo.pop_all()
        _OPEN.add(self)

    def _take_directory(self, undo: ExitStack, create: bool, lock_timeout: float) -> None:
        state = _check_path(self.path)
        if state != "log" and (self.readonly or not create):
            what = "does not exist" if state is None else "is an empty directory"
            raise NotATaskLogError(f"{self.path} is not a tasklog: it {what}")
        if state is None:
            try:
                os.makedirs(self.path)
            except OSError as exc:
                raise ReadOnlyLogError(f"cannot create a log at {self.path}: {exc.strerror}") from None
            undo.callback(shutil.rmtree, self.path, True)
        elif not self.readonly and not _writable(self.path):
            raise ReadOnlyLogError(f"{self.path} is on a read-only filesystem or not writable by this user; "
                                   "reading works (open it with readonly=True)")
        undo.callback(self._release_lock)
        self._userlock = _share_users_lock(self.path)
        if not self.readonly:
            self._take_writer_lock(lock_timeout)

    def _take_writer_lock(self, timeout: float) -> None:
        fd = os.open(os.path.join(self.path, "writer.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        self._lockfile = fd
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, self.mode.lock | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        other = "an async writer" if self.mode.lock == fcntl.LOCK_SH else "another writer"
        waited = f" (waited {timeout:g} s)" if timeout > 0 else ""
        raise LogBusyError(f"{self.path} is held by {other}{waited}; an async log needs the directory "
                           "to itself, sync/process logs can share it")

    def _open_dbs(self) -> None:
        self.dbs: Databases = open_databases(self.env, self.path, create=not self.readonly)
        # The raw handles, for the readers, the writers and verify.
        self.events, self.keys, self.meta, self.kept = self.dbs.events, self.dbs.keys, self.dbs.meta, self.dbs.kept

    def _check_schema(self) -> str | None:
        """Check the stored schema; a writer marks a new log and gives it its identity. Return it."""
        with self.env.begin() as txn:
            stored = txn.get(b"schema", db=self.meta)
            identity = txn.get(b"identity", db=self.meta)
        #: The schema the log was written with (below 3: an older stream index; a writer builds it).
        self.schema = codec.LOG_SCHEMA if stored is None else int(stored)
        if self.schema > codec.LOG_SCHEMA:
            raise SchemaVersionError(f"{self.path} was written with schema version {self.schema}; "
                                     f"this tasklog reads {codec.LOG_SCHEMA}")
        if self.readonly or (stored is not None and identity is not None):
            return None if identity is None else bytes(identity).decode()
        # A log made by an older tasklog gets its identity from the first writer that opens it.
        new = str(uuid.uuid4())

        def mark(txn: lmdb.Transaction) -> str:
            # A new log has the current schema at once; an older log keeps its number until indexed.
            txn.put(b"schema", str(self.schema).encode(), db=self.meta, overwrite=stored is None)
            if not txn.put(b"identity", new.encode(), db=self.meta, overwrite=False):
                return bytes(txn.get(b"identity", db=self.meta) or b"").decode()  # another writer was first
            return new
        fresh: str = self.write(mark)  # a write like any: a full disk is StorageFullError (issue 20)
        write_marker(self.path, self.schema, fresh)
        return fresh

    def leave_to_parent(self) -> None:
        """In a forked child: drop the inherited lock descriptors (the parent's locks stay held
        by the parent alone, and go with it) and refuse every further use."""
        for fd in (self._lockfile, self._userlock):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)  # not flock(LOCK_UN): that would release the parent's lock
        self._lockfile = self._userlock = None
        for hook in self.on_abandon:
            hook()

    def _release_lock(self) -> None:
        if self._lockfile is not None:
            os.close(self._lockfile)  # closing the descriptor drops the flock
            self._lockfile = None
        if self._userlock is not None:
            os.close(self._userlock)
            self._userlock = None
            self._lockfile = None

    def close(self) -> None:
        """Release the environment and the locks."""
        _unshare_env(self.path, self._shared)
        self._release_lock()
        _OPEN.discard(self)

    # -- transactions and map growth --------------------------------------------------------

    def write(self, body: Callable[[lmdb.Transaction], Any]) -> Any:
        """Run ``body`` in a write transaction, growing the map and retrying the whole of it."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return body(txn)
            except lmdb.MapFullError:
                self.grow()
            except lmdb.MapResizedError:
                self.adopt_map_size()
            except StorageError:
                raise
            except lmdb.Error as exc:
                raise storage_error(exc, "commit", self.path) from None

    def grow(self) -> None:
        """Double the map (in 64 GiB steps past 64 GiB), up to ``max_map_size``."""
        with self.gate.exclusive():
            size = self.env.info()["map_size"]
            new = size * 2 if size < 1 << 36 else size + (1 << 36)
            if self.max_map_size is not None:
                if size >= self.max_map_size:
                    raise StorageFullError(f"the log at {self.path} reached max_map_size "
                                           f"({self.max_map_size:,} bytes); nothing of this batch was written")
                new = min(new, self.max_map_size)
            self.env.set_mapsize(new)

    def adopt_map_size(self) -> None:
        """Take the map size another process grew the map to."""
        with self.gate.exclusive():
            self.env.set_mapsize(0)

    @contextmanager
    def reader(self) -> Iterator[lmdb.Transaction]:
        """A short read transaction (retried when another process grew the map)."""
        while True:
            with self.gate.reading():
                try:
                    txn = self.env.begin()
                except lmdb.MapResizedError:
                    txn = None
                if txn is not None:
                    try:
                        yield txn
                    finally:
                        txn.abort()
                    return
            self.adopt_map_size()  # another process grew the map

    @staticmethod
    def last_key(txn: lmdb.Transaction, db: Any) -> int:
        """The last sequence number in ``db`` (0 when empty)."""
        cur = txn.cursor(db=db)
        return codec.unpack_key(cur.key()) if cur.last() else 0

    # -- what every writer shares: the stream index and the commit times --------------------

    @property
    def indexed(self) -> bool:
        """Whether the log has its stream index (schema 3)."""
        return self.schema >= 3 and self.dbs.index is not None

    @property
    def stream_index(self) -> StreamIndex | LegacyStreams | None:
        """The index ``events_of`` and ``verify`` read: schema 3's, else schema 2's, else None (scan)."""
        return self.dbs.index if self.indexed else self.dbs.legacy

    def index(self, txn: lmdb.Transaction, rows: list[tuple[bytes, bytes]]) -> None:
        """Add events to the streams of the tasks they name, in the transaction that writes them."""
        self.dbs.index.add(txn, rows)  # type: ignore[union-attr]  # a writer always has the index

    def record_commit_time(self, txn: lmdb.Transaction, first_seq: int) -> None:
        """Record the time of the commit whose first event is ``first_seq`` ("what did the hub know at T")."""
        self.dbs.times.record_now(txn, first_seq)

    def build_index(self, progress: Callable[[int], None] | None = None) -> int:
        """Index a log of an older schema (resuming where an interrupted build stopped); mark it
        with the current schema and drop what the older schema kept instead."""
        upgrade = Upgrade(partial(indexed, dbs=self.dbs, schema=codec.LOG_SCHEMA),
                          partial(mark_indexed, dbs=self.dbs, schema=codec.LOG_SCHEMA))
        done: int = self.dbs.index.build(self.write, self.events, upgrade, progress)  # type: ignore[union-attr]
        self.schema = codec.LOG_SCHEMA
        write_marker(self.path, self.schema, self.identity)
        return done

    def commits(self, txn: lmdb.Transaction, start: int, stop: int) -> list[tuple[int, float]]:
        """The commits that wrote events start <= seq < stop: ``(first seq, UNIX time)``, in order."""
        return self.dbs.times.commits(txn, start, stop)

    def committed_at(self, txn: lmdb.Transaction, seq: int) -> float | None:
        """The UNIX time of the commit that wrote event ``seq`` (None: no time recorded for it)."""
        return self.dbs.times.committed_at(txn, seq)

    # -- rewriting the log: a restore's verbatim writes, a prune's deletions ----------------

    def put_verbatim(self, events: list[tuple[int, bytes]], commits: list[tuple[int, float]],
                     identity: str | None = None, fork: str | None = None) -> None:
        """Write events at their own sequence numbers with their own commit times (a restore);
        the first batch of an empty log gives it the original's ``identity`` and this ``fork``."""
        self.write(put_verbatim(self.dbs, events, commits, identity=identity, fork=fork, own_identity=self.identity))
        if identity is not None and identity != self.identity:
            self.identity = identity
            write_marker(self.path, self.schema, identity)

    @property
    def fork(self) -> str | None:
        """The fork id a restore gave this copy of a log (None: the log as it was created)."""
        with self.reader() as txn:
            raw = txn.get(b"fork", db=self.meta)
        return None if raw is None else bytes(raw).decode()

    def drop_front(self, start: int, stop: int, keep: Collection[int] = ()) -> int:
        """Delete events start <= seq < stop and make ``stop`` the log's start, in one transaction
        (the events numbered in ``keep`` move to the kept database)."""
        return int(self.write(lambda txn: front.drop_front(txn, self.dbs, start, stop, keep)))

    def release_kept(self, keep: Collection[int]) -> int:
        """Delete the kept events not numbered in ``keep`` (no snapshot refers to them any more)."""
        return int(self.write(lambda txn: front.release_kept(txn, self.dbs, keep))) if self.kept is not None else 0
