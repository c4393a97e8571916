"""What a log's events look like in a NATS JetStream stream, and the client calls every side shares.

One stream holds many hubs: hub ``H`` of stream ``S`` publishes to subject ``tasklog.S.H``.
Each message carries a run of consecutive events as the log stores them (msgpack, each with its
schema byte) and the commits that wrote them, with headers that make it self-describing and
deduplicable. Runs, not one event a message: each message has a fixed cost in the client
(BENCHMARKS.md, "Design notes moved from the code").

===================  =====================================================================
``Nats-Msg-Id``      ``<log identity>:<seq>`` (one event) or ``<log identity>:<first>-<last>``:
                     JetStream drops a repeat within its duplicate window
``Tasklog-Log``      the identity of the log the events came from
``Tasklog-Hub``      the hub's name (the subject's last token)
``Tasklog-Seq``      the first event's sequence number in that log
``Tasklog-Count``    how many consecutive events the message holds
``Tasklog-Msg``      the message's number among the hub's (dense: a lost one shows in the count)
``Tasklog-Time``     the UNIX time of the commit of its last event (``repr`` of a float: exact)
``Tasklog-Schema``   the event encoding's version byte
``Tasklog-Fork``     only from a restored log: the copy's fork id (a restore that is written to
                     is a fork of the original); its message ids are ``<identity>/<fork>:<span>``
===================  =====================================================================

The body is msgpack ``[[[commit first seq, commit time], ...], [event bytes, ...]]``.

The first message of each round a shipper sends carries no message id but
``Nats-Expected-Last-Subject-Sequence``: the stream stores it only if the hub's last message is
the one the shipper last saw, so a second copy of a log that starts shipping as the same hub is
refused at once instead of merging its events with the first's (issue 20: two restores of one
hub, each written to and shipped, merged silently while both shippers reported success).

Needs the ``nats`` extra (nats-py); ``MissingExtraError`` says so otherwise.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgpack

from .. import codec
from ..errors import InterfaceError, MissingExtraError, StreamError, StreamServerError

__all__ = ["DEFAULT_STREAM", "Batch", "HubOrder", "batch_of", "check_name", "close", "connect", "ensure_stream",
           "first_gap", "hub_batches", "hub_count", "hub_subject", "lost_claim", "nats_module", "parse_servers",
           "retrying", "stream_subjects", "transient", "translated"]

DEFAULT_STREAM = "TASKLOG"
T = TypeVar("T")
_BACKOFF_MAX = 2.0
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEADER_LOG, _HEADER_HUB, _HEADER_SEQ = "Tasklog-Log", "Tasklog-Hub", "Tasklog-Seq"
_HEADER_COUNT, _HEADER_MSG = "Tasklog-Count", "Tasklog-Msg"
_HEADER_TIME, _HEADER_SCHEMA, _HEADER_FORK = "Tasklog-Time", "Tasklog-Schema", "Tasklog-Fork"
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST = 10071  # JetStream's error code for a message whose expected last sequence is not the last
_NO_PEERS = 10005  # ... for a stream whose replicas the cluster has no servers to place on
_PLACEMENT_WAIT = 10.0  # seconds a new stream's placement is asked again while the cluster forms
# Stream settings as data: what a stream made by tasklog is, whoever makes it.
STREAM_DEFAULTS = {"duplicate_window": 120.0, "max_msgs_per_subject": -1, "storage": "file"}


def nats_module() -> Any:
    """The ``nats`` package (nats-py), or MissingExtraError naming the extra."""
    try:
        return importlib.import_module("nats")
    except ImportError:
        raise MissingExtraError("nats-py", "nats", "shipping to NATS JetStream") from None


def parse_servers(url: str) -> list[str]:
    """``nats://a:4222,b:4223`` (or ``nats://a:4222,nats://b:4223``) as a list of server URLs."""
    servers = []
    for part in (p.strip() for p in url.split(",")):
        full = part if "://" in part else f"nats://{part}"
        parts = urlsplit(full)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("nats", "tls") or not parts.hostname or port is None:
            raise InterfaceError(f"{part!r} is not a NATS server address (nats://HOST:PORT[,HOST:PORT...])")
        servers.append(full)
    return servers


def check_name(what: str, name: str) -> str:
    """``name`` if it may be a stream or hub name (letters, digits, ``_``, ``-``; up to 64)."""
    if not _NAME.fullmatch(name):
        raise InterfaceError(f"{what} name {name!r} may hold only letters, digits, '_' and '-' (1 to 64)")
    return name


def hub_subject(stream: str, hub: str) -> str:
    """The subject hub ``hub`` publishes to in ``stream``."""
    return f"tasklog.{check_name('stream', stream)}.{check_name('hub', hub)}"


def stream_subjects(stream: str) -> str:
    """The subjects ``stream`` holds: every hub's."""
    return f"tasklog.{check_name('stream', stream)}.*"


