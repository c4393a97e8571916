"""The read model beside every log (issue 22): built once, caught up with only what is new, the
Hub's projection used where there is one, a read-only log answered from the user's cache, and a
failed build leaving nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import projections
from projections import readmodel
from tasklog import TaskLog, retention
from tasklog.demo import simulate
from tests.support import readonly_bind, run_cli


def _log(path: Path, tasks: int, seed: int) -> str:
    with TaskLog.open(str(path)) as log:
        log.append_many(list(simulate(tasks, seed=seed)))
    return str(path)


def _answers(log: str, query: str = "{}", *extra: str) -> list[dict[str, Any]]:
    out = run_cli("query", "--log", log, query, *extra, check=True).stdout
    return sorted((json.loads(line) for line in out.splitlines()), key=lambda r: r["msg_id"])


def _index(log: str) -> str:
    return run_cli("index", "--log", log, check=True).stdout


def test_query_builds_the_read_model_once_and_then_folds_only_new_events(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", 300, seed=1)
    truth = _answers(log, "{}", "--projection", "dict")
    assert _answers(log) == truth
    assert os.path.exists(os.path.join(log, readmodel.FILE))
    assert "folded 0 new events" in _index(log)
    with TaskLog.open(log) as opened:
        before = opened.last_seq
        opened.append_many(list(simulate(20, seed=2)))
        new = opened.last_seq - before
    assert f"folded {new:,} new events" in _index(log)
    assert _answers(log, '{"completed": {"$ne": null}}', "--keys", "msg_id") == \
        _answers(log, '{"completed": {"$ne": null}}', "--keys", "msg_id", "--projection", "dict")


def test_the_api_answers_from_the_same_read_model(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", 100, seed=3)
    with TaskLog.open(log, readonly=True) as opened:
        first = readmodel.open_read_model(opened)
        with first.projection as proj:
            assert first.kind == "log directory" and first.folded == opened.last_seq
            count = proj.count({})
        again = readmodel.open_read_model(opened)
        with again.projection as proj:
            assert again.folded == 0 and proj.count({}) == count == projections.open("dict", log=opened).count({})


def test_the_hubs_projection_answers_when_there_is_one(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", 100, seed=4)
    with TaskLog.open(log, readonly=True) as opened:
        projections.replay(opened, f"sqlite:///{os.path.join(log, readmodel.HUB_FILE)}").close()
    with TaskLog.open(log) as opened:
        opened.append_many(list(simulate(10, seed=5)))  # newer than the Hub's file: folded over it
    assert _answers(log) == _answers(log, "{}", "--projection", "dict")
    assert "read model (hub:" in _index(log)
    assert not os.path.exists(os.path.join(log, readmodel.FILE))


def test_a_read_model_that_disagrees_with_its_log_is_built_again(tmp_path: Path) -> None:
    one, other = _log(tmp_path / "one", 50, seed=6), _log(tmp_path / "other", 80, seed=7)
    _index(other)
    shutil.copy(os.path.join(other, readmodel.FILE), os.path.join(one, readmodel.FILE))  # another log's
    with TaskLog.open(one, readonly=True) as opened:
        last = opened.last_seq
    assert f"at event {last}: folded {last:,} new events" in _index(one)  # from the first event again
    assert _answers(one) == _answers(one, "{}", "--projection", "dict")


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", 200, seed=8)
    with TaskLog.open(log) as opened:
        from projections import snapshot
        snapshot.take(opened, opened.last_seq // 2)
        retention.prune(opened, opened.last_seq // 2 + 1)
    shutil.rmtree(os.path.join(log, retention.SNAPSHOT_DIR))  # nothing can fold the events pruned
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "tasklog"
    before = set(cache.iterdir()) if cache.exists() else set()
    proc = run_cli("query", "--log", log, "{}")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert "which were pruned" in proc.stderr
    assert not os.path.exists(os.path.join(log, readmodel.FILE))
    assert (set(cache.iterdir()) if cache.exists() else set()) == before


@pytest.fixture
def readonly_log(tmp_path: Path) -> Iterator[Path]:
    """A log of 60 tasks through a read-only bind mount (needs mount rights: root, as on CI)."""
    src = tmp_path / "src"
    _log(src / "log", 60, seed=9)
    with readonly_bind(src, tmp_path / "ro") as mnt:
        yield mnt / "log"


def test_a_read_only_log_keeps_its_read_model_in_the_cache(readonly_log: Path) -> None:
    log = str(readonly_log)
    assert _answers(log) == _answers(log, "{}", "--projection", "dict")
    with TaskLog.open(log, readonly=True) as opened:
        cached = readmodel.cache_path(opened)
    assert os.path.exists(cached) and not os.path.exists(os.path.join(log, readmodel.FILE))
    assert "read model (cache:" in _index(log) and "folded 0 new events" in _index(log)


def test_with_nowhere_to_write_the_answer_is_folded_in_memory_saying_why(readonly_log: Path,
                                                                         tmp_path: Path) -> None:
    log = str(readonly_log)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the cache's parent is a file: nothing can be made under it
    env = {"XDG_CACHE_HOME": str(blocked)}
    out = subprocess.run([sys.executable, "-m", "tasklog", "query", "--log", log, "{}", "--keys", "msg_id"],
                         capture_output=True, text=True, env={**os.environ, **env}, check=True)
    assert len(out.stdout.splitlines()) == len(_answers(log, "{}", "--projection", "dict"))
    assert "in memory: no read model could be written" in out.stderr


def test_a_damaged_read_model_is_made_again(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", 40, seed=10)
    Path(log, readmodel.FILE).write_bytes(b"not a database at all" * 100)
    assert _answers(log) == _answers(log, "{}", "--projection", "dict")
    assert "log directory" in _index(log)


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_link_or_a_fifo_at_the_read_models_path_is_never_written_through(tmp_path: Path, kind: str) -> None:
    log = _log(tmp_path / "log", 40, seed=11)
    target = tmp_path / "precious"
    target.write_text("keep me")
    at = Path(log, readmodel.FILE)
    if kind == "link":
        at.symlink_to(target)
    else:
        os.mkfifo(at)
    assert _answers(log) == _answers(log, "{}", "--projection", "dict")  # from the cache instead
    assert target.read_text() == "keep me"
    assert at.is_symlink() if kind == "link" else at.is_fifo()
    assert "read model (cache:" in _index(log)
