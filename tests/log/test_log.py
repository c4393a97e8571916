"""The log: order, density, group commit under threads and processes, retries, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import lmdb
import pytest

import tasklog
import tasklog.fields
from tasklog import Receipt, TaskLog
from tasklog.codec import LOG_SCHEMA
from tasklog.errors import (
    EventError,
    InterfaceError,
    LogBusyError,
    LogClosedError,
    NotATaskLogError,
    SchemaVersionError,
)
from tasklog.marker import write_marker
from tasklog.verify import verify
from tests.support import PROCS, run_cli

MODES = ["sync", "process", "async"]


def _lifecycle(log: TaskLog, msg_id: str) -> list[int]:
    return [int(log.submit(msg_id, header={"msg_id": msg_id}, buffers=[b"req"], client_uuid="c")),
            int(log.start(msg_id, "engine-1")),
            int(log.output(msg_id, "stdout", text="hello\n")),
            int(log.output(msg_id, "error", content={"ename": "E"})),
            int(log.complete(msg_id, result_content={"status": "ok"}, result_buffers=[b"res"]))]


@pytest.mark.parametrize("mode", MODES)
def test_order_density_and_reopen(log_dir: str, mode: str) -> None:
    with TaskLog.open(log_dir, mode) as log:
        seqs = [s for i in range(50) for s in _lifecycle(log, f"t{i}")]
        seqs += [int(s) for s in log.append_many([tasklog.Resubmit("t1", "t1b"), tasklog.Drop(["t2"]),
                                                  tasklog.Annotate("t3", {"label": "x"})])]
        log.flush()
    assert seqs == list(range(1, 254))
    with TaskLog.open(log_dir, mode) as log:
        events = list(log.read())
        assert [s for s, _ in events] == seqs
        assert events[0][1] == tasklog.validate(tasklog.Submit("t0", {"msg_id": "t0"}, {}, {}, [b"req"], "c",
                                                               "task", events[0][1].submitted))
        assert events[-1][1] == tasklog.Annotate("t3", {"label": "x"})
        assert log.last_seq == 253 and len(log) == 253 and log.first_seq == 1
        assert [s for s, _ in log.read(10, 13)] == [10, 11, 12]
        assert int(log.start("t9")) == 254
        assert verify(log) == []


@pytest.mark.parametrize("mode", MODES)
def test_eight_threads_every_seq_exactly_once(log_dir: str, mode: str) -> None:
    got: list[list[int]] = [[] for _ in range(8)]
    with TaskLog.open(log_dir, mode) as log:
        def work(t: int) -> None:
            for i in range(300):
                got[t].append(int(log.output(f"t{t}", "stdout", text=f"{t}:{i}\n")))
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        log.flush()
        stored = {seq: ev for seq, ev in log.read()}
    flat = [s for g in got for s in g]
    assert sorted(flat) == list(range(1, 2401))
    for t, seqs in enumerate(got):
        assert seqs == sorted(seqs)  # one thread's events keep its order
        assert [stored[s].text for s in seqs] == [f"{t}:{i}\n" for i in range(300)]


def test_two_processes_append_dense_and_unique(log_dir: str, tmp_path: Path) -> None:
    TaskLog.open(log_dir).close()
    procs = []
    for seed in (1, 2):
        procs.append(subprocess.Popen([sys.executable, str(PROCS / "writer.py"), log_dir, "sync", "300",
                                       str(seed), str(tmp_path / f"acks{seed}")]))
    for p in procs:
        assert p.wait(120) == 0
    acked = [line.split() for seed in (1, 2) for line in (tmp_path / f"acks{seed}").read_text().splitlines()]
    seqs = sorted(int(s) for s, _ in acked)
    with TaskLog.open(log_dir, readonly=True) as log:
        stored = {seq: ev for seq, ev in log.read()}
        assert verify(log) == []
    assert seqs == list(range(1, len(seqs) + 1)) == sorted(stored)
    for s, msg_id in acked:
        assert stored[int(s)].msg_id == msg_id


def test_async_receipts_flush_and_close(log_dir: str) -> None:
    with TaskLog.open(log_dir, "async", commit_interval=0.05, queue_size=16) as log:
        receipts = [log.output("a", "stdout", text=str(i)) for i in range(100)]  # back-pressure at 16
        assert all(isinstance(r, Receipt) for r in receipts)
        assert [int(r) for r in receipts] == list(range(1, 101))
        assert receipts[-1].wait(10) == 100 and receipts[-1].done
        last = log.output("a", "stdout", text="tail")
        assert log.flush() == 101 and last.done
        unflushed = [log.start(f"u{i}") for i in range(10)]
    with TaskLog.open(log_dir) as log:  # close() committed everything
        assert log.last_seq == 111
        assert [ev.msg_id for _, ev in log.read(102)] == [f"u{i}" for i in range(10)]
    assert unflushed[-1] == 111


def test_async_excludes_other_writers_but_not_readers(log_dir: str) -> None:
    with TaskLog.open(log_dir, "async") as log:
        log.start("a").wait()
        with pytest.raises(LogBusyError):
            TaskLog.open(log_dir, "sync")
        code = ("import sys; from tasklog import TaskLog\n"
                "try:\n    TaskLog.open(sys.argv[1], 'sync')\nexcept Exception as e:\n    print(type(e).__name__)\n")
        out = subprocess.run([sys.executable, "-c", code, log_dir], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "LogBusyError"
        with TaskLog.open(log_dir, readonly=True) as reader:
            assert reader.last_seq == 1
    with TaskLog.open(log_dir, "sync") as log:  # the lock went with the writer
        assert log.start("b") == 2


@pytest.mark.parametrize("mode", MODES)
def test_idempotency_keys_across_restarts(log_dir: str, mode: str) -> None:
    with TaskLog.open(log_dir, mode) as log:
        first = int(log.output("a", "stdout", text="once\n", key="a/out/1"))
        again = int(log.output("a", "stdout", text="once\n", key="a/out/1"))
        both = [int(s) for s in log.append_many([tasklog.Start("b"), tasklog.Start("b")], keys=["k-b", "k-b"])]
    assert first == again == 1 and both == [2, 2]
    with TaskLog.open(log_dir, mode) as log:
        assert int(log.output("a", "stdout", text="once\n", key="a/out/1")) == 1
        assert int(log.start("c", key="k-c")) == 3
        log.flush()
        assert [ev.type for _, ev in log.read()] == ["output", "start", "start"]
        with pytest.raises(InterfaceError):
            log.start("d", key="")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_bad_input_writes_nothing(log_dir: str, mode: str) -> None:
    with TaskLog.open(log_dir, mode) as log:
        log.start("ok")
        with pytest.raises(EventError, match=r"submit\.msg_id"):
            log.submit("")
        with pytest.raises(EventError, match=r"submit\.buffers"):
            log.submit("a", buffers=["not bytes"])  # type: ignore[list-item]
        with pytest.raises(EventError, match=r"start\.started"):
            log.start("a", started="12:00")
        with pytest.raises(EventError, match=r"complete\.received"):
            log.complete("a", received=12.0)
        with pytest.raises(EventError, match=r"unknown event type"):
            log.append({"type": "submit", "msg_id": "a"})  # type: ignore[arg-type]
        with pytest.raises(tasklog.EncodeError, match=r"annotate\.fields"):
            log.annotate("a", blob=object())
        with pytest.raises(EventError, match=r"output\.name"):
            log.output("a", "stdin", text="x")
        with pytest.raises(EventError):  # all-or-nothing: one bad event spoils the batch
            log.append_many([tasklog.Start("x"), tasklog.Start("y"), tasklog.Start("")])
        with pytest.raises(tasklog.EncodeError):
            log.append_many([tasklog.Start("x"), tasklog.Annotate("y", {"s": {1}})])
        with pytest.raises(InterfaceError):
            log.append_many([tasklog.Start("x")], keys=["a", "b"])
        # Keys that are not str: msgpack would store them, every reader (JSON, MongoDB) would fail.
        for field, call in (("submit.content", lambda: log.submit("m", content={1: 1})),
                            ("submit.metadata", lambda: log.submit("m", metadata={b"k": 1})),
                            ("submit.header", lambda: log.submit("m", header={"a": [{"b": {2: 3}}]})),
                            ("complete.result_content", lambda: log.complete("m", result_content={(1,): 1})),
                            ("output.content", lambda: log.output("m", "display_data", content={"d": {3: 4}})),
                            ("annotate.fields", lambda: log.annotate("m", {"x": {5: 5}}))):
            with pytest.raises(tasklog.EncodeError, match=rf"{field}: holds a document key that is not a str"):
                call()
        assert log.append_many([]) == []
        log.flush()
        assert [(s, ev.msg_id) for s, ev in log.read()] == [(1, "ok")]
    with pytest.raises(LogClosedError):
        log.start("late")


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} \
        if path.is_dir() else {"": path.read_bytes()}


def test_not_a_tasklog_is_left_untouched(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("hello")
    other = tmp_path / "other-lmdb"
    env = lmdb.open(str(other), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v")
    env.close()
    notempty = tmp_path / "notempty"
    notempty.mkdir()
    (notempty / "x").write_text("y")
    for path, match in [(plain, "not a directory"), (other, "another LMDB"), (notempty, "not empty")]:
        before = _snapshot(path)
        with pytest.raises(NotATaskLogError, match=match):
            TaskLog.open(str(path))
        assert _snapshot(path) == before
    with pytest.raises(NotATaskLogError, match="does not exist"):
        TaskLog.open(str(tmp_path / "missing"), readonly=True)
    assert not (tmp_path / "missing").exists()


def test_newer_schema_is_refused(log_dir: str) -> None:
    with TaskLog.open(log_dir) as log:
        log.start("a")
    marker = Path(log_dir) / "TASKLOG"
    marker.write_text('{"format": "tasklog", "schema": 99}')
    before = _snapshot(Path(log_dir))
    with pytest.raises(SchemaVersionError, match="99"):
        TaskLog.open(log_dir)
    assert _snapshot(Path(log_dir)) == before


def test_a_marker_that_is_not_a_regular_file_is_refused_and_left(tmp_path: Path) -> None:
    """A link at the marker was replaced by a writer; a FIFO there blocked every open for good."""
    log_dir = tmp_path / "log"
    with TaskLog.open(str(log_dir)) as log:
        log.start("a")
    marker, real = log_dir / "TASKLOG", tmp_path / "real"
    os.replace(marker, real)
    marker.symlink_to(real)
    before = real.read_bytes()
    for readonly in (True, False):
        with pytest.raises(NotATaskLogError, match="not a regular file"):
            TaskLog.open(str(log_dir), readonly=readonly)
    assert marker.is_symlink() and real.read_bytes() == before
    marker.unlink()
    os.mkfifo(marker)
    out = run_cli("verify", "--log", str(log_dir), timeout=60)  # a subprocess: a hang is a failure
    assert out.returncode != 0 and "not a regular file" in out.stdout + out.stderr
    assert stat.S_ISFIFO(os.lstat(marker).st_mode)


def test_the_new_marker_is_never_written_through_a_link(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    with TaskLog.open(str(log_dir)) as log:
        log.start("a")
    victim, marker = tmp_path / "victim", log_dir / "TASKLOG"
    victim.write_text("keep")
    left = log_dir / f"TASKLOG.{os.getpid()}.tmp"  # where a crashed writer of this pid left its file
    left.symlink_to(victim)
    identity = json.loads(marker.read_text())["identity"]
    write_marker(str(log_dir), LOG_SCHEMA, identity)
    assert victim.read_text() == "keep" and not os.path.lexists(left)
    assert json.loads(marker.read_text()) == {"format": "tasklog", "schema": LOG_SCHEMA, "identity": identity}


def test_map_grows_without_the_user_choosing_a_size(log_dir: str) -> None:
    with TaskLog.open(log_dir, map_size=1 << 20) as log:
        for i in range(40):
            log.append_many([tasklog.Output(f"t{i}", "stdout", "x" * 2000, None)] * 50)
        assert log.last_seq == 2000
        assert log.store.env.info()["map_size"] > 1 << 20
    with TaskLog.open(log_dir) as log:
        assert sum(len(ev.text) for _, ev in log.read()) == 2000 * 2000


def test_follow_sees_new_events(log_dir: str) -> None:
    with TaskLog.open(log_dir) as log:
        log.start("a")
        seen: list[int] = []

        def consume() -> None:
            for seq, _ in log.follow(1, poll=0.01, idle_timeout=2):
                seen.append(seq)
                if seq == 3:
                    return
        th = threading.Thread(target=consume)
        th.start()
        log.start("b")
        log.start("c")
        th.join(10)
        assert seen == [1, 2, 3]


def test_listeners_see_each_commit_before_append_returns(log_dir: str) -> None:
    batches: list[list[int]] = []
    with TaskLog.open(log_dir) as log:
        log.add_listener(lambda written: batches.append([s for s, _ in written]))
        s = log.start("a")
        assert batches == [[s]]
        log.start("a", key="k")
        log.start("a", key="k")  # a retried append is not an event twice
        assert batches == [[1], [2]]

        def boom(_: object) -> None:
            raise RuntimeError("listener bug")
        log.add_listener(boom)
        assert log.start("b") == 3  # a failing listener does not fail the append
        assert isinstance(log.listener_errors[0], RuntimeError)


def test_bad_options(log_dir: str) -> None:
    with pytest.raises(InterfaceError, match="durability"):
        TaskLog.open(log_dir, "fast")
    with pytest.raises(InterfaceError):
        TaskLog.open(log_dir, "async", commit_interval=0)
    assert not os.path.exists(log_dir)


def test_read_chunks_match_read_across_chunk_boundaries(log_dir: str) -> None:
    """read_chunks gives read()'s events, in order, grouped in lists, for any start and stop."""
    from tasklog.fields import utcnow
    from tasklog.reader import READ_CHUNK as _READ_CHUNK

    now = utcnow()
    n = 2 * _READ_CHUNK + 17
    with TaskLog.open(log_dir, "process") as log:
        log.append_many([tasklog.Start(f"t{i}", "e", now) for i in range(n)])
        every = list(log.read())
        assert [seq for seq, _ in every] == list(range(1, n + 1))
        for start, stop in ((1, None), (5, None), (_READ_CHUNK, _READ_CHUNK + 2), (n, None), (n + 1, None),
                            (3, 3), (0, 10)):
            chunks = list(log.read_chunks(start, stop))
            assert all(chunks) and all(len(c) <= _READ_CHUNK for c in chunks)
            want = [item for item in every if item[0] >= start and (stop is None or item[0] < stop)]
            assert [item for c in chunks for item in c] == want == list(log.read(start, stop))


