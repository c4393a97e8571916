"""A task's story (issue 14): its events in order with commit times, the resubmit chain both ways."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tasklog import InterfaceError, TaskLog
from tasklog.views.jsonfmt import loads
from tasklog.views.story import story
from tests.support import run_cli

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)


def _history(path: str) -> None:
    with TaskLog.open(path) as log:
        log.submit("other", buffers=[b"o"])
        log.submit("a", buffers=[b"xx"], label="job-1", submitted=T0)
        log.start("a", "e1", T0 + timedelta(seconds=1))
        log.output("a", "stdout", text="hello")
        log.complete("a", result_content={"status": "error", "ename": "ValueError"}, engine_uuid="e1",
                     started=T0 + timedelta(seconds=1), completed=T0 + timedelta(seconds=3))
        log.resubmit("a", "b")
        log.complete("other")
        log.start("b", "e2")
        log.complete("b", result_content={"status": "ok"}, result_buffers=[b"r" * 10])
        log.resubmit("b", "c")
        log.drop(["c"])


def test_story_of_a_resubmission_shows_the_whole_chain_in_log_order(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    _history(path)
    with TaskLog.open(path, readonly=True) as log:
        told = story(log, "b")
        assert told.tasks == ["a", "b", "c"]
        assert [s.seq for s in told.steps] == [2, 3, 4, 5, 6, 8, 9, 10, 11]  # "other" is not in it
        assert [s.event.type for s in told.steps][-2:] == ["resubmit", "drop"]
        assert all(s.committed is not None and s.committed.tzinfo is not None for s in told.steps)
        assert story(log, "a").tasks == story(log, "c").tasks == ["a", "b", "c"]  # both ways
    text = run_cli("story", "--log", path, "a", check=True).stdout
    assert "resubmit chain: a -> b -> c" in text
    assert "status error ValueError, engine e1, ran 2.000 s" in text
    assert "a resubmitted as b" in text and "purged: c" in text
    assert "stdout: 5 chars" in text and "1 buffers, 10 bytes" in text


def test_story_as_extended_json(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    _history(path)
    doc = loads(run_cli("story", "--log", path, "c", "--json", check=True).stdout)
    assert doc["msg_id"] == "c" and doc["tasks"] == ["a", "b", "c"]
    drop = doc["events"][-1]
    assert drop["type"] == "drop" and drop["msg_ids"] == ["c"] and isinstance(drop["committed"], datetime)
    assert doc["events"][0]["buffers"] == [b"xx"]


def test_story_of_an_unknown_task_is_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    _history(path)
    with TaskLog.open(path, readonly=True) as log, pytest.raises(InterfaceError, match="no event names"):
        story(log, "nobody")
    done = run_cli("story", "--log", path, "nobody")
    assert done.returncode != 0 and done.stderr.count("\n") == 1 and "no event names task 'nobody'" in done.stderr


def test_stats_counts_tasks_by_state_and_the_time_range(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    _history(path)
    with TaskLog.open(path) as log:
        log.submit("waiting")
        log.submit("busy")
        log.start("busy", "e3")
        log.complete("late", result_content={"status": "aborted"})  # a reply before its submit
        log.submit("late")
    from tasklog.verify import stats
    with TaskLog.open(path, readonly=True) as log:
        st = stats(log)
    assert dict(st.by_state) == {"resubmitted": 2, "dropped": 1, "completed": 1, "pending": 1, "running": 1,
                                 "failed": 1}
    assert st.first_commit is not None and st.last_commit is not None and st.first_commit <= st.last_commit
    out = run_cli("stats", "--log", path, check=True).stdout
    assert "tasks by state" in out and "  failed       1" in out and "committed   " in out
    doc = loads(run_cli("stats", "--log", path, "--json", check=True).stdout)
    assert doc["by_state"]["resubmitted"] == 2 and doc["first_commit"] <= doc["last_commit"]


def test_to_dataframe_on_every_projection_kind(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import pandas as pd

    import projections
    from tests.support import projection_spec
    path = str(tmp_path / "log")
    _history(path)
    with TaskLog.open(path, readonly=True) as log:
        for kind in ("dict", "sqlite", "mongo"):
            proj = projections.open(projection_spec(kind, tmp_path, request), log=log)
            frame = proj.to_dataframe({"msg_id": {"$in": ["a", "b", "other"]}},
                                      keys=["started", "completed", "engine_uuid", "label"])
            assert sorted(frame.index) == ["a", "b", "other"] and list(frame.columns) == \
                ["started", "completed", "engine_uuid", "label"]
            assert isinstance(frame.dtypes["completed"], pd.DatetimeTZDtype)  # tz-aware, one row per task
            assert frame.loc["a", "completed"] == T0 + timedelta(seconds=3)
            assert frame.loc["b", "label"] == "job-1" and pd.isna(frame.loc["other", "label"])  # inherited
            whole = proj.to_dataframe()
            assert "buffers" in whole.columns and len(whole) == proj.count({})
            if kind == "mongo":
                proj.drop_all()  # type: ignore[attr-defined]
            proj.close()


def test_to_dataframe_without_pandas_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import projections
    from tasklog import MissingExtraError
    monkeypatch.setitem(sys.modules, "pandas", None)  # what a machine without pandas sees on import
    with pytest.raises(MissingExtraError, match=r"pip install 'tasklog\[frames\]'"):
        projections.open("dict").to_dataframe()
