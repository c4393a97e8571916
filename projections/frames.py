"""A projection's records as a pandas DataFrame (the ``tasklog[frames]`` extra)."""

from __future__ import annotations

from typing import Any, Protocol

from tasklog.errors import MissingExtraError

from .fold import RECORD_KEYS
from .parse import parse_keys

__all__ = ["Finds", "to_dataframe"]


class Finds(Protocol):
    """What a frame is read from: a projection."""

    def find_records(self, query: Any = None, keys: Any = None) -> list[dict[str, Any]]:
        """Records matching ``query``, limited to ``keys``."""


def to_dataframe(proj: Finds, query: Any = None, keys: Any = None) -> Any:
    """The records of ``proj`` matching ``query`` as a DataFrame indexed by msg_id.

    One row per task; datetimes stay timezone-aware (UTC); a key no record has is a column of
    missing values, so the columns are always ``keys`` (or every record key) in order.
    """
    try:
        import pandas as pd
    except ImportError:
        raise MissingExtraError("pandas", "frames", "to_dataframe") from None
    records = proj.find_records(query, keys)
    if keys is not None:
        columns = [k for k in parse_keys(keys) or () if k != "msg_id"]
    else:  # every TaskRecord key, then what annotations added, in name order
        extra = sorted({k for r in records for k in r} - set(RECORD_KEYS))
        columns = [*(k for k in RECORD_KEYS if k != "msg_id"), *extra]
    frame = pd.DataFrame.from_records(records, columns=["msg_id", *columns])
    return frame.set_index("msg_id")
