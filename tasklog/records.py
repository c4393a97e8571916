"""What the readers of task records share: a record's fields, those every projection indexes and
the reply statuses that count as failures."""

from __future__ import annotations

from datetime import datetime

__all__ = ["FAILED_STATUSES", "INDEXED_FIELDS", "RECORD_KEYS"]

#: A TaskRecord's fields, in the order documents and exports keep them (ipyparallel's record keys,
#: with the link a resubmitted task keeps to its original).
RECORD_KEYS: tuple[str, ...] = (
    "msg_id", "header", "metadata", "content", "buffers", "submitted", "client_uuid", "engine_uuid",
    "started", "completed", "resubmitted", "received", "result_header", "result_metadata",
    "result_content", "result_buffers", "queue", "execute_input", "execute_result", "display_data",
    "error", "stdout", "stderr", "label", "resubmitted_from",
)

# The reply statuses that mean a task failed (ipyparallel's engines send "error"; "aborted" when
# a task never ran): stats, the timeline and the report all count failures by this one table.
FAILED_STATUSES = frozenset({"error", "aborted"})
# The record fields hubs filter on, with the type a value must have to be indexed: every
# projection indexes these (the dict projection by value or in order, SQLite in typed columns,
# MongoDB with an index each). Their values come from the events' fields of the same names.
INDEXED_FIELDS: dict[str, type] = {
    "submitted": datetime, "started": datetime, "completed": datetime,
    "engine_uuid": str, "client_uuid": str, "label": str, "queue": str,
}
