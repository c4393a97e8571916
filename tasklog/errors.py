"""One exception hierarchy for tasklog, rooted at :class:`TaskLogError`.

The projection layer adds its own branches (``projections.errors``: ``QueryError``,
``ProjectionError``) under the same root; the log core knows nothing of them.

Modelled on PEP 249: callers catch the root, or one branch, and each leaf
carries a hint saying what to do about it.
"""

from __future__ import annotations

import errno

__all__ = [
    "TaskLogError",
    "InterfaceError",
    "EventError",
    "EncodeError",
    "LogClosedError",
    "StorageError",
    "NotATaskLogError",
    "SchemaVersionError",
    "CorruptEventError",
    "CorruptSnapshotError",
    "LogBusyError",
    "ReadOnlyLogError",
    "StorageFullError",
    "CommitError",
    "FlushTimeoutError",
    "MissingEventError",
    "MissingExtraError",
    "StreamError",
    "StreamServerError",
]


class TaskLogError(Exception):
    """Root of every error tasklog raises on purpose."""

    hint = ""

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} ({self.hint})" if self.hint and self.hint not in msg else msg


class InterfaceError(TaskLogError):
    """The caller used the API wrongly: bad arguments, closed objects."""


class EventError(InterfaceError, ValueError):
    """An event is malformed: missing or mistyped field, unknown type."""

    def __init__(self, event_type: str, field: str | None, problem: str) -> None:
        self.event_type = event_type
        self.field = field
        where = f"{event_type}.{field}" if field else event_type
        super().__init__(f"invalid {where}: {problem}")


class EncodeError(EventError):
    """An event holds a value msgpack cannot encode."""


class MissingExtraError(InterfaceError, ImportError):
    """An optional feature needs a package that is not installed (its extra names it)."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(f"{feature} needs {package}, which is not installed: pip install 'tasklog[{extra}]'")


class LogClosedError(InterfaceError):
    """The log was used after close()."""

    hint = "open the log again with TaskLog.open()"


class StorageError(TaskLogError):
    """The storage under the log is not what it should be."""

    #: Set on what an async log's flush() or close() raises for events failed commits never wrote:
    #: how many, and the first and last number they held (later events reuse those numbers).
    lost = 0
    lost_range = (0, 0)


class NotATaskLogError(StorageError):
    """The path exists but is not a tasklog directory; it was left untouched."""


class SchemaVersionError(StorageError):
    """The log (or one event) was written by a newer tasklog."""

    hint = "upgrade tasklog to read this log"


class CorruptEventError(StorageError):
    """An event failed its checksum or could not be decoded."""

    def __init__(self, seq: int, problem: str) -> None:
        self.seq = seq
        super().__init__(f"event {seq} is corrupt: {problem}")


class MissingEventError(StorageError):
    """An event asked for by number is not in the log: pruned (and kept by no snapshot), or never committed."""

    def __init__(self, seq: int, problem: str, *, pruned: bool = True) -> None:
        self.seq = seq
        super().__init__(f"event {seq} {problem}")
        if not pruned:  # past the end: the pruning hint only misled (F6)
            self.hint = ""

    hint = "take snapshots before pruning: prune keeps the events a snapshot's records still need"


class CorruptSnapshotError(StorageError):
    """A snapshot file is truncated or fails its checksum."""

    hint = "delete the file; replay falls back to an older snapshot or the log"


class LogBusyError(StorageError):
    """Another process holds the log in a mode that excludes this one."""


class ReadOnlyLogError(StorageError):
    """A writer was asked for where nothing can be written (a read-only filesystem or directory)."""

    hint = "open the log read-only: reading commands work on it"


class StorageFullError(StorageError):
    """The disk (or the map) is full; nothing of the failed batch was written."""

    hint = "free disk space; the log keeps working once space returns"


class CommitError(StorageError):
    """A commit failed; the events of that batch were not written."""


def file_error(exc: OSError, doing: str) -> StorageError:
    """An OSError on a file of the log's own (its marker, a snapshot) as one line: a read-only
    place is a ReadOnlyLogError, a full disk a StorageFullError."""
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ReadOnlyLogError(f"{doing}: {exc.strerror}")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(f"{doing}: {exc.strerror}")
    return StorageError(f"{doing}: {exc.strerror}")


def same_kind(error: StorageError, message: str) -> StorageError:
    """A new error of ``error``'s kind (a full disk, or another failed commit) saying ``message``."""
    return StorageFullError(message) if isinstance(error, StorageFullError) else CommitError(message)


class FlushTimeoutError(TaskLogError, TimeoutError):
    """An async event was not committed within the time waited for it (it may still be)."""

    hint = "wait again, or flush() without a timeout"


class StreamError(TaskLogError):
    """A NATS JetStream stream holds what it must not, or what was asked of it does not fit the log."""


class StreamServerError(StreamError):
    """The NATS servers did not answer past a deadline, or refused what was asked of them."""

    # Only here: on a stream's contents (another log's hub, a fork) it sent users to the servers (issue 20).
    hint = "check the servers named by --to/--from/--source and the stream's state (nats stream info)"