async def connect(servers: list[str], *, deadline: float | None = 30.0) -> Any:
    """A client connected to one of ``servers``, trying them in turn until ``deadline`` seconds
    have passed (None: for ever); it reconnects by itself afterwards."""
    nats = nats_module()

    async def _quiet(*_: Any) -> None:
        return None  # nats-py prints every failed attempt otherwise; the caller reports what matters
    # max_reconnect_attempts=-1 makes the first connect try the servers for ever as well.
    attempt = nats.connect(servers=servers, connect_timeout=2, allow_reconnect=True, max_reconnect_attempts=-1,
                           reconnect_time_wait=0.25, error_cb=_quiet)
    try:
        return await asyncio.wait_for(attempt, deadline)
    except asyncio.TimeoutError:
        raise StreamServerError(f"no NATS server answered at {','.join(servers)} within {deadline:g} s") from None


async def close(nc: Any) -> None:
    """Close a client, giving up after a second: with no server answering, nats-py's close waits
    on a flush that never ends (issue 20: Ctrl-C could not stop a shipper in that state)."""
    with suppress(Exception):  # a timeout, or a connection already gone: nothing left to release
        await asyncio.wait_for(nc.close(), 1.0)


def lost_claim(exc: BaseException) -> bool:
    """Whether a publish was refused because the hub's last message is not the one it expected
    (another shipper published to the hub meanwhile)."""
    return getattr(exc, "err_code", None) == _WRONG_LAST


def transient() -> tuple[type[BaseException], ...]:
    """The errors that mean "the cluster cannot answer now" (no leader yet, a server gone, a
    timeout): wait and ask again."""
    errors, js_errors = importlib.import_module("nats.errors"), importlib.import_module("nats.js.errors")
    return (errors.TimeoutError, errors.NoRespondersError, errors.ConnectionClosedError,
            js_errors.ServiceUnavailableError, js_errors.NoStreamResponseError, asyncio.TimeoutError)


async def retrying(call: Callable[[], Awaitable[T]], stopped: Callable[[], bool] = lambda: False,
                   most: float = _BACKOFF_MAX) -> T:
    """``await call()`` again, backing off up to ``most`` seconds, while the cluster cannot answer;
    StreamError once ``stopped()`` says to give up."""
    wait = 0.05
    while True:
        try:
            return await call()
        except transient() as exc:
            if stopped():
                raise StreamServerError(f"stopped while the NATS cluster did not answer ({type(exc).__name__})") \
                    from None
            await asyncio.sleep(wait)
            wait = min(wait * 2, most)


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Any other nats-py error as a one-line StreamError saying what was being done."""
    errors = importlib.import_module("nats.errors")
    try:
        yield
    except errors.Error as exc:
        raise StreamServerError(f"{doing}: {type(exc).__name__} {exc}".strip()) from None


async def ensure_stream(js: Any, stream: str, replicas: int | None) -> int:
    """Create ``stream`` when missing; return its replica count. ``replicas`` None: 3 where the
    cluster can hold them, else 1."""
    errors = importlib.import_module("nats.js.errors")
    try:
        info = await js.stream_info(stream)
        return int(info.config.num_replicas or 1)
    except errors.NotFoundError:
        pass
    loop = asyncio.get_running_loop()
    settled = loop.time() + _PLACEMENT_WAIT
    for n in ([replicas] if replicas else [3, 1]):
        while True:
            try:
                await js.add_stream(name=stream, subjects=[stream_subjects(stream)], num_replicas=n,
                                    **STREAM_DEFAULTS)
                return n
            except errors.ServiceUnavailableError:
                raise  # no JetStream leader yet: the caller waits and asks again
            except errors.APIError as exc:
                # A cluster just started may not have met every peer: a 3-replica stream failed so
                # in about one test run in six. Past the wait, the cluster lacks the peers.
                if getattr(exc, "err_code", None) == _NO_PEERS and loop.time() < settled:
                    await asyncio.sleep(0.25)
                    continue
                if replicas or ("replicas" not in str(exc).lower() and "resources" not in str(exc).lower()):
                    raise StreamServerError(f"cannot create stream {stream} with {n} replicas: {exc}") from None
                break
    raise AssertionError("unreachable: the last attempt raises or returns")


def first_gap(spans: list[tuple[int, int]], start: int) -> int:
    """The first sequence number from ``start`` that no ``(first, last)`` span covers."""
    nxt = start
    for first, last in sorted(spans):
        if first > nxt:
            break
        nxt = max(nxt, last + 1)
    return nxt


@dataclass(frozen=True)
class Batch:
    """One message: a run of consecutive events of one log, as the log stores them.

    ``ordinal`` numbers a hub's messages densely (a shipper knows a lost one by the count);
    ``commits`` are ``(first seq, UNIX time)`` of the commits that wrote the events; ``time``
    is the last event's commit time; ``fork`` names the copy of the log that shipped it (None:
    the original, as every message of an older tasklog).
    """

    log: str
    hub: str
    seq: int
    count: int
    ordinal: int
    schema: int
    time: float
    commits: list[tuple[int, float]]
    events: list[bytes]
    fork: str | None = None

    @property
    def last(self) -> int:
        """The last event's sequence number."""
        return self.seq + self.count - 1

    def headers(self, claim: int | None = None) -> dict[str, str]:
        """The message's headers: ``Nats-Msg-Id`` names the span (a repeat of it is dropped); with
        ``claim``, no id but the stream sequence of the hub's last message, which must still be last."""
        span = str(self.seq) if self.count == 1 else f"{self.seq}-{self.last}"
        copy = self.log if self.fork is None else f"{self.log}/{self.fork}"
        out = {_HEADER_LOG: self.log, _HEADER_HUB: self.hub, _HEADER_SEQ: str(self.seq),
               _HEADER_COUNT: str(self.count), _HEADER_MSG: str(self.ordinal), _HEADER_TIME: repr(self.time),
               _HEADER_SCHEMA: str(self.schema)}
        if self.fork is not None:
            out[_HEADER_FORK] = self.fork
        if claim is None:
            out["Nats-Msg-Id"] = f"{copy}:{span}"
        else:
            out[_EXPECTED_LAST] = str(claim)
        return out

    def payload(self) -> bytes:
        """The message's body: the commits and the stored events."""
        return bytes(msgpack.packb([[list(c) for c in self.commits], self.events], use_bin_type=True))


