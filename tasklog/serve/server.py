"""The server's state: its source, the task table, one worker thread, and the pages listening.

Every read runs on the one worker thread, so no projection is shared between threads and the
server takes at most one core from a Hub beside it. A refresh loop looks for new commits a few
times a second, but catches up only while someone watches (a live page, or a request in the last
``_IDLE`` seconds): a server nobody looks at costs a Hub nothing but that look.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from projections.summary import log_stats

from ..errors import TaskLogError
from ..lifecycle import STATES
from .source import Source
from .tasks import Arrays, TaskTable

__all__ = ["Server", "QueryTimeout"]

T = TypeVar("T")
# How often the refresh loop looks for new commits (a commit shows in an open page within this and a fetch).
POLL = 0.1
# After this many seconds without a request or a live page, new commits wait for the next request.
_IDLE = 30.0
# A page listening gets at most this many commit notices a second (each makes it fetch again).
_NOTICE_EVERY = 0.25


class QueryTimeout(TaskLogError):
    """A read took longer than the server allows (``--query-timeout``): it was stopped."""

    hint = "narrow the query (an indexed field: submitted, started, completed, engine_uuid, client_uuid, label, queue)"


class Server:
    """What every request shares; ``run`` is how a request reads."""

    def __init__(self, source: Source, query_timeout: float = 10.0) -> None:
        self.source = source
        self.query_timeout = query_timeout
        self.table = TaskTable()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tasklog-serve")
        self._listeners: set[asyncio.Queue[int]] = set()
        self._last_request = 0.0
        self.seq = -1  # what pages were last told

    async def run(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """``fn()`` on the worker thread, after a refresh; stopped (QueryTimeout) past the time allowed."""
        self._last_request = time.monotonic()
        future = self._pool.submit(self._fresh_then, fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout or self.query_timeout)
        except asyncio.TimeoutError:
            if self.source.model is not None:
                self.source.model.interrupt()
            allowed = timeout or self.query_timeout
            raise QueryTimeout(f"the query took longer than {allowed:g} s and was stopped") from None

    def run_now(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the worker thread, waited for here (before the event loop runs)."""
        return self._pool.submit(fn).result()

    def _fresh_then(self, fn: Callable[[], T]) -> T:
        self.source.refresh()
        return fn()

    def arrays(self) -> Arrays:
        """The task table as of the source's projection (worker thread)."""
        self._update_table()
        return self.table.arrays()

    def _update_table(self) -> None:
        proj = self.source.projection
        ids = self.source.touched.take(self.table.seq, proj.last_seq)
        self.table.update(proj, self.source.log, ids)

    def stats(self) -> dict[str, Any]:
        """What ``tasklog stats --json`` prints for the log (worker thread); a stream-fed projection's figures."""
        proj = self.source.projection
        if self.source.log is not None:
            return log_stats(self.source.log, proj).as_dict()
        return {"projection": proj.spec, "by_state": {s: proj.tasks_by("state").get(s, 0) for s in STATES},
                "hubs": [[name, identity, seq] for identity, (name, seq) in sorted(proj.hubs.items())]}

    def listen(self) -> asyncio.Queue[int]:
        """A queue that gets the folded sequence number whenever something new is committed."""
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[int]) -> None:
        """Stop telling ``queue``."""
        self._listeners.discard(queue)

    def _watched(self) -> bool:
        return bool(self._listeners) or time.monotonic() - self._last_request < _IDLE

    async def watch(self) -> None:
        """The refresh loop: catch up while watched, and tell the pages listening."""
        loop = asyncio.get_running_loop()
        last_notice = 0.0
        while True:
            await asyncio.sleep(POLL)
            if not self._watched() or time.monotonic() - last_notice < _NOTICE_EVERY:
                continue
            try:
                seq = await loop.run_in_executor(self._pool, self._refreshed)
            except (TaskLogError, OSError, ValueError, sqlite3.Error) as exc:  # said, and tried again

                print(f"tasklog serve: refresh failed: {exc}", file=sys.stderr)
                continue
            if seq != self.seq:
                self.seq, last_notice = seq, time.monotonic()
                for queue in list(self._listeners):
                    if queue.full():
                        queue.get_nowait()  # the newest commit is all a page needs
                    queue.put_nowait(seq)

    def _refreshed(self) -> int:
        self.source.refresh()
        if self._listeners:
            self._update_table()
        return self.source.projection.last_seq

    def close(self) -> None:
        """Stop the worker and close the source."""
        self._pool.submit(self.source.close).result()
        self._pool.shutdown()
