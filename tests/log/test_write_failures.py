"""Failed writes on a full disk (issue 20, item 2): every loss is reported, never hidden behind a
later success, and a full disk is a StorageFullError however LMDB surfaces it."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from ipyparallel.controller.hub import init_record
from jupyter_client.session import Session

import projections
from projections.backends.sqlite import SQLiteProjection
from tasklog import CommitError, InterfaceError, Output, Receipt, StorageError, StorageFullError, Submit, TaskLog
from tasklog.appending import build
from tasklog.asynccommit import AsyncCommitter
from tasklog.codec import encode
from tasklog.ipyparallel import TaskLogDB
from tests.support import mounted_tmpfs, run_cli


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test."""
    with mounted_tmpfs(tmp_path / "tiny", "2m") as mnt:
        yield mnt


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (and nothing on stdout about events)."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, (out.returncode, out.stderr[-2000:])
    assert lines[0].startswith("tasklog demo: error: ") and "events for" not in out.stdout, out
    return lines[0]


def _settled(receipts: list[Receipt], within: float = 60.0) -> None:
    """Wait until every receipt is committed or failed, without observing a failure."""
    deadline = time.monotonic() + within
    while not receipts[-1].done:  # a failed commit voids everything queued: the last settles last
        assert time.monotonic() < deadline, "the async queue never drained"
        time.sleep(0.01)


def _overfill(path: str, filler: Path) -> tuple[TaskLog, int, int]:
    """An async log that lost events to a full disk, then committed one after space returned.

    Returns the open log, how many events were appended before space returned, and how many of
    them the log holds. Nothing has observed the loss: no receipt was waited on.
    """
    filler.write_bytes(b"\0" * (512 << 10))  # taken back below: "space returns"
    log = TaskLog.open(path, "async")
    receipts = [cast(Receipt, log.submit(f"t{i}", buffers=[os.urandom(1000)])) for i in range(3000)]  # 3 MB, 2 MiB
    _settled(receipts)
    held = log.last_seq
    assert held < len(receipts), "the disk never filled: the test proves nothing"
    filler.unlink()
    assert cast(Receipt, log.start("after")).wait(30) == held + 1  # a later commit succeeds
    return log, len(receipts), held


def _check_loss(exc: StorageError, appended: int, held: int) -> None:
    lost = appended - held
    assert isinstance(exc, StorageFullError), exc
    assert exc.lost == lost and f"{lost:,} events" in str(exc), exc
    first, last = exc.lost_range
    assert 1 <= first <= held + 1 and first <= last <= appended, exc
    assert f"{first:,}..{last:,}" in str(exc), exc


def test_a_loss_is_raised_by_the_next_flush_after_a_later_success(tiny_fs: Path) -> None:
    path = str(tiny_fs / "log")
    log, appended, held = _overfill(path, tiny_fs / "filler")
    try:
        with pytest.raises(StorageFullError) as caught:
            log.flush()
        _check_loss(caught.value, appended, held)
        assert log.flush() == held + 1  # reported once: observed now
        cast(Receipt, log.start("later")).wait(30)
    finally:
        log.close()  # nothing lost since the flush reported it: closes quietly
    with TaskLog.open(path, readonly=True) as reader:
        assert reader.last_seq == held + 2
        assert [ev.msg_id for _, ev in reader.read(held + 1)] == ["after", "later"]  # type: ignore[union-attr]


def test_a_loss_no_flush_saw_is_raised_by_close(tiny_fs: Path) -> None:
    path = str(tiny_fs / "log")
    log, appended, held = _overfill(path, tiny_fs / "filler")
    with pytest.raises(StorageFullError) as caught:
        log.close()
    _check_loss(caught.value, appended, held)
    assert log.closed
    with TaskLog.open(path, "async") as again:  # close() released the directory all the same
        assert again.last_seq == held + 1


