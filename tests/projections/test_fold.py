"""The fold as a pure function: order tolerance and idempotency, as properties."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.fold import fold, fold_all, new_record, strip_hidden
from tasklog import Annotate, Complete, Output, Start, Submit

T = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def task_events(chunks: int, with_error: bool) -> list[Any]:
    """One task's events; the output chunks must keep their relative order."""
    evs: list[Any] = [Submit("t", {"msg_id": "t"}, {}, {}, [b"req"], "c", "task", T, "L"),
                      Start("t", "e1", T + timedelta(seconds=1))]
    evs += [Output("t", "stdout" if i % 3 else "stderr", f"chunk{i};", None) for i in range(chunks)]
    if with_error:
        evs.append(Output("t", "error", None, {"ename": "E"}))
    evs.append(Complete("t", {"msg_id": "r"}, {"status": "ok"}, {}, [b"res"], T, T + timedelta(seconds=2),
                        T + timedelta(seconds=3), "e1"))
    evs.append(Annotate("t", {"note": "x"}))
    return evs


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    evs = task_events(draw(st.integers(0, 6)), draw(st.booleans()))
    outputs = [e for e in evs if isinstance(e, Output) and e.text is not None]
    others = [e for e in evs if e not in outputs]
    order = draw(st.permutations(others))
    # Merge the (ordered) stream chunks into a random permutation of the other events.
    merged = list(order)
    for chunk in outputs:
        lo = 0 if not merged or chunk is outputs[0] else merged.index(outputs[outputs.index(chunk) - 1]) + 1
        merged.insert(draw(st.integers(lo, len(merged))), chunk)
    return evs, merged


def _record(events: list[Any]) -> dict[str, Any]:
    recs = fold_all(list(enumerate(events, start=1)))
    rec = recs["t"]
    assert rec is not None
    return strip_hidden(dict(rec))


@settings(max_examples=300, deadline=None)
@given(interleavings())
def test_any_interleaving_gives_the_same_record(case: tuple[list[Any], list[Any]]) -> None:
    canonical, shuffled = case
    assert _record(shuffled) == _record(canonical)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5), st.booleans(), st.integers(1, 5))
def test_replaying_twice_equals_once(chunks: int, with_error: bool, split: int) -> None:
    batch = list(enumerate(task_events(chunks, with_error), start=1))
    once = fold_all(batch)
    twice = fold_all(batch, fold_all(batch[:split]))
    again = fold_all(batch, dict(once))
    assert twice == once == again


def test_fold_is_pure() -> None:
    rec = new_record("t")
    before = dict(rec)
    out = fold(rec, Output("t", "stdout", "x", None), 5)
    assert rec == before and out is not rec and out is not None and out["stdout"] == "x"
    assert fold(out, Output("t", "stdout", "x", None), 5) is out  # same seq: no-op
    assert fold(out, Output("t", "stdout", "y", None), 4) is out  # older seq: no-op


def _applied(events: list[Any]) -> tuple[dict[str, Any], dict[str, int]]:
    from projections.fold import apply_event

    records: dict[str, Any] = {}
    anomalies: Counter[str] = Counter()
    for seq, ev in enumerate(events, start=1):
        apply_event(records, seq, ev, anomalies)
    return records, anomalies


def test_second_submit_is_ignored_and_counted() -> None:
    records, anomalies = _applied([Submit("t", {"msg_id": "t"}, {}, {}, [], "c1", "task", T, None),
                                   Submit("t", {"msg_id": "t", "x": 1}, {}, {}, [], "c2", "mux",
                                          T + timedelta(seconds=5), "late")])
    rec = records["t"]
    assert (rec["client_uuid"], rec["queue"], rec["submitted"]) == ("c1", "task", T)
    assert rec["label"] == "late"  # a field the first submit left empty is still filled
    assert anomalies == {"duplicate_submit": 1}
    # An early output's stub is not a submit: filling it is the normal order tolerance.
    _, quiet = _applied([Output("u", "stdout", "x", None), Submit("u", {}, {}, {}, [], "c", "task", T, None)])
    assert quiet == {"stub_created": 1}


def test_resubmit_never_takes_over_an_existing_task() -> None:
    from tasklog import Resubmit

    a1 = Submit("a1", {"msg_id": "a1", "msg_type": "x"}, {"code": "a"}, {}, [b"a"], "c", "task", T, None)
    dup = Submit("dup", {"msg_id": "dup", "msg_type": "y"}, {"code": "d"}, {}, [b"d"], "c", "task",
                 T + timedelta(seconds=1), None)
    records, anomalies = _applied([a1, dup, Resubmit("dup", "a1", T + timedelta(seconds=9))])
    assert records["a1"]["header"] == {"msg_id": "a1", "msg_type": "x"} and records["a1"]["submitted"] == T
    assert records["a1"]["resubmitted_from"] is None and records["dup"]["resubmitted"] is None
    assert anomalies == {"resubmit_to_existing": 1}
    # The Hub records the new task (same request, new msg_id and date) just before it links the two.
    again = Submit("n1", {"msg_id": "n1", "msg_type": "y", "date": T}, {"code": "d"}, {}, [b"d"], "c", "task",
                   T + timedelta(seconds=9), None)
    records, anomalies = _applied([dup, again, Resubmit("dup", "n1", T + timedelta(seconds=9))])
    assert records["n1"]["resubmitted_from"] == "dup" and records["dup"]["resubmitted"] == "n1"
    assert anomalies == {}


def _versions(chunks: int, size: int) -> list[dict[str, Any]]:
    """Every record a task's stdout of ``chunks`` chunks goes through, folded as projections fold."""
    from projections.fold import apply_event

    records: dict[str, Any] = {}
    anomalies: Counter[str] = Counter()
    kept = []
    for seq, i in enumerate(range(chunks), start=1):
        apply_event(records, seq, Output("t", "stdout", f"{i:0{size}d}", None), anomalies)
        kept.append(records["t"])
    return kept


def _held_by_versions(chunks: int, size: int) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = _versions(chunks, size)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == chunks
    return held


def test_a_long_output_is_folded_in_linear_work() -> None:
    # Issue 20 (item 9): each chunk copied the whole text so far, so a task's stdout cost time
    # quadratic in its chunks. The fold is pure: every record a chunk makes is a value of its own,
    # so keeping them all holds exactly the characters the fold copied. Twice the chunks must hold
    # about twice as much (linear), not four times (quadratic); tracemalloc counts it exactly.
    small, large = _held_by_versions(400, 200), _held_by_versions(800, 200)
    assert large < 2.5 * small, (small, large)


def test_a_long_output_reads_back_whole_from_every_projection_path() -> None:
    from projections.fold import settle

    kept = _versions(300, 7)
    older, newest = kept[99], kept[-1]
    # A record folded again from an older version (a replay from there) has its own chunks...
    fork = fold(older, Output("t", "stdout", "X", None), 101)
    assert fork is not None and fork["stdout"] == "".join(f"{i:07d}" for i in range(100)) + "X"
    # ...and neither it nor the newer versions change the others.
    settle({"t": newest}, ["t"])
    assert newest["stdout"] == "".join(f"{i:07d}" for i in range(300))
    settle({"t": older}, ["t"])
    assert older["stdout"] == "".join(f"{i:07d}" for i in range(100))
    batch = list(enumerate([Submit("t", {}, {}, {}, [], "c", "task", T, None),
                            *(Output("t", "stdout", f"{i:07d}", None) for i in range(300))], start=1))
    assert fold_all(batch)["t"]["stdout"] == newest["stdout"]  # type: ignore[index]
