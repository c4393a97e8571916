"""The stream index keyed by task number (schema 3, issue 24): numbers in the order tasks are first
named, a prune that shrinks the msg_id map, verify's cross-checks, and the upgrade of a log that
tasklog wrote with schema 2 (tests/log/data/schema2-log, written by the tasklog of commit d5235e5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb
import pytest

import projections
from tasklog import Resubmit, StorageError, Submit, TaskLog, schema, streamindex, task_ids
from tasklog.codec import LOG_SCHEMA, pack_key, unpack_key
from tasklog.demo import simulate
from tasklog.numbers import NAME, last_number
from tasklog.verify import verify
from tests.support import SCHEMA_2_LOG


def _schema_2_copy(tmp_path: Path) -> str:
    path = str(tmp_path / "old")
    shutil.copytree(SCHEMA_2_LOG, path)
    return path


def _scan(log: TaskLog, msg_id: str) -> list[Any]:
    return [(s, ev) for s, ev in log.read() if msg_id in task_ids(ev)]


def _numbers(log: TaskLog) -> dict[str, int]:
    """The msg_id -> task number map, read straight from the index's name rows."""
    index = log.store.dbs.index
    assert index is not None
    with log.store.reader() as txn:
        return {bytes(v).decode(errors="replace"): unpack_key(k[:8]) for k, v in txn.cursor(db=index.rows)
                if k[8:] == NAME}