def test_a_loss_every_receipt_reported_is_not_reported_again(tiny_fs: Path) -> None:
    path = str(tiny_fs / "log")
    with TaskLog.open(path, "async") as log:
        receipts = [cast(Receipt, log.submit(f"t{i}", buffers=[os.urandom(1000)])) for i in range(3000)]
        failed = 0
        for r in receipts:
            try:
                r.wait(30)
            except StorageFullError:
                failed += 1
        assert failed == len(receipts) - log.last_seq > 0
        assert log.flush() == log.last_seq  # each lost event was reported to whoever waited on it


def test_a_full_disk_is_storage_full_however_lmdb_says_it(tiny_fs: Path) -> None:
    # LMDB reports a short write as EIO ("short write, filesystem full?"): big events on a full
    # tmpfs gave CommitError: Input/output error, small ones ENOSPC.
    seen: Counter[str] = Counter()
    with TaskLog.open(str(tiny_fs / "log"), "sync") as log:
        for i in range(600):
            size = (300, 5_000, 20_000, 70_000)[i % 4]
            try:
                log.submit(f"t{i}", buffers=[os.urandom(size)])
            except StorageError as exc:
                seen[f"{type(exc).__name__}: {'no space left' in str(exc).lower()}"] += 1
    assert sum(seen.values()) > 300, seen  # the disk filled early: most appends met it
    assert seen == {"StorageFullError: True": sum(seen.values())}, seen


def test_demo_on_a_full_disk_exits_non_zero_with_one_line_and_leaves_no_log(tiny_fs: Path) -> None:
    path = tiny_fs / "log"
    line = _one_line(run_cli("demo", "--log", str(path), "--tasks", "3000", "--seed", "7"))
    assert "no space left" in line.lower() and "events were never written" in line, line
    assert not path.exists()  # a failed command leaves nothing behind: the log was its own


def test_demo_into_an_existing_log_says_what_the_log_kept(tiny_fs: Path) -> None:
    path = tiny_fs / "log"
    with TaskLog.open(str(path)) as log:
        for i in range(10):
            log.start(f"before-{i}")
    line = _one_line(run_cli("demo", "--log", str(path), "--tasks", "3000", "--seed", "7"))
    with TaskLog.open(str(path), readonly=True) as log:
        last = log.last_seq
        assert [ev.msg_id for _, ev in log.read(1, 11)] == [f"before-{i}" for i in range(10)]  # type: ignore[union-attr]
    kept = last - 10
    assert f"the log keeps {kept:,} of the demo's events" in line, (line, last)
    if kept:
        assert f"(events 11..{last:,})" in line, line


def test_a_new_log_on_an_almost_full_disk_is_one_line_at_every_stage(tmp_path: Path) -> None:
    # However little room is left, making a log fails with one line and leaves nothing: with none
    # left the process died of SIGBUS (LMDB maps its lock file), then a bare lmdb.Error (EIO), a
    # bare OSError (the marker file), or "damaged or incomplete" for a log never made.
    refused = []
    for pages in range(0, 24, 2):  # through every stage of making a log, to room enough
        with mounted_tmpfs(tmp_path / f"room-{pages}", "256k") as mnt:
            st = os.statvfs(mnt)
            (mnt / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - pages * 4096))
            log = str(mnt / "log")
            out = run_cli("demo", "--log", log, "--tasks", "5", "--seed", "1")
            if out.returncode == 0:  # room enough at last
                assert "events for 5 tasks" in out.stdout and run_cli("verify", "--log", log).returncode == 0
                continue
            line = _one_line(out)
            assert "no space left" in line.lower() and "damaged" not in line, (pages, line)
            assert not (mnt / "log").exists(), pages
            refused.append(pages)
    assert refused[0] == 0 and refused[-1] < 22, refused  # the range spans no room to room enough


# -- TaskLogDB (the Hub's database) after a failed async commit ---------------------------------


