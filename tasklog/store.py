"""One log directory on disk: its files and locks, the LMDB environment shared in a process,
named databases, map growth, and transactions that retry what growth interrupted.

LMDB forbids opening one environment twice in a process and using one across fork(): the
environment is shared, counted, and left behind by a forked child (see ``_after_fork_in_child``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import struct
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import lmdb

from . import codec
from .errors import (
    CommitError,
    CorruptEventError,
    LogBusyError,
    NotATaskLogError,
    ReadOnlyLogError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
    file_error,
)
from .events import Drop, Event, Resubmit, task_ids

__all__ = ["Store", "DURABILITY", "MARKER", "open_here", "put_run"]

MARKER = "TASKLOG"
_LMDB_FILES = ("data.mdb", "lock.mdb")
_OWN_FILES = frozenset({MARKER, "writer.lock", "users.lock", *_LMDB_FILES})
_TIME = struct.Struct(">d")
_INDEX_CHUNK = 20_000  # events indexed per transaction when a schema-1 log is upgraded
# After a write stopped short for want of space, what is left is less than a block or two; this
# much allows for another process freeing a little meanwhile.
_FULL_BELOW = 1 << 20
_MAX_READERS = 512
# The size LMDB gives lock.mdb for _MAX_READERS readers on 64-bit Linux (its header, then a
# 64-byte slot a reader): what a new lock file is made with before LMDB maps it.
_LOCK_BYTES = 128 + 64 * _MAX_READERS
_LIBC = ctypes.CDLL(None, use_errno=True)


def put_run(cur: lmdb.Cursor, pairs: list[tuple[bytes, bytes]]) -> None:
    """Append ``(key, value)`` pairs past the end of the cursor's database, all or raise."""
    # putmulti(append=True) skips a key that does not sort last instead of raising: compare counts.
    consumed, added = cur.putmulti(pairs, append=True)
    if consumed != len(pairs) or added != len(pairs):
        raise CommitError(f"only {added} of {len(pairs)} events went past the end of the log")


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
        self.gate = _Gate()
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


