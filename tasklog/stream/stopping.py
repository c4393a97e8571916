"""Run a stream coroutine until it ends or a signal stops it, wherever it waits.

SIGINT and SIGTERM stop every stream command at once (issue 20: with no server answering, two
SIGINTs and a SIGTERM were ignored for over a minute); the CLI and the shipper child share this.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any, TypeVar, cast

from ..errors import TaskLogError

__all__ = ["until_stopped", "terminating_interrupts"]

T = TypeVar("T")


def until_stopped(run: Coroutine[Any, Any, T], on_eof: Callable[[], None] | None = None,
              on_stop: Callable[[], None] | None = None, grace: float = 0.0) -> T:
    """Run the coroutine ``run``; SIGINT or SIGTERM cancels it wherever it waits and raises
    KeyboardInterrupt. ``on_eof``: called when standard input ends; ``on_stop``: on a signal;
    ``grace``: seconds the first signal leaves ``run`` to end by itself before it is cancelled
    (a second signal cancels at once)."""
    interrupted: list[float] = []  # when each signal's cancelling starts (the loop's clock)

    async def main() -> T | None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(run)

        def interrupt(*_: Any) -> None:
            first = not interrupted
            interrupted.append(loop.time() + (grace if first else 0.0))
            if first and on_stop is not None:
                on_stop()
            if min(interrupted) <= loop.time():
                loop.call_soon_threadsafe(task.cancel)
        # Not loop.add_signal_handler: a handler that only asked the work to stop left a shipper
        # that could not connect deaf to every signal (issue 20).
        before = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        if on_eof is not None:
            threading.Thread(target=_wait_eof, args=(loop, on_eof), daemon=True).start()
        try:
            return await _until_done(task, interrupted)
        except (asyncio.CancelledError, TaskLogError):
            if not interrupted:
                raise
            return None  # a client that turned the cancel into an error of its own: still a stop
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)
    result = asyncio.run(main())
    if interrupted:
        raise KeyboardInterrupt
    return cast(T, result)


async def _until_done(task: asyncio.Task[T], interrupted: list[float]) -> T:
    """Await ``task``, cancelling it again while it runs on after a signal.

    One cancel was not enough: a follow catching up folded to the end of the stream after a
    SIGINT (issue 20, item 8), the cancel swallowed by the client's wait_for or turned into an
    error its fetch treats as transient.
    """
    loop = asyncio.get_running_loop()
    while not task.done():
        await asyncio.wait({task}, timeout=0.25)
        if interrupted and min(interrupted) <= loop.time() and not task.done():
            task.cancel()
    return task.result()


def terminating_interrupts() -> None:
    """SIGTERM as SIGINT from here on: a command stopped between its awaits (opening a log or a
    projection) cleans up and says so instead of dying with what it made half done."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _wait_eof(loop: asyncio.AbstractEventLoop, on_eof: Callable[[], None]) -> None:
    sys.stdin.buffer.read()  # returns when the writer that started this closes the pipe, or ends
    with suppress(RuntimeError):  # the loop has ended already
        loop.call_soon_threadsafe(on_eof)
