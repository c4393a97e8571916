"""The server's reads run in a process of their own, one at a time, killed when one runs too long.

A query is evaluated in Python where SQL cannot say it (a regular expression on stdout), and
Python cannot be interrupted mid-expression: in a thread, one catastrophic regular expression
held the GIL, so every page and even the token check waited, and a timeout answered while the
query ran on (issue 23's review). In a child, the event loop never waits on a read, and a read
past ``--query-timeout`` is stopped by killing the child, which the next read starts again.
"""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from ..errors import TaskLogError

__all__ = ["Worker", "QueryTimeout", "Refused", "WorkerFailed", "ReaderLost"]

# The first read of a new worker opens the source (a cold start builds the read model).
_OPEN_TIMEOUT = 3600.0


class QueryTimeout(TaskLogError):
    """A read took longer than the server allows (``--query-timeout``): it was stopped."""


class Refused(TaskLogError):
    """The worker refused a read (a bad query, a log it cannot read)."""


class WorkerFailed(TaskLogError):
    """The worker failed reading: a bug (its traceback is on the server's standard error)."""


class ReaderLost(TaskLogError):
    """The worker ended before it answered (killed, or the server stops): the next read starts one."""


def main(conn: Connection, log_dir: str | None, spec: str | None) -> None:
    """The child: answer each (op, kwargs) received with ("ok", result) or why not, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's: it ends this child
    from .reading import Reading

    reading: Reading | None = None
    while True:
        try:
            op, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if reading is None:
                reading = Reading(log_dir, spec)
            conn.send(_answered(reading, op, kwargs))
        except TaskLogError as exc:
            conn.send(("refused", exc.args[0] if exc.args else str(exc)))


def _answered(reading: Any, op: str, kwargs: dict[str, Any]) -> tuple[str, Any]:
    from .reading import answer

    try:
        return "ok", answer(reading, op, kwargs)
    except KeyError as exc:  # no such task: the API's 404
        return "missing", exc.args[0] if exc.args else "not found"
    except TaskLogError as exc:
        return "refused", exc.args[0] if exc.args else str(exc)
    except sqlite3.DatabaseError as exc:
        return "refused", f"the read model cannot be read: {exc}"
    except Exception:  # a bug: its traceback on the server's standard error
        traceback.print_exc()
        return "failed", f"tasklog serve failed reading ({op}): see its standard error"


class Worker:
    """The child, seen from the server: ``call`` sends a read and waits for its answer."""

    def __init__(self, log_dir: str | None, spec: str | None) -> None:
        self.args = (log_dir, spec)
        self._ctx = multiprocessing.get_context("spawn")  # the server has threads: never fork it
        self._proc: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # stop() comes from a signal's thread as well as the reads'
        #: Set once the server stops: no reader is started again.
        self.closed = False

    def call(self, op: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        """Answer read ``op`` (blocking); QueryTimeout past ``timeout`` seconds of its own (the child killed)."""
        if self.closed:
            raise ReaderLost("tasklog serve is stopping")
        if self._proc is None or not self._proc.is_alive():
            self._start()
        conn = self._conn
        assert conn is not None
        try:
            conn.send((op, kwargs))
            if not conn.poll(timeout):
                self.stop()
                raise QueryTimeout(f"the read took longer than {timeout:g} s and was stopped")
            kind, value = conn.recv()
        except (EOFError, OSError):  # killed (by stop(), or from outside), or its pipe closed under it
            self.stop()
            why = "tasklog serve is stopping" if self.closed else "tasklog serve's reader ended before it answered"
            raise ReaderLost(why) from None
        if kind == "ok":
            return value
        if kind == "missing":
            raise KeyError(value)
        raise (Refused if kind == "refused" else WorkerFailed)(value)

    def _start(self) -> None:
        self.stop()
        if self._conn is not None:
            self._conn.close()
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=main, args=(child, *self.args), name="tasklog-serve-reader",
                                       daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        self.call("refresh", {}, _OPEN_TIMEOUT)

    def stop(self, closing: bool = False) -> None:
        """End the child (killed: it only reads); ``closing``: for good, from any thread."""
        self.closed = self.closed or closing
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None and proc.is_alive():
                proc.kill()
                proc.join()
        # The pipe is closed by the thread that reads it (a close under its poll() could hang it).
