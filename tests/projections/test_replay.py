"""Replay and crash recovery of projections: rebuilds equal live state, time travel, kills mid-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import projections
from tasklog import TaskLog
from tasklog.demo import simulate
from tests.support import PROCS, run_cli, stored


def _records(p: projections.Projection) -> list[dict[str, Any]]:
    return sorted(p.find_records({}), key=lambda r: r["msg_id"])


def _make_log(path: str, tasks: int, seed: int = 7) -> None:
    with TaskLog.open(path) as log:
        log.append_many(list(simulate(tasks, seed=seed)))


def test_replay_to_and_as_of_are_time_travel(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with TaskLog.open(path) as log:
        log.append_many(list(simulate(100, seed=1)))
        middle, cut = log.last_seq, datetime.now(timezone.utc)
        time.sleep(0.05)
        log.append_many(list(simulate(100, seed=2)))
        early = projections.replay(log, "dict", stop=middle)
        assert early.last_seq == middle
        assert log.seq_at(cut) == middle
        assert log.seq_at(datetime(2000, 1, 1, tzinfo=timezone.utc)) == 0
        truth = projections.open("dict")
        truth.catch_up(log.read(1, middle + 1))
        assert _records(early) == _records(truth)
    out = run_cli("replay", "--log", path, "--projection", "dict", "--as-of", cut.isoformat(), check=True)
    assert f"at event {middle}:" in out.stdout and "events/s" in out.stdout
    out = run_cli("replay", "--log", path, "--projection", "dict", "--to", "10", check=True)
    assert "at event 10:" in out.stdout
    bad = run_cli("replay", "--log", path, "--projection", "dict", "--as-of", "noon")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1


def test_persistent_projection_past_stop_needs_rebuild(tmp_path: Path) -> None:
    path, db = str(tmp_path / "log"), f"sqlite:///{tmp_path / 't.db'}"
    _make_log(path, 50)
    with TaskLog.open(path, readonly=True) as log:
        projections.replay(log, db).close()
        with pytest.raises(projections.ProjectionError, match="rebuild"):
            projections.replay(log, db, stop=10)
        with projections.replay(log, db, stop=10, rebuild=True) as p:
            assert p.last_seq == 10


@pytest.mark.parametrize("kind", ["sqlite", "mongo"])
def test_deleted_projection_is_rebuilt(tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> None:
    path = str(tmp_path / "log")
    _make_log(path, 120)
    spec = f"sqlite:///{tmp_path / 't.db'}" if kind == "sqlite" else \
        f"{request.getfixturevalue('mongo_uri')}/del{uuid.uuid4().hex[:8]}"
    with TaskLog.open(path, readonly=True) as log:
        reference = _records(projections.open("dict", log=log))
        with projections.open(spec, log=log) as p:
            assert _records(p) == stored(p, reference)
            if kind == "mongo":
                p.drop_all()  # type: ignore[attr-defined]
        if kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(str(tmp_path / "t.db") + suffix):
                    os.remove(str(tmp_path / "t.db") + suffix)
        with projections.open(spec, log=log) as p:  # the next open rebuilds from the log
            assert _records(p) == stored(p, reference)
            if kind == "mongo":
                p.drop_all()  # type: ignore[attr-defined]
    if kind == "sqlite":
        os.remove(str(tmp_path / "t.db"))
        run_cli("replay", "--log", path, "--projection", spec, check=True)
        with TaskLog.open(path, readonly=True) as log, projections.open(spec, log=log) as p:
            assert _records(p) == stored(p, reference)  # the file the CLI built, buffers read from the log
        with projections.open(spec) as p, pytest.raises(projections.ProjectionError, match="buffers=inline"):
            _records(p)  # without its log: said plainly, never an empty or wrong buffer
        os.remove(str(tmp_path / "t.db"))
        run_cli("replay", "--log", path, "--projection", spec + "?buffers=inline", check=True)
        with projections.open(spec) as p:
            assert _records(p) == stored(p, reference)  # inline: readable without the log


@pytest.mark.parametrize("kind", ["sqlite", "mongo"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_projection_killed_mid_batch_catches_up(tmp_path: Path, request: pytest.FixtureRequest,
                                                kind: str, seed: int) -> None:
    path = str(tmp_path / "log")
    _make_log(path, 1500, seed=seed)
    spec = f"sqlite:///{tmp_path / 't.db'}" if kind == "sqlite" else \
        f"{request.getfixturevalue('mongo_uri')}/kill{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, str(PROCS / "apply.py"), path, spec],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    applied = 0
    while applied < 700 * seed:  # a different point in the stream for each seed
        applied += int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    with TaskLog.open(path, readonly=True) as log:
        reference = _records(projections.open("dict", log=log))
        with projections.open(spec) as p:
            partial = p.last_seq
        last = log.last_seq
        with projections.open(spec, log=log) as p:  # on restart it catches up
            assert p.last_seq == last
            got, reference = _records(p), stored(p, reference)
            if kind == "mongo":
                p.drop_all()  # type: ignore[attr-defined]
    assert partial < last, "the kill came too late to test anything"
    assert got == reference  # no doubled stdout, no lost field


def test_cli_replay_json_free_summary(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    _make_log(path, 30)
    out = run_cli("replay", "--log", path, "--projection", f"sqlite:///{tmp_path / 'x.db'}", check=True)
    assert "records" in out.stdout
    again = run_cli("replay", "--log", path, "--projection", f"sqlite:///{tmp_path / 'x.db'}", check=True)
    assert again.stdout.startswith("replayed 0 events")  # caught up from its checkpoint
    stats = json.loads(run_cli("stats", "--log", path, "--json", check=True).stdout)
    assert f"at event {stats['last_seq']}:" in again.stdout
