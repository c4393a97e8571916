"""The TASKLOG marker file that makes a directory a log: written atomically, read without LMDB."""

from __future__ import annotations

import contextlib
import json
import os
import stat

from .errors import NotATaskLogError, StorageError, file_error

__all__ = ["MARKER", "read_schema", "write_marker"]

MARKER = "TASKLOG"
# The new marker is written to a file of its own, never through a link or into a FIFO or device
# someone left at its name (O_EXCL, O_NOFOLLOW), then renamed over the marker.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def read_schema(path: str) -> int:
    """The log schema the marker of the log at ``path`` names; NotATaskLogError if it cannot be read."""
    marker = os.path.join(path, MARKER)
    try:
        _regular_or_absent(marker)  # a FIFO would block the open for good
        with open(marker) as f:
            return int(json.load(f)["schema"])
    except (OSError, ValueError, KeyError, TypeError, StorageError) as exc:
        raise NotATaskLogError(f"{path} has an unreadable {MARKER} file ({exc})") from None


def write_marker(path: str, schema: int, identity: str | None) -> None:
    """Write the TASKLOG marker file of the log at ``path`` (atomically: a new file renamed over
    it, which must be a regular file if there is one: neither a link nor what it points to is
    replaced)."""
    marker = os.path.join(path, MARKER)
    tmp = f"{marker}.{os.getpid()}.tmp"
    try:
        _regular_or_absent(marker)  # a race since the open read it: the check is cheap
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a crashed writer's of the same pid (unlink removes a link, not its target)
        with os.fdopen(os.open(tmp, _NEW_FILE, 0o666), "w") as f:
            json.dump({"format": "tasklog", "schema": schema, "identity": identity}, f)
        os.replace(tmp, marker)
    except OSError as exc:  # a full disk raised a bare OSError from `tasklog demo` (issue 20)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise file_error(exc, f"cannot write {marker}") from None


def _regular_or_absent(marker: str) -> None:
    """StorageError unless ``marker`` is a regular file (not a link to one) or absent: what a
    writer would replace is what a reader read, so a log whose marker is not is refused at open."""
    try:
        mode = os.lstat(marker).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise StorageError(f"{marker} is not a regular file; tasklog will not read or replace it")