def batch_of(headers: dict[str, str] | None, data: bytes | None, where: str = "") -> Batch:
    """The batch a message carries (``data`` None or empty: its headers only); StreamError when it
    is not a tasklog message."""
    h = headers or {}
    try:
        commits, events = msgpack.unpackb(data, use_list=True) if data else ([], [])
        return Batch(h[_HEADER_LOG], h[_HEADER_HUB], int(h[_HEADER_SEQ]), int(h[_HEADER_COUNT]),
                     int(h[_HEADER_MSG]), int(h[_HEADER_SCHEMA]), float(h[_HEADER_TIME]),
                     [(int(a), float(t)) for a, t in commits], [bytes(e) for e in events], h.get(_HEADER_FORK))
    except (KeyError, ValueError, TypeError, msgpack.UnpackException):
        raise StreamError(f"message {where} is not a tasklog batch (its headers: {sorted(h)})") from None


async def hub_count(js: Any, stream: str, subject: str) -> int:
    """How many messages ``stream`` holds on ``subject``."""
    info = await js.stream_info(stream, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


async def hub_batches(js: Any, stream: str, subject: str, headers_only: bool = False) -> AsyncGenerator[Batch, None]:
    """Every message ``stream`` holds on ``subject``, in stream order, as batches (``headers_only``:
    without their events)."""
    total = await hub_count(js, stream, subject)
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, headers_only=headers_only)
    try:
        for _ in range(total):
            msg = await sub.next_msg(timeout=10)
            yield batch_of(msg.headers, None if headers_only else msg.data, subject)
    finally:
        await sub.unsubscribe()


class HubOrder:
    """One hub's batches put back in log order (a failover can reorder them, a resend repeat them).

    What ``restore`` and a stream-fed projection both need: a batch waits until every event before
    it has been taken, and the hub's first message (number 1) starts it.
    """

    def __init__(self) -> None:
        self.held: dict[int, tuple[Batch, Any]] = {}

    def add(self, batch: Batch, item: Any = None) -> None:
        """Hold ``batch`` (with ``item``: what its consumer acknowledges) until it can be taken."""
        if batch.schema != codec.SCHEMA_VERSION:
            raise StreamError(f"hub {batch.hub} event {batch.seq} has schema {batch.schema}; "
                              f"this tasklog reads {codec.SCHEMA_VERSION}")
        self.held[batch.seq] = (batch, item)  # a redelivered message replaces the copy held

    def take(self, upto: int, begun: bool = True) -> tuple[list[tuple[int, bytes]], list[tuple[int, float]],
                                                            list[tuple[Batch, Any]]]:
        """The events after ``upto`` that follow it with no gap, the commits that wrote them, and
        every batch used up (repeats included). Not ``begun`` (nothing taken yet): the first batch
        must be the hub's first message."""
        events: list[tuple[int, bytes]] = []
        commits: list[tuple[int, float]] = []
        used: list[tuple[Batch, Any]] = []
        for seq in sorted(self.held):
            batch, item = self.held[seq]
            if (seq > upto + 1) if begun else batch.ordinal != 1:
                break  # a gap, or the hub's first message not here yet: what follows waits
            begun = True
            if batch.last > upto:
                # A batch that overlaps what is taken (a resend with other bounds) gives its new tail.
                skip = max(upto + 1 - seq, 0)
                events += [(seq + i, raw) for i, raw in enumerate(batch.events[skip:], skip)]
                commits += batch.commits
                upto = batch.last
            used.append((batch, item))
            del self.held[seq]
        return events, commits, used
