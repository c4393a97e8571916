"""tasklog: an append-only LMDB event log of task lifecycles, folded into TaskRecords.

The log core, bottom up: ``errors`` (one root, ``TaskLogError``), ``fields`` (the checks an
event field is declared with), ``events`` (each event field declared once), ``codec`` (bytes on
disk), ``streamindex``/``committimes``/``databases``/``front``/``verbatim`` (what the log's
databases hold and how they change; ``diskspace``, a full disk as LMDB reports it), ``store``
(the directory, its locks and shared LMDB environment), ``groupcommit``/``asynccommit`` (the
writer of each durability mode) and ``reader``, ``log`` (``TaskLog``, the facade over them),
then ``retention``, ``verify``, ``demo``, ``jsonfmt``, ``records`` and ``progress``. The core
never imports ``projections``. The two edges compose both: ``tasklog.cli`` (the ``tasklog``
command) and ``tasklog.ipyparallel`` (``TaskLogDB``).
``make lint`` checks these layers.
"""

from __future__ import annotations

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
