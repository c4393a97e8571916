"""Events and codec: round trips for every type, and every kind of bad input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tasklog
from tasklog import codec, fields
from tasklog.errors import CorruptEventError, EncodeError, EventError, SchemaVersionError

ids = st.text(min_size=1, max_size=20)
opt_text = st.none() | st.text(max_size=20)
dts = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                   timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30))]))
opt_dts = st.none() | dts
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
           | st.text(max_size=10) | st.binary(max_size=10) | dts)
json_like = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                      max_size=3), max_leaves=8)
dicts = st.dictionaries(st.text(max_size=8), json_like, max_size=4)
bufs = st.lists(st.binary(max_size=30), max_size=3)

EVENTS: dict[str, Any] = {
    "submit": st.builds(tasklog.Submit, ids, dicts, dicts, dicts, bufs, opt_text,
                        st.sampled_from(sorted(fields.QUEUES)), dts, opt_text),
    "start": st.builds(tasklog.Start, ids, opt_text, opt_dts),
    "output": st.one_of(st.builds(tasklog.Output, ids, st.sampled_from(["stdout", "stderr"]), st.text(max_size=30),
                                  st.none()),
                        st.builds(tasklog.Output, ids, st.sampled_from(["error", "execute_result", "display_data",
                                                                        "execute_input"]), st.none(), dicts)),
    "complete": st.builds(tasklog.Complete, ids, st.none() | dicts, st.none() | dicts, st.none() | dicts,
                          st.none() | bufs, opt_dts, opt_dts, opt_dts, opt_text),
    "resubmit": st.builds(tasklog.Resubmit, ids, ids, dts),
    "drop": st.builds(tasklog.Drop, st.lists(ids, min_size=1, max_size=4)),
    "annotate": st.builds(tasklog.Annotate, ids, st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k != "msg_id" and "." not in k and k[0] not in "$_"),
        json_like, max_size=3)),
}


def _same_instant(a: Any, b: Any) -> bool:
    if isinstance(a, datetime):
        return isinstance(b, datetime) and a == b and b.tzinfo == timezone.utc
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_instant(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same_instant, a, b))
    return bool(a == b and type(a) is type(b)) or (isinstance(a, float) and a == b)


@pytest.mark.parametrize("kind", sorted(EVENTS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_every_type(kind: str, data: st.DataObject) -> None:
    ev = tasklog.validate(data.draw(EVENTS[kind]))
    back = codec.decode(codec.encode(ev), 1)
    assert type(back) is type(ev) and back.type == kind
    assert _same_instant(list(ev), list(back)), (ev, back)


def test_datetimes_become_utc_and_naive_means_local() -> None:
    naive = datetime(2026, 11, 25, 14, 2, 3, 456789)
    ev = tasklog.validate(tasklog.Start("a", "e", naive))
    assert ev.started is not None and ev.started.tzinfo == timezone.utc
    assert ev.started == naive.astimezone() and ev.started.microsecond == 456789
    nested = codec.decode(codec.encode(tasklog.validate(tasklog.Submit("a", header={"date": naive}))), 1)
    assert isinstance(nested, tasklog.Submit) and nested.header is not None
    assert nested.header["date"] == naive.astimezone()


def test_bytes_stay_bytes() -> None:
    ev = codec.decode(codec.encode(tasklog.validate(tasklog.Submit("a", buffers=[b"\x00\xff", bytearray(b"x")]))))
    assert isinstance(ev, tasklog.Submit) and ev.buffers == [b"\x00\xff", b"x"]
    assert all(type(b) is bytes for b in ev.buffers)


BAD: list[tuple[Any, str, str | None]] = [
    (tasklog.Submit(""), "submit", "msg_id"),
    (tasklog.Submit(None), "submit", "msg_id"),  # type: ignore[arg-type]
    (tasklog.Submit("a", buffers=["text"]), "submit", "buffers"),  # type: ignore[list-item]
    (tasklog.Submit("a", buffers=b"xx"), "submit", "buffers"),  # type: ignore[arg-type]
    (tasklog.Submit("a", header=[1]), "submit", "header"),  # type: ignore[arg-type]
    (tasklog.Submit("a", queue="bogus"), "submit", "queue"),
    (tasklog.Submit("a", submitted="2026-01-01"), "submit", "submitted"),
    (tasklog.Start("a", started=1234.5), "start", "started"),
    (tasklog.Start("a", engine_uuid=7), "start", "engine_uuid"),  # type: ignore[arg-type]
    (tasklog.Output("a", "stdout"), "output", "text"),
    (tasklog.Output("a", "stdout", text=b"x"), "output", "text"),  # type: ignore[arg-type]
    (tasklog.Output("a", "error", text="x"), "output", "content"),
    (tasklog.Output("a", "nonsense", text="x"), "output", "name"),
    (tasklog.Complete("a", completed="yesterday"), "complete", "completed"),
    (tasklog.Complete("a", result_buffers=[1]), "complete", "result_buffers"),  # type: ignore[list-item]
    (tasklog.Resubmit(""), "resubmit", "msg_id"),
    (tasklog.Drop([]), "drop", "msg_ids"),
    (tasklog.Drop(["a", ""]), "drop", "msg_ids"),
    (tasklog.Annotate("a", {"msg_id": "b"}), "annotate", "fields"),
    (tasklog.Annotate("a", "label"), "annotate", "fields"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("event", "etype", "field"), BAD, ids=[f"{t}.{f}-{i}" for i, (_, t, f) in enumerate(BAD)])
def test_bad_events_name_type_and_field(event: Any, etype: str, field: str) -> None:
    with pytest.raises(EventError) as info:
        tasklog.validate(event)
    assert info.value.event_type == etype and info.value.field == field
    assert f"{etype}.{field}" in str(info.value)
    assert isinstance(info.value, tasklog.TaskLogError)


def test_unknown_type_and_make() -> None:
    with pytest.raises(EventError, match="unknown event type"):
        tasklog.validate({"type": "submit", "msg_id": "a"})
    with pytest.raises(EventError, match="unknown event type"):
        tasklog.make("explode", msg_id="a")
    with pytest.raises(EventError, match=r"start\.colour"):
        tasklog.make("start", msg_id="a", colour="red")
    with pytest.raises(EventError, match=r"start\.msg_id"):
        tasklog.make("start", engine_uuid="e")
    assert tasklog.make("start", msg_id="a").msg_id == "a"


def test_unencodable_value_names_field() -> None:
    ev = tasklog.validate(tasklog.Annotate("a", {"obj": object()}))
    with pytest.raises(EncodeError, match=r"annotate\.fields"):
        codec.encode(ev)
    ev2 = tasklog.validate(tasklog.Submit("a", content={"s": {1, 2}}))
    with pytest.raises(EncodeError, match=r"submit\.content"):
        codec.encode(ev2)
    # the thread's packer is still sound afterwards
    assert codec.decode(codec.encode(tasklog.validate(tasklog.Start("b"))), 1).msg_id == "b"


def test_flipped_bit_is_detected_never_decoded() -> None:
    raw = bytearray(codec.encode(tasklog.validate(tasklog.Output("a", "stdout", text="hello"))))
    for i in range(len(raw)):
        for bit in (0, 3, 7):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            with pytest.raises((CorruptEventError, SchemaVersionError)):
                codec.decode(bytes(bad), 42)
    with pytest.raises(CorruptEventError, match="event 42"):
        codec.decode(b"\x01\x00", 42)


def test_newer_schema_version_is_refused() -> None:
    raw = bytearray(codec.encode(tasklog.validate(tasklog.Start("a"))))
    raw[0] = codec.SCHEMA_VERSION + 1
    import zlib
    raw[1:5] = zlib.crc32(bytes(raw[5:])).to_bytes(4, "big")
    with pytest.raises(SchemaVersionError, match="event 9"):
        codec.decode(bytes(raw), 9)
