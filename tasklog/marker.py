"""The TASKLOG marker file that makes a directory a log: written atomically, read without LMDB."""

from __future__ import annotations

import contextlib
import json
import os

from .errors import NotATaskLogError, file_error

__all__ = ["MARKER", "read_schema", "write_marker"]

MARKER = "TASKLOG"


def read_schema(path: str) -> int:
    """The log schema the marker of the log at ``path`` names; NotATaskLogError if it cannot be read."""
    try:
        with open(os.path.join(path, MARKER)) as f:
            return int(json.load(f)["schema"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotATaskLogError(f"{path} has an unreadable {MARKER} file ({exc})") from None


def write_marker(path: str, schema: int, identity: str | None) -> None:
    """Write the TASKLOG marker file of the log at ``path`` (atomically: a new file renamed)."""
    marker = os.path.join(path, MARKER)
    tmp = f"{marker}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump({"format": "tasklog", "schema": schema, "identity": identity}, f)
        os.replace(tmp, marker)
    except OSError as exc:  # a full disk raised a bare OSError from `tasklog demo` (issue 20)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise file_error(exc, f"cannot write {marker}") from None
