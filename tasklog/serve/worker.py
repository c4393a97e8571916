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
import traceback
from multiprocessing.connection import Connection
from typing import Any

from ..errors import TaskLogError

__all__ = ["Worker", "QueryTimeout", "Refused", "WorkerFailed"]

# The first read of a new worker opens the source (a cold start builds the read model).
_OPEN_TIMEOUT = 3600.0


class QueryTimeout(TaskLogError):
    """A read took longer than the server allows (``--query-timeout``): it was stopped."""


class Refused(TaskLogError):
    """The worker refused a read (a bad query, a log it cannot read)."""


class WorkerFailed(TaskLogError):
    """The worker failed reading: a bug (its traceback is on the server's standard error)."""


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

    def call(self, op: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        """Answer read ``op`` (blocking); QueryTimeout past ``timeout`` seconds of its own (the child killed)."""
        if self._conn is None or not self._proc.is_alive():
            self._start()
        assert self._conn is not None
        self._conn.send((op, kwargs))
        if not self._conn.poll(timeout):
            self.stop()
            raise QueryTimeout(f"the read took longer than {timeout:g} s and was stopped")
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            self.stop()
            raise WorkerFailed("tasklog serve's reader ended unexpectedly (see its standard error)") from None
        if kind == "ok":
            return value
        if kind == "missing":
            raise KeyError(value)
        raise (Refused if kind == "refused" else WorkerFailed)(value)

    def _start(self) -> None:
        self.stop()
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=main, args=(child, *self.args), name="tasklog-serve-reader",
                                       daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        self.call("refresh", {}, _OPEN_TIMEOUT)

    def stop(self) -> None:
        """End the child (killed: it only reads)."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None
