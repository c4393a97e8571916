"""A stream-fed projection gathers messages into few transactions, whatever their size (issue 22,
item 5), and still acknowledges only after the commit, holds back what waits behind a gap, and
folds a message that trickles into a follow at once."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import nats

import projections
from projections.backends.dict import DictProjection
from tasklog import TaskLog
from tasklog.demo import simulate
from tasklog.stream import wire
from tasklog.stream.feed import StreamFeed
from tasklog.stream.ship import Shipper
from tasklog.stream.wire import Batch
from tests.support.nats_cluster import NatsCluster


class Committing(DictProjection):
    """A dict projection that notes each transaction of a stream-fed fold: the events it held,
    and how many messages its feed had acknowledged when it committed."""

    def __init__(self) -> None:
        super().__init__()
        self.feed: StreamFeed | None = None
        self.commits: list[tuple[int, int]] = []

    def store_hubs(self, records: Any, changed: set[str], hubs: dict[str, tuple[str, int]]) -> None:
        before = sum(seq for _, seq in self.hubs.values())
        super().store_hubs(records, changed, hubs)
        held = sum(seq for _, seq in {**self.hubs, **hubs}.values()) - before
        self.commits.append((held, self.feed.stats.acked if self.feed else -1))


def _shipped(path: Path, url: str, batch_events: int, tasks: int = 0, big: int = 0, stream: str = "TASKLOG") -> int:
    """A log of ``tasks`` demo tasks and ``big`` tasks of 100 kB each, shipped to ``stream`` as hub
    h in messages of at most ``batch_events`` events; return its last event."""
    with TaskLog.open(str(path)) as log:
        log.append_many(list(simulate(tasks, seed=5)))
        for i in range(big):
            log.submit(f"big-{i}", buffers=[os.urandom(100_000)])
        shipper = Shipper(log, url, stream=stream, hub="h", batch_events=batch_events)
        assert shipper.run_sync().shipped == log.last_seq
        return log.last_seq


def _own_count(path: Path) -> int:
    with TaskLog.open(str(path), readonly=True) as log, projections.open("dict", log=log) as own:
        return own.count({})


def _fed(url: str, **options: Any) -> tuple[Committing, StreamFeed]:
    proj = Committing()
    feed = proj.feed = StreamFeed(proj, url, **options)
    return proj, feed


def test_single_event_messages_fold_in_few_transactions_acknowledged_after_them(tmp_path: Path,
                                                                                one_server: NatsCluster) -> None:
    last = _shipped(tmp_path / "hub", one_server.url, 1, tasks=600)
    assert last > 2000  # one message each: a fetch of 256 messages was a transaction of its own
    proj, feed = _fed(one_server.url)
    stats = feed.run_sync()
    assert stats.applied == stats.acked == last and stats.waiting == 0
    held = [n for n, _ in proj.commits]
    assert len(held) <= 2 and sum(held) == last, proj.commits
    # A message is acknowledged after the transaction holding it commits (one event a message).
    assert [acked for _, acked in proj.commits] == [sum(held[:i]) for i in range(len(held))]
    assert proj.count({}) == _own_count(tmp_path / "hub")


def test_a_transaction_holds_about_8192_events_or_4_mib(tmp_path: Path, one_server: NatsCluster) -> None:
    last = _shipped(tmp_path / "hub", one_server.url, 500, tasks=2000)
    proj, feed = _fed(one_server.url)
    assert feed.run_sync().applied == last
    held = [n for n, _ in proj.commits]
    assert len(held) >= 2 and max(held) <= 8192 + 500, held  # past the limit by a message at most
    # Each transaction's messages are acknowledged after it commits, and before the next one.
    assert [acked for _, acked in proj.commits] == [sum(held[:i]) // 500 for i in range(len(held))]
    last = _shipped(tmp_path / "big", one_server.url, 256, big=60, stream="BIG")  # 6 MB, about 9 events a message
    proj, feed = _fed(one_server.url, stream="BIG")
    assert feed.run_sync().applied == last
    held = [n for n, _ in proj.commits]
    assert len(held) >= 2 and max(held) * 100_000 <= (4 << 20) + (1 << 20), held


def _batches(path: Path, per: int) -> list[Batch]:
    """The events of the log at ``path`` as the messages of hub h, ``per`` events each, as a shipper sends them."""
    with TaskLog.open(str(path), readonly=True) as log:
        raw = list(log.read_raw())
        commits = log.commits()
    out = []
    for ordinal, i in enumerate(range(0, len(raw), per), 1):
        run = raw[i:i + per]
        first, last = run[0][0], run[-1][0]
        mine = [c for c in commits if first <= c[0] <= last] or [(first, 0.0)]
        out.append(Batch(log.identity or "", "h", first, len(run), ordinal, run[0][1][0], mine[-1][1], mine,
                         [r for _, r in run]))
    return out


async def _until(check: Any, timeout: float = 30) -> float:
    """Poll ``check()`` every few ms until true; return the seconds it took (fail after ``timeout``)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "timed out"
        await asyncio.sleep(0.002)
    return time.monotonic() - start


def test_a_follow_holds_back_what_waits_behind_a_gap_and_folds_a_trickle_at_once(tmp_path: Path,
                                                                                 one_server: NatsCluster) -> None:
    path = tmp_path / "hub"
    with TaskLog.open(str(path)) as log:
        log.append_many(list(simulate(40, seed=6)))
    batches = _batches(path, 20)
    assert len(batches) >= 8
    subject = wire.hub_subject("TASKLOG", "h")

    async def main() -> None:
        nc = await nats.connect(servers=one_server.url.split(","))
        js = nc.jetstream()
        await js.add_stream(name="TASKLOG", subjects=[wire.stream_subjects("TASKLOG")])

        async def publish(b: Batch) -> None:
            await js.publish(subject, b.payload(), headers=b.headers())

        async def acks_pending() -> int:
            return int((await js.consumer_info("TASKLOG", "t")).num_ack_pending)
        proj, feed = _fed(one_server.url, durable="t")
        task = asyncio.create_task(feed.run(follow=True))
        await publish(batches[0])
        await publish(batches[2])  # its turn comes after batches[1], not here yet
        await _until(lambda: proj.hubs and proj.hubs[batches[0].log][1] == batches[0].last and feed.stats.waiting)
        while await acks_pending() != 1:  # until the server has taken the ack of batches[0]
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert await acks_pending() == 1 and feed.stats.acked == 1  # what waits behind the gap is not acked
        assert len(proj.commits) == 1
        await publish(batches[1])
        await _until(lambda: proj.hubs[batches[0].log][1] == batches[2].last)
        await _until(lambda: feed.stats.acked == 3)
        assert feed.stats.waiting == 0
        commits = len(proj.commits)
        for b in batches[3:]:  # one at a time, each once the follow is idle
            await asyncio.sleep(0.05)
            await publish(b)
            await _until(lambda b=b: proj.hubs[b.log][1] == b.last)
        # Each folded as it came, none held back to fill a transaction (how soon is the follow-lag
        # benchmark's to measure: never a timed test).
        assert len(proj.commits) == commits + len(batches) - 3
        feed.stop()
        await asyncio.wait_for(task, 30)  # a stop is seen between fetches
        assert feed.stats.acked == len(batches)
        while await acks_pending():
            await asyncio.sleep(0.01)
        await nc.close()
    asyncio.run(main())
