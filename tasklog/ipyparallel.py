"""A drop-in task database for ipyparallel's Hub, backed by a tasklog.

Select it with ``ipcontroller --IPController.db_class=tasklog.ipyparallel.TaskLogDB``
(or ``c.IPController.db_class`` in a profile, or ``controller_args`` of
``ipyparallel.Cluster``). The Hub's ``add_record``/``update_record`` calls become
events in the log; reads go to a projection that is folded as each event is
appended, so the Hub reads its own writes without waiting for a commit.

The Hub calls the database on its event loop, so the log runs in ``async``
durability by default: a call never waits for a disk sync, and a killed
controller loses at most the events of the last ``commit_interval`` (5 ms) plus
the commit in flight. ``durability = "sync"`` trades that window for a sync per call.

Like the CLI, this is an edge module: it composes the log core and ``projections``.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timezone
from typing import Any

from ipyparallel.controller.dictdb import BaseDB
from traitlets import Enum, Float, Int, Unicode

import projections
from projections import Projection, snapshot
from projections.buffered import WriteBehind
from projections.fold import BUFFER_KEYS, ref_seq
from projections.maintenance import Maintenance, Policy

from .errors import LogBusyError
from .events import Annotate, Complete, Drop, Event, Output, Resubmit, Start, Submit, validate
from .log import DURABILITY, TaskLog
from .ship import Shipping

__all__ = ["TaskLogDB", "record_events"]

# The update keys each event type takes (its own fields); the rest of an update becomes an annotate.
_SUBMIT_KEYS = Submit._fields[1:]
_RESULT_KEYS = Complete._fields[1:]
_RESULT_SET = frozenset(_RESULT_KEYS)
_BUFFERS = frozenset({"buffers", "result_buffers"})
_STREAMS = ("stdout", "stderr")
_OUTPUTS = ("error", "execute_input", "execute_result", "display_data")
_DEFAULT_EMPTY: tuple[Any, ...] = (None, "")


def _buffers(value: Any) -> Any:
    # The Hub may hand over zmq Frames or memoryviews; the log keeps bytes.
    if isinstance(value, (list, tuple)):
        return [b if isinstance(b, bytes) else bytes(memoryview(b)) for b in value]
    return value


def _taken(rest: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The fields of ``keys`` taken out of an update, None where it has none (buffers as bytes)."""
    # None, not the event's default: a Hub record without a queue has none yet (a resubmission).
    return {k: _buffers(rest.pop(k, None)) if k in _BUFFERS else rest.pop(k, None) for k in keys}


def _submit(msg_id: str, rest: dict[str, Any]) -> Submit:
    return Submit(msg_id=msg_id, **_taken(rest, _SUBMIT_KEYS))


def _complete(msg_id: str, rest: dict[str, Any]) -> Complete:
    return Complete(msg_id=msg_id, **_taken(rest, _RESULT_KEYS))


def _streams(msg_id: str, rest: dict[str, Any], current: dict[str, Any]) -> list[Event]:
    # The Hub sends the whole accumulated text: log only what is new. Anything else is a rewrite.
    out: list[Event] = []
    fixes: dict[str, Any] = {}
    for name in _STREAMS:
        if name not in rest:
            continue
        text, before = rest.pop(name), current.get(name) or ""
        if isinstance(text, str) and text.startswith(before):
            if len(text) > len(before):
                out.append(Output(msg_id=msg_id, name=name, text=text[len(before):]))
        elif text != before:
            fixes[name] = text
    if fixes:
        out.append(Annotate(msg_id=msg_id, fields=fixes))
    return out


def record_events(msg_id: str, rec: dict[str, Any], current: dict[str, Any] | None,
                  submitted_of: Callable[[str], Any]) -> list[Event]:
    """The events that turn ``current`` (None: no record yet) into ``current`` updated with ``rec``."""
    now = current or {}
    # Keys that change nothing: the Hub re-sends whole records when it merges an early iopub stub.
    rest = {k: v for k, v in rec.items()
            if k != "msg_id" and (v != now.get(k) if k in now else v not in _DEFAULT_EMPTY)}
    events: list[Event] = []
    if rest.get("header"):
        events.append(_submit(msg_id, rest))
    if rest.get("result_header") is not None:
        events.append(_complete(msg_id, rest))
    elif "engine_uuid" in rest:
        events.append(Start(msg_id=msg_id, **_taken(rest, Start._fields[1:])))
    events.extend(_streams(msg_id, rest, now))
    for name in _OUTPUTS:
        if rest.get(name) is not None:
            events.append(Output(msg_id=msg_id, name=name, content=rest.pop(name)))
    new_id = rest.pop("resubmitted", None)
    if new_id:
        events.append(Resubmit(msg_id=msg_id, new_msg_id=new_id, submitted=submitted_of(new_id)))
    if rest:
        events.append(Annotate(msg_id=msg_id, fields=rest))
    return events


