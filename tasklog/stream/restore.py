"""Rebuild a hub's log from a NATS JetStream stream that ``tasklog ship`` filled.

The same events at the same sequence numbers with the same commit times and the original's
identity, put back in order and without repeats (``wire.HubOrder``); a restore is a copy of
its own (a new fork id: written to and shipped, it is told apart from the original). It is built
aside and renamed into place whole (``restoring``).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import importlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import aclosing, contextmanager, suppress

from ..errors import InterfaceError, StreamError, StreamServerError
from ..log import TaskLog
from . import wire
from .wire import Batch

__all__ = ["restore", "restore_async", "restoring", "MARKER"]

#: Messages are gathered into one transaction of the aside log up to this many events or bytes
#: (bytes too: events with large buffers would hold a huge transaction in memory).
_WRITE_EVENTS, _WRITE_BYTES = 8192, 4 << 20
MARKER = "RESTORING"  # the file a restore writes first in its aside directory: the pid


async def restore_async(log: TaskLog, servers: list[str], stream: str, hub: str,
                        progress: Callable[[int], None] | None = None, deadline: float | None = 30.0) -> int:
    """Write the events of ``hub`` from ``stream`` into the empty sync ``log``; return how many
    (``deadline``: seconds to wait for a server to answer)."""
    subject = wire.hub_subject(stream, hub)
    nc = await wire.connect(servers, deadline=deadline)
    try:
        restorer = _Restorer(log, progress)
        with wire.translated(f"restoring {stream}/{hub}"):
            try:
                # Closed here, not when collected: a generator closed after the client printed
                # "Task exception was never retrieved" when a full disk failed a restore (issue 20).
                async with aclosing(wire.hub_batches(nc.jetstream(), stream, subject)) as batches:
                    async for batch in batches:
                        restorer.add(batch)
            except importlib.import_module("nats.js.errors").NotFoundError:
                raise StreamServerError(f"there is no stream {stream} at {','.join(servers)}") from None
        if restorer.identity is None:
            raise StreamError(f"stream {stream} holds nothing of hub {hub}")
        restorer.finish()
        return restorer.written
    finally:
        await wire.close(nc)


def restore(log: TaskLog, servers: str, stream: str, hub: str, progress: Callable[[int], None] | None = None) -> int:
    """Rebuild hub ``hub``'s events from ``stream`` into ``log`` (new, sync): the same events at
    the same sequence numbers with the same commit times. Return the events written.

    ``log`` holds what was written if this fails midway: ``restoring(path)`` gives a log that is
    renamed into place only when whole."""
    if log.last_seq:
        raise InterfaceError(f"{log.path} already holds events: restore into a new directory")
    return asyncio.run(restore_async(log, wire.parse_servers(servers), wire.check_name("stream", stream),
                                     wire.check_name("hub", hub), progress))


@contextmanager
def restoring(path: str) -> Iterator[TaskLog]:
    """A new sync log to restore into, built in ``<path>.restoring`` and renamed to ``path`` when
    the block ends: ``path`` holds a whole restore or nothing, and a failed block leaves nothing.

    A restore killed midway left at ``path`` a log of part of the hub, with the original's
    identity, that verify called sound and ship went on from (issue 20). What a killed restore
    left aside is started over by the next one; a restore still running into ``path`` is refused.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise InterfaceError(f"{path} exists and is not empty: restore into a new directory")
    aside = f"{path}.restoring"
    made = _first_missing(aside)
    fd = _lock_aside(aside, path)
    try:
        _claim_aside(aside, path, made is not None)
    except BaseException:
        os.close(fd)
        raise
    built = os.path.join(aside, "log")
    try:
        shutil.rmtree(built, ignore_errors=True)  # what a killed restore left
        with TaskLog.open(built) as log:
            yield log
        _rename(built, path)
    except BaseException:
        shutil.rmtree(made, ignore_errors=True) if made else _remove_aside(aside)
        raise
    finally:
        os.close(fd)
    _remove_aside(aside)
    _sync_dir(os.path.dirname(path))  # the rename outlives a crash