def test_complete_without_a_time_records_the_call(log_dir: str) -> None:
    """A finished task must not match {"completed": None}: the Hub always sets completed."""
    import projections

    with TaskLog.open(log_dir) as log:
        log.submit("t")
        before = tasklog.fields.utcnow()
        log.complete("t", result_content={"status": "ok"})
        done = projections.open("dict", log=log)
        assert done.count({"completed": None}) == 0
        assert before <= done.get_record("t")["completed"] <= tasklog.fields.utcnow()


def test_each_log_has_an_identity(log_dir: str) -> None:
    import json as json_

    with TaskLog.open(log_dir) as log:
        ident = log.identity
        assert ident and len(ident) == 36
    with TaskLog.open(log_dir, readonly=True) as log:
        assert log.identity == ident
    assert json_.loads((Path(log_dir) / "TASKLOG").read_text())["identity"] == ident
    # A log made by an older tasklog has none: a reader sees None, the first writer gives it one.
    with TaskLog.open(log_dir) as log, log.store.env.begin(write=True) as txn:
        txn.delete(b"identity", db=log.store.meta)
    with TaskLog.open(log_dir, readonly=True) as log:
        assert log.identity is None
    with TaskLog.open(log_dir, "async") as log:
        fresh = log.identity
    assert fresh and fresh != ident
    with TaskLog.open(log_dir) as log:
        assert log.identity == fresh


