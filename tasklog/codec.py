"""Bytes on disk: keys are big-endian 64-bit sequence numbers, values carry a
schema version and a CRC-32 so a flipped bit is detected, never decoded.

Value layout: ``version (1 byte) | crc32 of the payload (4 bytes, big-endian) |
msgpack([type code, *fields])``. Datetimes travel as msgpack Timestamps (UTC).
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import msgpack

from .errors import CorruptEventError, EncodeError, SchemaVersionError
from .events import EVENT_TYPES, Event
from .fields import utc

__all__ = [
    "SCHEMA_VERSION",
    "LOG_SCHEMA",
    "TYPE_CODES",
    "encode",
    "decode",
    "pack_key",
    "unpack_key",
    "unpack_value",
    "event_type",
]

SCHEMA_VERSION: Final = 1  # of each stored event (its first byte)
# Of the log directory as a whole. 2: the stream index (msg_id -> its events) and kept events;
# 3: the stream index keyed by task number (``streamindex``). A log of schema 1 or 2 is indexed
# again by the first writer that opens it; an older tasklog refuses a newer schema.
LOG_SCHEMA = 3
TYPE_CODES: dict[str, int] = {name: i for i, name in enumerate(EVENT_TYPES, start=1)}
# Final: compiled (tasklog.native), a constant is a C static, not a lookup in the module's dict per use.
_CLASSES: Final = {code: EVENT_TYPES[name] for name, code in TYPE_CODES.items()}
_HEAD: Final = struct.Struct(">BI")
_KEY: Final = struct.Struct(">Q")
pack_key: Final[Callable[[int], bytes]] = _KEY.pack


def unpack_key(key: bytes | memoryview) -> int:
    """The sequence number stored in an LMDB key."""
    return int(_KEY.unpack(key)[0])


def _default(obj: Any) -> Any:
    # Nested naive datetimes (ipyparallel headers carry them) are local time.
    if isinstance(obj, datetime):
        return utc(obj)
    if isinstance(obj, (set, frozenset)):
        raise TypeError(f"cannot encode a {type(obj).__name__}; use a list")
    raise TypeError(f"cannot encode {type(obj).__name__} {obj!r:.60}")


# A Packer keeps state between calls, so each appending thread needs its own.
_local: Final = threading.local()


def _packer() -> msgpack.Packer:
    p = getattr(_local, "packer", None)
    if p is None:
        p = _local.packer = msgpack.Packer(datetime=True, default=_default)
    return p


def unpack_value(value: bytes | memoryview, seq: int = 0) -> Any:
    """Check and unpack a stored value; raise on a bad checksum or a newer schema."""
    if len(value) < _HEAD.size:
        raise CorruptEventError(seq, f"value of {len(value)} bytes is too short")
    version, crc = _HEAD.unpack_from(value)
    payload = memoryview(value)[_HEAD.size:]
    # Version first: a newer schema may checksum differently, so its mismatch is not damage.
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"event {seq} has schema version {version}; this tasklog reads {SCHEMA_VERSION}")
    if zlib.crc32(payload) != crc:
        raise CorruptEventError(seq, "checksum mismatch")
    if version < 1:
        raise CorruptEventError(seq, f"unknown schema version {version}")
    try:
        return msgpack.unpackb(payload, timestamp=3, strict_map_key=False)
    except Exception as exc:  # a checksum collision on garbage: still never decode silently
        raise CorruptEventError(seq, f"undecodable payload ({exc})") from None


_CODE_BY_CLASS: Final = {cls: TYPE_CODES[name] for name, cls in EVENT_TYPES.items()}
_crc32: Final = zlib.crc32
_head: Final = _HEAD.pack


def encode(event: Event) -> bytes:
    """The stored bytes of a validated event; EncodeError names the field msgpack refused."""
    # One thread-local Packer, no helper call: this runs once per appended event.
    try:
        payload: bytes = (getattr(_local, "packer", None) or _packer()).pack((_CODE_BY_CLASS[event.__class__], *event))
    except (TypeError, ValueError, OverflowError) as exc:
        _local.packer = None  # a failed pack may leave a half-written buffer behind
        raise EncodeError(event.type, _bad_field(event), str(exc)) from None
    return _head(SCHEMA_VERSION, _crc32(payload)) + payload


def _bad_field(event: Event) -> str | None:
    for field, value in zip(event._fields, event):
        try:
            _packer().pack(value)
        except (TypeError, ValueError, OverflowError):
            _local.packer = None
            return field
    return None


_NAMES: Final = {code: name for name, code in TYPE_CODES.items()}


def event_type(value: bytes, seq: int = 0) -> str:
    """The type name of a stored event, read from its first bytes (the payload is not decoded)."""
    # Every event is a msgpack fixarray (at most 15 items) whose first item is a small int code.
    if len(value) > _HEAD.size + 1 and 0x91 <= value[_HEAD.size] <= 0x9F:
        name = _NAMES.get(value[_HEAD.size + 1])
        if name is not None:
            return name
    return decode(value, seq).type


def decode(value: bytes | memoryview, seq: int = 0) -> Event:
    """Rebuild the event stored in ``value`` (the value of key ``seq``)."""
    obj = unpack_value(value, seq)
    if not isinstance(obj, list) or not obj:
        raise CorruptEventError(seq, "payload is not an event")
    cls = _CLASSES.get(obj[0])
    if cls is None:
        raise CorruptEventError(seq, f"unknown event type code {obj[0]!r}")
    if len(obj) - 1 != len(cls._fields):
        raise CorruptEventError(seq, f"{cls.__name__.lower()} has {len(obj) - 1} fields, expected {len(cls._fields)}")
    ev: Event = _new_tuple(cls, obj[1:])  # _make without its length check, done above
    return ev


_new_tuple: Final = tuple.__new__