def _profile_location() -> str:
    from IPython.core.application import BaseIPythonApplication

    if BaseIPythonApplication.initialized():
        app = BaseIPythonApplication.instance()
        if app.profile_dir is not None:
            return str(app.profile_dir.location)
    return "."


class TaskLogDB(BaseDB):  # type: ignore[misc]
    """ipyparallel's task database interface over a tasklog event log and a projection."""

    location = Unicode("", config=True, help="Directory that holds the log (a `tasklog` directory inside it). "
                       "Default: the profile directory, as SQLiteDB does.")
    projection = Unicode("sqlite", config=True, help="Where records are folded for queries: 'sqlite' (default: "
                         "a file in the log directory; bounded memory, every task answerable, kept across "
                         "restarts), 'dict' (in memory, rebuilt from the log at start; add ?record_limit=N "
                         "to bound it), sqlite:///path.db, mongodb://host:port/db or none. Buffers stay in "
                         "the log unless the spec says ?buffers=inline.")
    durability = Enum(sorted(DURABILITY), "async", config=True,
                      help="The log's durability: async (default, never blocks the Hub), process or sync.")
    commit_interval = Float(0.005, config=True, help="Seconds between commits in async durability: "
                            "the most a killed controller can lose.")
    writer_timeout = Float(30.0, config=True, help="Seconds a new controller waits for the previous one "
                           "(still shutting down, on the same log) to let the log go before it gives up.")
    snapshot_events = Int(100_000, config=True, help="Take a snapshot every this many events (0: never), "
                          "folded by a child process: a restart or replay starts from the newest.")
    snapshot_seconds = Float(3600.0, config=True, help="Take a snapshot at least this often, in seconds, "
                             "when events arrived (0: never).")
    retain_seconds = Float(0.0, config=True, help="Retention (off: 0): after each snapshot, prune the events "
                           "it covers that are older than this many seconds.")
    retain_bytes = Int(0, config=True, help="Retention (off: 0): after each snapshot, prune every event it "
                       "covers while the log directory is larger than this.")
    ship_to = Unicode("", config=True, help="NATS servers (nats://host:port[,...]) to ship every committed event "
                      "to, from a child process (`tasklog ship --follow`; needs tasklog[nats]); empty: off.")
    ship_stream = Unicode("TASKLOG", config=True, help="The JetStream stream ship_to publishes to.")
    ship_hub = Unicode("", config=True, help="This Hub's name in the stream (default: its log's identity).")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Checked before anything is opened: a bad setting leaves no log held.
        policy = Policy(self.snapshot_events, self.snapshot_seconds, self.retain_seconds, self.retain_bytes)
        path = os.path.join(self.location or _profile_location(), "tasklog")
        self.tasklog = self._open_log(path)
        spec = f"sqlite:///{os.path.join(path, 'projection.db')}" if self.projection == "sqlite" else self.projection
        try:
            # replay, not open: a projection left pinned by a time-travel replay must follow the Hub's log.
            self._proj = projections.replay(self.tasklog, spec)
        except BaseException:
            self.tasklog.close()
            raise
        # SQLite and MongoDB would pay a transaction or a round trip per Hub call: write behind.
        self.records: Projection = WriteBehind(self._proj) if self._proj.persistent else self._proj
        self.maintenance = Maintenance(self.tasklog, policy).start()
        self.shipping = self._start_shipping()
        # The Hub never calls close(): stopping the controller ends its loop, then the process.
        atexit.register(self.close)
        self.log.info("tasklog at %s: events %d..%d, projection %s (%s durability)", path,
                      self.tasklog.start_seq, self.tasklog.last_seq, spec, self.durability)

    def _open_log(self, path: str) -> TaskLog:
        # A controller restarted at once (ipcluster, ipyparallel's own tests) finds the old one still
        # exiting with the log held: wait for it, saying so, rather than fail the new controller.
        try:
            return TaskLog.open(path, self.durability, commit_interval=self.commit_interval)
        except LogBusyError:
            if self.writer_timeout <= 0:
                raise
        self.log.warning("tasklog at %s is held by another writer (a controller still exiting?); "
                         "waiting up to %g s for it", path, self.writer_timeout)
        log = TaskLog.open(path, self.durability, commit_interval=self.commit_interval,
                           lock_timeout=self.writer_timeout)
        self.log.info("tasklog at %s: the previous writer is gone, this controller has the log", path)
        return log

    def _start_shipping(self) -> Shipping | None:
        if not self.ship_to:
            return None
        try:
            return Shipping(self.tasklog.path, self.ship_to, self.ship_stream, self.ship_hub or None, self.log).start()
        except BaseException:
            self.close()
            raise

    # -- writes ------------------------------------------------------------------

    def _append(self, events: list[Event]) -> None:
        if len(events) == 1:
            self._append_one(events[0])
        elif events:
            checked = [validate(e) for e in events]  # all-or-nothing: validate before the first is written
            seqs = self.tasklog.append_many(checked)
            self._catch_up_to(seqs[0])
            self.records.apply(list(zip(map(int, seqs), checked)))

    def _append_one(self, event: Event) -> None:
        seq, checked = self.tasklog.append_event(event)
        if seq != self.records.last_seq + 1:
            self._catch_up_to(seq)
        self.records.apply_one(seq, checked)

    def _catch_up_to(self, seq: int) -> None:
        # Another process appended in between (only sync/process logs can be shared): fold its events first.
        if seq > self.records.last_seq + 1:
            snapshot.catch_up(self.records, self.tasklog, stop=seq - 1)

    def _submitted_of(self, msg_id: str) -> datetime:
        rec = self.records.peek(msg_id)
        when = rec.get("submitted") if rec is not None else None
        return when if isinstance(when, datetime) else datetime.now(timezone.utc)

    def _current(self, msg_id: str, rec: dict[str, Any]) -> dict[str, Any] | None:
        """The stored record to diff ``rec`` against; its buffers read back when ``rec`` sets some."""
        current = self.records.peek(msg_id)
        if current is not None and any(ref_seq(current.get(k)) is not None for k in BUFFER_KEYS if k in rec):
            # The Hub re-sends whole records (a merged iopub stub): the same buffers change nothing.
            current = self.records.resolve_buffers(dict(current))
        return current

    def add_record(self, msg_id: str, rec: dict[str, Any]) -> None:
        """Record a new task (a submit, or a stub when its output arrived first)."""
        self._append(record_events(msg_id, rec, self._current(msg_id, rec), self._submitted_of))

    def update_record(self, msg_id: str, rec: dict[str, Any]) -> None:
        """Record what changed in a task: start, output, complete, resubmit or other fields."""
        # The Hub's three common updates go straight to their event; anything else is diffed.
        if len(rec) == 1:
            if "engine_uuid" in rec:  # the scheduler reported the destination
                self._append_one(Start(msg_id=msg_id, engine_uuid=rec["engine_uuid"]))
                return
            for name in _STREAMS:
                text = rec.get(name)
                current = self.records.peek(msg_id) if text is not None else None
                before = (current.get(name) or "") if current is not None else None
                if before is not None and text.__class__ is str and text.startswith(before):
                    if len(text) > len(before):
                        self._append_one(Output(msg_id=msg_id, name=name, text=text[len(before):]))
                    return
        elif rec.get("result_header") is not None and _RESULT_SET.issuperset(rec):
            self._append_one(_complete(msg_id, dict(rec)))
            return
        self._append(record_events(msg_id, rec, self._current(msg_id, rec), self._submitted_of))

    def drop_record(self, msg_id: str) -> None:
        """Purge one task (a drop event); KeyError if there is no such task."""
        self.records.get_record(msg_id)
        self._append([Drop(msg_ids=[msg_id])])

    def drop_matching_records(self, check: dict[str, Any]) -> None:
        """Purge every task matching a query."""
        ids = [r["msg_id"] for r in self.records.find_records(check, keys=["msg_id"])]
        if ids:
            self._append([Drop(msg_ids=ids)])

    # -- reads -------------------------------------------------------------------

    def get_record(self, msg_id: str) -> dict[str, Any]:
        """A copy of one task's record; KeyError if absent or purged."""
        return self.records.get_record(msg_id)

    def find_records(self, check: dict[str, Any], keys: list[str] | None = None) -> list[dict[str, Any]]:
        """Records matching a MongoDB-style query (copies), optionally only ``keys`` (msg_id always).

        Every task answers on the default (SQLite) projection; a dict projection with limits
        answers over its resident records only (``get_record`` re-folds an evicted one).
        """
        return self.records.find_records(check, keys)

    def get_history(self) -> list[str]:
        """msg_ids ordered by submission time."""
        return self.records.get_history()

    def close(self) -> None:
        """Commit what is queued and release the log and the projection; then raise what failed
        commits lost that nobody was told about (a flush or close of the log reports it)."""
        if not self.tasklog.closed:
            self.maintenance.stop()
            shipping = getattr(self, "shipping", None)  # None, or not yet set when opening failed
            with ExitStack() as last_first:  # each runs, even when one before it raised
                last_first.callback(self.records.close)
                last_first.callback(self.tasklog.close)
                if shipping is not None:
                    last_first.callback(shipping.stop)  # ships what is committed, unless the cluster does not answer
                    self.tasklog.flush()
        atexit.unregister(self.close)
