"""MongoDB Extended JSON (relaxed mode), as mongoexport and mongosh write it.

Datetimes become ``{"$date": "...Z"}`` and bytes ``{"$binary": ...}`` so both
survive a round trip through the CLI.
"""

from __future__ import annotations

from datetime import timezone
from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from .errors import QueryError

__all__ = ["dumps", "loads", "event_to_doc"]

_OPTIONS = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True, tzinfo=timezone.utc)


def dumps(obj: Any) -> str:
    """Encode ``obj`` as one line of relaxed Extended JSON."""
    return str(json_util.dumps(obj, json_options=_OPTIONS))


def loads(text: str) -> Any:
    """Decode Extended JSON; a syntax error becomes a QueryError naming it."""
    try:
        return json_util.loads(text, json_options=_OPTIONS)
    except ValueError as exc:
        raise QueryError(f"not valid Extended JSON: {exc}") from None


def event_to_doc(seq: int, event: Any) -> dict[str, Any]:
    """A JSON-ready dict of one event: its seq, type and fields."""
    return {"seq": seq, "type": event.type, **event._asdict()}
