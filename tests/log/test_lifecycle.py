"""The lifecycle reducer (tasklog.lifecycle) against the projections' fold, over random logs.

The views and stats fold a log into TaskStates; the projections fold it into TaskRecords. Over the
same random interleavings of every event type, anomalies included (events before a submit, a start
after the reply, duplicate submits and replies, events for purged tasks, resubmits to existing,
purged or the same ids), the two agree on every field they share after every event.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.fold import apply_event, is_tombstone, settle, task_of
from tasklog import Annotate, Complete, Drop, Output, Resubmit, Start, Submit
from tasklog.events import Event
from tasklog.lifecycle import STATES, Lifecycle, TaskState

T = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
IDS = ("a", "b", "c", "d")
_id = st.sampled_from(IDS)
_when = st.integers(0, 50).map(lambda s: T + timedelta(seconds=s))
_opt_when = st.none() | _when
_label = st.sampled_from([None, "", "L1", "L2"])
_engine = st.sampled_from([None, "", "e1", "e2"])
_content = st.sampled_from([None, {}, {"status": "ok"}, {"status": "error", "ename": "ValueError"},
                            {"status": "aborted"}])

_events = st.one_of(
    st.builds(lambda m, c, q, w, lab: Submit(m, None, c, None, None, "client", q, w, lab),
              _id, st.sampled_from([{"code": "x"}, {"code": "y"}, {}]), st.sampled_from(["task", "mux"]),
              _when, _label),
    st.builds(Start, _id, _engine, _when),
    st.builds(lambda m: Output(m, "stdout", "chunk", None), _id),
    st.builds(lambda m, c, s, w, e: Complete(m, None, c, None, None, s, w, None, e),
              _id, _content, _opt_when, _when, _engine),
    st.builds(Resubmit, _id, _id, _when),
    st.builds(lambda ms: Drop(ms), st.lists(_id, min_size=1, max_size=2)),
    st.builds(Annotate, _id, st.sampled_from([{"label": "A"}, {"note": 1}, {"engine_uuid": "e3", "queue": "mux"},
                                              {"result_content": {"status": "error", "ename": "E"}},
                                              # what an annotation may put anywhere (issue 22's review)
                                              {"result_content": {"status": ["error"]}}, {"result_content": 3},
                                              {"completed": "yesterday"}, {"engine_uuid": ["a", "b"]},
                                              {"started": None, "label": 7}])),
)


def _agree(states: dict[str, TaskState], records: dict[str, dict[str, Any] | None]) -> None:
    assert set(states) == {m for m, rec in records.items() if rec is not None}
    for msg_id, state in states.items():
        rec = records[msg_id]
        assert rec is not None
        assert state == task_of(rec), msg_id  # a tombstone keeps what the task's state held
        assert state.dropped == is_tombstone(rec)
        assert state.state in STATES


@settings(max_examples=400, deadline=None)
@given(st.lists(_events, max_size=40))
def test_reducer_and_fold_agree_after_every_event(events: list[Event]) -> None:
    records: dict[str, dict[str, Any] | None] = {}
    # What the fold compares to refuse a resubmit to another task's id: the records' requests, as
    # they are before the event (the reducer is applied first).
    life = Lifecycle(same_request=lambda o, n: records[o]["content"] == records[n]["content"]  # type: ignore[index]
                     and records[o]["header"] == records[n]["header"])  # type: ignore[index]
    anomalies: Counter[str] = Counter()
    for seq, event in enumerate(events, 1):
        life.apply(event)
        apply_event(records, seq, event, anomalies)
        settle(records, records)
        _agree(life.tasks, records)


def test_rules_written_once_read_as_a_person_would() -> None:
    """A start after the reply, a second reply, a purge and a resubmit, each by its one rule."""
    life = Lifecycle()
    for event in [Submit("a", submitted=T, label="L"), Complete("a", None, {"status": "ok"}, completed=T,
                                                               engine_uuid="e1", started=T),
                  Start("a", "e2", T + timedelta(seconds=9)),  # late: fills nothing, changes nothing
                  Complete("b", None, {"status": "error", "ename": "E"}, completed=T),  # a stub that failed
                  Resubmit("b", "c", T), Output("d", text="x"), Drop(["d"]), Submit("d", submitted=T)]:
        life.apply(event)
    a, b, c, d = (life.tasks[m] for m in "abcd")
    assert (a.state, a.engine_uuid, a.started, a.status) == ("completed", "e1", T, "ok")
    assert (b.state, b.status, b.error, b.resubmitted) == ("resubmitted", "error", "E", "c")
    assert (c.state, c.resubmitted_from, c.submitted) == ("pending", "b", T)
    assert (d.state, d.submitted) == ("dropped", None)
