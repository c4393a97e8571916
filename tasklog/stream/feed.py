"""A projection fed from a NATS JetStream stream of many hubs' events (``tasklog ship`` fills it).

Each hub's events fold under that hub's own checkpoint (log identity -> last sequence number,
stored with the records), so any number of hubs fold into one projection, each record says its
hub (``hub``), and a query selects by it. Messages are acknowledged only after the projection's
transaction that holds their events has committed: a feed killed at any point loses nothing, and
what it sees again is skipped by the checkpoints. A hub's messages arriving out of order (a
leader failed over while it shipped) wait, unacknowledged, until the gap before them is filled.
A hub must start at its log's first event: one whose events before were never shipped (an older
tasklog shipped a pruned log) is refused, never folded into records missing their beginnings.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from projections import hubs
from projections.base import STREAM_ORIGIN, Projection

from .. import codec
from ..errors import StreamError, StreamServerError
from . import wire
from .wire import Batch

__all__ = ["StreamFeed", "FeedStats", "check_source", "stream_fed"]

_FETCH = 256  # messages asked for at a time


@dataclass
class FeedStats:
    """What a feed did: events applied, messages acknowledged, messages waiting for a gap to fill."""

    applied: int = 0
    acked: int = 0
    waiting: int = 0
    lags: list[float] = field(default_factory=list)


def stream_fed(projection: Projection) -> bool:
    """Whether ``projection`` was folded from a stream (it answers without a log)."""
    return (projection.log_identity or "").startswith(STREAM_ORIGIN)


async def check_source(servers: list[str], stream: str, hubs: list[str] | None = None,
                       deadline: float | None = 30.0) -> None:
    """Refuse, before anything is made, a stream no server answers for, a missing stream, or a
    named hub the stream holds nothing of (``replay --source --hub nope`` folded nothing and
    left a new projection file behind: issue 20)."""
    nc = await wire.connect(servers, deadline=deadline)
    try:
        with wire.translated(f"reading {stream}"):
            js = nc.jetstream()
            try:
                await wire.retrying(lambda: js.stream_info(stream))
            except importlib.import_module("nats.js.errors").NotFoundError:
                raise StreamServerError(f"there is no stream {stream} at {','.join(servers)}") from None
            for hub in hubs or []:
                subject = wire.hub_subject(stream, hub)
                if not await wire.retrying(partial(wire.hub_count, js, stream, subject)):
                    raise StreamError(f"stream {stream} holds nothing of hub {hub}")
    finally:
        await wire.close(nc)


class StreamFeed:
    """Folds the hubs of ``stream`` into ``projection``; ``hubs`` limits it to some of them."""

    def __init__(self, projection: Projection, servers: str | list[str], stream: str = wire.DEFAULT_STREAM,
                 durable: str | None = None, hubs: list[str] | None = None,
                 progress: Callable[[int], None] | None = None, record_lag: bool = False,
                 connect_deadline: float | None = 30.0) -> None:
        self.projection = projection
        self.servers = wire.parse_servers(servers) if isinstance(servers, str) else servers
        self.stream = wire.check_name("stream", stream)
        self.durable = None if durable is None else wire.check_name("consumer", durable)
        self.subjects = [wire.hub_subject(stream, h) for h in hubs] if hubs else \
            [wire.stream_subjects(stream)]
        self.origin = STREAM_ORIGIN + self.stream
        self.progress, self.record_lag, self.connect_deadline = progress, record_lag, connect_deadline
        self.stats = FeedStats()
        self._orders: dict[str, wire.HubOrder] = {}
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask a running :meth:`run` to return after the batch in hand (thread-safe)."""
        self._stop.set()

    def run_sync(self, follow: bool = False) -> FeedStats:
        """:meth:`run` on an event loop of its own."""
        return asyncio.run(self.run(follow))

    async def run(self, follow: bool = False) -> FeedStats:
        """Fold everything the stream holds, then return (or, ``follow``, wait for more until stopped)."""
        nc = await wire.connect(self.servers, deadline=self.connect_deadline)
        try:
            with wire.translated(f"folding {self.stream}"):
                js = nc.jetstream()
                subs = [await wire.retrying(partial(self._subscribe, js, s), self._stop.is_set)
                        for s in self.subjects]
                await self._loop(subs, follow)
            return self.stats
        finally:
            await wire.close(nc)

    async def _loop(self, subs: list[Any], follow: bool) -> None:
        while not self._stop.is_set():
            idle = True
            for sub in subs:
                got = await self._fetch(sub)
                idle = idle and not got
                if got:
                    await self._fold(got)
            if idle and not follow and all([await self._drained(sub) for sub in subs]):
                return

    async def _subscribe(self, js: Any, subject: str) -> Any:
        api = importlib.import_module("nats.js.api")
        config = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, deliver_policy=api.DeliverPolicy.ALL,
                                    max_ack_pending=-1, ack_wait=60)
        try:
            durable = self._durable_for(subject)
            if durable is not None:
                await self._agree(js, durable)
            return await js.pull_subscribe(subject, durable=durable, stream=self.stream, config=config)
        except importlib.import_module("nats.js.errors").NotFoundError:
            raise StreamServerError(f"there is no stream {self.stream} at {','.join(self.servers)}") from None

    async def _agree(self, js: Any, durable: str) -> None:
        """Start over a durable consumer that has acknowledged what the projection lacks.

        A follow into a deleted (new) SQLite file folded nothing, "hubs: none", exit 0: its
        consumer, named after the file, had acked every message already (issue 20, item 8). A
        projection with no checkpoint gets the consumer reset (delivering from the start); one
        whose checkpoints are behind what the consumer acked is refused.
        """
        not_found = importlib.import_module("nats.js.errors").NotFoundError
        try:
            info = await js.consumer_info(self.stream, durable)
        except not_found:
            return  # a new consumer delivers from the start
        floor = int(info.ack_floor.stream_seq if info.ack_floor else 0)
        if not floor:
            return
        if not self.projection.hubs:
            await js.delete_consumer(self.stream, durable)
            return
        try:
            msg = await js.get_msg(self.stream, floor)
        except not_found:
            return  # gone from the stream (its limits): nothing to compare with
        batch = wire.batch_of(msg.headers, None, msg.subject)
        known = self.projection.hubs.get(batch.log)
        if known is None or known[1] < batch.seq + batch.count - 1:
            raise StreamError(f"consumer {durable} of stream {self.stream} has acknowledged events of hub "
                              f"{batch.hub} up to {batch.seq + batch.count - 1} that {self.projection.spec} lacks "
                              f"(it holds {known[1] if known else 0}): fold into a new projection, or name "
                              "another consumer (--durable)")

    def _durable_for(self, subject: str) -> str | None:
        if self.durable is None or len(self.subjects) == 1:
            return self.durable
        return f"{self.durable}-{subject.rsplit('.', 1)[1]}"

    async def _fetch(self, sub: Any) -> list[Any]:
        try:
            msgs: list[Any] = await sub.fetch(_FETCH, timeout=0.5)
            return msgs
        except wire.transient():  # nothing yet, or the consumer's leader is moving: ask again
            return []

    async def _drained(self, sub: Any) -> bool:
        info = await wire.retrying(sub.consumer_info, self._stop.is_set)
        return int(info.num_pending) == 0 and int(info.num_ack_pending) <= self._waiting()

    async def _fold(self, msgs: list[Any]) -> None:
        """Apply each hub's next events in one projection transaction, then acknowledge them."""
        by_hub: dict[str, list[tuple[Batch, Any]]] = {}
        for msg in msgs:
            batch = wire.batch_of(msg.headers, msg.data, msg.subject)
            by_hub.setdefault(batch.log, []).append((batch, msg))
        for identity, arrived in by_hub.items():
            await self._fold_hub(identity, arrived)
        self.stats.waiting = self._waiting()

    def _waiting(self) -> int:
        return sum(len(order.held) for order in self._orders.values())

    async def _fold_hub(self, identity: str, arrived: list[tuple[Batch, Any]]) -> None:
        order = self._orders.setdefault(identity, wire.HubOrder())
        for batch, msg in arrived:
            order.add(batch, msg)
        known = self.projection.hubs.get(identity)
        # What waits behind a gap stays unacknowledged.
        raw, _, used = order.take(known[1] if known else 0, known is not None)
        if raw and known is None and raw[0][0] != 1:
            seq = raw[0][0]
            raise StreamError(f"hub {arrived[0][0].hub} of stream {self.stream} starts at event {seq} of log "
                              f"{identity}: events 1..{seq - 1} were pruned before they were shipped, so the "
                              "tasks they began cannot be folded; fold the other hubs by naming them (--hub)")
        if raw:
            events = [(seq, codec.decode(data, seq)) for seq, data in raw]
            hubs.apply_hub(self.projection, identity, arrived[0][0].hub, events, self.origin)
            self.stats.applied += len(events)
            if self.progress:
                self.progress(len(events))
        for _, msg in used:  # after the commit: a feed killed before this sees them again, and skips them
            await msg.ack()
        self.stats.acked += len(used)
        if self.record_lag:
            now = time.time()
            self.stats.lags += [now - batch.time for batch, _ in used]
