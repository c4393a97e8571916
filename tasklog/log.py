"""The append-only event log: one LMDB key per event, group commit, three durability modes.

Writers in ``sync`` and ``process`` mode commit as a group: the first caller to
find no commit in flight becomes the leader and writes everything queued so far
in one transaction and one sync, while the others wait for it. In ``async``
mode a background thread commits every ``commit_interval`` seconds; the caller
gets its sequence number at once, which is only possible because an async log
holds an exclusive writer lock on the directory (no other process can take a
number in between).
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import lmdb

from . import codec
from .errors import (
    CommitError,
    FlushTimeoutError,
    InterfaceError,
    LogBusyError,
    LogClosedError,
    NotATaskLogError,
    ReadOnlyLogError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
)
from .events import Event, construct, utc, validate

__all__ = ["TaskLog", "LogView", "Receipt", "DURABILITY", "MARKER", "Listener", "open_here"]

MARKER = "TASKLOG"
_LMDB_FILES = ("data.mdb", "lock.mdb")
_OWN_FILES = frozenset({MARKER, "writer.lock", "users.lock", *_LMDB_FILES})
_MIB = 1 << 20
_READ_CHUNK = 2048
# Past a few thousand events a transaction stops getting cheaper per event and LMDB starts
# spilling dirty pages: a 95k-event async batch took 3x longer per event than 8k batches.
_MAX_BATCH = 8192
_TIME = struct.Struct(">d")
_LINGER = 0.0002  # seconds a group-commit leader waits for the last batch's callers: half a sync


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

Listener = Callable[[Sequence[tuple[int, Event]]], None]


class Receipt(int):
    """The sequence number of an async append, with a handle to wait until it is durable."""

    _log: TaskLog
    _epoch: int

    def wait(self, timeout: float | None = None) -> int:
        """Block until this event is committed and synced; raise if its commit failed."""
        self._log._wait_durable(int(self), self._epoch, timeout)
        return int(self)

    @property
    def done(self) -> bool:
        """True once the event is committed (or its commit failed)."""
        return self._log._settled(int(self), self._epoch)


class _Batch:
    __slots__ = ("callers", "done", "error", "items", "seqs")

    def __init__(self) -> None:
        self.callers = 0
        self.items: list[tuple[bytes, bytes | None, Event]] = []
        self.seqs: list[int] = []
        self.error: BaseException | None = None
        self.done = False


class _SharedEnv:
    __slots__ = ("env", "flags", "gate", "users")

    def __init__(self, env: lmdb.Environment, flags: tuple[bool, bool, bool]) -> None:
        self.env = env
        self.gate = _Gate()
        self.flags = flags
        self.users = 1


_ENVS: dict[str, _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()
_OPEN: weakref.WeakSet[TaskLog] = weakref.WeakSet()


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
    for log in list(_OPEN):
        log._leave_to_parent()


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
        if version > codec.SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path} was written with schema version {version}; this tasklog reads {codec.SCHEMA_VERSION}")
        return "log"
    if "data.mdb" in names:
        raise NotATaskLogError(f"{path} is not a tasklog: it holds another LMDB environment")
    if names - _OWN_FILES:
        raise NotATaskLogError(f"{path} is not a tasklog: the directory is not empty")
    return "empty"


def _writable(path: str) -> bool:
    """Whether this process may create and change files in ``path`` (False on a read-only mount)."""
    return os.access(path, os.W_OK)



def _storage_error(exc: lmdb.Error, doing: str) -> StorageError:
    # py-lmdb raises DiskError for ENOSPC, MapFullError when the map (not the disk) is full.
    if isinstance(exc, (lmdb.MapFullError, lmdb.DiskError)):
        return StorageFullError(f"{doing} failed: no space left ({exc})")
    return CommitError(f"{doing} failed: {exc}")


class TaskLog:
    """An append-only log of task events in an LMDB directory."""

    def __init__(self, path: str, durability: str = "sync", *, commit_interval: float = 0.002,
                 queue_size: int = 100_000, map_size: int = 64 * _MIB, readonly: bool = False,
                 max_map_size: int | None = None, create: bool = True, lock_timeout: float = 0.0) -> None:
        if durability not in DURABILITY:
            raise InterfaceError(f"unknown durability {durability!r}; choose one of {sorted(DURABILITY)}")
        if commit_interval <= 0 or queue_size < 1 or lock_timeout < 0:
            raise InterfaceError("commit_interval must be > 0, queue_size >= 1 and lock_timeout >= 0")
        self.path = os.path.abspath(path)
        self.durability = durability
        self.readonly = readonly
        self.commit_interval = commit_interval
        self.queue_size = queue_size
        #: Largest map the log may grow to (None: as large as the disk allows). Raise it to go on.
        self.max_map_size = max_map_size
        self._mode = DURABILITY[durability]
        self._closed, self._why_closed = True, "did not open"  # until it has
        self._lockfile: int | None = None
        self._userlock: int | None = None
        # Every step that takes something registers its undo: a failed open leaves nothing behind
        # (not even the directory it made) and holds nothing.
        with ExitStack() as undo:
            self._take_directory(undo, create, lock_timeout)
            self._shared = self._open_env(map_size)
            undo.callback(self._close_env)
            self._env = self._shared.env
            self._gate = self._shared.gate
            self._open_dbs()
            self.identity: str | None = self._check_schema()
            undo.pop_all()
        self._why_closed = "is closed"
        # A plain Lock under the Condition: entering it directly is a C call, which the async
        # hot path uses (Condition.__enter__ is Python-level and showed up in profiles).
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._closed = False
        self._listeners: list[Listener] = []
        self.listener_errors: list[BaseException] = []
        # group commit (sync/process): the batch being filled, and whether a leader is writing
        self._filling = _Batch()
        self._committing = False
        self._lingering = False
        self._last_callers = 1
        # async: numbers are handed out at call time; durable_seq trails them
        self._pending: list[tuple[int, bytes, bytes | None, Event]] = []
        self._pending_keys: dict[bytes, int] = {}
        self._durable_seq = self.last_seq
        self._next_seq = self._durable_seq + 1
        self._epoch = 0
        self._failed: dict[int, tuple[BaseException, int]] = {}
        self._flush_wanted = False
        self._thread: threading.Thread | None = None
        if self._mode.background and not readonly:
            self._thread = threading.Thread(target=self._commit_loop, name="tasklog-commit", daemon=True)
            self._thread.start()
        _OPEN.add(self)

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(cls, path: str, durability: str = "sync", **options: Any) -> TaskLog:
        """Create or open the log directory at ``path``."""
        return cls(path, durability, **options)

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
                fcntl.flock(fd, self._mode.lock | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        other = "an async writer" if self._mode.lock == fcntl.LOCK_SH else "another writer"
        waited = f" (waited {timeout:g} s)" if timeout > 0 else ""
        raise LogBusyError(f"{self.path} is held by {other}{waited}; an async log needs the directory "
                           "to itself, sync/process logs can share it")

    def _open_dbs(self) -> None:
        create = not self.readonly
        try:
            self._events = self._env.open_db(b"events", create=create)
            self._keys = self._env.open_db(b"keys", create=create)
            self._meta = self._env.open_db(b"meta", create=create)
            # Commit times, keyed by each commit's first sequence number: "what did the hub know at T".
            self._times = self._env.open_db(b"times", create=create)
        except lmdb.Error as exc:
            raise StorageError(f"{self.path} is damaged or incomplete: {exc}") from None

    def _open_env(self, map_size: int) -> _SharedEnv:
        # LMDB forbids opening one environment twice in a process: share it, counted.
        with _ENVS_LOCK:
            shared = _ENVS.get(self.path)
            if shared is not None:
                if not self.readonly and shared.flags != (self._mode.sync, self._mode.metasync, False):
                    raise LogBusyError(f"{self.path} is already open in this process read-only or with "
                                       "other durability settings; share that TaskLog")
                shared.users += 1
                return shared
            shared = _SharedEnv(self._new_env(map_size), (self._mode.sync, self._mode.metasync, self.readonly))
            _ENVS[self.path] = shared
            return shared

    def _new_env(self, map_size: int) -> lmdb.Environment:
        data = os.path.join(self.path, "data.mdb")
        size = max(map_size, 2 * os.path.getsize(data)) if os.path.exists(data) else map_size
        # A log on a read-only filesystem (an archive, a backup, a snapshot mount) cannot take
        # LMDB's reader table in lock.mdb; nothing can write it there either, so none is needed.
        lockfile = os.path.join(self.path, "lock.mdb")
        lock = os.access(lockfile, os.W_OK) if os.path.exists(lockfile) else _writable(self.path)
        try:
            env = lmdb.open(self.path, map_size=size, max_dbs=4, max_readers=512, subdir=True,
                            sync=self._mode.sync, metasync=self._mode.metasync, writemap=False,
                            readonly=self.readonly, lock=lock, readahead=False)
        except lmdb.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from None
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
                self._env.close()

    def _check_schema(self) -> str | None:
        """Check the stored schema; a writer marks a new log and gives it its identity. Return it."""
        with self._env.begin() as txn:
            stored = txn.get(b"schema", db=self._meta)
            identity = txn.get(b"identity", db=self._meta)
        if stored is not None and int(stored) > codec.SCHEMA_VERSION:
            raise SchemaVersionError(f"{self.path} was written with schema version {int(stored)}; "
                                     f"this tasklog reads {codec.SCHEMA_VERSION}")
        if self.readonly or (stored is not None and identity is not None):
            return None if identity is None else bytes(identity).decode()
        # A log made by an older tasklog gets its identity from the first writer that opens it.
        fresh = str(uuid.uuid4())
        with self._env.begin(write=True) as txn:
            txn.put(b"schema", str(codec.SCHEMA_VERSION).encode(), db=self._meta, overwrite=stored is None)
            if not txn.put(b"identity", fresh.encode(), db=self._meta, overwrite=False):
                fresh = bytes(txn.get(b"identity", db=self._meta) or b"").decode()  # another writer was first
        marker = os.path.join(self.path, MARKER)
        tmp = f"{marker}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"format": "tasklog", "schema": codec.SCHEMA_VERSION, "identity": fresh}, f)
        os.replace(tmp, marker)
        return fresh

    def _leave_to_parent(self) -> None:
        """In a forked child: drop the inherited lock descriptors (the parent's locks stay held
        by the parent alone, and go with it) and refuse every further use."""
        for fd in (self._lockfile, self._userlock):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)  # not flock(LOCK_UN): that would release the parent's lock
        self._lockfile = self._userlock = None
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._thread = None
        self._closed = True
        self._why_closed = "belongs to the process that opened it; a forked child must open it again"

    def _release_lock(self) -> None:
        if self._lockfile is not None:
            os.close(self._lockfile)  # closing the descriptor drops the flock
            self._lockfile = None
        if self._userlock is not None:
            os.close(self._userlock)
            self._userlock = None
            self._lockfile = None

    def __enter__(self) -> TaskLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit everything queued, then release the directory."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            # Followers still holding queued items become leaders and commit them first.
            while self._committing or self._filling.items:
                self._cond.wait()
        self._close_env()
        self._release_lock()
        _OPEN.discard(self)

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self.path} {self._why_closed}")
        if self.readonly:
            raise InterfaceError(f"log {self.path} was opened read-only")

    # -- listeners (live projections) -----------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each committed batch, before its appends return."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def _notify(self, written: Sequence[tuple[int, Event]]) -> None:
        # The events are durable already: a failing listener must not fail the append.
        for listener in list(self._listeners):
            try:
                listener(written)
            except Exception as exc:
                self.listener_errors.append(exc)

    # -- appending ---------------------------------------------------------

    # The typed appenders take the fields of their event class by keyword: the classes in
    # tasklog.events declare each field once, and an unknown field is an EventError naming it.

    def submit(self, msg_id: str, *, key: str | None = None, **fields: Any) -> int:
        """Append a submit event (fields of :class:`Submit`: header, content, metadata, buffers, ...)."""
        return self._one(construct("submit", msg_id=msg_id, **fields), key)

    def start(self, msg_id: str, engine_uuid: str | None = None, *, key: str | None = None, **fields: Any) -> int:
        """Append a start event: the task reached an engine (fields of :class:`Start`)."""
        return self._one(construct("start", msg_id=msg_id, engine_uuid=engine_uuid, **fields), key)

    def output(self, msg_id: str, name: str = "stdout", *, key: str | None = None, **fields: Any) -> int:
        """Append an output event: a stdout/stderr chunk (``text=``) or a rich output (``content=``)."""
        return self._one(construct("output", msg_id=msg_id, name=name, **fields), key)

    def complete(self, msg_id: str, *, key: str | None = None, **fields: Any) -> int:
        """Append a complete event: the engine's reply reached the hub (fields of :class:`Complete`)."""
        return self._one(construct("complete", msg_id=msg_id, **fields), key)

    def resubmit(self, msg_id: str, new_msg_id: str | None = None, *, key: str | None = None, **fields: Any) -> int:
        """Append a resubmit event; the new msg_id is a fresh uuid unless given (fields of :class:`Resubmit`)."""
        return self._one(construct("resubmit", msg_id=msg_id, new_msg_id=new_msg_id, **fields), key)

    def drop(self, msg_ids: Iterable[str], *, key: str | None = None) -> int:
        """Append a drop tombstone for ``msg_ids``."""
        ids = [msg_ids] if isinstance(msg_ids, str) else list(msg_ids)
        return self._one(construct("drop", msg_ids=ids), key)

    def annotate(self, msg_id: str, fields: dict[str, Any] | None = None, *, key: str | None = None,
                 **more: Any) -> int:
        """Append an annotate event setting other record fields (label, user keys)."""
        return self._one(construct("annotate", msg_id=msg_id, fields={**(fields or {}), **more}), key)

    def append(self, event: Event, *, key: str | None = None) -> int:
        """Append one event; with ``key``, a retry returns the original sequence number."""
        return self._one(event, key)

    def append_many(self, events: Iterable[Event], *, keys: Sequence[str | None] | None = None) -> list[int]:
        """Append events all-or-nothing in one commit; return their sequence numbers."""
        items: list[tuple[bytes, bytes | None, Event]] = []
        encode = codec.encode
        for e in events:
            ev = validate(e)
            items.append((encode(ev), None, ev))
        if keys is not None:
            if len(keys) != len(items):
                raise InterfaceError(f"append_many got {len(items)} events but {len(keys)} keys")
            return self._enqueue([(payload, _key(k), ev) for (payload, _, ev), k in zip(items, keys)])
        return self._enqueue(items)

    def append_event(self, event: Event) -> tuple[int, Event]:
        """Append one event; return its sequence number and the validated event a fold must see."""
        ev = validate(event)
        return self._one_checked(ev, None), ev

    def _one(self, event: Event, key: str | None) -> int:
        return self._one_checked(validate(event), key)

    def _one_checked(self, ev: Event, key: str | None) -> int:
        payload = codec.encode(ev)
        if key is None and self._mode.background:
            receipt = self._enqueue_async_one(payload, ev)
            if receipt is not None:
                return receipt
        return self._enqueue([(payload, _key(key), ev)])[0]

    def _enqueue_async_one(self, payload: bytes, event: Event) -> Receipt | None:
        """The hub's hot path: one keyless event, queue not full. None means: take the general path."""
        with self._mutex:
            pending = self._pending
            if self._closed or len(pending) >= self.queue_size:
                return None
            seq = self._next_seq
            self._next_seq = seq + 1
            pending.append((seq, payload, None, event))
            if len(pending) == 1:
                self._cond.notify_all()  # wake the committer on the first item of a batch
            epoch = self._epoch
        receipt = Receipt(seq)
        receipt._log, receipt._epoch = self, epoch
        return receipt

    def _enqueue(self, items: list[tuple[bytes, bytes | None, Event]]) -> list[int]:
        if not items:
            return []
        if self._mode.background:
            return self._enqueue_async(items)
        return self._group_commit(items)

    # -- sync / process: leader-follower group commit ----------------------

    def _group_commit(self, items: list[tuple[bytes, bytes | None, Event]]) -> list[int]:
        with self._cond:
            self._check_open()
            batch = self._filling
            first = len(batch.items)
            batch.items.extend(items)
            batch.callers += 1
            if self._lingering:
                self._cond.notify_all()
            while not batch.done:
                if self._committing:
                    self._cond.wait()
                    continue
                self._committing = True
                self._linger(batch)
                self._filling = _Batch()
                self._last_callers = batch.callers
                self._cond.release()
                try:
                    self._commit_batch(batch)
                finally:
                    self._cond.acquire()
                    self._committing = False
                    batch.done = True
                    self._cond.notify_all()
        if batch.error is not None:
            raise batch.error
        return batch.seqs[first:first + len(items)]

    def _linger(self, batch: _Batch) -> None:
        # The callers of the last batch are only now returning from it; a leader that commits at
        # once commits alone and every other batch holds one event (measured: 8 threads averaged
        # 4 events per commit). Waiting a fraction of a sync for them to rejoin fills the batch.
        if batch.callers >= self._last_callers:
            return
        self._lingering = True
        deadline = time.monotonic() + _LINGER
        while batch.callers < self._last_callers:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        self._lingering = False

    def _commit_batch(self, batch: _Batch) -> None:
        try:
            batch.seqs, written = self._write(lambda txn: self._stamped(txn, self._put_numbering(txn, batch.items)))
        except StorageError as exc:
            batch.error = exc
            return
        if written and self._listeners:
            self._notify(written)

    def _stamped(self, txn: lmdb.Transaction, result: tuple[list[int], list[tuple[int, Event]]]
                 ) -> tuple[list[int], list[tuple[int, Event]]]:
        if result[1]:
            txn.put(codec.pack_key(result[1][0][0]), _TIME.pack(time.time()), db=self._times)
        return result

    def _put_numbering(self, txn: lmdb.Transaction, items: list[tuple[bytes, bytes | None, Event]]
                       ) -> tuple[list[int], list[tuple[int, Event]]]:
        cur = txn.cursor(db=self._events)
        last = codec.unpack_key(cur.key()) if cur.last() else 0
        if all(key is None for _, key, _ in items):
            seqs = list(range(last + 1, last + 1 + len(items)))
            self._put_run(cur, [(codec.pack_key(s), payload) for s, (payload, _, _) in zip(seqs, items)])
            return seqs, [(s, ev) for s, (_, _, ev) in zip(seqs, items)]
        seqs = []
        written: list[tuple[int, Event]] = []
        seen: dict[bytes, int] = {}
        for payload, key, event in items:
            if key is not None:
                hit = seen.get(key)
                if hit is None:
                    raw = txn.get(key, db=self._keys)
                    hit = codec.unpack_key(raw) if raw is not None else None
                if hit is not None:
                    seqs.append(hit)
                    continue
            last += 1
            self._put(cur, txn, last, payload, key)
            if key is not None:
                seen[key] = last
            seqs.append(last)
            written.append((last, event))
        return seqs, written

    @staticmethod
    def _put_run(cur: lmdb.Cursor, pairs: list[tuple[bytes, bytes]]) -> None:
        # putmulti(append=True) skips a key that does not sort last instead of raising: compare counts.
        consumed, added = cur.putmulti(pairs, append=True)
        if consumed != len(pairs) or added != len(pairs):
            raise CommitError(f"only {added} of {len(pairs)} events went past the end of the log")

    def _put(self, cur: lmdb.Cursor, txn: lmdb.Transaction, seq: int, payload: bytes, key: bytes | None) -> None:
        # put(append=True) reports an out-of-order key by returning False, not raising.
        if not cur.put(codec.pack_key(seq), payload, append=True):
            raise CommitError(f"sequence number {seq} is not past the end of the log")
        if key is not None:
            txn.put(key, codec.pack_key(seq), db=self._keys)

    def drop_front(self, start: int, stop: int) -> int:
        """Delete events start <= seq < stop and make ``stop`` the log's start, in one transaction."""
        if self.readonly:
            raise InterfaceError(f"log {self.path} was opened read-only")

        def body(txn: lmdb.Transaction) -> int:
            cur = txn.cursor(db=self._events)
            n = 0
            if cur.set_range(codec.pack_key(start)):
                while cur.key() and codec.unpack_key(cur.key()) < stop:
                    cur.delete()
                    n += 1
            # The start moves with the deletions: a prune killed between transactions leaves a sound log.
            txn.put(b"start_seq", str(stop).encode(), db=self._meta)
            return n
        removed: int = self._write(body)
        return removed

    def _write(self, body: Callable[[lmdb.Transaction], Any]) -> Any:
        """Run ``body`` in a write transaction, growing the map and retrying the whole of it."""
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return body(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except StorageError:
                raise
            except lmdb.Error as exc:
                raise _storage_error(exc, "commit") from None

    def _grow(self) -> None:
        with self._gate.exclusive():
            size = self._env.info()["map_size"]
            new = size * 2 if size < 1 << 36 else size + (1 << 36)
            if self.max_map_size is not None:
                if size >= self.max_map_size:
                    raise StorageFullError(f"the log at {self.path} reached max_map_size "
                                           f"({self.max_map_size:,} bytes); nothing of this batch was written")
                new = min(new, self.max_map_size)
            self._env.set_mapsize(new)

    def _adopt_map_size(self) -> None:
        with self._gate.exclusive():
            self._env.set_mapsize(0)

    # -- async: numbers now, commits in the background ---------------------

    def _enqueue_async(self, items: list[tuple[bytes, bytes | None, Event]]) -> list[int]:
        with self._cond:
            self._check_open()
            while len(self._pending) >= self.queue_size:  # back-pressure
                self._flush_wanted = True
                self._cond.notify_all()
                self._cond.wait()
                self._check_open()
            out: list[int] = []
            fresh: dict[bytes, int] = {}
            for payload, key, event in items:
                seq = self._known_key(key, fresh) if key is not None else None
                if seq is None:
                    seq = self._next_seq
                    self._next_seq += 1
                    self._pending.append((seq, payload, key, event))
                    if key is not None:
                        fresh[key] = seq
                r = Receipt(seq)
                r._log, r._epoch = self, self._epoch
                out.append(r)
            self._pending_keys.update(fresh)
            if len(self._pending) == len(items):
                self._cond.notify_all()  # wake the committer on the first item of a batch
            return out

    def _known_key(self, key: bytes, fresh: dict[bytes, int]) -> int | None:
        hit = fresh.get(key) or self._pending_keys.get(key)
        if hit is not None:
            return hit
        with self._reader() as txn:
            raw = txn.get(key, db=self._keys)
        return codec.unpack_key(raw) if raw is not None else None

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                deadline = time.monotonic() + self.commit_interval
                while not (self._closed or self._flush_wanted) and len(self._pending) < _MAX_BATCH:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._pending[:_MAX_BATCH]
                del self._pending[:_MAX_BATCH]
                self._flush_wanted = bool(self._pending)
                self._cond.notify_all()  # room in the queue again
            self._commit_async(batch)

    def _commit_async(self, batch: list[tuple[int, bytes, bytes | None, Event]]) -> None:
        pairs = [(codec.pack_key(seq), payload) for seq, payload, _, _ in batch]

        def body(txn: lmdb.Transaction) -> None:
            # py-lmdb releases the GIL around every put; with a producer thread running, each
            # put then waits for the GIL (8192 puts: 2 ms alone, 630 ms beside a busy thread).
            # Holding the condition parks producers on a lock, so the puts run uncontended;
            # the sync at commit happens after, outside it.
            with self._cond:
                cur = txn.cursor(db=self._events)
                last = codec.unpack_key(cur.key()) if cur.last() else 0
                if last + 1 != batch[0][0]:
                    raise CommitError(f"log end moved to {last} under an async writer")
                self._put_run(cur, pairs)
                txn.put(pairs[0][0], _TIME.pack(time.time()), db=self._times)
                for seq, _, key, _ in batch:
                    if key is not None:
                        txn.put(key, codec.pack_key(seq), db=self._keys)
        try:
            self._write(body)
        except StorageError as exc:
            with self._cond:
                # Every queued number is void now: later events reuse them under a new epoch.
                self._failed[self._epoch] = (exc, self._durable_seq)
                self._epoch += 1
                self._pending = []
                self._pending_keys.clear()
                self._next_seq = self._durable_seq + 1
                self._cond.notify_all()
            return
        if self._listeners:
            self._notify([(seq, ev) for seq, _, _, ev in batch])
        with self._cond:
            self._durable_seq = batch[-1][0]
            for _, _, key, _ in batch:
                if key is not None:
                    self._pending_keys.pop(key, None)
            self._cond.notify_all()

    def _settled(self, seq: int, epoch: int) -> bool:
        with self._cond:
            return epoch in self._failed or (epoch == self._epoch and self._durable_seq >= seq)

    def _wait_durable(self, seq: int, epoch: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if epoch in self._failed:
                    exc, durable = self._failed[epoch]
                    if seq <= durable:
                        return
                    raise exc
                if self._durable_seq >= seq:
                    return
                if self._closed and self._thread is not None and not self._thread.is_alive():
                    raise LogClosedError(f"log {self.path} closed before event {seq} was committed")
                self._flush_wanted = True
                self._cond.notify_all()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise FlushTimeoutError(f"event {seq} not committed within {timeout} s")
                self._cond.wait(left)

    def flush(self, timeout: float | None = None) -> int:
        """Commit and sync everything appended so far; return the last durable sequence number."""
        if not self._mode.background:
            return self.last_seq
        with self._cond:
            target, epoch = self._next_seq - 1, self._epoch
        if target > 0:
            self._wait_durable(target, epoch, timeout)
        return target

    # -- reading -----------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence number of the last committed event (0 when empty)."""
        with self._reader() as txn:
            cur = txn.cursor(db=self._events)
            return codec.unpack_key(cur.key()) if cur.last() else 0

    def seq_at(self, when: datetime) -> int:
        """The last sequence number committed at or before ``when`` (0 if none was)."""
        limit = utc(when).timestamp()
        with self._reader() as txn:
            for key, raw in txn.cursor(db=self._times):
                if _TIME.unpack(raw)[0] > limit:
                    return codec.unpack_key(key) - 1
            cur = txn.cursor(db=self._events)
            return codec.unpack_key(cur.key()) if cur.last() else 0

    @property
    def start_seq(self) -> int:
        """The sequence number the log's events start from (1 unless a prune removed older ones)."""
        with self._reader() as txn:
            raw = txn.get(b"start_seq", db=self._meta)
        return int(raw) if raw is not None else 1

    @property
    def first_seq(self) -> int:
        """The sequence number of the first event still in the log (0 when empty)."""
        with self._reader() as txn:
            cur = txn.cursor(db=self._events)
            return codec.unpack_key(cur.key()) if cur.first() else 0

    @contextmanager
    def _reader(self) -> Iterator[lmdb.Transaction]:
        if self._closed:
            raise LogClosedError(f"log {self.path} {self._why_closed}")
        while True:
            with self._gate.reading():
                try:
                    txn = self._env.begin()
                except lmdb.MapResizedError:
                    txn = None
                if txn is not None:
                    try:
                        yield txn
                    finally:
                        txn.abort()
                    return
            self._adopt_map_size()  # another process grew the map

    @contextmanager
    def view(self) -> Iterator[LogView]:
        """One read transaction: every figure read through the view describes the same moment."""
        with self._reader() as txn:
            yield LogView(txn, self._events, self._meta)

    def read_raw(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield ``(seq, stored bytes)`` for start <= seq < stop, in short read transactions."""
        for chunk in self._raw_chunks(start, stop):
            yield from chunk

    def _raw_chunks(self, start: int, stop: int | None) -> Iterator[list[tuple[int, bytes]]]:
        nxt = max(start, 1)
        seq_of = codec.unpack_key
        while stop is None or nxt < stop:
            chunk: list[tuple[int, bytes]] = []
            with self._reader() as txn:
                cur = txn.cursor(db=self._events)
                if not cur.set_range(codec.pack_key(nxt)):
                    return
                for k, v in cur:
                    seq = seq_of(k)
                    if (stop is not None and seq >= stop) or len(chunk) >= _READ_CHUNK:
                        break
                    chunk.append((seq, bytes(v) if isinstance(v, memoryview) else v))
            if not chunk:
                return
            yield chunk
            nxt = chunk[-1][0] + 1

    def read_chunks(self, start: int = 1, stop: int | None = None) -> Iterator[list[tuple[int, Event]]]:
        """The events of :meth:`read` in lists of a few thousand (a replay's path: no per-event generator)."""
        decode = codec.decode
        for chunk in self._raw_chunks(start, stop):
            yield [(seq, decode(raw, seq)) for seq, raw in chunk]

    def read(self, start: int = 1, stop: int | None = None) -> Iterator[tuple[int, Event]]:
        """Yield ``(seq, event)`` in order for start <= seq < stop, never blocking writers."""
        for chunk in self.read_chunks(start, stop):
            yield from chunk

    def follow(self, start: int | None = None, poll: float = 0.05,
               idle_timeout: float | None = None) -> Iterator[tuple[int, Event]]:
        """Yield events from ``start`` (default: the next one) as they are committed, forever."""
        nxt = self.last_seq + 1 if start is None else start
        idle_since = time.monotonic()
        while True:
            got = False
            for seq, event in self.read(nxt):
                got = True
                nxt = seq + 1
                yield seq, event
            if got:
                idle_since = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                return
            with self._cond:
                # Other processes commit too, so wake on our own commits or after ``poll``.
                self._cond.wait(poll)

    def __iter__(self) -> Iterator[tuple[int, Event]]:
        return self.read()

    def __len__(self) -> int:
        with self._reader() as txn:
            return int(txn.stat(self._events)["entries"])

    def disk_bytes(self) -> int:
        """Bytes the log directory takes on disk."""
        total = 0
        for name in os.listdir(self.path):
            st = os.stat(os.path.join(self.path, name))
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
        return total

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.durability
        return f"<TaskLog {self.path} {state}>"


class LogView:
    """The log as one read transaction sees it (``TaskLog.view()``); valid inside that block only."""

    def __init__(self, txn: lmdb.Transaction, events: Any, meta: Any) -> None:
        self._txn, self._events, self._meta = txn, events, meta

    def _edge(self, last: bool) -> int:
        cur = self._txn.cursor(db=self._events)
        return codec.unpack_key(cur.key()) if (cur.last() if last else cur.first()) else 0

    @property
    def first_seq(self) -> int:
        """The first event still in the log (0 when empty)."""
        return self._edge(False)

    @property
    def last_seq(self) -> int:
        """The last committed event (0 when empty)."""
        return self._edge(True)

    @property
    def start_seq(self) -> int:
        """Where the log's events start (1 unless a prune removed older ones)."""
        raw = self._txn.get(b"start_seq", db=self._meta)
        return int(raw) if raw is not None else 1

    def __len__(self) -> int:
        return int(self._txn.stat(self._events)["entries"])

    def raw(self) -> Iterator[tuple[int, bytes]]:
        """Every ``(seq, stored bytes)`` in order."""
        for key, value in self._txn.cursor(db=self._events):
            yield codec.unpack_key(key), value if isinstance(value, bytes) else bytes(value)


def _key(key: str | bytes | None) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, bytes):
        return key
    if not isinstance(key, str) or not key:
        raise InterfaceError(f"an idempotency key must be a non-empty str, got {key!r:.60}")
    return key.encode()
