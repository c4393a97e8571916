"""MongoDB Extended JSON (relaxed mode), as mongoexport and mongosh write it, and values as text
safe for a terminal.

Datetimes become ``{"$date": "...Z"}`` and bytes ``{"$binary": ...}`` so both
survive a round trip through the CLI.
"""

from __future__ import annotations

import json
from datetime import timezone
from typing import Any

from bson import json_util
from bson.json_util import JSONMode, JSONOptions

from ..errors import InterfaceError

__all__ = ["dumps", "loads", "event_to_doc", "printable"]

_OPTIONS = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True, tzinfo=timezone.utc)


def dumps(obj: Any) -> str:
    """Encode ``obj`` as one line of relaxed Extended JSON."""
    return str(json_util.dumps(obj, json_options=_OPTIONS))


def _pairs(pairs: list[tuple[str, Any]]) -> Any:
    # json_util reads any document holding "$regex" as a legacy regex value: it drops the other
    # operators beside it ({"$regex": "x", "$ne": 3} lost the $ne) and keeps an unknown option
    # letter quietly. A "$regex" with a string is a query operator: the query parser checks it.
    for key, value in pairs:
        if key == "$regex" and isinstance(value, str):
            return dict(pairs)
    return json_util.object_pairs_hook(pairs, _OPTIONS)


def loads(text: str) -> Any:
    """Decode Extended JSON (``$regex`` documents stay query operators); errors become InterfaceError."""
    try:
        return json.loads(text, object_pairs_hook=_pairs)
    except RecursionError:
        raise InterfaceError("not valid Extended JSON: nested too deeply") from None
    except ValueError as exc:
        raise InterfaceError(f"not valid Extended JSON: {exc}") from None


def event_to_doc(seq: int, event: Any) -> dict[str, Any]:
    """A JSON-ready dict of one event: its seq, type and fields."""
    return {"seq": seq, "type": event.type, **event._asdict()}


def printable(value: Any, quoted: bool = False) -> str:
    """``value`` as text a terminal shows as it is: control characters escaped as Python writes them."""
    # A label of ESC[2J cleared the screen of whoever ran `story`, an OSC sequence retitled the
    # window, a newline forged a line: what a log holds is escaped (as repr does) before it is shown.
    if isinstance(value, str) and not quoted:
        return value if value.isprintable() else repr(value)[1:-1]
    return repr(value)
