"""The read model beside every log (issue 22): built once, caught up with only what is new, the
Hub's projection used where there is one, a read-only log answered from the user's cache, and a
failed build leaving nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

import projections
from projections import readmodel
from tasklog import TaskLog, retention
from tasklog.demo import simulate
from tests.support import child_env, mounted_tmpfs, readonly_bind, run_cli


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


def test_the_cache_is_named_by_a_hash_never_by_the_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A crafted identity ("../../x") once named a file outside the cache, which was then replaced.
    log = _log(tmp_path / "log", 5, seed=18)
    env = lmdb.open(log, max_dbs=16, subdir=True)
    with env.begin(write=True) as txn:
        txn.put(b"identity", b"../../victim/important", db=env.open_db(b"meta", txn=txn))
    env.close()
    copy = str(tmp_path / "copy")
    shutil.copytree(log, copy)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with TaskLog.open(log, readonly=True) as crafted, TaskLog.open(copy, readonly=True) as other:
        assert crafted.identity == other.identity == "../../victim/important"
        path = Path(readmodel.cache_path(crafted))
        assert path.parent == tmp_path / "cache" / "tasklog" and re.fullmatch(r"[0-9a-f]{32}\.db", path.name)
        assert readmodel.cache_path(other) != str(path)  # copies of one log: caches of their own
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the XDG rule says
        assert readmodel.cache_path(crafted).startswith(os.path.expanduser("~"))


def test_a_read_model_of_a_copy_that_went_its_own_way_is_built_again(tmp_path: Path) -> None:
    a = _log(tmp_path / "a", 60, seed=12)
    b = str(tmp_path / "b")
    shutil.copytree(a, b)  # the same identity, the same events so far
    for log, seed in ((a, 13), (b, 14)):
        with TaskLog.open(log) as opened:
            opened.append_many(list(simulate(30, seed=seed)))
    _index(a)
    shutil.copy(os.path.join(a, readmodel.FILE), os.path.join(b, readmodel.FILE))
    with TaskLog.open(b, readonly=True) as opened:
        last = opened.last_seq
    assert f"folded {last:,} new events" in _index(b)  # not caught up from a's checkpoint
    assert _answers(b) == _answers(b, "{}", "--projection", "dict")


def test_a_fifo_at_the_hubs_projection_is_passed_by_saying_so(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", 30, seed=15)
    os.mkfifo(os.path.join(log, readmodel.HUB_FILE))
    proc = run_cli("query", "--log", log, "{}", timeout=60)  # it hung on the open
    assert proc.returncode == 0 and "is not a regular file" in proc.stderr, proc.stderr
    assert len(proc.stdout.splitlines()) == len(_answers(log, "{}", "--projection", "dict"))


def test_a_full_disk_under_the_read_model_answers_from_elsewhere(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "tiny", "3m") as mnt:
        log = _log(mnt / "log", 150, seed=16)
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        (mnt / "filler").write_bytes(b"\0" * max(free - (16 << 10), 0))
        proc = run_cli("query", "--log", log, "{}", "--keys", "msg_id")
        assert proc.returncode == 0, proc.stderr
        assert sorted(proc.stdout.splitlines()) == sorted(
            run_cli("query", "--log", log, "{}", "--keys", "msg_id", "--projection", "dict", check=True).stdout
            .splitlines())
        assert not os.path.exists(os.path.join(log, readmodel.FILE))


def test_sigterm_during_the_first_build_leaves_nothing(tmp_path: Path) -> None:
    log = _log(tmp_path / "log", 30_000, seed=17)
    model = Path(log, readmodel.FILE)
    proc = subprocess.Popen([sys.executable, "-m", "tasklog", "query", "--log", log, "{}"], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not model.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # into the fold
        assert proc.poll() is None, "the build ended before the signal: nothing was tested"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err.count("\n") == 1 and "interrupted" in err, err
    assert not any(Path(log).glob(readmodel.FILE + "*"))
