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
from projections.fold import BUFFER_KEYS, ref_seq
from projections.maintenance import Maintenance, Policy
from projections.writebehind import WriteBehind

from ..codec import LOG_SCHEMA
from ..errors import LogBusyError, StorageError, same_kind
from ..events import Annotate, Complete, Drop, Event, Output, Resubmit, Start, Submit, task_ids, validate
from ..log import DURABILITY, TaskLog
from ..schema import written_with
from ..serve.run import ServeChild
from ..stream.ship import Shipping

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


def _pop_fields(rest: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The fields of ``keys`` taken out of an update, None where it has none (buffers as bytes)."""
    # None, not the event's default: a Hub record without a queue has none yet (a resubmission).
    return {k: _buffers(rest.pop(k, None)) if k in _BUFFERS else rest.pop(k, None) for k in keys}


def _submit(msg_id: str, rest: dict[str, Any]) -> Submit:
    return Submit(msg_id=msg_id, **_pop_fields(rest, _SUBMIT_KEYS))


def _complete(msg_id: str, rest: dict[str, Any]) -> Complete:
    return Complete(msg_id=msg_id, **_pop_fields(rest, _RESULT_KEYS))


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
        events.append(Start(msg_id=msg_id, **_pop_fields(rest, Start._fields[1:])))
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
    serve_port = Int(-1, config=True, help="Serve the live dashboard (`tasklog serve`, needs tasklog[serve]) on "
                     "this port from a child process, read-only; 0: any free port; -1 (default): off. Its URL, "
                     "with the token, is logged.")
    serve_host = Unicode("127.0.0.1", config=True, help="The address serve_port listens on (default: this "
                         "machine only).")
    serve_token = Unicode("", config=True, help="The dashboard's token (default: $TASKLOG_SERVE_TOKEN, else a "
                          "random one, logged with its URL).")

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
        self._lost: list[tuple[int, set[str]]] = []  # failed commits the projection still holds
        self._loss: StorageError | None = None  # raised by the next query or close
        self.tasklog.on_loss(self._on_loss)
        self.maintenance = Maintenance(self.tasklog, policy).start()
        self.shipping = self._start_shipping()
        self.serving = self._start_serving()
        # The Hub never calls close(): stopping the controller ends its loop, then the process.
        atexit.register(self.close)
        self.log.info("tasklog at %s: events %d..%d, projection %s (%s durability)", path,
                      self.tasklog.start_seq, self.tasklog.last_seq, spec, self.durability)

    def _open_log(self, path: str) -> TaskLog:
        older = written_with(path)
        if older is not None and older < LOG_SCHEMA:  # the open indexes it first: say why it waits
            self.log.warning("tasklog at %s was written with log schema %d: indexing its streams for "
                             "schema %d once, before the controller starts", path, older, LOG_SCHEMA)
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

    def _start_serving(self) -> ServeChild | None:
        if self.serve_port < 0:
            return None
        try:
            return ServeChild(self.tasklog.path, self.serve_host, self.serve_port, self.serve_token or None,
                              self.log).start()
        except BaseException:
            self.close()
            raise

    # -- losses: a failed async commit ---------------------------------------------
    # The projection folds each event before its commit, and a failed commit's numbers go to the
    # events appended after it: the projection kept the lost events and skipped the new ones up
    # to its checkpoint, so queries answered wrongly and later events were missing (issue 20).

    def _on_loss(self, error: StorageError, tasks: set[str]) -> None:
        # On the committer's thread: the Hub's log hears of it at once; the Hub's next call (on
        # its own thread, where the projection is fed) rolls the projection back.
        self.log.error("tasklog at %s: %s; the projection is rolled back to the log at the next call",
                       self.tasklog.path, error)
        self._lost.append((error.lost_range[0], tasks))

    def _roll_back(self, quiet: bool = False) -> None:
        """Bring the projection back to what the log holds after failed commits (if any); a
        failure is raised, or with ``quiet`` logged and tried again at the next call."""
        if not self._lost:
            return
        losses = self._lost[:]
        try:
            try:
                self.tasklog.flush()  # every event numbered so far is now committed or lost
            except StorageError as exc:  # the loss itself: kept for the next query
                self._keep(exc)
            last, first = self.tasklog.last_seq, min(first for first, _ in losses)
            # The events appended since reuse the lost numbers: those at or below the checkpoint were skipped.
            reused = self.tasklog.read(first, min(self.records.last_seq, last) + 1)
            self.records.rewind(set().union(*(tasks for _, tasks in losses), *(task_ids(e) for _, e in reused)), last)
        except Exception as exc:  # any: SQLite on a still-full disk (StorageFullError) among them
            if not quiet:
                raise
            self.log.error("tasklog at %s: the projection is not rolled back yet (%s); tried again at the next call",
                           self.tasklog.path, exc)
            return
        del self._lost[:len(losses)]

    def _keep(self, exc: StorageError) -> None:
        """Keep a loss for the next query to raise; losses of two roll-backs before it as one."""
        old = self._loss
        if old is not None:
            both = same_kind(exc, f"{old}; then {exc}")
            both.lost = old.lost + exc.lost
            both.lost_range = (min(old.lost_range[0], exc.lost_range[0]), max(old.lost_range[1], exc.lost_range[1]))
            exc = both
        self._loss = exc

    def _raise_loss(self) -> None:
        """Raise, once, what failed commits lost (after rolling the projection back)."""
        self._roll_back()
        loss, self._loss = self._loss, None
        if loss is not None:
            raise loss

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
        if self._lost:
            self._roll_back(quiet=True)
        self._append(record_events(msg_id, rec, self._current(msg_id, rec), self._submitted_of))

    def update_record(self, msg_id: str, rec: dict[str, Any]) -> None:
        """Record what changed in a task: start, output, complete, resubmit or other fields."""
        if self._lost:
            self._roll_back(quiet=True)
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
        self._roll_back(quiet=True)
        self.records.get_record(msg_id)
        self._append([Drop(msg_ids=[msg_id])])

    def drop_matching_records(self, check: dict[str, Any]) -> None:
        """Purge every task matching a query."""
        self._roll_back(quiet=True)
        ids = [r["msg_id"] for r in self.records.find_records(check, keys=["msg_id"])]
        if ids:
            self._append([Drop(msg_ids=ids)])

    # -- reads -------------------------------------------------------------------

    def get_record(self, msg_id: str) -> dict[str, Any]:
        """A copy of one task's record; KeyError if absent or purged."""
        # Quiet: the Hub reads a record just before it records a message, which a raise would drop.
        self._roll_back(quiet=True)
        return self.records.get_record(msg_id)

    def find_records(self, check: dict[str, Any], keys: list[str] | None = None) -> list[dict[str, Any]]:
        """Records matching a MongoDB-style query (copies), optionally only ``keys`` (msg_id always).

        Every task answers on the default (SQLite) projection; a dict projection with limits
        answers over its resident records only (``get_record`` re-folds an evicted one).
        The first query after a failed async commit raises what it lost (see ``close``).
        """
        self._raise_loss()
        return self.records.find_records(check, keys)

    def get_history(self) -> list[str]:
        """msg_ids ordered by submission time (raises a loss as ``find_records`` does)."""
        self._raise_loss()
        return self.records.get_history()

    def close(self) -> None:
        """Commit what is queued and release the log and the projection; then raise what failed
        commits lost that no query raised yet.

        A failed async commit (a full disk) is logged at error level on the Hub's logger at once,
        and the Hub's next call rolls the projection back to the log; the loss (a StorageError
        with ``lost`` and ``lost_range``) is raised once, by the next ``find_records`` or
        ``get_history`` (a client's query), else by ``close``. The Hub's writes and ``get_record``
        never raise it: the Hub does not retry a call that raised, so the message it was recording
        would be lost too.
        """
        if not self.tasklog.closed:
            self.maintenance.stop()
            shipping = getattr(self, "shipping", None)  # None, or not yet set when opening failed
            serving = getattr(self, "serving", None)
            if serving is not None:
                serving.stop()
            with ExitStack() as last_first:  # each runs, even when one before it raised
                last_first.callback(self.records.close)
                last_first.callback(self.tasklog.close)
                if shipping is not None:
                    last_first.callback(shipping.stop)  # ships what is committed, unless the cluster does not answer
                self._roll_back()  # before the projection closes: a stored one must not keep lost events
                if shipping is not None:
                    self.tasklog.flush()
        atexit.unregister(self.close)
        loss, self._loss = getattr(self, "_loss", None), None
        if loss is not None:
            raise loss
