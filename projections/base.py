"""The projection contract: apply batches of events, answer ipyparallel-style queries.

A backend implements five storage methods (load, store, find, history, close);
everything that gives events and queries their meaning lives here and in
``fold``/``query``, so backends cannot disagree about it.
"""

from __future__ import annotations

import gc
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Protocol

from tasklog.errors import LogClosedError, MissingExtraError
from tasklog.events import Event, Resubmit, Submit

from .errors import ProjectionError
from .fold import (
    BUFFER_KEYS,
    RECORD_KEYS,
    Anomalies,
    apply_event,
    is_tombstone,
    ref_seq,
    refer_buffers,
    settle,
    targets,
    touched,
)
from .parse import parse, parse_keys
from .query import Logical, compile_predicate, fields_of, public_copy

__all__ = ["Projection", "Records", "gc_paused", "BUFFER_MODES", "EventSource", "STREAM_ORIGIN"]

#: How a projection keeps buffers: "ref" (the default: the number of the event that carried them,
#: read back from the log when a record is returned) or "inline" (the bytes, for a projection
#: read without its log). "ref" applies only while the projection is fed from a log.
BUFFER_MODES = ("ref", "inline")
#: What a projection folded from a stream of hubs is tied to, in place of a log's identity: this,
#: then the stream's name (``projections.streamfeed`` feeds it).
STREAM_ORIGIN = "nats stream "


class EventSource(Protocol):
    """What a projection reads from its log: one event by number, one task's events."""

    @property
    def start_seq(self) -> int:
        """Where the log's events start (past 1: a prune removed older ones)."""

    def event(self, seq: int) -> Event:
        """Event ``seq``."""

    def events_of(self, msg_id: str) -> list[tuple[int, Event]]:
        """The events naming ``msg_id``, in order."""

