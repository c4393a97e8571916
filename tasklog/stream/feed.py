"""A projection fed from a NATS JetStream stream of many hubs' events (``tasklog ship`` fills it).

Each hub's events fold under that hub's own checkpoint (log identity -> last sequence number,
stored with the records), so any number of hubs fold into one projection, each record says its
hub (``hub``), and a query selects by it. Messages are acknowledged only after the projection's
transaction that holds their events has committed: a feed killed at any point loses nothing, and
what it sees again is skipped by the checkpoints. A hub's messages arriving out of order (a
leader failed over while it shipped) wait, unacknowledged, until the gap before them is filled.
A hub must start at its log's first event: one whose events before were never shipped (an older
tasklog shipped a pruned log) is refused, never folded into records missing their beginnings.

Fetched messages are gathered, whatever their size, until they hold about a transaction's worth of
events or bytes, the server has no more at hand, or a moment has passed; each hub's events among
them are folded in one transaction, and only then acknowledged.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import threading
import time
from collections.abc import Callable
from contextlib import suppress
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

#: Fetched messages are gathered into one projection transaction up to about this many events or
#: bytes (restore's figures), whatever their size: a transaction a fetch was one per 256 messages,
#: of one event each from ``ship --batch 1`` (issue 22). Bytes too: messages of large events would
#: gather a huge batch in memory.
_FOLD_EVENTS, _FOLD_BYTES = 8192, 4 << 20
_FETCH = 256  # messages asked for at most at a time
_WAIT = 0.5  # seconds a fetch waits for a message when there is none (a stop is seen that often)
_GATHER_SECONDS = 0.25  # a follow folds what it gathered by then: its lag stays low under load


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
        # Events and bytes a message held, lately: how many messages a fetch asks for. At first the
        # most a message holds by default (ship's batch, the server's max_payload): the first
        # fetch cannot gather far past a transaction.
        self._per_msg = (256.0, float(1 << 20))

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
            more = False
            for sub in subs:
                got, full = await self._gather(sub, follow)
                if got:
                    # A replay that took all the server holds asks next whether all is folded: the
                    # server must have taken the acknowledgements by then.
                    await self._fold(got, settle=not (follow or full))
                more = more or full
            # The server had no more at hand: a replay asks at once whether all is folded, not
            # after one more fetch that waits in vain (half a second at the end of each replay).
            if not more and not follow and all([await self._drained(sub) for sub in subs]):
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

    async def _gather(self, sub: Any, follow: bool) -> tuple[list[tuple[Batch, Any]], bool]:
        """Messages fetched until they hold about a transaction's worth (``follow``: or for a
        moment), with their batches; and whether the server holds more now (False: the last
        fetch took all it had)."""
        got: list[tuple[Batch, Any]] = []
        events = size = 0
        ends = math.inf
        while True:
            msgs = await self._fetch(sub, self._ask(events, size))
            for msg in msgs:
                batch = wire.batch_of(msg.headers, msg.data, msg.subject)
                got.append((batch, msg))
                events, size = events + batch.count, size + len(msg.data)
            if msgs:
                self._learn(got[-len(msgs):])
            # What the server had left when it sent the last one: none, and waiting for more
            # would only hold back a follow's fold (a fetch waits when the server has none).
            if not msgs or not msgs[-1].metadata.num_pending:
                return got, False
            if follow:
                ends = min(ends, time.monotonic() + _GATHER_SECONDS)
            if events >= _FOLD_EVENTS or size >= _FOLD_BYTES or time.monotonic() >= ends or self._stop.is_set():
                return got, True

    def _ask(self, events: int, size: int) -> int:
        """How many messages fill what a gather holding ``events`` events of ``size`` bytes lacks,
        judged by the last messages seen (a fetch asks for messages, not bytes)."""
        per_events, per_bytes = self._per_msg
        room = min((_FOLD_EVENTS - events) / per_events, (_FOLD_BYTES - size) / per_bytes)
        return max(1, min(_FETCH, math.ceil(room)))

    def _learn(self, fetched: list[tuple[Batch, Any]]) -> None:
        """Note the events and bytes a message of ``fetched`` holds on average."""
        self._per_msg = (max(1.0, sum(batch.count for batch, _ in fetched) / len(fetched)),
                         max(1.0, sum(len(msg.data) for _, msg in fetched) / len(fetched)))

    async def _fetch(self, sub: Any, ask: int) -> list[Any]:
        try:
            msgs: list[Any] = await sub.fetch(ask, timeout=_WAIT)
            return msgs
        except wire.transient():  # nothing yet, or the consumer's leader is moving: ask again
            return []

    async def _drained(self, sub: Any) -> bool:
        info = await wire.retrying(sub.consumer_info, self._stop.is_set)
        return int(info.num_pending) == 0 and int(info.num_ack_pending) <= self._waiting()

    async def _fold(self, got: list[tuple[Batch, Any]], settle: bool = False) -> None:
        """Apply each hub's next events in one projection transaction, then acknowledge them
        (``settle``: until the server has taken every acknowledgement)."""
        by_hub: dict[str, list[tuple[Batch, Any]]] = {}
        for batch, msg in got:
            by_hub.setdefault(batch.log, []).append((batch, msg))
        used: list[tuple[Batch, Any]] = []
        for identity, arrived in by_hub.items():
            used += self._fold_hub(identity, arrived)
        await self._acknowledge([msg for _, msg in used], settle)
        self.stats.acked += len(used)
        if self.record_lag:
            now = time.time()
            self.stats.lags += [now - batch.time for batch, _ in used]
        self.stats.waiting = self._waiting()

    async def _acknowledge(self, msgs: list[Any], settle: bool) -> None:
        """Acknowledge ``msgs``, all committed: a feed killed before this sees them again, and skips them."""
        for msg in msgs[:-1] if settle else msgs:
            await msg.ack()
        if settle and msgs:
            # Answered once the consumer has taken it, and so every one before (it takes them in
            # order): asked at once, its info still counted most of them pending. Unanswered, the
            # drained check may say no, and the feed fetches again.
            with suppress(*wire.transient()):
                await msgs[-1].ack_sync()

    def _waiting(self) -> int:
        return sum(len(order.held) for order in self._orders.values())

    def _fold_hub(self, identity: str, arrived: list[tuple[Batch, Any]]) -> list[tuple[Batch, Any]]:
        """Fold what of ``arrived`` follows the hub's checkpoint with no gap; return the messages used up."""
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
        return used