def test_tasks_are_numbered_in_the_order_the_log_first_names_them(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.submit("b")
        log.append_many([Submit("a"), Resubmit("a", "c"), Submit("b")])
        log.start("d", "engine-1")  # a task first named by its start
        assert _numbers(log) == {"b": 1, "a": 2, "c": 3, "d": 4}
        assert [s for s, _ in log.events_of("b")] == [1, 4]
        assert [s for s, _ in log.events_of("a")] == [2, 3] and [s for s, _ in log.events_of("c")] == [3]
        assert verify(log) == []
    with TaskLog.open(str(tmp_path / "log")) as log:  # the count goes on across opens
        log.submit("e")
        assert _numbers(log)["e"] == 5


def test_a_prune_takes_fully_pruned_tasks_out_of_the_msg_id_map(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.submit("gone")
        log.submit("half")
        log.start("half", "engine-1")
        log.store.drop_front(1, 3)  # the front: gone's submit and half's
        assert set(_numbers(log)) == {"half"}
        assert [s for s, _ in log.events_of("half")] == [3] and log.events_of("gone") == []
        log.submit("gone")  # named again: a new number, a stream of its own
        assert _numbers(log) == {"half": 2, "gone": 3}
        assert [s for s, _ in log.events_of("gone")] == [4]
        assert verify(log) == []


def test_verify_reports_an_index_whose_databases_disagree(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.append_many(list(simulate(20, seed=3)))
        index = log.store.dbs.index
        assert index is not None and verify(log) == []
        victim = next(iter(_numbers(log)))
        log.store.write(lambda txn: txn.put(victim.encode(), pack_key(1), db=index.tasks))  # unmerged, mapped
        assert verify(log) == [f"stream index: task 1 ({victim!r}) is not where its number says",
                               f"stream index: 1 msg_ids mapped, but 0 of the {len(_numbers(log))} tasks are merged"]
        log.store.write(lambda txn: txn.delete(victim.encode(), db=index.tasks))
        log.store.write(lambda txn: txn.delete(pack_key(1) + NAME, db=index.rows))  # task 1's name row
        problems = verify(log)
        assert problems and all("'?' lists event" in p or "entries, but the events name" in p for p in problems)


def test_numbers_past_the_merge_point_go_into_the_msg_id_map_together(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamindex, "MERGE", 50)
    path = str(tmp_path / "log")
    evs = list(simulate(200, seed=5))
    with TaskLog.open(path) as log:
        for i in range(0, len(evs), 37):
            log.append_many(evs[i:i + 37])
        index = log.store.dbs.index
        assert index is not None
        with log.store.reader() as txn:
            _, merged = index.marks.read(txn)
            count = last_number(txn, index.rows)
            mapped = int(txn.stat(index.tasks)["entries"])
        assert count == len(_numbers(log)) and merged >= 150 and mapped == merged and count - merged < 100
        for m in [*_numbers(log), "never"]:
            assert log.events_of(m) == _scan(log, m)
        assert verify(log) == []
    with TaskLog.open(path, readonly=True) as log:  # another process's reader: its own cache of the tail
        for m in list(_numbers(log))[-60:]:
            assert log.events_of(m) == _scan(log, m)


def test_a_schema_2_log_is_read_with_its_own_index_where_it_cannot_be_upgraded(tmp_path: Path) -> None:
    path = _schema_2_copy(tmp_path)
    with TaskLog.open(path, readonly=True) as log:
        assert log.store.schema == 2 and not log.store.indexed
        ids = sorted({m for _, ev in log.read() for m in task_ids(ev)})
        assert len(ids) > 100
        for m in [*ids[:40], "never"]:
            assert log.events_of(m) == _scan(log, m)
        assert verify(log) == []


def test_a_schema_2_log_is_upgraded_once_by_its_first_writer(tmp_path: Path) -> None:
    path = _schema_2_copy(tmp_path)
    with TaskLog.open(path, readonly=True) as log:
        before = sorted(projections.open("dict?buffers=inline", log=log).find_records({}),
                        key=lambda r: r["msg_id"])
    with TaskLog.open(path) as log:
        assert log.store.schema == LOG_SCHEMA and log.store.indexed
        assert verify(log) == []
        for r in before:
            assert log.events_of(r["msg_id"]) == _scan(log, r["msg_id"])
        after = projections.open("dict?buffers=inline", log=log).find_records({})
        assert sorted(after, key=lambda r: r["msg_id"]) == before
        log.submit("new-after-upgrade")
        assert [ev.msg_id for _, ev in log.events_of("new-after-upgrade")] == ["new-after-upgrade"]
    with open(os.path.join(path, "TASKLOG")) as f:
        assert json.load(f)["schema"] == LOG_SCHEMA
    env = lmdb.open(path, max_dbs=12, readonly=True)
    with env.begin() as txn:  # schema 2's index and the build's progress are gone
        assert txn.get(b"streams") is None
        assert txn.get(b"task_index_to", db=env.open_db(b"meta", txn=txn)) is None
    env.close()


class _Stop(Exception):
    pass


def test_an_interrupted_upgrade_leaves_a_schema_2_log_and_resumes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = _schema_2_copy(tmp_path)
    monkeypatch.setattr(streamindex, "_CHUNK", 100)
    chunks: list[int] = []

    class Interrupting(schema.Progress):
        """The upgrade's progress bar, interrupted between two chunks as a Ctrl-C would."""

        def update(self, n: int = 1) -> None:
            chunks.append(n)
            if len(chunks) == 2:
                raise _Stop
    monkeypatch.setattr(schema, "Progress", Interrupting)
    with pytest.raises(_Stop):
        TaskLog.open(path)
    with TaskLog.open(path, readonly=True) as log:  # still schema 2, still answered from its own index
        assert log.store.schema == 2 and verify(log) == []
        m = next(ev.msg_id for _, ev in log.read() if isinstance(ev, Submit))
        assert log.events_of(m) == _scan(log, m)
    with TaskLog.open(path) as log:  # resumed from the third chunk, to the end
        assert log.store.schema == LOG_SCHEMA and verify(log) == []
        total = log.last_seq
    assert chunks[:2] == [100, 100] and sum(chunks) == total


_SHARING_WRITER = """
import sys
from tasklog import TaskLog, streamindex
streamindex.MERGE = 40  # merges happen while the other process numbers tasks too
path, me = sys.argv[1], sys.argv[2]
with TaskLog.open(path, "sync") as log:
    for i in range(300):
        log.output(f"shared-{i % 97}", "stdout", text=f"{me} {i}")
        if i % 3 == 0:
            log.submit(f"{me}-{i}")
"""


def test_writers_in_two_processes_number_each_task_once(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    TaskLog.open(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", _SHARING_WRITER, path, me]) for me in ("a", "b")]
    assert [p.wait(120) for p in procs] == [0, 0]
    with TaskLog.open(path, readonly=True) as log:
        assert verify(log) == []
        numbers = _numbers(log)
        assert len(numbers) == len(set(numbers.values())) == 97 + 2 * 100
        for m in [f"shared-{i}" for i in range(97)] + ["a-0", "b-297"]:
            assert log.events_of(m) == _scan(log, m)


def test_after_a_prune_took_the_highest_numbers_new_tasks_are_numbered_past_the_merge_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: the next number came from the last row left, at or below the merge point,
    # where only ``tasks`` is looked in: the new task's events were then found by no one.
    monkeypatch.setattr(streamindex, "MERGE", 50)
    with TaskLog.open(str(tmp_path / "log")) as log:
        for i in range(60):
            log.submit(f"task-{i}")
        log.annotate("task-0", label="kept")  # the one event left names the lowest number
        log.store.drop_front(1, log.last_seq)
        assert set(_numbers(log)) == {"task-0"}
        log.submit("fresh")
        log.complete("fresh", result_content={"status": "ok"})
        log.submit("task-5")
        assert [ev.type for _, ev in log.events_of("fresh")] == ["submit", "complete"]
        assert [ev.type for _, ev in log.events_of("task-5")] == ["submit"]
        assert _numbers(log)["fresh"] == 51 and verify(log) == []  # 51..60 were pruned away whole


def test_a_writer_whose_upgrade_another_writer_finished_stops(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: a second writer opening a log being upgraded started again from event 1
    # once the first had finished, then dropped schema 2's index through a closed handle.
    path = _schema_2_copy(tmp_path)
    monkeypatch.setattr(streamindex, "_CHUNK", 100)
    chunks: list[int] = []
    stores: list[Any] = []

    class OtherWriterFinishes(schema.Progress):
        """After our first chunk, the other writer marks the log upgraded (as its last step does)."""

        def update(self, n: int = 1) -> None:
            chunks.append(n)
            if len(chunks) == 1:
                store = stores[0]
                store.write(lambda txn: txn.put(b"schema", str(LOG_SCHEMA).encode(), db=store.meta))
    monkeypatch.setattr(schema, "Progress", OtherWriterFinishes)
    real = schema.upgrade
    monkeypatch.setattr(schema, "upgrade", lambda store: (stores.append(store), real(store))[1])
    from tasklog import log as log_module
    monkeypatch.setattr(log_module, "upgrade", schema.upgrade)
    with TaskLog.open(path) as log:
        assert chunks == [100] and log.store.schema == LOG_SCHEMA
        env = log.store.env
        with env.begin() as txn:  # schema 2's index left to the writer that finished (it drops it)
            assert txn.get(b"streams") is not None


def test_verify_reports_damage_it_cannot_read_past(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.append_many(list(simulate(10, seed=4)))
        index = log.store.dbs.index
        assert index is not None
        log.store.write(lambda txn: txn.put(b"task_marks", b"short", db=index.marks.meta))
        assert verify(log) == ["stream index: the stream index's counters are damaged (5 bytes, not 16); "
                               "`tasklog verify` says what else is"]
        with pytest.raises(StorageError, match="counters are damaged"):
            log.submit("more")
        log.store.write(lambda txn: txn.delete(b"task_marks", db=index.marks.meta))
        log.store.write(lambda txn: txn.put(pack_key(1) + b"\xff", b"", db=index.rows))  # a short key
        log.store.write(lambda txn: txn.put(pack_key(2) + NAME, b"\xff\xfe", db=index.rows))  # not UTF-8
        problems = verify(log)
        assert any("a row with a malformed key" in p for p in problems)
        assert any("'\ufffd\ufffd' lists event" in p for p in problems)
        name = next(m for m, n in _numbers(log).items() if n == 3)
        log.store.write(lambda txn: txn.put(pack_key(99) + NAME, name.encode(), db=index.rows))  # a second number
        assert f"stream index: {name!r} has two numbers" in verify(log)