class _Errors(logging.Handler):
    """The error records a logger emits; ``seen`` is set at the first."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.seen.set()


class _Hub:
    """Drives TaskLogDB with the Hub's calls for one task at a time; as the Hub does, a write that
    raises is logged (kept here) and the Hub goes on."""

    def __init__(self, db: TaskLogDB) -> None:
        self.db, self.session, self.raised = db, Session(), Counter[str]()
        self.ids: list[str] = []

    def _call(self, call: Callable[..., None], *args: Any) -> None:
        try:
            call(*args)
        except Exception as exc:
            self.raised[type(exc).__name__] += 1

    def task(self, complete: bool = True) -> str:
        """Submit a task with a 1,000-byte buffer, start it, give it output, maybe complete it."""
        msg = self.session.msg("apply_request", content={"a": 1})
        msg["buffers"] = [os.urandom(1000)]
        rec = init_record(msg)
        rec.update(client_uuid=self.session.session, queue="task")
        mid = rec["msg_id"]
        self._call(self.db.add_record, mid, rec)
        self._call(self.db.update_record, mid, {"engine_uuid": "e1"})
        self._call(self.db.update_record, mid, {"stdout": f"{mid}\n"})
        if complete:
            self.complete(mid)
        self.ids.append(mid)
        return mid

    def complete(self, mid: str) -> None:
        now = datetime.now(timezone.utc)
        self._call(self.db.update_record, mid, {"result_header": {"msg_id": "r"}, "result_content": {"status": "ok"},
                                                "result_metadata": {}, "result_buffers": [], "started": now,
                                                "completed": now, "received": now})


def _by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["msg_id"]: r for r in records}


@pytest.mark.parametrize("projection", ["sqlite", "dict"])
def test_a_hub_hears_of_a_loss_and_its_projection_stays_the_logs(tiny_fs: Path, projection: str) -> None:
    # TaskLogDB folds each event before its commit: after a failed commit the projection kept the
    # lost events and skipped the next ones, whose numbers were reused, with nothing reported.
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (1 << 20))  # taken back below: room for the rest of the test
    errors, logger = _Errors(), logging.getLogger(f"tasklog-hub-loss-{projection}")
    logger.addHandler(errors)
    db = TaskLogDB(location=str(tiny_fs), projection=projection, log=logger)
    hub = _Hub(db)
    try:
        for i in range(3000):  # 3 MB of buffers on a 2 MiB disk
            hub.task(complete=i % 2 == 0)
            if errors.seen.is_set():
                break
        assert errors.seen.wait(60), "no loss was logged: the disk never filled?"
        assert "events were never written" in errors.messages[0] and "no space left" in errors.messages[0].lower()
        running = [m for i, m in enumerate(hub.ids) if i % 2]  # their submits may be lost: results come
        filler.unlink()
        after = [hub.task() for _ in range(50)]  # go on: these reuse the lost numbers
        for mid in running:
            hub.complete(mid)
        with pytest.raises(StorageFullError) as caught:  # the first query says what was lost, once
            db.find_records({})
        assert caught.value.lost > 0 and "events were never written" in str(caught.value)
        assert db.tasklog.flush() == db.tasklog.last_seq  # and it is reported only once
        fresh = projections.replay(db.tasklog, "dict")  # the log folded afresh
        assert _by_id(db.find_records({})) == _by_id(fresh.find_records({}))
        assert db.get_history() == fresh.get_history() and set(after) <= set(db.get_history())
        assert all(db.get_record(m)["completed"] is not None for m in after)
    finally:
        logger.removeHandler(errors)
        db.close()  # nothing more to report: closes quietly
    # The Hub's writes never raised the loss (the Hub drops what a raising call was recording).
    # (A batch stored into SQLite while the disk is full fails the write that stores it, its event
    # recorded, as StorageFullError: it reached the Hub as a raw sqlite3.OperationalError.)
    assert set(hub.raised) <= {"StorageFullError"}, hub.raised


# -- issue 20, item 2 (F4): a committer that stops is a loss, never a silent one ---------------


@pytest.mark.parametrize("option", [
    {"commit_interval": 1e10}, {"commit_interval": math.inf}, {"commit_interval": math.nan},
    {"commit_interval": 0}, {"commit_interval": 3601}, {"queue_size": 0}, {"queue_size": 2.5},
    {"queue_size": math.nan}, {"queue_bytes": math.nan}, {"queue_bytes": 0}, {"queue_bytes": True}])
def test_open_refuses_a_commit_interval_or_queue_bound_it_cannot_keep(tmp_path: Path, option: dict[str, Any]) -> None:
    path = tmp_path / "log"
    with pytest.raises(InterfaceError, match=next(iter(option))) as caught:
        TaskLog.open(str(path), "async", **option)
    assert len(str(caught.value).splitlines()) == 1
    assert not path.exists()  # refused before anything was created
    with TaskLog.open(str(path), "async", commit_interval=3600, queue_size=1, queue_bytes=1) as log:
        assert cast(Receipt, log.submit("a")).wait(30) == 1  # the largest interval still commits on wait


def test_a_committer_that_dies_fails_its_receipts_flush_and_close(tmp_path: Path) -> None:
    """Its thread's death (here a wait the lock cannot take: OverflowError, which TaskLog.open now
    refuses, so the committer is built directly) fails every receipt, flush() and close() with a
    CommitError naming the cause; nothing hangs, and later appends are refused with it."""
    log = TaskLog.open(str(tmp_path / "log"))  # sync: its store is written by the committer below alone
    try:
        event = build(Submit, "t0", {})
        for waits in (True, False):
            committer = AsyncCommitter(log.store, lambda written: None, 1e10, 100, log.last_seq)
            receipts = cast(list[Receipt], committer.append([(encode(event), None, event)] * 3))
            _settled(receipts, within=30)  # no waiter: the committer lingers, and its wait overflows
            if waits:
                with pytest.raises(CommitError, match="OverflowError"):
                    receipts[0].wait(timeout=30)
                with pytest.raises(CommitError, match="OverflowError") as caught:
                    committer.flush(timeout=30)
                assert caught.value.lost == 2 and caught.value.lost_range == (1, 3)
                with pytest.raises(CommitError, match="OverflowError"):
                    committer.append([(encode(event), None, event)])
                committer.close()  # told already: quiet
            else:
                with pytest.raises(CommitError, match="OverflowError") as caught:
                    committer.close()
                assert caught.value.lost == 3 and "3 events were never written" in str(caught.value)
        assert log.last_seq == 0
    finally:
        log.close()


# -- F6: a full disk under a SQLite projection is StorageFullError -----------------------------


def _fill(fs: Path) -> None:
    """Fill ``fs`` to the last byte."""
    with open(fs / "filler", "wb", buffering=0) as out:  # unbuffered: the write raises, not close
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_sqlite_projection_on_a_full_disk_is_storage_full(tiny_fs: Path, tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    with TaskLog.open(log) as tl:
        tl.submit("a")
    _fill(tiny_fs)
    with pytest.raises(StorageFullError, match="full") as caught:
        SQLiteProjection(str(tiny_fs / "p.db"))
    assert "log keeps working" not in str(caught.value), caught.value
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["filler"]  # no file left behind, none held open
    out = run_cli("replay", "--log", log, "--projection", f"sqlite:///{tiny_fs / 'q.db'}")
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "not a usable SQLite projection" not in lines[0] and "full" in lines[0], lines[0]
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["filler"]


def test_a_sqlite_projection_that_fills_the_disk_while_storing_is_storage_full(tiny_fs: Path) -> None:
    # Storing a batch on a full disk raised a raw sqlite3.OperationalError, past the error root.
    proj = SQLiteProjection(str(tiny_fs / "p.db"))
    try:
        (tiny_fs / "filler").write_bytes(b"\0" * (1900 << 10))
        with pytest.raises(StorageFullError, match="disk is full"):
            for seq in range(1, 2001):
                proj.apply([(seq, Output(f"t{seq}", name="stdout", text="x" * 4000))])
    finally:
        proj.close()