def test_create_false_never_makes_a_log(tmp_path: Path) -> None:
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(tasklog.NotATaskLogError, match="does not exist"):
        TaskLog.open(str(missing), create=False)
    with pytest.raises(tasklog.NotATaskLogError, match="is an empty directory"):
        TaskLog.open(str(empty), create=False)
    with pytest.raises(tasklog.NotATaskLogError, match="is an empty directory"):
        TaskLog.open(str(empty), readonly=True)
    assert not missing.exists() and list(empty.iterdir()) == []


def test_a_new_writer_waits_a_bounded_time_for_the_old_one(log_dir: str) -> None:
    import threading

    holder = TaskLog.open(log_dir, "async")
    holder.submit("old")
    with pytest.raises(LogBusyError, match="held by another writer"):
        TaskLog.open(log_dir, "async")
    with pytest.raises(LogBusyError, match=r"waited 0.3 s"):
        TaskLog.open(log_dir, "async", lock_timeout=0.3)
    threading.Timer(0.5, holder.close).start()  # the old controller goes away
    with TaskLog.open(log_dir, "async", lock_timeout=30) as log:
        assert [e.msg_id for _, e in log.read()] == ["old"]


def test_a_forked_child_holds_nothing_of_the_log(log_dir: str) -> None:
    """SIGKILL the process that opened the log; its forked child must not keep the log locked."""
    import signal
    import subprocess
    import sys

    from tasklog import retention

    report = Path(log_dir + ".child")
    holder = subprocess.Popen([sys.executable, str(PROCS / "fork_holder.py"), log_dir,
                               str(report)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        holder.kill()  # the controller alone; its child lives on, an orphan
        holder.wait(10)
        os.kill(child, 0)  # still running
        with TaskLog.open(log_dir, "async", lock_timeout=5) as log:  # would be LogBusyError before
            assert [e.msg_id for _, e in log.read()] == ["before-the-kill"]
            log.submit("after")
        retention.compact(log_dir)  # needs users.lock to itself: the orphan holds no share of it
        for _ in range(100):
            if report.exists() and report.read_text():
                break
            time.sleep(0.05)
        assert "a forked child must open it again" in report.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_wait_that_times_out_is_a_tasklog_error(log_dir: str) -> None:
    import time as time_

    with TaskLog.open(log_dir, "async") as log:
        log.add_listener(lambda batch: time_.sleep(0.5))  # listeners run before durability is reported
        receipt = log.start("slow")
        with pytest.raises(tasklog.FlushTimeoutError, match="not committed within") as caught:
            receipt.wait(timeout=0.05)
        assert isinstance(caught.value, tasklog.TaskLogError) and isinstance(caught.value, TimeoutError)
        assert receipt.wait() == 1


def test_appenders_keep_their_positional_signatures(log_dir: str) -> None:
    """start(msg_id, engine, started) and resubmit(msg_id, new, submitted), as they always took them."""
    from datetime import datetime, timezone

    t = datetime(2026, 11, 27, tzinfo=timezone.utc)
    with TaskLog.open(log_dir) as log:
        log.submit("a", header={"x": 1}, queue="mux")
        log.start("a", "e1", t)
        log.output("a", "stdout", text="hi")
        log.complete("a", result_content={"status": "ok"}, completed=t)
        log.resubmit("a", "b", t)
        got = [e for _, e in log.read()]
    assert got[1] == tasklog.Start("a", "e1", t) and got[4] == tasklog.Resubmit("a", "b", t)
    assert got[0].queue == "mux" and got[3].completed == t
    with TaskLog.open(log_dir) as log, pytest.raises(EventError, match=r"submit\.colour: unknown field"):
        log.submit("c", colour="red")


def test_start_records_the_time_of_the_call_as_submit_and_complete_do(log_dir: str) -> None:
    """The README's own example (no started=) gives a timeline slice and a report row."""
    from tasklog.fields import utcnow
    from tasklog.views.timeline import trace_events

    with TaskLog.open(log_dir) as log:
        before = utcnow()
        log.submit("m", header={}, content={}, buffers=[b"..."], client_uuid="c1", queue="task")
        log.start("m", engine_uuid="e1")
        log.output("m", name="stdout", text="hello\n")
        log.complete("m", result_content={"status": "ok"})
        after = utcnow()
        started = log.event(2).started  # type: ignore[union-attr]
        assert started is not None and before <= started <= after
        assert before <= log.event(1).submitted <= started  # type: ignore[union-attr, operator]
        assert [e["args"]["msg_id"] for e in trace_events(log) if e["ph"] == "X"] == ["m"]
