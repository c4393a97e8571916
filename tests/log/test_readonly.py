"""A log on a read-only filesystem (an archive, a backup, a snapshot mount): reading works, writing
is refused with one line, and nothing is changed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import projections
from tasklog import ReadOnlyLogError, TaskLog
from tasklog.demo import simulate
from tests.support import readonly_bind, run_cli


@pytest.fixture
def readonly_log(tmp_path: Path) -> Iterator[Path]:
    """A log of 100 tasks, seen through a read-only bind mount (needs mount rights: root, as on CI)."""
    src = tmp_path / "src"
    with TaskLog.open(str(src / "log")) as log:
        log.append_many(list(simulate(100, seed=4)))
    with readonly_bind(src, tmp_path / "ro") as mnt:
        assert subprocess.run(["touch", str(mnt / "probe")], capture_output=True).returncode != 0
        yield mnt / "log"


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_reading_commands_work_and_writing_ones_refuse(readonly_log: Path, tmp_path: Path) -> None:
    log = str(readonly_log)
    before = _files(readonly_log)
    with TaskLog.open(log, readonly=True) as opened:
        count = projections.open("dict", log=opened).count({})
        last = opened.last_seq
    assert count > 100
    stats = json.loads(run_cli("stats", "--log", log, "--json", check=True).stdout)
    assert stats["last_seq"] == last
    assert len(run_cli("tail", "--log", log, "-n", "5", check=True).stdout.splitlines()) == 5
    assert "sound" in run_cli("verify", "--log", log, check=True).stdout
    assert len(run_cli("query", "--log", log, "{}", "--keys", "msg_id", check=True).stdout.splitlines()) == count
    out = run_cli("replay", "--log", log, "--projection", f"sqlite:///{tmp_path / 'elsewhere.db'}", check=True)
    assert f"at event {last}:" in out.stdout
    with pytest.raises(ReadOnlyLogError, match="read-only"):
        TaskLog.open(log)
    for command in (["demo", "--tasks", "5"], ["prune", "--before", "10"], ["snapshot"]):
        proc = run_cli(command[0], "--log", log, *command[1:])
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "read-only" in proc.stderr and "Traceback" not in proc.stderr
    assert _files(readonly_log) == before
