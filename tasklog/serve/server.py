"""The server's state in its own process: the reader it asks, and the pages listening for commits.

Every read goes to one worker process (``tasklog.serve.worker``), one at a time, so the event
loop answers the token check, static files and the live feed whatever a query costs, and the
server takes at most one core from a Hub beside it. A refresh loop looks for new commits ten
times a second, but only while someone watches (a live page, or a request in the last ``_IDLE``
seconds): a server nobody looks at costs a Hub nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import TaskLogError
from .worker import Worker

__all__ = ["Server", "CLOSED"]

# How often the refresh loop looks for new commits (a commit shows in an open page within this and a fetch).
POLL = 0.1
# After this many seconds without a request or a live page, new commits wait for the next request.
_IDLE = 30.0
# A page listening gets a commit notice at most this often (seconds; each makes it fetch again):
# four a second cost a Hub beside a watched overview a tenth of its throughput on two cores.
_NOTICE_EVERY = 0.5
#: What a listening page's queue gets when the server stops.
CLOSED = -1


class Server:
    """What every request shares; ``run`` is how a request reads."""

    def __init__(self, log_dir: str | None, spec: str | None, query_timeout: float = 10.0) -> None:
        self.query_timeout = query_timeout
        self.worker = Worker(log_dir, spec)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tasklog-serve")
        self._listeners: set[asyncio.Queue[int]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_request = 0.0
        self.seq = -1  # what pages were last told
        #: How to stop each export running now (a download the server stops, or its page left).
        self.aborts: set[Callable[[], None]] = set()
        self._failing: str | None = None  # why the last refresh failed

    async def run(self, op: str, timeout: float | None = None, **kwargs: Any) -> Any:
        """The answer to read ``op`` (``tasklog.serve.reading.OPS``), stopped past the time allowed."""
        self._last_request = time.monotonic()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.worker.call, op, kwargs, timeout or self.query_timeout)

    def run_now(self, op: str, timeout: float | None = None, **kwargs: Any) -> Any:
        """The answer to read ``op``, waited for here (before the event loop runs)."""
        return self._pool.submit(self.worker.call, op, kwargs, timeout).result()

    def listen(self) -> asyncio.Queue[int]:
        """A queue that gets the folded sequence number whenever something new is committed (CLOSED: stop)."""
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[int]) -> None:
        """Stop telling ``queue``."""
        self._listeners.discard(queue)

    def _tell(self, seq: int) -> None:
        for queue in list(self._listeners):
            if queue.full():
                queue.get_nowait()  # the newest commit is all a page needs
            queue.put_nowait(seq)

    def closing(self) -> None:
        """The server stops (from a signal handler): end the live feeds, the reader and every export,
        so that no request is left for uvicorn to wait on (or to cancel, with a traceback)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._tell, CLOSED)
        self._stop_reads()

    def _stop_reads(self) -> None:
        """Kill the reader for good and stop every export, from whichever thread."""
        self.worker.stop(closing=True)
        for abort in list(self.aborts):
            abort()

    def _watched(self) -> bool:
        return bool(self._listeners) or time.monotonic() - self._last_request < _IDLE

    async def watch(self) -> None:
        """The refresh loop: catch up while watched, and tell the pages listening."""
        self._loop = asyncio.get_running_loop()
        last_notice = 0.0
        while True:
            await asyncio.sleep(POLL)
            if not self._watched() or time.monotonic() - last_notice < _NOTICE_EVERY:
                continue
            try:
                # Only the source: the task table is brought up to it by the reads that chart it (a
                # tasks page listening needs none of it).
                seq = await self._loop.run_in_executor(self._pool, self.worker.call, "refresh", {},
                                                       self._refresh_timeout)
            except TaskLogError as exc:  # said (once), and tried again
                why = exc.args[0] if exc.args else str(exc)
                if why != self._failing:
                    print(f"tasklog serve: {why}", file=sys.stderr)
                self._failing = why
                await asyncio.sleep(1.0)
                continue
            self._failing = None
            if seq != self.seq:
                self.seq, last_notice = seq, time.monotonic()
                self._tell(seq)

    @property
    def _refresh_timeout(self) -> float:
        # Bounded, or a stopped reader hung every read behind it; longer than a query's, since
        # catching up a backlog is work a new reader would start again.
        return max(3 * self.query_timeout, 10.0)

    def close(self) -> None:
        """Stop the reader (at once, from this thread: the pool may be waiting on it) and every export."""
        self._stop_reads()  # not closing(): the event loop is gone by now
        self._pool.shutdown(wait=False)
