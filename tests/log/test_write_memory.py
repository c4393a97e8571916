"""What a writer holds (issue 20, item 3): no event outlives its commit, and an async queue is
bounded in bytes as well as in events, so a fast producer with big buffers waits instead of
filling memory."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from typing import cast

import pytest

from tasklog import Receipt, TaskLog
from tasklog.events import Event


def _holders(obj: object) -> list[str]:
    """What refers to ``obj`` besides this test's frames: named when the test fails."""
    return [type(r).__name__ for r in gc.get_referrers(obj) if not hasattr(r, "f_code")]


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_no_event_outlives_its_commit(log_dir: str, mode: str) -> None:
    with TaskLog.open(log_dir, mode) as log:
        buffer = os.urandom(100_000)
        alone = sys.getrefcount(buffer)
        for i in range(50):
            log.submit(f"t{i}", buffers=[buffer])
        log.output("t0", text="a last event, no buffer")
        log.flush()
        # The committer's last batch held every event of it, and so the caller's buffers, until
        # the next batch replaced it: 1,000 Hub events with their 100 KB buffers after a drain.
        assert sys.getrefcount(buffer) == alone, _holders(buffer)
        assert log.queued_bytes == 0
        assert [ev.buffers for _, ev in log.read(1, 3)] == [[buffer], [buffer]]  # type: ignore[union-attr]


def test_a_fast_producer_waits_on_the_byte_bound(log_dir: str) -> None:
    bound = 1 << 20
    seen_at_commit: list[int] = []
    # A commit only when the queue asks for one (the interval is longer than the test): the
    # producer outruns the committer by as much as the bound lets it.
    with TaskLog.open(log_dir, "async", commit_interval=60.0, queue_bytes=bound) as log:
        assert log.queue_bytes == bound

        def at_commit(batch: Sequence[tuple[int, Event]]) -> None:
            seen_at_commit.append(log.queued_bytes)  # the batch being committed still counts
        log.add_listener(at_commit)
        after_append = []
        for i in range(100):
            log.submit(f"t{i}", buffers=[os.urandom(100_000)])  # 10 MB in all: ten times the bound
            after_append.append(log.queued_bytes)
        assert max(after_append) <= bound and max(seen_at_commit) <= bound
        assert len(seen_at_commit) >= 9  # it waited for commits, about one per megabyte
        assert log.flush() == 100
    with TaskLog.open(log_dir, readonly=True) as log:
        assert [ev.msg_id for _, ev in log.read()] == [f"t{i}" for i in range(100)]  # type: ignore[union-attr]


def test_an_event_bigger_than_the_bound_goes_alone(log_dir: str) -> None:
    with TaskLog.open(log_dir, "async", commit_interval=60.0, queue_bytes=1 << 16) as log:
        small = cast(Receipt, log.start("small"))
        big = cast(Receipt, log.submit("big", buffers=[os.urandom(1 << 18)]))  # waits for an empty queue, then goes
        assert small.done and big.wait(30) == 2
        assert log.queued_bytes == 0


def test_the_byte_bound_has_a_default_and_is_checked(log_dir: str) -> None:
    from tasklog import InterfaceError
    from tasklog.log import DEFAULT_QUEUE_BYTES

    with TaskLog.open(log_dir, "async") as log:
        assert log.queue_bytes == DEFAULT_QUEUE_BYTES
    with pytest.raises(InterfaceError, match="queue_bytes"):
        TaskLog.open(log_dir, "async", queue_bytes=0)
