"""The none projection keeps no records, like ipyparallel's NoDB: every read says so."""

from __future__ import annotations

from pathlib import Path

import pytest

import projections
from tasklog import TaskLog
from tests.support.projection_contract import build_events


def test_every_read_says_it_keeps_nothing(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.append_many(build_events())
        proj = projections.open("none", log=log)
        assert proj.last_seq == log.last_seq and proj.stats()["records"] == 0
    for read in (lambda: proj.get_record("task-01"), proj.get_history, lambda: proj.find_records({}),
                 lambda: proj.count({}), lambda: proj.find_records({"label": "job-1"}, keys=["label"])):
        with pytest.raises(KeyError, match="keeps no records"):
            read()