def _claim_aside(aside: str, path: str, made: bool) -> None:
    """Mark ``aside`` as this restore's (``RESTORING``, the pid); refuse one that is not a restore's.

    A ``NEWDIR.restoring`` the user had made was deleted, notes and all, by a failed restore, and
    a good one ended in a traceback on it (issue 20): only a directory a restore marked is its own.
    """
    marker = os.path.join(aside, MARKER)
    if not made and (not os.path.isfile(marker) or not set(os.listdir(aside)) <= {MARKER, "log"}):
        raise InterfaceError(f"{aside} exists and is not a restore's leftover (no {MARKER} in it, or more "
                             "than a restore keeps): move it away, then restore again")
    with open(marker, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")


def _remove_aside(aside: str) -> None:
    """Remove what this restore kept in ``aside`` and ``aside`` if that leaves it empty."""
    shutil.rmtree(os.path.join(aside, "log"), ignore_errors=True)
    with suppress(OSError):
        os.remove(os.path.join(aside, MARKER))
        os.rmdir(aside)  # not if something else was put there meanwhile: that is not ours to delete


def _first_missing(path: str) -> str | None:
    """The outermost directory on the way to ``path`` that does not exist (what making it creates)."""
    missing = None
    while not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
    return missing


def _lock_aside(aside: str, path: str) -> int:
    """Make ``aside`` and hold it (a descriptor locked for this process's life); refuse one held."""
    try:
        os.makedirs(aside, exist_ok=True)
        fd = os.open(aside, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise InterfaceError(f"cannot restore into {path}: {exc.strerror} ({aside})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InterfaceError(f"another restore into {path} is under way (it builds in {aside})") from None
    return fd


def _rename(built: str, path: str) -> None:
    try:
        os.rename(built, path)  # onto a missing or empty directory, in one step
    except OSError as exc:
        why = "it is no longer empty" if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) else exc.strerror
        raise InterfaceError(f"cannot put the restored log at {path}: {why}") from None


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Restorer:
    """Writes a hub's batches as they come back into log order (``HubOrder``), each run at once."""

    def __init__(self, log: TaskLog, progress: Callable[[int], None] | None) -> None:
        self.log, self.progress = log, progress
        self.fork = str(uuid.uuid4())  # a restore is a copy of its own: written to, it forks the original
        self.order = wire.HubOrder()
        self.identity: str | None = None
        self.upto, self.begun = 0, False
        self.written = 0
        self.pending: list[tuple[int, bytes]] = []
        self.pending_commits: list[tuple[int, float]] = []
        self.pending_bytes = 0

    def add(self, batch: Batch) -> None:
        """Take one message's batch; write every run that is now complete."""
        if self.identity is None:
            self.identity = batch.log
        elif batch.log != self.identity:
            raise StreamError(f"hub {batch.hub} holds events of two logs ({self.identity} and {batch.log})")
        self.order.add(batch)
        self._gather(*self.order.take(self.upto, self.begun)[:2])

    def _gather(self, events: list[tuple[int, bytes]], commits: list[tuple[int, float]]) -> None:
        if not events:
            return
        self.pending += events
        self.pending_commits += commits
        self.pending_bytes += sum(len(raw) for _, raw in events)
        self.upto, self.begun = events[-1][0], True
        if len(self.pending) >= _WRITE_EVENTS or self.pending_bytes >= _WRITE_BYTES:
            self._flush()

    def _flush(self) -> None:
        # Many messages a transaction, whatever their size: one sync per message held a restore
        # of single-event messages to 870 events/s (issue 22). The log is built aside and renamed
        # whole, so nothing is lost by writing later.
        if not self.pending:
            return
        self.log.put_verbatim(self.pending, self.pending_commits, self.identity, self.fork)
        self.written += len(self.pending)
        if self.progress:
            self.progress(len(self.pending))
        self.pending, self.pending_commits, self.pending_bytes = [], [], 0

    def finish(self) -> None:
        """Write what is held; refuse a stream that lacks an event between its first and last."""
        if not self.begun and self.order.held:
            # The hub's first message is gone (a stream with limits): start at the earliest held.
            self._gather(*self.order.take(min(self.order.held) - 1)[:2])
        self._flush()
        if self.order.held:
            raise StreamError(f"the stream lacks event {self.upto + 1} of log {self.identity} "
                              f"({len(self.order.held)} later messages held back); restored up to {self.upto}")
