"""tasklog: an append-only LMDB event log of task lifecycles, folded into TaskRecords.

The modules at the top of this package are the log core, bottom up: ``errors`` (one root,
``TaskLogError``), ``records``/``baseline``/``progress`` (shared shapes and helpers), ``fields``
(the checks an event field is declared with), ``events`` (each event field declared once),
``codec`` (bytes on disk) and ``lifecycle`` (a task's state, one reducer),
``streamindex``/``committimes``/``databases``/``front``/``verbatim``/``diskspace`` (what the
log's databases hold and how they change), ``store`` (the directory, its locks and shared LMDB
environment), ``groupcommit``/``asynccommit`` (the writer of each durability mode), ``reader``
and ``schema``, ``appending``, ``log`` (``TaskLog``, the facade), then ``retention`` and
``verify``. The core never imports ``projections``. ``native`` names the modules mypyc compiles
(``compiled()`` says which are in use; ``TASKLOG_PURE_PYTHON=1`` imports their sources).

The edges are sub-packages above ``projections``: ``views`` (report, timeline, story, JSON),
``stream`` (NATS JetStream), ``demo`` (the simulated hub), ``ipyparallel`` (``TaskLogDB``) and
``cli`` (the ``tasklog`` command). ``make lint`` checks these layers; ARCHITECTURE.md maps them.
"""

from __future__ import annotations

# First: importing native puts its guard on sys.meta_path before a compiled module (codec, fields)
# is imported, so that TASKLOG_PURE_PYTHON=1, or a source newer than its build, imports the .py.
from . import native
from .codec import SCHEMA_VERSION
from .errors import (
    CommitError,
    CorruptEventError,
    CorruptSnapshotError,
    EncodeError,
    EventError,
    FlushTimeoutError,
    InterfaceError,
    LogBusyError,
    LogClosedError,
    MissingEventError,
    MissingExtraError,
    NotATaskLogError,
    ReadOnlyLogError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
    StreamError,
    StreamServerError,
    TaskLogError,
)
from .events import (
    Annotate,
    Complete,
    Drop,
    Event,
    Output,
    Resubmit,
    Start,
    Submit,
    make,
    task_ids,
    validate,
)
from .log import DURABILITY, Receipt, TaskLog
from .native import compiled

__version__ = "0.1.0"

__all__ = [
    "TaskLog",
    "Receipt",
    "DURABILITY",
    "SCHEMA_VERSION",
    "Event",
    "Submit",
    "Start",
    "Output",
    "Complete",
    "Resubmit",
    "Drop",
    "Annotate",
    "make",
    "task_ids",
    "validate",
    "compiled",
    "native",
    "TaskLogError",
    "InterfaceError",
    "EventError",
    "EncodeError",
    "LogClosedError",
    "StorageError",
    "NotATaskLogError",
    "SchemaVersionError",
    "CorruptEventError",
    "MissingEventError",
    "MissingExtraError",
    "StreamError",
    "StreamServerError",
    "CorruptSnapshotError",
    "LogBusyError",
    "ReadOnlyLogError",
    "StorageFullError",
    "CommitError",
    "FlushTimeoutError",
    "__version__",
]
