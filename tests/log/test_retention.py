"""Retention: snapshots, prune, compaction, and replays that start from a snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import projections
from projections import snapshot
from projections.errors import ProjectionError
from tasklog import TaskLog, retention, verify
from tasklog.demo import simulate
from tasklog.errors import CorruptSnapshotError, InterfaceError, LogBusyError
from tests.support import child_env, projection_spec, run_cli, stored


def _records(p: projections.Projection) -> list[dict[str, Any]]:
    return sorted(p.find_records({}), key=lambda r: r["msg_id"])


def _truth(log: TaskLog, stop: int | None = None) -> list[dict[str, Any]]:
    p = projections.open("dict")
    p.catch_up(log.read(1, None if stop is None else stop + 1))
    return _records(p)



@pytest.fixture
def grown(log_dir: str) -> str:
    """A log of 300 simulated tasks in three rounds (drops and resubmits included)."""
    with TaskLog.open(log_dir) as log:
        for seed in range(3):
            log.append_many(list(simulate(100, seed=seed)))
    return log_dir


def test_snapshot_is_the_fold_and_replay_starts_from_it(grown: str) -> None:
    with TaskLog.open(grown) as log:
        cut = log.last_seq // 2
        truth_cut, truth_all = _truth(log, cut), _truth(log)
        info = snapshot.take(log, cut)
        assert info.seq == cut and info.base == 0 and retention.list_snapshots(log) == [cut]
        # An incremental snapshot starts from the older one and gives the same fold.
        later = snapshot.take(log)
        assert later.base == cut and retention.list_snapshots(log) == [cut, log.last_seq]
        header, items = retention.read_snapshot(log, cut)
        assert header["seq"] == cut and sum(1 for _ in items) == header["records"]
        assert _records(projections.replay(log, "dict", stop=cut)) == truth_cut
        assert _records(projections.replay(log, "dict")) == truth_all


@pytest.mark.parametrize("backend", ["dict", "sqlite", "mongo", "none"])
def test_after_prune_every_projection_rebuilds_the_same_records(
        grown: str, tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    with TaskLog.open(grown) as log:
        truth, last = _truth(log), log.last_seq
        snap = last - 700
        snapshot.take(log, snap)
        report = retention.prune(log, last)  # asks for more than the snapshot covers: gets only that
        assert (report.removed, report.start_seq, report.snapshot) == (snap, snap + 1, snap)
        assert log.start_seq == log.first_seq == snap + 1 and log.last_seq == last
        assert verify.verify(log) == []
        proj = projections.replay(log, projection_spec(backend, tmp_path, request), rebuild=True)
        try:
            assert proj.last_seq == last
            if backend != "none":
                assert _records(proj) == stored(proj, truth)
        finally:
            if backend == "mongo":
                proj.drop_all()  # type: ignore[attr-defined]
            proj.close()


def test_prune_never_drops_what_no_snapshot_covers(grown: str) -> None:
    with TaskLog.open(grown) as log:
        last = log.last_seq
        with pytest.raises(InterfaceError, match="no snapshot covers"):
            retention.prune(log, last)
        assert log.first_seq == 1 and len(log) == last
        snapshot.take(log, 500)
        with pytest.raises(InterfaceError, match="no snapshot covers"):
            retention.prune(log, 400)  # the snapshot at 500 does not cover the state at 399
        assert log.first_seq == 1
        snapshot.take(log)  # at the last event: every event is covered, but the newest one stays
        report = retention.prune(log, last + 1)
        assert report.removed == last - 1 and report.snapshots_removed == 1 and log.last_seq == last
        assert retention.list_snapshots(log) == [last]
        seq = log.submit("after-prune")  # numbering goes on densely
        assert seq == last + 1 and verify.verify(log) == []


def test_time_travel_before_the_pruned_point_is_refused(grown: str) -> None:
    with TaskLog.open(grown) as log:
        at_800, at_900 = _truth(log, 800), _truth(log, 900)
        snapshot.take(log, 800)
        retention.prune(log, 801)
        with pytest.raises(ProjectionError, match=r"events 1\.\.800.*pruned.*rebuild is event 800 "):
            projections.replay(log, "dict", stop=500)
        assert _records(projections.replay(log, "dict", stop=800)) == at_800
        assert _records(projections.replay(log, "dict", stop=900)) == at_900
        with pytest.raises(ProjectionError, match="pruned"):
            projections.replay(log, "dict", start=1)  # --from an event that is gone


def test_a_damaged_snapshot_is_reported_never_used(grown: str) -> None:
    with TaskLog.open(grown) as log:
        info = snapshot.take(log, 900)
        with open(info.path, "r+b") as f:
            f.seek(os.path.getsize(info.path) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x10]))
        with pytest.raises(CorruptSnapshotError, match="checksum"):
            projections.replay(log, "dict")
        with pytest.raises(CorruptSnapshotError):
            retention.prune(log, 901)
        assert log.first_seq == 1
        problems = verify.verify(log)
        assert len(problems) == 1 and "snapshot" in problems[0]
        with open(info.path, "r+b") as f:
            f.truncate(10)
        with pytest.raises(CorruptSnapshotError, match="no valid head"):
            retention.check_snapshot(log, 900)


def test_snapshot_bounds_and_readonly(grown: str) -> None:
    with TaskLog.open(grown, readonly=True) as log:
        with pytest.raises(InterfaceError, match="cannot snapshot at event"):
            snapshot.take(log, log.last_seq + 5)
        snapshot.take(log, 100)  # a snapshot is a file beside the log: a reader may write one
        with pytest.raises(InterfaceError, match="read-only"):
            retention.prune(log, 101)


def test_compact_shrinks_the_file_and_needs_the_log_alone(grown: str) -> None:
    with TaskLog.open(grown) as log:
        # Big outputs so the freed pages dwarf LMDB's fixed overhead.
        for i in range(300):
            log.output(f"big-{i}", text="x" * 20_000)
        snapshot.take(log)
        retention.prune(log, log.last_seq + 1)
        last = log.last_seq
        with pytest.raises(LogBusyError, match="open in this process"):
            retention.compact(grown)
    with TaskLog.open(grown, readonly=True) as reader:
        other = run_cli("prune", "--log", grown, "--before", str(last + 1), "--compact")
        assert other.returncode != 0 and "open in another process" in other.stderr
        truth = _records(projections.replay(reader, "dict"))
    before, after = retention.compact(grown)
    assert after < before / 2
    with TaskLog.open(grown) as log:
        assert log.last_seq == last and verify.verify(log) == []
        assert _records(projections.replay(log, "dict")) == truth
        assert log.submit("after-compact") == last + 1


def test_cli_snapshot_prune_stats_replay(grown: str, tmp_path: Path) -> None:
    with TaskLog.open(grown, readonly=True) as log:
        last = log.last_seq
    out = run_cli("prune", "--log", grown, "--before", "500")
    assert out.returncode != 0 and "no snapshot covers" in out.stderr and len(out.stderr.splitlines()) == 1
    out = run_cli("snapshot", "--log", grown, "--at", "600", check=True)
    assert "snapshot at event 600" in out.stdout
    bad = run_cli("snapshot", "--log", grown, "--at", str(last + 10))
    assert bad.returncode != 0 and "cannot snapshot" in bad.stderr
    out = run_cli("prune", "--log", grown, "--before", "1000", "--compact", check=True)
    assert "pruned 600 events" in out.stdout and "starts at event 601" in out.stdout and "compacted" in out.stdout
    out = run_cli("stats", "--log", grown, check=True)
    assert "pruned      events 1..600" in out.stdout and "snapshots   600" in out.stdout
    run_cli("verify", "--log", grown, check=True)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    out = run_cli("replay", "--log", grown, "--projection", db, check=True)
    assert f"at event {last}:" in out.stdout
    future = datetime.now(timezone.utc).isoformat()
    time.sleep(0.01)
    out = run_cli("prune", "--log", grown, "--before", future, check=True)
    assert "pruned 0 events" in out.stdout  # everything the snapshot covers is already gone
    bad = run_cli("prune", "--log", grown, "--before", "yesterday")
    assert bad.returncode != 0 and "ISO time" in bad.stderr


@pytest.mark.parametrize("chunks", [1, 3, 6])
def test_prune_killed_half_way_leaves_a_sound_log(log_dir: str, chunks: int) -> None:
    with TaskLog.open(log_dir) as log:
        # Enough events for the chunk transactions asked for and one or two more: the kill lands mid-prune.
        log.append_many(list(simulate(min(5_000 * (chunks + 1), 30_000), seed=chunks)))
        cut = log.last_seq - 10
        snapshot.take(log, cut)
        truth, last = _truth(log), log.last_seq
    with TaskLog.open(log_dir, readonly=True) as watcher:
        proc = subprocess.Popen([sys.executable, "-m", "tasklog", "prune", "--log", log_dir, "--before",
                                 str(cut + 1)], env=child_env())
        # Kill once the prune has committed a few of its chunk transactions, not before.
        while watcher.start_seq <= chunks * retention._PRUNE_CHUNK and proc.poll() is None:
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with TaskLog.open(log_dir) as log:
        assert verify.verify(log) == [] and log.last_seq == last
        assert log.first_seq == log.start_seq < cut + 1, "the kill came after the prune had finished"
        assert _records(projections.replay(log, "dict")) == truth
        retention.prune(log, cut + 1)  # and a second prune finishes the job
        assert log.first_seq == cut + 1
