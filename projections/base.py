"""The projection contract: apply batches of events, answer ipyparallel-style queries.

A backend implements five storage methods (load, store, find, history, close);
everything that gives events and queries their meaning lives here and in
``fold``/``query``, so backends cannot disagree about it.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from tasklog.events import Event

from . import catchup, counts, hubs, paging
from .catchup import gc_paused
from .derived import Derived, TaskTimes
from .errors import ProjectionError
from .fold import (
    BUFFER_KEYS,
    CARRIERS,
    Anomalies,
    EventSource,
    Records,
    apply_event,
    is_tombstone,
    refer_buffers,
    refold_from,
    resolve_buffers,
    settle,
    touched,
)
from .paging import Cursor, Page
from .parse import parse, parse_keys
from .query import Logical, fields_of, public_copy, select

__all__ = ["Projection", "Records", "TaskTimes", "BUFFER_MODES", "STREAM_ORIGIN"]

#: How a projection keeps buffers: "ref" (the default: the number of the event that carried them,
#: read back from the log when a record is returned) or "inline" (the bytes, for a projection
#: read without its log). "ref" applies only while the projection is fed from a log.
BUFFER_MODES = ("ref", "inline")
#: What a projection folded from a stream of hubs is tied to, in place of a log's identity: this,
#: then the stream's name (``tasklog.stream.feed`` feeds it).
STREAM_ORIGIN = "nats stream "


_RESTORE_CHUNK = 5000



class Projection(Derived, ABC):
    """Folds events into TaskRecords and answers queries; subclasses store them."""

    spec = ""
    #: Whether records survive a restart (and a checkpoint is kept with them).
    persistent = False
    #: The finest datetime the store keeps: records hold the events' datetimes cut to it.
    datetime_resolution = timedelta(microseconds=1)
    #: Whether the backend keeps a checkpoint per hub, so a stream of many hubs can feed it.
    keeps_hubs = False

    def __init__(self) -> None:
        self.last_seq = 0
        self.anomalies: Anomalies = Counter()
        self.applied = 0
        #: The identity of the log the records were folded from (None: not bound yet).
        self.log_identity: str | None = None
        #: The event a time-travel replay stopped at: the records stay as of it (None: follows the log).
        self.pinned: int | None = None
        #: The snapshot the records were last restored from (None: folded from events only).
        self.restored_from: int | None = None
        self._lock = threading.RLock()
        #: Called before every read (a live projection on an async log flushes the log there).
        self.before_read: Callable[[], None] | None = None
        #: What keeps the projection in step with a log (``projections.live.attach`` sets it).
        self.attachment: Any = None
        #: The log read for buffers kept by reference and re-folds (``read_from``; None: buffers inline).
        self.source: EventSource | None = None
        #: "ref" or "inline": see BUFFER_MODES.
        self.buffers = "ref"
        #: Fed from a stream of many hubs: log identity -> (hub name, last sequence number applied).
        self.hubs: dict[str, tuple[str, int]] = {}
        #: The folded events by block and type (``projections.counts``).
        self.counted = counts.Counted()

    def read_from(self, source: EventSource | None) -> None:
        """Read events from ``source`` (the log): buffers by reference, tasks re-folded on demand."""
        self.source = source

    @property
    def by_reference(self) -> bool:
        """Whether buffers folded now are kept as references to their events."""
        return self.source is not None and self.buffers == "ref"

    @property
    def lock(self) -> threading.RLock:
        """The lock every apply and read holds: hold it to apply several batches as one step."""
        return self._lock

    # -- storage, per backend ------------------------------------------------

    @abstractmethod
    def _load(self, msg_ids: set[str]) -> Records:
        """The stored records (or tombstones) for ``msg_ids``; absent ids may be left out."""

    @abstractmethod
    def _store(self, records: Records, changed: set[str], last_seq: int) -> None:
        """Persist the ``changed`` records (None: delete it) and the checkpoint ``last_seq`` together."""

    @abstractmethod
    def _find(self, node: Logical, keys: list[str] | None) -> list[dict[str, Any]]:
        """The public records matching ``node``, limited to ``keys``; fresh dicts the caller may keep."""

    @abstractmethod
    def _history(self) -> list[str]:
        """msg_ids of live records ordered by (submitted, msg_id), never-submitted first."""

    @abstractmethod
    def _clear(self) -> None:
        """Delete every stored record and reset the stored checkpoint to 0, at once where the store allows."""

    def store_hubs(self, records: Records, changed: set[str], hubs: dict[str, tuple[str, int]]) -> None:
        """Persist the ``changed`` records and the per-hub checkpoints ``hubs`` together (where ``keeps_hubs``)."""
        raise NotImplementedError

    def _save_marks(self) -> None:
        """Store ``log_identity`` and ``pinned`` beside the checkpoint."""

    def clear(self) -> None:
        """Forget every record, the checkpoint and which log they came from (before a rebuild)."""
        with self._lock:
            self._clear()
            self.last_seq = 0
            self.hubs = {}
            self.counted.restart(1)
            self.anomalies = Counter()
            self.log_identity = None
            self.pinned = None
            self._save_marks()

    def bind(self, identity: str | None) -> None:
        """Tie the records to the log ``identity``; refuse records folded from another log."""
        with self._lock:
            if self.log_identity == identity:
                return
            if self.log_identity is None:  # a new projection, or one made by an older tasklog
                self.log_identity = identity
                self._save_marks()
                return
            this = f"this log ({identity})" if identity else "this log, which has no identity (an older tasklog's)"
            built = self.log_identity if self.log_identity.startswith(STREAM_ORIGIN) else f"log {self.log_identity}"
            raise ProjectionError(f"{self.spec} was built from {built}, not from {this}; "
                                  "replay with --rebuild to build it from this log")

    def pin(self, seq: int | None) -> None:
        """Keep the records as of event ``seq`` (a time-travel replay), or let them follow the log (None)."""
        with self._lock:
            if self.pinned != seq:
                self.pinned = seq
                self._save_marks()

    def _count(self, node: Logical) -> int:
        return len(self._find(node, ["msg_id"]))

    def close(self) -> None:
        """Release the storage."""

    # -- applying ---------------------------------------------------------------

    def apply(self, batch: Sequence[tuple[int, Event]]) -> int:
        """Fold a batch of (seq, event) into the records; events at or below last_seq are skipped."""
        with self._lock:
            fresh = [item for item in batch if item[0] > self.last_seq]
            if not fresh:
                return 0
            records, changed = self.fold_batch(fresh, self.by_reference)
            with self.counted.storing(counts.of_batch(fresh)):
                self._store(records, changed, fresh[-1][0])
            self.last_seq = fresh[-1][0]
            self.applied += len(fresh)
            return len(fresh)

    def fold_batch(self, fresh: Sequence[tuple[int, Event]], refer: bool) -> tuple[Records, set[str]]:
        """The records ``fresh`` touches, its events folded in (buffers as references if ``refer``), and ids changed."""
        records = self._load(touched(fresh))
        changed: set[str] = set()
        for seq, event in fresh:
            changed.update(apply_event(records, seq, event, self.anomalies))
            if refer and event.__class__ in CARRIERS:  # tested here: a call per event was 4% of a replay
                refer_buffers(records, seq, event)
        settle(records, changed)
        return records, changed

    def apply_one(self, seq: int, event: Event) -> int:
        """Fold one event (a hub feeding its projection call by call): ``apply`` of one."""
        return self.apply(((seq, event),))

    def apply_hub(self, identity: str, hub: str, batch: Sequence[tuple[int, Event]], origin: str) -> int:
        """Fold events of hub ``hub`` (log ``identity``) read from stream ``origin``: see ``hubs.apply_hub``."""
        return hubs.apply_hub(self, identity, hub, batch, origin)

    def store_folded(self, records: Records, last_seq: int, anomalies: Anomalies, events: int,
                     counted: counts.EventCounts | None = None) -> None:
        """Store records folded elsewhere from this projection's own, up to event ``last_seq``
        (what a write-behind overlay hands over: ``events`` events, meeting ``anomalies``, counted
        by type in ``counted``; None: not counted)."""
        with self._lock:
            with self.counted.storing(counted):  # None: not counted, so no longer kept
                self._store(records, set(records), last_seq)
            self.last_seq = last_seq
            self.applied += events
            self.anomalies.update(anomalies)

    def rewind(self, msg_ids: set[str], last_seq: int) -> None:
        """Fold ``msg_ids`` again from the log (None: no events, no record) and set the checkpoint
        back to ``last_seq``: a failed async commit lost events folded here, and their numbers go
        to later events, which a checkpoint past them would skip (issue 20)."""
        with self._lock:
            self.store_folded({m: self.refold(m) for m in msg_ids}, last_seq, Counter(), 0)

    def catch_up(self, events: Iterable[tuple[int, Event]], batch_size: int = 4096,
                 progress: Callable[[int], None] | None = None) -> int:
        """Apply every event from ``events`` (e.g. ``log.read(p.last_seq + 1)``) in batches."""
        return catchup.catch_up(self, events, batch_size, progress)

    def restore(self, records: Iterable[dict[str, Any]], last_seq: int, anomalies: Anomalies) -> None:
        """Replace every record with ``records`` (a snapshot's), folded up to ``last_seq``."""
        inline = self.buffers == "inline" and self.source is not None  # a snapshot keeps references
        with self._lock, gc_paused():
            self._clear()  # the marks stay: the snapshot is of the log the projection is bound to
            self.counted.restart(last_seq + 1)  # its events are not counted
            for chunk in catchup.batches(records, _RESTORE_CHUNK):
                # Checkpoint 0 until every chunk is in: a crash half-way must not look restored.
                kept: Records = {r["msg_id"]: self.resolve_buffers(r) if inline and not is_tombstone(r) else r
                                 for r in chunk}
                self._store(kept, set(kept), 0)
            self._store({}, set(), last_seq)
            self.last_seq = last_seq
            self.anomalies = Counter(anomalies)
            self.restored_from = last_seq

    # -- reading ----------------------------------------------------------------

    def _reading(self) -> None:
        if self.before_read is not None:
            self.before_read()

    def records_of(self, msg_ids: set[str]) -> Records:
        """The stored records (or tombstones) of ``msg_ids``, not copies; absent ids may be left out."""
        with self._lock:
            return self._load(msg_ids)

    def get_record(self, msg_id: str) -> dict[str, Any]:
        """The record of ``msg_id`` (a copy); KeyError if there is none."""
        self._reading()
        with self._lock:
            if not isinstance(msg_id, str):
                raise KeyError(f"msg_id must be a str, got {msg_id!r:.60}")
            rec = self._load({msg_id}).get(msg_id)
            if rec is None or is_tombstone(rec):
                raise KeyError(self._missing_reason(msg_id, rec))
            return self.resolve_buffers(public_copy(rec))

    def resolve_buffers(self, record: dict[str, Any]) -> dict[str, Any]:
        """Put the buffers back in a record the caller owns, read from the events that carried them."""
        return resolve_buffers(record, self.source, self.spec)

    def refold(self, msg_id: str, before: int | None = None) -> dict[str, Any] | None:
        """The record of ``msg_id`` folded again from its own events (those before ``before``).

        What an unbounded projection holds for it, buffers kept the same way: a resubmit reads
        the other task's state as of just before it, as the fold did.
        """
        if self.source is None:
            return None
        source = self.source
        return refold_from(source.events_of, source.start_seq, msg_id, before, refer=self.by_reference)

    def peek(self, msg_id: str) -> dict[str, Any] | None:
        """The stored record of ``msg_id`` itself, not a copy (None if absent or dropped); never mutate it."""
        with self._lock:
            rec = self._load({msg_id}).get(msg_id)
        return None if rec is None or is_tombstone(rec) else rec

    def _missing_reason(self, msg_id: str, record: dict[str, Any] | None) -> str:
        if is_tombstone(record):
            return f"task {msg_id!r} was dropped (purged)"
        return f"no task {msg_id!r}"

    def find_records(self, query: Any = None, keys: Any = None) -> list[dict[str, Any]]:
        """Records matching a MongoDB-style query, or a tree from ``parse`` (copies; msg_id always included)."""
        node = query if isinstance(query, Logical) else parse(query)
        selected = parse_keys(keys)
        self._reading()
        with self._lock:
            if self._reads_references(node):
                return select(self._find(Logical("$and"), None), node, selected, self.resolve_buffers)
            found = self._find(node, selected)
            if selected is None or any(k in selected for k in BUFFER_KEYS):
                return [self.resolve_buffers(rec) for rec in found]
            return found

    def find_page(self, query: Any = None, keys: Any = None, sort: str = "submitted", descending: bool = True,
                  limit: int = 100, after: Cursor | None = None) -> Page:
        """One page of a query's matches ordered by ``sort`` then msg_id, past cursor ``after`` (``paging``)."""
        node = query if isinstance(query, Logical) else parse(query)
        selected = parse_keys(keys)
        paging.check_page(sort, limit, after)
        self._reading()
        with self._lock:
            if self._reads_references(node):
                hits = select(self._find(Logical("$and"), None), node, None, self.resolve_buffers)
                return paging.page_of(hits, sort, descending, limit, after).only(selected)
            page = self._page(node, sort, descending, limit, after)
            if selected is None or any(k in selected for k in BUFFER_KEYS):
                page = Page([self.resolve_buffers(rec) for rec in page.records], page.after)
        return page.only(selected)

    def _page(self, node: Logical, sort: str, descending: bool, limit: int, after: Cursor | None) -> Page:
        """A page of the matches of ``node`` (whole records): sorted in memory, unless a backend can do better."""
        return paging.page_of(self._find(node, None), sort, descending, limit, after)

    def count(self, query: Any = None) -> int:
        """How many records match ``query`` (a MongoDB-style query, or a tree from ``parse``)."""
        node = query if isinstance(query, Logical) else parse(query)
        self._reading()
        with self._lock:
            if self._reads_references(node):
                return len(select(self._find(Logical("$and"), None), node, ["msg_id"], self.resolve_buffers))
            return self._count(node)

    def _reads_references(self, node: Logical) -> bool:
        """Whether the query tests buffers that may be stored as references to events."""
        # Such a query (rare: the Hub never asks one) is answered on every record read back: slow but exact.
        return self.source is not None and not fields_of(node).isdisjoint(BUFFER_KEYS)

    def get_history(self) -> list[str]:
        """msg_ids of all records, ordered by submission time."""
        self._reading()
        with self._lock:
            return self._history()

    def __enter__(self) -> Projection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} at seq {self.last_seq}>"

