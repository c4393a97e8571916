"""Ship a log's committed events to a NATS JetStream stream (``restore`` brings them back).

Shipping publishes the committed events in log order, a run of them a message, to the hub's
subject, with a bounded window of messages awaiting their acks. A failed publish (no leader,
a timeout, a lost connection) sends the failed message and every one after it again, the same
bytes under the same message ids, so JetStream drops the ones it already holds.

Where a shipper starts is asked of the stream, never of a local file: past the last event the
stream holds for this hub. Messages are numbered per hub, so a stream that holds fewer than the
numbers say (a message lost while a later one landed, as a leader fails over mid-window, and the
shipper killed before it resent) is scanned for the first event missing, and shipping resumes
there. A stream may thus hold a hub's events out of order after a failover, or twice after a
resend past the duplicate window; consumers and ``restore`` put them in order and drop repeats
by sequence number. It never holds a hub's events with one missing.

A hub holds one copy of one log. A shipper goes on only from a stream whose last message for
the hub its log holds byte for byte; any other copy (a backup behind the stream, a second
restore written to) is refused, naming the copy that shipped. The first message of each round
is published on condition that the hub's last message is still the one the shipper knows, so
a copy that takes the hub over stops the other's shipper at its next round. Nor does a shipper
start a hub at an event past the first one the stream lacks: events pruned before they were
shipped would leave a stream no reader could fold.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

from ..errors import InterfaceError, StreamError
from ..log import TaskLog
from . import wire
from .stopping import until_stopped
from .wire import Batch

__all__ = ["Shipper", "ShipStats", "Shipping", "BATCH_EVENTS"]

_ACK_TIMEOUT = 5.0  # seconds a message may wait for its ack before it and those after it go again
_SETTLE = 2.0  # seconds a signal leaves a shipper to settle its window before it is cancelled
_BACKOFF_MAX = 2.0  # seconds between rounds resent after failures, at most
BATCH_EVENTS = 256  # events a message holds at most (and at most about the server's max_payload)
_HEADROOM = 4096  # bytes of a message's max_payload left for its headers
_PER_EVENT = 24  # bytes an event adds to a message besides its own: msgpack framing, a commit's entry


class ShipStats:
    """What a shipper did: events acked, the last acked sequence number, rounds resent; ``resumed``
    once it knows where the stream ends for its hub (``last_acked`` means nothing before)."""

    def __init__(self) -> None:
        self.shipped = 0
        self.messages = 0
        self.last_acked = 0
        self.retries = 0
        self.resumed = False


class Shipper:
    """Publishes the committed events of ``log`` to ``stream`` as hub ``hub`` (default: the log's identity)."""

    def __init__(self, log: TaskLog, servers: str | list[str], stream: str = wire.DEFAULT_STREAM,
                 hub: str | None = None, replicas: int | None = None, window: int = 64,
                 progress: Callable[[int], None] | None = None, connect_deadline: float | None = None,
                 batch_events: int = BATCH_EVENTS) -> None:
        if log.identity is None:
            raise InterfaceError(f"{log.path} has no identity yet (a log made by an older tasklog, opened "
                                 "read-only): open it once for writing")
        if window < 1 or batch_events < 1 or (replicas is not None and replicas < 1):
            raise InterfaceError("window, batch_events and replicas must be >= 1")
        self.log, self.identity, self.fork = log, log.identity, log.fork
        self.servers = wire.parse_servers(servers) if isinstance(servers, str) else servers
        self.stream = wire.check_name("stream", stream)
        self.hub = wire.check_name("hub", hub or log.identity)
        self.subject = wire.hub_subject(stream, self.hub)
        self.replicas, self.window, self.batch_events = replicas, window, batch_events
        self.progress, self.connect_deadline = progress, connect_deadline
        self.stats = ShipStats()
        self._stop = threading.Event()
        self._drain = threading.Event()
        self._next_seq = 0
        self._next_ordinal = 1
        self._resend: deque[Batch] = deque()
        self._max_bytes = 1 << 20
        self._claim = 0  # the stream sequence of the hub's last message, as far as this shipper knows
        self._lost_claim = False  # another shipper published to the hub since: ask the stream again

    def stop(self, drain: bool = False) -> None:
        """Ask a running :meth:`run` to return once its window is settled; ``drain``: once it has
        also shipped every event committed by now (thread-safe)."""
        (self._drain if drain else self._stop).set()

    def run_sync(self, follow: bool = False, poll: float = 0.01) -> ShipStats:
        """:meth:`run` on an event loop of its own (a thread's, or the CLI's)."""
        return asyncio.run(self.run(follow, poll))

    async def run(self, follow: bool = False, poll: float = 0.01) -> ShipStats:
        """Ship from where the stream ends for this hub; return at the log's end, or (``follow``)
        when :meth:`stop` is called."""
        nc = await wire.connect(self.servers, deadline=self.connect_deadline)
        try:
            with wire.translated(f"shipping to {self.stream}/{self.hub}"):
                self._max_bytes = int(nc.max_payload) - _HEADROOM
                js = nc.jetstream(publish_async_max_pending=self.window + 1)
                await self._retrying(lambda: wire.ensure_stream(js, self.stream, self.replicas))
                await self._retrying(lambda: self._resume(js))
                await self._loop(js, follow, poll)
            return self.stats
        finally:
            await wire.close(nc)

    async def _loop(self, js: Any, follow: bool, poll: float) -> None:
        while not self._stop.is_set():
            round_ = self._resend or deque(self._read())
            self._resend = deque()
            if not round_:
                if not follow or self._drain.is_set():
                    return
                await asyncio.sleep(poll)
            elif not await self._publish(js, round_):
                if self._lost_claim:  # where the stream ends is not where this shipper thought
                    self._lost_claim, self._resend = False, deque()
                    await self._retrying(lambda: self._resume(js))
                    continue
                self.stats.retries += 1
                await asyncio.sleep(min(0.05 * 2 ** min(self.stats.retries, 6), _BACKOFF_MAX))

    async def _retrying(self, call: Callable[[], Any]) -> Any:
        """``call()`` again with back-off while the cluster cannot answer (no leader, no server)."""
        return await wire.retrying(call, self._stop.is_set)

    # -- where to start ----------------------------------------------------------------

    async def _resume(self, js: Any) -> None:
        """Set the first event and message number to publish, and the message to follow, from
        what the stream holds."""
        not_found = importlib.import_module("nats.js.errors").NotFoundError
        try:
            msg = await js.get_last_msg(self.stream, self.subject)
        except not_found:
            self._start(1, 1, 0)  # nothing shipped yet
            return
        last = wire.batch_of(msg.headers, msg.data, self.subject)
        self._check_continues(last)
        first = wire.batch_of((await js.get_msg(self.stream, seq=1, subject=self.subject, next=True)).headers,
                                   None, self.subject)
        nxt = last.last + 1
        if await wire.hub_count(js, self.stream, self.subject) < last.ordinal - first.ordinal + 1:
            nxt = min(nxt, wire.first_gap(await self._spans(js), first.seq))  # a message was lost
        self._start(nxt, last.ordinal + 1, int(msg.seq))

    def _start(self, nxt: int, ordinal: int, claim: int) -> None:
        # A pruned log shipped from its start gave a stream whose restore no query could read and
        # whose feed built stubs (issue 20): the events the stream lacks must be in the log.
        if nxt < self.log.start_seq:
            raise StreamError(f"{self.stream}/{self.hub} lacks events {nxt}..{self.log.start_seq - 1} of log "
                              f"{self.identity}, and {self.log.path} no longer holds them (pruned before they were "
                              "shipped): no reader of the stream could rebuild the tasks they began. Ship a copy "
                              "of the log that holds them, or query this one (its snapshot has them)")
        self._next_seq, self._next_ordinal, self._claim = nxt, ordinal, claim
        self.stats.last_acked, self.stats.resumed = nxt - 1, True

    def _check_continues(self, last: Batch) -> None:
        """Refuse a stream whose last message for this hub is not in this log as it is."""
        if last.log != self.identity:
            raise StreamError(f"hub {self.hub} of stream {self.stream} holds events of log {last.log}, "
                              f"not of {self.identity}: choose another --hub")
        skip = max(self.log.start_seq - last.seq, 0)  # what the log pruned since it shipped it
        if [raw for _, raw in self.log.read_raw(last.seq + skip, last.last + 1)] == last.events[skip:]:
            return
        # Shipping from the log's end instead said "shipped 0 events" for a copy behind the
        # stream, and a second restore's events were dropped as repeats of the first's (issue 20).
        by = "this copy of the log" if last.fork == self.fork else \
            f"another copy of it ({'the original' if last.fork is None else 'a restore, fork ' + last.fork})"
        here = f"this log ends at event {self.log.last_seq}" if self.log.last_seq < last.last else \
            "this log holds other events there"
        raise StreamError(f"{self.stream}/{self.hub} holds events up to {last.last} of log {self.identity}, "
                          f"shipped by {by}, and {here}: {self.log.path} does not continue the stream. Restore "
                          "the hub into a new directory (tasklog restore) to go on from the stream, or ship this "
                          "log as another --hub")

    async def _spans(self, js: Any) -> list[tuple[int, int]]:
        """``(first, last)`` of every message the stream holds for this hub (headers only)."""
        async with aclosing(wire.hub_batches(js, self.stream, self.subject, headers_only=True)) as batches:
            return [(b.seq, b.last) async for b in batches]

    # -- publishing ----------------------------------------------------------------------

    def _read(self) -> list[Batch]:
        """The next messages from the log: committed events from the next one, a window's worth."""
        start = self._next_seq
        stop = min(self.log.last_seq + 1, start + self.window * self.batch_events)
        if stop <= start:
            return []
        commits = self.log.commits(start, stop)
        starts = [c[0] for c in commits]
        batches: list[Batch] = []
        run: list[tuple[int, bytes]] = []
        size = 0
        for seq, raw in self.log.read_raw(start, stop):
            cost = len(raw) + _PER_EVENT
            if cost > self._max_bytes:
                raise StreamError(f"event {seq} is {len(raw):,} bytes, more than the server's max_payload "
                                  f"allows ({self._max_bytes + _HEADROOM:,}); raise max_payload to ship it")
            if run and (len(run) >= self.batch_events or size + cost > self._max_bytes or raw[0] != run[0][1][0]):
                batches.append(self._batch(run, commits, starts))
                run, size = [], 0
            run.append((seq, raw))
            size += cost
        if run:
            batches.append(self._batch(run, commits, starts))
        return batches

    def _batch(self, run: list[tuple[int, bytes]], commits: list[tuple[int, float]], starts: list[int]) -> Batch:
        first, last = run[0][0], run[-1][0]
        # The commit holding the first event, through the last commit that starts in the run.
        mine = commits[max(bisect.bisect_right(starts, first) - 1, 0):bisect.bisect_right(starts, last)]
        batch = Batch(self.identity or "", self.hub, first, len(run), self._next_ordinal, run[0][1][0],
                      mine[-1][1] if mine else 0.0, mine, [raw for _, raw in run], self.fork)
        self._next_ordinal += 1
        self._next_seq = last + 1
        return batch

    async def _publish(self, js: Any, batches: deque[Batch]) -> bool:
        """Publish ``batches``, the first alone as a claim on the hub, the rest with at most
        ``window`` unacked; False (and what must go again kept for the next round) when one failed."""
        if not await self._claimed(js, batches[0]):
            self._resend = batches
            return False
        batches.popleft()
        loop = asyncio.get_running_loop()
        inflight: deque[tuple[Batch, Any]] = deque()
        failed: Batch | None = None
        while batches and failed is None:
            batch = batches.popleft()
            try:
                future = await js.publish_async(self.subject, batch.payload(), headers=batch.headers())
            except Exception:  # the client's buffer is full while it reconnects, or it is closing
                failed = batch
                break
            inflight.append((batch, future))
            if len(inflight) >= self.window:
                head = inflight.popleft()
                if not await self._acked(head[0], head[1], loop.time() + _ACK_TIMEOUT):
                    failed = head[0]
        # One deadline for the rest of the window: they have all been waiting already.
        deadline = loop.time() + _ACK_TIMEOUT
        for batch, future in inflight:
            if not await self._acked(batch, future, deadline) and failed is None:
                failed = batch
        if failed is None:
            return True
        # The failed message and every later one: those that landed meanwhile are dropped as repeats.
        self._resend = deque([failed, *(b for b, _ in inflight if b.seq > failed.seq), *batches])
        return False

    async def _claimed(self, js: Any, batch: Batch) -> bool:
        """Publish ``batch`` on condition that the hub's last message is the one this shipper
        knows of; whether it landed (``_lost_claim`` when another message came last meanwhile)."""
        try:
            # A request, not publish_async: nats-py never settles the future of a refused publish.
            ack = await js.publish(self.subject, batch.payload(), timeout=_ACK_TIMEOUT,
                                   headers=batch.headers(claim=self._claim))
        except Exception as exc:  # as in _acked; and a lost claim
            self._lost_claim = wire.lost_claim(exc)
            return False
        self._landed(batch, ack)
        return batch.last <= self.stats.last_acked

    async def _acked(self, batch: Batch, future: Any, deadline: float) -> bool:
        """Whether ``batch`` is in the stream, and every event before it too."""
        try:
            ack = await asyncio.wait_for(future, max(deadline - asyncio.get_running_loop().time(), 0.001))
        except Exception:  # a timeout, no responders, a stream error: the same remedy, send again
            future.cancel()
            return False
        self._landed(batch, ack)
        return batch.last <= self.stats.last_acked

    def _landed(self, batch: Batch, ack: Any) -> None:
        self._claim = max(self._claim, int(ack.seq))
        if batch.seq == self.stats.last_acked + 1:  # a later ack after a failed one moves nothing
            self.stats.last_acked = batch.last
            self.stats.shipped += batch.count
            self.stats.messages += 1
            if self.progress:
                self.progress(batch.count)


def ship_until(shipper: Shipper, follow: bool, on_eof: Callable[[], None] | None = None) -> bool:
    """Run ``shipper`` until it is done (``on_eof``: called when standard input ends, e.g. to ship
    what is committed and stop); return whether a signal stopped it first."""
    try:
        # The window in flight settles first: stopped at once, a shipper whose stream already held
        # every event reported only what it had seen acked (a test's SIGTERM, once in eight runs).
        until_stopped(shipper.run(follow=follow), on_eof, on_stop=shipper.stop, grace=_SETTLE)
    except KeyboardInterrupt:
        return True
    return False


class Shipping:
    """A shipper in a child process beside a writer (``python -m tasklog.stream.shipper``; what
    ``TaskLogDB.ship_to`` runs).

    A child, not a thread: shipping reads the log back, packs and publishes, and in the writer's
    process that work took the GIL from the writer (BENCHMARKS.md, "Shipping beside a Hub").
    The child reads the log read-only, ends (after shipping what is committed) when this process
    does, and its errors are logged.
    """

    def __init__(self, path: str, servers: str, stream: str = wire.DEFAULT_STREAM, hub: str | None = None,
                 logger: Any = None, drain_timeout: float = 10.0) -> None:
        wire.parse_servers(servers)  # a bad address is the caller's error, not the child's
        named = ["--hub", wire.check_name("hub", hub)] if hub else []
        self.command = [sys.executable, "-m", "tasklog.stream.shipper", "--log", path, "--to", servers,
                        "--stream", wire.check_name("stream", stream), *named]
        self.logger, self.drain_timeout = logger, drain_timeout
        self.errors: list[str] = []
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> Shipping:
        """Start the child; return self."""
        # Its standard input is a pipe only this process holds: closed by stop(), or by this
        # process ending, however it ends, which the child takes as "ship what is committed, then stop".
        self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._relay, args=(self._proc,), name="tasklog-ship-errors", daemon=True).start()
        return self

    def _relay(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.errors.append(line.rstrip())
            if self.logger is not None:
                self.logger.error("tasklog shipper: %s", line.rstrip())

    @property
    def returncode(self) -> int | None:
        """The child's exit status (None: still running)."""
        return None if self._proc is None else self._proc.poll()

    def stop(self) -> None:
        """Ship what is committed, then stop; give up after ``drain_timeout`` (the rest ships next time)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # asks it to drain
        try:
            proc.wait(self.drain_timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # to stop once its window settles
            try:
                proc.wait(_ACK_TIMEOUT + 2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