Records = dict[str, "dict[str, Any] | None"]
_RESTORE_CHUNK = 5000


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector while folding many events."""
    # A replay allocates millions of small dicts and tuples and no reference cycles; the cyclic
    # collector rescanning the growing set of records cost a quarter of replay time.
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _begins(stream: list[tuple[int, Event]], msg_id: str) -> bool:
    """Whether a stream starts where its task did: its submit, or the resubmit that made it."""
    if not stream:
        return False
    first = stream[0][1]
    return (isinstance(first, Submit) and first.msg_id == msg_id) or \
        (isinstance(first, Resubmit) and first.new_msg_id == msg_id)


def _batches(events: Iterable[tuple[int, Event]], size: int) -> Iterator[list[tuple[int, Event]]]:
    batch: list[tuple[int, Event]] = []
    for item in events:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Projection(ABC):
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
        #: The log the records are folded from, read for buffers kept by reference and for
        #: re-folding a task (``read_from`` sets it; None: records keep their buffers inline).
        self.source: EventSource | None = None
        #: "ref" or "inline": see BUFFER_MODES.
        self.buffers = "ref"
        #: Fed from a stream of many hubs: log identity -> (hub name, last sequence number applied).
        self.hubs: dict[str, tuple[str, int]] = {}

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

    def _store_hubs(self, records: Records, changed: set[str], hubs: dict[str, tuple[str, int]]) -> None:
        """Persist the ``changed`` records and the per-hub checkpoints ``hubs`` together (where ``keeps_hubs``)."""
        raise NotImplementedError

    def _save_marks(self) -> None:  # noqa: B027 (a no-op default: only persistent backends store them)
        """Store ``log_identity`` and ``pinned`` beside the checkpoint."""

    def clear(self) -> None:
        """Forget every record, the checkpoint and which log they came from (before a rebuild)."""
        with self._lock:
            self._clear()
            self.last_seq = 0
            self.hubs = {}
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

    def close(self) -> None:  # noqa: B027 (a no-op default: only some backends hold resources)
        """Release the storage."""

    # -- applying ---------------------------------------------------------------

    def apply(self, batch: Sequence[tuple[int, Event]]) -> int:
        """Fold a batch of (seq, event) into the records; events at or below last_seq are skipped."""
        with self._lock:
            fresh = [item for item in batch if item[0] > self.last_seq]
            if not fresh:
                return 0
            records, changed = self._folded(fresh, self.by_reference)
            self._store(records, changed, fresh[-1][0])
            self.last_seq = fresh[-1][0]
            self.applied += len(fresh)
            return len(fresh)

    def _folded(self, fresh: Sequence[tuple[int, Event]], refer: bool) -> tuple[Records, set[str]]:
        """The stored records ``fresh`` touches with its events folded in (buffers as references to
        their events where ``refer``), and the ids it changed."""
        records = self._load(touched(fresh))
        changed: set[str] = set()
        for seq, event in fresh:
            changed.update(apply_event(records, seq, event, self.anomalies))
            if refer:
                refer_buffers(records, seq, event)
        settle(records, changed)
        return records, changed

    def apply_one(self, seq: int, event: Event) -> int:
        """Fold one event (the hot path of a hub feeding its projection call by call)."""
        with self._lock:
            if seq <= self.last_seq:
                return 0
            records = self._load(set(targets(event)))
            changed = apply_event(records, seq, event, self.anomalies)
            if self.by_reference:
                refer_buffers(records, seq, event)
            settle(records, changed)
            self._store(records, set(changed), seq)
            self.last_seq = seq
            self.applied += 1
            return 1

    def apply_hub(self, identity: str, hub: str, batch: Sequence[tuple[int, Event]], origin: str) -> int:
        """Fold events of hub ``hub`` (log ``identity``) read from ``origin`` (a stream); events at or
        below that hub's checkpoint are skipped. Records say their hub (``hub``); many hubs fold into
        one projection, which is then tied to ``origin`` rather than to one log."""
        with self._lock:
            if not self.keeps_hubs:
                raise ProjectionError(f"{self.spec} cannot be fed from a stream of hubs (use dict, sqlite or mongodb)")
            if self.log_identity not in (None, origin):
                raise ProjectionError(f"{self.spec} was built from {self.log_identity}, not from {origin}; "
                                      "fold a stream into a projection of its own")
            known = self.hubs.get(identity)
            if known is not None and known[0] != hub:
                raise ProjectionError(f"log {identity} is hub {known[0]} in {self.spec}, not {hub}")
            last = known[1] if known else 0
            fresh = [item for item in batch if item[0] > last]
            if not fresh:
                return 0
            if self.log_identity is None:
                self.log_identity = origin
                self._save_marks()
            records, changed = self._folded(fresh, False)  # no log of its own to refer to: buffers inline
            for m in changed:
                rec = records[m]
                if rec is not None and not is_tombstone(rec):
                    rec["hub"] = hub
            self._store_hubs(records, changed, {identity: (hub, fresh[-1][0])})
            self.hubs[identity] = (hub, fresh[-1][0])
            self.applied += len(fresh)
            return len(fresh)

    def store_folded(self, records: Records, last_seq: int, anomalies: Anomalies, events: int) -> None:
        """Store records folded elsewhere from this projection's own, up to event ``last_seq``
        (what a write-behind overlay hands over: ``events`` events, meeting ``anomalies``)."""
        with self._lock:
            self._store(records, set(records), last_seq)
            self.last_seq = last_seq
            self.applied += events
            self.anomalies.update(anomalies)

    def rewind(self, msg_ids: set[str], last_seq: int) -> None:
        """Fold ``msg_ids`` again from the log (None: no events, no record) and set the checkpoint
        back to ``last_seq``: a failed async commit lost events folded here, and their numbers go
        to later events, which a checkpoint past them would skip (issue 20)."""
        with self._lock:
            self._store({m: self.refold(m) for m in msg_ids}, set(msg_ids), last_seq)
            self.last_seq = last_seq

    def catch_up(self, events: Iterable[tuple[int, Event]], batch_size: int = 4096,
                 progress: Callable[[int], None] | None = None) -> int:
        """Apply every event from ``events`` (e.g. ``log.read(p.last_seq + 1)``) in batches."""
        return self.apply_chunks(_batches(events, batch_size), batch_size, progress)

    def apply_chunks(self, chunks: Iterable[Sequence[tuple[int, Event]]], batch_size: int = 4096,
                     progress: Callable[[int], None] | None = None) -> int:
        """Apply lists of events in order (e.g. ``log.read_chunks(...)``), about ``batch_size`` per batch."""
        done = 0
        batch: list[tuple[int, Event]] = []
        with gc_paused():
            for chunk in chunks:
                batch += chunk
                if len(batch) >= batch_size:
                    done += self.apply(batch)
                    if progress:
                        progress(len(batch))
                    batch = []
            if batch:
                done += self.apply(batch)
                if progress:
                    progress(len(batch))
        return done

    def restore(self, records: Iterable[dict[str, Any]], last_seq: int, anomalies: Anomalies) -> None:
        """Replace every record with ``records`` (a snapshot's), folded up to ``last_seq``."""
        with self._lock, gc_paused():
            self._clear()  # the marks stay: the snapshot is of the log the projection is bound to
            chunk: Records = {}
            inline = self.buffers == "inline" and self.source is not None
            for rec in records:
                if inline and not is_tombstone(rec):
                    rec = self.resolve_buffers(rec)  # a snapshot keeps references; this projection may not
                chunk[rec["msg_id"]] = rec
                if len(chunk) >= _RESTORE_CHUNK:
                    # Checkpoint 0 until the last chunk: a crash half-way must not look restored.
                    self._store(chunk, set(chunk), 0)
                    chunk = {}
            self._store(chunk, set(chunk), last_seq)
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
        for key in BUFFER_KEYS:
            seq = ref_seq(record.get(key))
            if seq is not None:
                if self.source is None:
                    raise ProjectionError(f"{self.spec}: the {key} of {record.get('msg_id')!r} are in the log "
                                          f"(event {seq}); open the projection with its log, or build it "
                                          "with buffers=inline to read it without one")
                try:
                    record[key] = list(getattr(self.source.event(seq), key))
                except LogClosedError:
                    raise ProjectionError(f"{self.spec}: the {key} of {record.get('msg_id')!r} are read from "
                                          "the log, which is closed; read records while it is open, or open "
                                          "the projection with buffers=inline") from None
        return record

    def refold(self, msg_id: str, before: int | None = None) -> dict[str, Any] | None:
        """The record of ``msg_id`` folded again from its own events (those before ``before``).

        What an unbounded projection holds for it, buffers kept the same way: a resubmit reads
        the other task's state as of just before it, as the fold did.
        """
        if self.source is None:
            return None
        records: Records = {}
        refer = self.by_reference
        scratch: Anomalies = Counter()
        stream = self.source.events_of(msg_id)
        if self.source.start_seq > 1 and not _begins(stream, msg_id):
            return None  # its first events may have been pruned: no partial record, ever
        for seq, event in stream:
            if before is not None and seq >= before:
                break
            if isinstance(event, Resubmit):
                other = event.new_msg_id if event.msg_id == msg_id else event.msg_id
                if other is not None and other not in records:
                    records[other] = self.refold(other, seq)  # the other side, as it was just before
            apply_event(records, seq, event, scratch)
            if refer:
                refer_buffers(records, seq, event)
        settle(records, [msg_id])
        return records.get(msg_id)

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
                return self._find_resolved(node, selected)
            found = self._find(node, selected)
            if selected is None or any(k in selected for k in BUFFER_KEYS):
                for rec in found:
                    self.resolve_buffers(rec)
            return found

    def to_dataframe(self, query: Any = None, keys: Any = None) -> Any:
        """The records matching ``query`` as a pandas DataFrame indexed by msg_id (needs ``tasklog[frames]``).

        One row per task; datetimes stay timezone-aware (UTC); a key no record has is a column of
        missing values, so the columns are always ``keys`` (or every record key) in order.
        """
        try:
            import pandas as pd
        except ImportError:
            raise MissingExtraError("pandas", "frames", "to_dataframe") from None
        records = self.find_records(query, keys)
        if keys is not None:
            columns = [k for k in parse_keys(keys) or () if k != "msg_id"]
        else:  # every TaskRecord key, then what annotations added, in name order
            extra = sorted({k for r in records for k in r} - set(RECORD_KEYS))
            columns = [*(k for k in RECORD_KEYS if k != "msg_id"), *extra]
        frame = pd.DataFrame.from_records(records, columns=["msg_id", *columns])
        return frame.set_index("msg_id")

    def count(self, query: Any = None) -> int:
        """How many records match ``query`` (a MongoDB-style query, or a tree from ``parse``)."""
        node = query if isinstance(query, Logical) else parse(query)
        self._reading()
        with self._lock:
            if self._reads_references(node):
                return len(self._find_resolved(node, ["msg_id"]))
            return self._count(node)

    def _reads_references(self, node: Logical) -> bool:
        """Whether the query tests buffers that may be stored as references to events."""
        return self.source is not None and not fields_of(node).isdisjoint(BUFFER_KEYS)

    def _find_resolved(self, node: Logical, keys: list[str] | None) -> list[dict[str, Any]]:
        # A query on the bytes of buffers (rare: the Hub never asks one) is answered on the
        # records with their buffers read back: every record is read, so it is slow but exact.
        match = compile_predicate(node)
        hits = [rec for rec in self._find(Logical("$and"), None) if match(self.resolve_buffers(rec))]
        return hits if keys is None else [{k: r[k] for k in keys if k in r} for r in hits]

    def get_history(self) -> list[str]:
        """msg_ids of all records, ordered by submission time."""
        self._reading()
        with self._lock:
            return self._history()

    def stats(self) -> dict[str, Any]:
        """Applied events, the checkpoint, and the anomalies met (events about unknown or dropped tasks)."""
        return {"spec": self.spec, "last_seq": self.last_seq, "applied": self.applied,
                "records": self.count({}), "anomalies": dict(self.anomalies)}

    def __enter__(self) -> Projection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} at seq {self.last_seq}>"

