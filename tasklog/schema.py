"""The schema upgrade at open: a log an older tasklog wrote (schema 1 or 2) gets the stream index
of the current schema, once, resumably."""

from __future__ import annotations

from .errors import NotATaskLogError
from .marker import read_schema
from .progress import Progress
from .store import Store

__all__ = ["upgrade", "written_with"]


def written_with(path: str) -> int | None:
    """The log schema the marker of the log at ``path`` names (None: no readable marker), read
    without opening the log: a caller can say an upgrade is coming before the open blocks on it."""
    try:
        return read_schema(path)
    except NotATaskLogError:
        return None


def upgrade(store: Store) -> None:
    """Index a writable log of an older schema, once, with a progress bar on a terminal."""
    if store.readonly or store.indexed:
        return
    try:
        with store.reader() as txn:
            total = int(txn.stat(store.events)["entries"])
        bar = Progress(total, label=f"indexing the streams of {store.path}")
        store.build_index(bar.update)
        bar.close()
    except BaseException:
        store.close()  # the open fails whole: nothing held (the index resumes next time)
        raise
