"""Retention: snapshot files in the log directory, pruning the events they cover, compaction.

The log core stores snapshots without knowing what they hold (``projections``
writes the folded records); it only guarantees that a snapshot file is whole
and unchanged, and that ``prune`` never removes an event no snapshot covers.

A snapshot file is ``snapshots/snapshot-<seq>.msgpack``: a fixed head (magic,
schema version, sequence number, CRC-32 of the rest) followed by a msgpack
stream whose first object is a header dict and the rest are the items.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from . import codec
from .errors import CorruptSnapshotError, InterfaceError, LogBusyError, SchemaVersionError, file_error
from .log import TaskLog, open_here

__all__ = ["PruneReport", "SNAPSHOT_DIR", "list_snapshots", "write_snapshot",
           "read_snapshot", "check_snapshot", "prune", "compact"]

SNAPSHOT_DIR = "snapshots"
_MAGIC = b"TLSNAP"
_HEAD = struct.Struct(">6sBQI")  # magic, schema version, seq, crc32 of everything after the head
_CHUNK = 1 << 20
# Events deleted per write transaction: each transaction also moves start_seq, so a prune killed
# half-way leaves a smaller but consistent log, and no transaction dirties more pages than LMDB holds.
_PRUNE_CHUNK = 20_000


@dataclass(frozen=True)
class PruneReport:
    """What a prune removed and what it kept."""

    removed: int
    start_seq: int
    snapshot: int
    snapshots_removed: int
    bytes_before: int
    bytes_after: int


def _dir(log: TaskLog) -> str:
    return os.path.join(log.path, SNAPSHOT_DIR)


def _path(log: TaskLog, seq: int) -> str:
    return os.path.join(_dir(log), f"snapshot-{seq:020d}.msgpack")


def list_snapshots(log: TaskLog) -> list[int]:
    """Sequence numbers of the snapshots in the log directory, oldest first."""
    try:
        names = os.listdir(_dir(log))
    except FileNotFoundError:
        return []
    seqs = []
    for name in names:
        if name.startswith("snapshot-") and name.endswith(".msgpack"):
            digits = name[len("snapshot-"):-len(".msgpack")]
            if digits.isdigit():
                seqs.append(int(digits))
    return sorted(seqs)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(log: TaskLog, seq: int, header: dict[str, Any], items: Iterable[Any]) -> str:
    """Write a snapshot of the state at ``seq`` atomically (temp file, fsync, rename); return its path."""
    # A read-only log may take snapshots: they are files beside the LMDB environment, not in it,
    # so a snapshot can be taken while an async hub holds the log.
    if not log.start_seq - 1 <= seq <= log.last_seq:
        raise InterfaceError(f"cannot snapshot at event {seq}: the log holds events "
                             f"{log.start_seq}..{log.last_seq}")
    final = _path(log, seq)
    try:
        os.makedirs(_dir(log), exist_ok=True)
        _write_atomically(final, seq, _chain(header, items))
        _fsync_dir(_dir(log))
    except OSError as exc:
        raise file_error(exc, f"cannot write snapshot {final}") from None
    return final


def _write_atomically(final: str, seq: int, objects: Iterable[Any]) -> None:
    tmp = f"{final}.{os.getpid()}.tmp"
    packer = msgpack.Packer(datetime=True)
    crc = 0
    try:
        with open(tmp, "wb") as f:
            f.write(_HEAD.pack(_MAGIC, codec.SCHEMA_VERSION, seq, 0))
            for obj in objects:
                data = packer.pack(obj)
                crc = zlib.crc32(data, crc)
                f.write(data)
            f.seek(0)
            f.write(_HEAD.pack(_MAGIC, codec.SCHEMA_VERSION, seq, crc))
            f.flush()
            os.fsync(f.fileno())
        # The rename publishes the file whole; a crash before it leaves only a temp file behind.
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _chain(header: dict[str, Any], items: Iterable[Any]) -> Iterator[Any]:
    yield header
    yield from items


def _check(path: str, seq: int) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size or head[:6] != _MAGIC:
                raise CorruptSnapshotError(f"snapshot {path} has no valid head")
            _, version, stored_seq, crc = _HEAD.unpack(head)
            if version > codec.SCHEMA_VERSION:
                raise SchemaVersionError(f"snapshot {path} has schema version {version}; "
                                         f"this tasklog reads {codec.SCHEMA_VERSION}")
            actual = 0
            while chunk := f.read(_CHUNK):
                actual = zlib.crc32(chunk, actual)
    except FileNotFoundError:
        raise InterfaceError(f"there is no snapshot at event {seq}") from None
    if actual != crc or stored_seq != seq:
        raise CorruptSnapshotError(f"snapshot {path} fails its checksum")


def check_snapshot(log: TaskLog, seq: int) -> None:
    """Raise CorruptSnapshotError unless the snapshot at ``seq`` is whole and unchanged."""
    _check(_path(log, seq), seq)


def _stream(path: str) -> Generator[Any, None, None]:
    with open(path, "rb") as f:
        f.seek(_HEAD.size)
        yield from msgpack.Unpacker(f, timestamp=3, strict_map_key=False, max_buffer_size=1 << 31)


def read_snapshot(log: TaskLog, seq: int) -> tuple[dict[str, Any], Iterator[Any]]:
    """The header of the snapshot at ``seq`` and an iterator over its items (checksum checked first)."""
    path = _path(log, seq)
    _check(path, seq)
    stream = _stream(path)
    header = next(stream, None)
    if not isinstance(header, dict):
        stream.close()
        raise CorruptSnapshotError(f"snapshot {path} has no header")
    return header, stream


def prune(log: TaskLog, before: int, progress: Callable[[int], None] | None = None) -> PruneReport:
    """Remove the events before ``before`` that the newest snapshot covers; never the last event.

    A snapshot at S holds the state after event S, so every event up to S may go. Only a
    snapshot at or before ``before`` counts: pruning up to it keeps every state from S on
    rebuildable (time travel included), so nothing a snapshot does not cover goes. The events
    whose buffers the snapshot's records refer to are kept (readable by ``TaskLog.event``)
    until a later snapshot no longer refers to them (their tasks were purged).
    """
    if log.readonly:
        raise InterfaceError(f"log {log.path} was opened read-only")
    start, last = log.start_seq, log.last_seq
    usable = [s for s in list_snapshots(log) if s >= start - 1]
    covered = [s for s in usable if s <= before]
    if not covered:
        raise InterfaceError(f"no snapshot covers any event before {before}: prune needs a snapshot at event "
                             f"{before} or earlier (snapshots: {usable or 'none'}; take one with "
                             "`tasklog snapshot --at SEQ`)")
    base = covered[-1]
    check_snapshot(log, base)
    # Events before ``before`` and up to the snapshot go; the newest event stays (the next
    # sequence number is read from the last key).
    limit = min(base + 1, before, last)
    bytes_before = log.disk_bytes()
    keep = _keeps(log, base)
    removed = _delete_front(log, start, limit, keep, progress)
    log.release_kept(keep)  # after the deletions: a prune killed half-way has lost nothing
    dropped = 0
    for old in list_snapshots(log):
        if old < base:
            os.unlink(_path(log, old))
            dropped += 1
    return PruneReport(removed, log.start_seq, base, dropped, bytes_before, log.disk_bytes())


def _keeps(log: TaskLog, seq: int) -> frozenset[int]:
    """The events the snapshot at ``seq`` needs kept past a prune (its records' buffers)."""
    header, items = read_snapshot(log, seq)
    items.close()  # type: ignore[attr-defined]
    return frozenset(int(s) for s in header.get("keeps", ()))


def _delete_front(log: TaskLog, start: int, limit: int, keep: frozenset[int],
                  progress: Callable[[int], None] | None) -> int:
    removed = 0
    nxt = start
    while nxt < limit:
        upto = min(nxt + _PRUNE_CHUNK, limit)

        done = log.drop_front(nxt, upto, keep)
        removed += done
        nxt = upto
        if progress is not None:
            progress(done)
    return removed


def compact(path: str) -> tuple[int, int]:
    """Rewrite ``data.mdb`` without its free pages; the log must not be open anywhere. (before, after) bytes."""
    path = os.path.abspath(path)
    TaskLog(path, readonly=True).close()  # the usual checks: a tasklog, a schema we read
    if open_here(path):
        raise LogBusyError(f"{path} is open in this process; close it before compacting")
    fd = os.open(os.path.join(path, "users.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LogBusyError(f"{path} is open in another process; compaction needs it to itself") from None
        return _compact_locked(path)
    finally:
        os.close(fd)


def _compact_locked(path: str) -> tuple[int, int]:
    data = os.path.join(path, "data.mdb")
    before = os.path.getsize(data)
    tmpdir = os.path.join(path, f".compact-{os.getpid()}")
    shutil.rmtree(tmpdir, ignore_errors=True)
    os.mkdir(tmpdir)
    try:
        env = lmdb.open(path, max_dbs=4, readonly=True, lock=True, map_size=max(before, 1 << 20))
        try:
            env.copy(tmpdir, compact=True)
        finally:
            env.close()
        fd = os.open(os.path.join(tmpdir, "data.mdb"), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(os.path.join(tmpdir, "data.mdb"), data)
        _fsync_dir(path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return before, os.path.getsize(data)