class _Gate:
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
        try:
            with open(os.path.join(path, MARKER)) as f:
                meta = json.load(f)
            version = int(meta["schema"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NotATaskLogError(f"{path} has an unreadable {MARKER} file ({exc})") from None
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


def _storage_error(exc: lmdb.Error, doing: str, path: str) -> StorageError:
    """An LMDB error of a write as a StorageError: StorageFullError when the disk or the map is full."""
    return _full_disk(exc, doing, path) or CommitError(f"{doing} failed: {exc}")


def _full_disk(exc: lmdb.Error, doing: str, path: str) -> StorageFullError | None:
    """``exc`` as a StorageFullError if it means the disk (or the map) is full, else None."""
    # py-lmdb raises DiskError for ENOSPC, MapFullError when the map (not the disk) is full.
    if isinstance(exc, (lmdb.MapFullError, lmdb.DiskError)):
        return StorageFullError(f"{doing} failed: no space left ({exc})")
    # LMDB reports a write that stopped short as EIO ("short write, filesystem full?" in
    # mdb_page_flush), not ENOSPC: on a full tmpfs, big events failed with "Input/output error"
    # (issue 20). Read it as a full disk when the disk is in fact full; any other EIO stays one.
    free = _free_bytes(path) if getattr(exc, "code", None) == errno.EIO else None
    if free is not None and free < _FULL_BELOW:
        return StorageFullError(f"{doing} failed: no space left on device ({free:,} bytes free where the "
                                f"log is; LMDB reported the short write as {exc})")
    return None


def _back_lock_file(path: str) -> bool:
    """Give LMDB's lock file (its reader table) its disk blocks before LMDB maps it; False when
    the disk has no room for them."""
    # LMDB sizes lock.mdb with ftruncate, so it is sparse, and maps it: on a full filesystem its
    # first write to a page without a block killed the process with SIGBUS (issue 20: `tasklog
    # demo` on a full tmpfs exited 135). fallocate(2) allocates the holes without changing the
    # size or a byte, so processes that have the file mapped see no change. Not posix_fallocate:
    # where the filesystem cannot, glibc writes bytes instead, racing the live reader table.
    fallocate = getattr(_LIBC, "fallocate64", None)
    if fallocate is None:
        return True  # not Linux: as before
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fd = os.open(os.path.join(path, "lock.mdb"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size or _LOCK_BYTES  # a new one gets the size LMDB would give it
        ok = fallocate(fd, 0, 0, size) == 0
        return ok or ctypes.get_errno() not in (errno.ENOSPC, errno.EDQUOT)  # else: unsupported, as before
    finally:
        os.close(fd)


def _free_bytes(path: str) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (None: unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class Store:
    """The LMDB environment of one log directory, opened for reading or writing."""

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
            self._shared = self._open_env(map_size)
            undo.callback(self._close_env)
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
        create = not self.readonly
        try:
            self.events = self.env.open_db(b"events", create=create)
            self.keys = self.env.open_db(b"keys", create=create)
            self.meta = self.env.open_db(b"meta", create=create)
            # Commit times, keyed by each commit's first sequence number: "what did the hub know at T".
            self.times = self.env.open_db(b"times", create=create)
        except lmdb.Error as exc:
            raise self._open_error(exc) from None
        # Schema 2. Each task's stream: msg_id -> the sequence numbers of the events naming it
        # (dupsort: a task's numbers sit together, in order). Kept: events a prune removed from
        # the log whose bytes a snapshot's records still refer to (their buffers).
        # A read-only open of a schema-1 log has neither: events_of() then scans the log.
        self.streams: Any = self._optional_db(b"streams", create, dupsort=True, dupfixed=True)
        self.kept: Any = self._optional_db(b"kept", create)

    def _optional_db(self, name: bytes, create: bool, dupsort: bool = False, dupfixed: bool = False) -> Any:
        try:
            return self.env.open_db(name, create=create, dupsort=dupsort, dupfixed=dupfixed)
        except lmdb.NotFoundError:
            return None
        except lmdb.Error as exc:
            raise self._open_error(exc) from None

    def _open_error(self, exc: lmdb.Error) -> StorageError:
        # A new log's databases are made by a commit: on a full disk that is no damage.
        return _full_disk(exc, f"opening {self.path}", self.path) or StorageError(
            f"{self.path} is damaged or incomplete: {exc}")

    def _open_env(self, map_size: int) -> _SharedEnv:
        # LMDB forbids opening one environment twice in a process: share it, counted.
        with _ENVS_LOCK:
            shared = _ENVS.get(self.path)
            if shared is not None:
                if not self.readonly and shared.flags != (self.mode.sync, self.mode.metasync, False):
                    raise LogBusyError(f"{self.path} is already open in this process read-only or with "
                                       "other durability settings; share that TaskLog")
                shared.users += 1
                return shared
            shared = _SharedEnv(self._new_env(map_size), (self.mode.sync, self.mode.metasync, self.readonly))
            _ENVS[self.path] = shared
            return shared

    def _new_env(self, map_size: int) -> lmdb.Environment:
        data = os.path.join(self.path, "data.mdb")
        size = max(map_size, 2 * os.path.getsize(data)) if os.path.exists(data) else map_size
        # A log on a read-only filesystem (an archive, a backup, a snapshot mount) cannot take
        # LMDB's reader table in lock.mdb; nothing can write it there either, so none is needed.
        lockfile = os.path.join(self.path, "lock.mdb")
        lock = os.access(lockfile, os.W_OK) if os.path.exists(lockfile) else _writable(self.path)
        if lock and not _back_lock_file(self.path) and not self.readonly:
            # A reader goes on as before (its slot is most likely on a page in use already).
            raise StorageFullError(f"cannot open {self.path}: no space left on device for LMDB's lock file")
        try:
            env = lmdb.open(self.path, map_size=size, max_dbs=8, max_readers=_MAX_READERS, subdir=True,
                            sync=self.mode.sync, metasync=self.mode.metasync, writemap=False,
                            readonly=self.readonly, lock=lock, readahead=False)
        except lmdb.Error as exc:
            raise _full_disk(exc, f"opening {self.path}", self.path) or StorageError(
                f"cannot open {self.path}: {exc}") from None
        # Reading a page past the end of a truncated file is a SIGBUS, not an exception.
        need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        have = os.path.getsize(data) if os.path.exists(data) else 0
        if have < need:
            env.close()
            raise StorageError(f"{data} is truncated: {have} bytes, its last page ends at {need}")
        return env

    def _close_env(self) -> None:
        with _ENVS_LOCK:
            self._shared.users -= 1
            if self._shared.users == 0:
                _ENVS.pop(self.path, None)
                self.env.close()

    def _check_schema(self) -> str | None:
        """Check the stored schema; a writer marks a new log and gives it its identity. Return it."""
        with self.env.begin() as txn:
            stored = txn.get(b"schema", db=self.meta)
            identity = txn.get(b"identity", db=self.meta)
        #: The schema the log was written with (1: no stream index yet; a writer builds it).
        self.schema = codec.LOG_SCHEMA if stored is None else int(stored)
        if self.schema > codec.LOG_SCHEMA:
            raise SchemaVersionError(f"{self.path} was written with schema version {self.schema}; "
                                     f"this tasklog reads {codec.LOG_SCHEMA}")
        if self.readonly or (stored is not None and identity is not None):
            return None if identity is None else bytes(identity).decode()
        # A log made by an older tasklog gets its identity from the first writer that opens it.
        new = str(uuid.uuid4())

        def mark(txn: lmdb.Transaction) -> str:
            # A new log is schema 2 at once; an older log keeps its number until it is indexed.
            txn.put(b"schema", str(self.schema).encode(), db=self.meta, overwrite=stored is None)
            if not txn.put(b"identity", new.encode(), db=self.meta, overwrite=False):
                return bytes(txn.get(b"identity", db=self.meta) or b"").decode()  # another writer was first
            return new
        fresh: str = self.write(mark)  # a write like any: a full disk is StorageFullError (issue 20)
        self._write_marker(self.schema, fresh)
        return fresh

    def _write_marker(self, schema: int, identity: str | None) -> None:
        marker = os.path.join(self.path, MARKER)
        tmp = f"{marker}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"format": "tasklog", "schema": schema, "identity": identity}, f)
            os.replace(tmp, marker)
        except OSError as exc:  # a full disk raised a bare OSError from `tasklog demo` (issue 20)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise file_error(exc, f"cannot write {marker}") from None

    # -- the stream index -------------------------------------------------------------------

    @property
    def indexed(self) -> bool:
        """Whether the log has its stream index (schema 2)."""
        return self.schema >= 2 and self.streams is not None

    @staticmethod
    def index_rows(written: Iterable[tuple[int, Event]]) -> list[tuple[bytes, bytes]]:
        """The stream-index rows of some events (built outside the write transaction if it can be)."""
        pack = codec.pack_key
        rows: list[tuple[bytes, bytes]] = []
        append = rows.append
        # A plain loop with the one-task events inline: this runs once per appended event. Not
        # sorted: sorting 100k rows cost more (0.10 s) than it saved LMDB's inserts (0.07 s all).
        for seq, ev in written:
            cls = ev.__class__
            if cls is Drop or cls is Resubmit:
                for m in task_ids(ev):
                    append((m.encode(), pack(seq)))
            else:
                append((ev[0].encode(), pack(seq)))  # type: ignore[union-attr]
        return rows

    def index(self, txn: lmdb.Transaction, rows: list[tuple[bytes, bytes]]) -> None:
        """Add events to the streams of the tasks they name, in the transaction that writes them."""
        if rows:
            txn.cursor(db=self.streams).putmulti(rows, dupdata=True)

    def unindex(self, txn: lmdb.Transaction, seq: int, raw: bytes) -> None:
        """Remove event ``seq`` (stored as ``raw``) from its tasks' streams."""
        try:
            event = codec.decode(raw, seq)
        except CorruptEventError:
            return  # its streams cannot be known: verify reports the entries left pointing at nothing
        key = codec.pack_key(seq)
        for m in task_ids(event):
            txn.delete(m.encode(), key, db=self.streams)

    def stream(self, txn: lmdb.Transaction, msg_id: str) -> list[int]:
        """The sequence numbers of the events naming ``msg_id``, in order."""
        cur = txn.cursor(db=self.streams)
        if not cur.set_key(msg_id.encode()):
            return []
        return [codec.unpack_key(v) for v in cur.iternext_dup()]

    def build_index(self, progress: Callable[[int], None] | None = None) -> int:
        """Index a schema-1 log (resuming where an interrupted build stopped); mark it schema 2."""
        done = 0
        while True:
            count = self.write(self._index_chunk)
            if not count:
                break
            done += count
            if progress is not None:
                progress(count)
        self.write(lambda txn: txn.put(b"schema", str(codec.LOG_SCHEMA).encode(), db=self.meta))
        self.schema = codec.LOG_SCHEMA
        self._write_marker(self.schema, self.identity)
        return done

    def _index_chunk(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(b"indexed_to", db=self.meta)
        nxt = int(raw) + 1 if raw is not None else 1
        cur = txn.cursor(db=self.events)
        if not cur.set_range(codec.pack_key(nxt)):
            return 0
        batch: list[tuple[int, Event]] = []
        for key, value in cur:
            seq = codec.unpack_key(key)
            with contextlib.suppress(CorruptEventError):  # verify names it; its streams cannot be known
                batch.append((seq, codec.decode(bytes(value), seq)))
            nxt = seq
            if len(batch) >= _INDEX_CHUNK:
                break
        self.index(txn, self.index_rows(batch))
        txn.put(b"indexed_to", str(nxt).encode(), db=self.meta)
        return len(batch) or 1

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
        self._close_env()
        self._release_lock()
        _OPEN.discard(self)

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
                raise _storage_error(exc, "commit", self.path) from None

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

    # -- what every writer shares ----------------------------------------------------------

    def stamp(self, txn: lmdb.Transaction, first_seq: int) -> None:
        """Record the time of the commit whose first event is ``first_seq`` ("what did the hub know at T")."""
        txn.put(codec.pack_key(first_seq), _TIME.pack(time.time()), db=self.times)

    def commits(self, txn: lmdb.Transaction, start: int, stop: int) -> list[tuple[int, float]]:
        """The commits that wrote events start <= seq < stop: ``(first seq, UNIX time)``, in order;
        the first is the commit holding ``start`` (it may begin before it)."""
        cur = txn.cursor(db=self.times)
        out: list[tuple[int, float]] = []
        if not self._to_commit_of(cur, start):
            cur.first()  # ``start`` is before every recorded commit
        for key, raw in cur:
            first = codec.unpack_key(key)
            if first >= stop:
                break
            out.append((first, _TIME.unpack(raw)[0]))
        return out

    def put_verbatim(self, events: list[tuple[int, bytes]], commits: list[tuple[int, float]],
                     identity: str | None = None, fork: str | None = None) -> None:
        """Write events at their own sequence numbers with their own commit times (a restore).

        The first batch of an empty log may start past 1 (the original had been pruned) and gives
        the log the original's ``identity`` (its projections and its stream then know it as the
        original) and this copy's ``fork``; every later one must continue the log densely.
        Indexed like any append, in one transaction.
        """
        decoded = [(seq, codec.decode(raw, seq)) for seq, raw in events]

        def body(txn: lmdb.Transaction) -> None:
            cur = txn.cursor(db=self.events)
            last = codec.unpack_key(cur.key()) if cur.last() else 0
            first = events[0][0]
            if last == 0 and self.last_key(txn, self.times) == 0:
                if first > 1:
                    txn.put(b"start_seq", str(first).encode(), db=self.meta)
                if identity is not None:
                    txn.put(b"identity", identity.encode(), db=self.meta)
                if fork is not None:
                    txn.put(b"fork", fork.encode(), db=self.meta)
            elif first != last + 1:
                raise CommitError(f"event {first} does not follow the log's last event {last}")
            elif identity is not None and identity != self.identity:
                raise CommitError(f"the log is {self.identity}'s restore, not {identity}'s")
            put_run(cur, [(codec.pack_key(seq), raw) for seq, raw in events])
            for at, when in commits:
                txn.put(codec.pack_key(at), _TIME.pack(when), db=self.times)
            if self.streams is not None:
                self.index(txn, self.index_rows(decoded))
        self.write(body)
        if identity is not None and identity != self.identity:
            self.identity = identity
            self._write_marker(self.schema, identity)

    @property
    def fork(self) -> str | None:
        """The fork id a restore gave this copy of a log (None: the log as it was created)."""
        with self.reader() as txn:
            raw = txn.get(b"fork", db=self.meta)
        return None if raw is None else bytes(raw).decode()

    def commit_time_seq(self, txn: lmdb.Transaction, limit: float) -> int | None:
        """The last event committed at or before the UNIX time ``limit``; None when every commit was."""
        for key, raw in txn.cursor(db=self.times):
            if _TIME.unpack(raw)[0] > limit:
                return codec.unpack_key(key) - 1
        return None

    def committed_at(self, txn: lmdb.Transaction, seq: int) -> float | None:
        """The UNIX time of the commit that wrote event ``seq`` (None: no time recorded for it)."""
        cur = txn.cursor(db=self.times)
        return float(_TIME.unpack(cur.value())[0]) if self._to_commit_of(cur, seq) else None

    @staticmethod
    def _to_commit_of(cur: lmdb.Cursor, seq: int) -> bool:
        """Put ``cur`` (on the times database) on the commit that wrote ``seq``; False if none did."""
        # Commits are keyed by their first event: the commit of ``seq`` is the last key <= seq.
        if cur.set_range(codec.pack_key(seq)) and codec.unpack_key(cur.key()) == seq:
            return True
        return bool(cur.prev() if cur.key() else cur.last()) and codec.unpack_key(cur.key()) <= seq

    @staticmethod
    def last_key(txn: lmdb.Transaction, db: Any) -> int:
        """The last sequence number in ``db`` (0 when empty)."""
        cur = txn.cursor(db=db)
        return codec.unpack_key(cur.key()) if cur.last() else 0

    def drop_front(self, start: int, stop: int, keep: Collection[int] = ()) -> int:
        """Delete events start <= seq < stop and make ``stop`` the log's start, in one transaction.

        The events numbered in ``keep`` move to the kept database instead of going (a snapshot's
        records refer to their buffers); every deleted event leaves its tasks' streams.
        """

        def body(txn: lmdb.Transaction) -> int:
            cur = txn.cursor(db=self.events)
            n = 0
            if cur.set_range(codec.pack_key(start)):
                while cur.key() and codec.unpack_key(cur.key()) < stop:
                    seq, raw = codec.unpack_key(cur.key()), bytes(cur.value())
                    if self.streams is not None:
                        self.unindex(txn, seq, raw)
                    if seq in keep:
                        txn.put(codec.pack_key(seq), raw, db=self.kept)
                    cur.delete()
                    n += 1
            # The start moves with the deletions: a prune killed between transactions leaves a sound log.
            txn.put(b"start_seq", str(stop).encode(), db=self.meta)
            return n
        removed: int = self.write(body)
        return removed

    def release_kept(self, keep: Collection[int]) -> int:
        """Delete the kept events not numbered in ``keep`` (no snapshot refers to them any more)."""

        def body(txn: lmdb.Transaction) -> int:
            cur = txn.cursor(db=self.kept)
            gone = [key for key in cur.iternext(values=False) if codec.unpack_key(key) not in keep]
            for key in gone:
                txn.delete(key, db=self.kept)
            return len(gone)
        released: int = self.write(body) if self.kept is not None else 0
        return released
