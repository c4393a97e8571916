"""ipyparallel's Hub on a tasklog: ``tasklog.ipyparallel.TaskLogDB`` is the class a controller
is configured with (``tasklogdb``); it composes the log core, ``projections`` and shipping."""

from .tasklogdb import TaskLogDB, record_events

__all__ = ["TaskLogDB", "record_events"]
