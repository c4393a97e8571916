"""Shipping, following and restoring when something goes wrong (issue 20, items 4-8, 12, 14): a
restore killed midway, copies of one log shipping as one hub, a pruned log, signals while no
server answers, two follows, a full disk, and the command line's bad input. Real nats-server
processes (``nats_cluster``), real subprocesses and signals."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

import projections
from tasklog import NotATaskLogError, StreamError, TaskLog, retention
from tasklog.demo import simulate
from tasklog.stream.ship import Shipper
from tasklog.stream.wire import Batch, hub_subject
from tests.support import child_env, mounted_tmpfs, run_cli
from tests.support.nats_cluster import NatsCluster, shipped_through, wait_for


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test."""
    with mounted_tmpfs(tmp_path / "tiny", "2m") as mnt:
        yield mnt


def _hub_log(path: Path, tasks: int, seed: int) -> int:
    with TaskLog.open(str(path), "async") as log:
        log.append_many(list(simulate(tasks, seed=seed)))
        log.flush()
        return log.last_seq


def _tasklog(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tasklog", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())


def _one_line_error(out: subprocess.CompletedProcess[str], *words: str) -> str:
    """Assert the command failed with one line on stderr holding ``words``; return the line."""
    assert out.returncode != 0, out.stdout
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    for w in words:
        assert w in out.stderr, out.stderr
    return out.stderr


def _raw(path: Path) -> list[tuple[int, bytes]]:
    with TaskLog.open(str(path), readonly=True) as log:
        return list(log.read_raw())


def _append(path: Path, *msg_ids: str) -> None:
    with TaskLog.open(str(path)) as log:
        for m in msg_ids:
            log.submit(m)


# -- item 4: restore is atomic; a log the stream does not continue is refused -----------------


def _partial_events(target: Path) -> int:
    """Events of the log a running restore into ``target`` is building, wherever it builds it."""
    for where in (target, target.with_name(target.name + ".restoring") / "log"):
        if (where / "data.mdb").exists():
            try:
                with TaskLog.open(str(where), readonly=True) as log:
                    return log.last_seq
            except Exception:  # the restore has not marked it yet
                return 0
    return 0


def test_a_restore_killed_midway_leaves_no_log_and_a_rerun_rebuilds_it(tmp_path: Path,
                                                                      one_server: NatsCluster) -> None:
    original = tmp_path / "hub"
    last = _hub_log(original, 6000, 3)
    # Small messages and about four commits of the aside log (one per 8,192 events): the restore is
    # stopped (SIGSTOP) after its first, with more than a thousand messages still to fetch.
    run_cli("ship", "--log", str(original), "--to", one_server.url, "--hub", "h", "--batch", "8", check=True)
    target = tmp_path / "restored"
    first = _tasklog("restore", "--from", one_server.url, "--hub", "h", "--log", str(target))
    try:
        wait_for(lambda: _partial_events(target) > 0 or first.poll() is not None, 60, "the restore to begin")
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None and _partial_events(target) < last, "the restore finished: nothing was tested"
        second = run_cli("restore", "--from", one_server.url, "--hub", "h", "--log", str(target))
        _one_line_error(second, "another restore into", "under way")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(15)
    with pytest.raises(NotATaskLogError):  # a partial restore is never a log at the path asked for
        TaskLog.open(str(target), readonly=True)
    out = run_cli("restore", "--from", one_server.url, "--hub", "h", "--log", str(target), check=True)
    assert f"(1..{last})" in out.stdout
    assert _raw(target) == _raw(original)
    assert sorted(os.listdir(tmp_path)) == ["hub", "nats1", "restored"]  # nothing left aside


def test_ship_refuses_an_older_copy_the_stream_has_moved_past(tmp_path: Path, one_server: NatsCluster) -> None:
    original, copy = tmp_path / "hub", tmp_path / "copy"
    _hub_log(original, 50, 1)
    shutil.copytree(original, copy)  # a backup: the same log, the same identity
    _append(original, *(f"later-{i}" for i in range(20)))
    run_cli("ship", "--log", str(original), "--to", one_server.url, "--hub", "h", check=True)
    _append(copy, *(f"other-{i}" for i in range(5)))  # numbered like some of the original's
    out = run_cli("ship", "--log", str(copy), "--to", one_server.url, "--hub", "h")
    _one_line_error(out, "does not continue", "this copy of the log")
    assert "check the servers" not in out.stderr  # nothing to do with the servers
    assert shipped_through(one_server.url, "TASKLOG", "h") == len(_raw(original))


# -- item 5: copies of one log (restores) shipping as one hub ----------------------------------


def _restore(url: str, path: Path) -> None:
    run_cli("restore", "--from", url, "--hub", "h", "--log", str(path), check=True)


def _headers(url: str, hub: str) -> list[dict[str, str]]:
    import nats

    async def read() -> list[dict[str, str]]:
        nc = await nats.connect(servers=url.split(","))
        try:
            js = nc.jetstream()
            sub = await js.subscribe(hub_subject("TASKLOG", hub), ordered_consumer=True, headers_only=True)
            info = await js.stream_info("TASKLOG", subjects_filter=hub_subject("TASKLOG", hub))
            total = info.state.subjects[hub_subject("TASKLOG", hub)]
            return [dict((await sub.next_msg(timeout=10)).headers or {}) for _ in range(total)]
        finally:
            await nc.close()
    return asyncio.run(read())


def test_two_restores_of_one_hub_written_to_and_shipped_do_not_merge(tmp_path: Path,
                                                                     one_server: NatsCluster) -> None:
    url = one_server.url
    original, r1, r2, r3 = (tmp_path / n for n in ("hub", "r1", "r2", "r3"))
    _hub_log(original, 40, 2)
    run_cli("ship", "--log", str(original), "--to", url, "--hub", "h", "--batch", "16", check=True)
    _restore(url, r1)
    _restore(url, r2)
    _append(r1, "r1-a", "r1-b")
    _append(r2, "r2-a")
    run_cli("ship", "--log", str(r1), "--to", url, "--hub", "h", check=True)
    out = run_cli("ship", "--log", str(r2), "--to", url, "--hub", "h")
    _one_line_error(out, "does not continue", "another copy of it (a restore, fork")
    _append(original, "late")  # the original, back after its copy took over, is refused as well
    _one_line_error(run_cli("ship", "--log", str(original), "--to", url, "--hub", "h"), "does not continue")
    _restore(url, r3)
    assert _raw(r3) == _raw(r1)
    with TaskLog.open(str(original), readonly=True) as a, TaskLog.open(str(r1), readonly=True) as b:
        identity, forks = a.identity, (a.fork, b.fork)
    assert forks[0] is None and forks[1] is not None  # a restore is a copy of its own
    headers = _headers(url, "h")
    mine = [h for h in headers if "Tasklog-Fork" not in h]  # the original's messages, as an older tasklog's
    assert [h["Nats-Msg-Id"] for h in mine[1:3]] == [f"{identity}:17-32", f"{identity}:33-48"]
    theirs = headers[len(mine):]
    assert theirs and all(h["Tasklog-Fork"] == forks[1] for h in theirs)


def test_a_following_shipper_overtaken_by_another_copy_stops_saying_so(tmp_path: Path,
                                                                       cluster: NatsCluster) -> None:
    url = cluster.url
    original, r1, r2 = tmp_path / "hub", tmp_path / "r1", tmp_path / "r2"
    _hub_log(original, 40, 4)
    run_cli("ship", "--log", str(original), "--to", url, "--hub", "h", check=True)
    _restore(url, r2)
    errors: list[BaseException] = []
    with TaskLog.open(str(r2)) as log:
        shipper = Shipper(log, url, hub="h")
        import threading

        def follow() -> None:
            try:
                shipper.run_sync(follow=True)
            except BaseException as exc:
                errors.append(exc)
        thread = threading.Thread(target=follow)
        thread.start()
        try:
            log.submit("r2-first")
            wait_for(lambda: shipped_through(url, "TASKLOG", "h") == log.last_seq, 60, "r2's first event")
            _restore(url, r1)  # holds r2's event: it continues the stream exactly, and takes the hub over
            _append(r1, "r1-next")
            run_cli("ship", "--log", str(r1), "--to", url, "--hub", "h", check=True)
            log.submit("r2-next")  # numbered as r1-next is
            thread.join(60)
            assert not thread.is_alive(), "the overtaken shipper went on"
        finally:
            shipper.stop()
            thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], StreamError), errors
    assert "does not continue" in str(errors[0]) and "fork" in str(errors[0])
    r3 = tmp_path / "r3"
    _restore(url, r3)
    assert _raw(r3) == _raw(r1)


# -- item 6: a pruned log ----------------------------------------------------------------------


def _pruned_log(path: Path) -> int:
    from projections import snapshot
    _hub_log(path, 300, 6)
    with TaskLog.open(str(path)) as log:
        info = snapshot.take(log, log.last_seq // 2)
        retention.prune(log, info.seq + 1)
        return log.start_seq


def test_a_pruned_log_is_refused_by_a_stream_that_lacks_its_start(tmp_path: Path, one_server: NatsCluster) -> None:
    path = tmp_path / "hub"
    start = _pruned_log(path)
    assert start > 1
    out = run_cli("ship", "--log", str(path), "--to", one_server.url, "--hub", "h")
    _one_line_error(out, f"lacks events 1..{start - 1}", "pruned before they were shipped")
    assert shipped_through(one_server.url, "TASKLOG", "h") == 0


def test_a_stream_fed_projection_refuses_a_hub_that_does_not_start_at_event_1(tmp_path: Path,
                                                                             one_server: NatsCluster) -> None:
    import nats
    path = tmp_path / "hub"
    start = _pruned_log(path)
    with TaskLog.open(str(path), readonly=True) as log:  # what an older shipper sent of a pruned log
        events = [raw for _, raw in log.read_raw()]
        batch = Batch(log.identity or "", "old", start, len(events), 1, events[0][0], 0.0,
                      log.commits(start), events)

    async def publish() -> None:
        nc = await nats.connect(servers=one_server.url.split(","))
        js = nc.jetstream()
        await js.add_stream(name="TASKLOG", subjects=["tasklog.TASKLOG.*"])
        await js.publish(hub_subject("TASKLOG", "old"), batch.payload(), headers=batch.headers())
        await nc.close()
    asyncio.run(publish())
    spec = tmp_path / "fed.db"
    out = run_cli("replay", "--source", one_server.url, "--projection", f"sqlite:///{spec}")
    _one_line_error(out, f"hub old of stream TASKLOG starts at event {start}", "--hub")
    assert not spec.exists()


# -- item 7: signals while no server answers -----------------------------------------------------


@contextmanager
def _silent_server() -> Iterator[socket.socket]:
    """A port that accepts connections and never answers (a NATS server that does not respond)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    s.settimeout(60)  # a hang detector, not a timing assertion
    try:
        yield s
    finally:
        s.close()


def _when_connecting(server: socket.socket, proc: subprocess.Popen[str]) -> socket.socket:
    """Wait until ``proc`` connects to ``server`` (it is then waiting on the server); return the connection."""
    conn, _ = server.accept()
    assert proc.poll() is None
    return conn


COMMANDS = {"ship --follow": ["ship", "--follow"], "ship": ["ship", "--wait", "120"], "follow": ["follow"]}


@pytest.mark.parametrize(("command", "signals"), [
    ("ship --follow", [signal.SIGINT]), ("ship --follow", [signal.SIGTERM]), ("ship", [signal.SIGINT]),
    ("follow", [signal.SIGINT]), ("follow", [signal.SIGTERM]),
])
def test_a_signal_stops_a_command_waiting_for_a_server(tmp_path: Path, command: str,
                                                       signals: list[signal.Signals]) -> None:
    log = tmp_path / "hub"
    _hub_log(log, 5, 1)
    spec = tmp_path / "fed.db"
    with _silent_server() as server:
        url = f"nats://127.0.0.1:{server.getsockname()[1]}"
        where = ["--projection", f"sqlite:///{spec}", "--source", url] if command == "follow" else \
            ["--log", str(log), "--to", url, "--hub", "h"]
        proc = _tasklog(*COMMANDS[command], *where)
        conn = _when_connecting(server, proc)
        for sig in signals:
            proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=15)  # a hang detector: it stops within a second or two
        finally:
            if proc.poll() is None:
                proc.kill()
            conn.close()
    assert proc.returncode != 0 and err.count("\n") == 1 and "interrupted" in err, (out, err)
    assert not spec.exists()


def test_a_follow_killed_while_no_server_answers_leaves_no_file(tmp_path: Path) -> None:
    spec = tmp_path / "fed.db"
    with _silent_server() as server:
        url = f"nats://127.0.0.1:{server.getsockname()[1]}"
        proc = _tasklog("follow", "--projection", f"sqlite:///{spec}", "--source", url)
        conn = _when_connecting(server, proc)
        proc.kill()
        proc.wait(15)
        conn.close()
    assert not spec.exists()


def test_the_shipper_child_of_a_writer_gone_while_no_server_answers_stops_saying_so(tmp_path: Path) -> None:
    # A Hub killed while the cluster was down left its shipper child connecting for ever.
    log = tmp_path / "hub"
    _hub_log(log, 5, 1)
    with _silent_server() as server:
        url = f"nats://127.0.0.1:{server.getsockname()[1]}"
        proc = subprocess.Popen([sys.executable, "-m", "tasklog.stream.shipper", "--log", str(log), "--to", url,
                                 "--grace", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=child_env())
        conn = _when_connecting(server, proc)
        try:
            out, err = proc.communicate("", timeout=30)  # standard input ends: the writer is gone
        finally:
            if proc.poll() is None:
                proc.kill()
            conn.close()
    assert proc.returncode == 1 and out == "" and err.count("\n") == 1, (out, err)
    assert "the writer ended and the events after 0 were not shipped within 1 s" in err


# -- item 8: two follows -------------------------------------------------------------------------


def _records(spec: str) -> int:
    if not os.path.exists(spec[len("sqlite:///"):]):
        return -1
    try:
        with projections.open(spec) as p:
            return len(p.find_records({}, keys=["msg_id"]))
    except Exception:  # not made yet, or being written
        return -1


def test_two_follows_of_two_projections_each_fold_the_whole_stream(tmp_path: Path, one_server: NatsCluster) -> None:
    path = tmp_path / "hub"
    _hub_log(path, 300, 8)
    run_cli("ship", "--log", str(path), "--to", one_server.url, "--hub", "h", "--batch", "8", check=True)
    with TaskLog.open(str(path), readonly=True) as log, projections.open("dict", log=log) as own:
        want = own.count({})
    specs = [f"sqlite:///{tmp_path / f'{n}.db'}" for n in ("one", "two")]
    follows = [_tasklog("follow", "--source", one_server.url, "--projection", s) for s in specs]
    try:
        wait_for(lambda: all(_records(s) == want for s in specs), 60, "both follows to fold every task")
        again = run_cli("follow", "--source", one_server.url, "--projection", specs[0])
        _one_line_error(again, "another follow", "one.db")
    finally:
        for proc in follows:
            proc.send_signal(signal.SIGTERM)
    for proc in follows:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "waiting for an earlier" not in err, err


# -- item 12: restore on a full disk ---------------------------------------------------------------


def test_restore_onto_a_full_disk_fails_in_one_line_and_leaves_nothing(tmp_path: Path, tiny_fs: Path,
                                                                       one_server: NatsCluster) -> None:
    path = tmp_path / "hub"
    with TaskLog.open(str(path)) as log:
        for i in range(60):
            log.submit(f"t{i}", buffers=[os.urandom(60_000)])  # 3.6 MB: more than the disk holds
    run_cli("ship", "--log", str(path), "--to", one_server.url, "--hub", "h", check=True)
    out = run_cli("restore", "--from", one_server.url, "--hub", "h", "--log", str(tiny_fs / "restored"))
    _one_line_error(out, "no space left")
    assert "never retrieved" not in out.stderr
    assert os.listdir(tiny_fs) == []


# -- item 14: the command line -----------------------------------------------------------------------


def test_stream_commands_check_their_arguments_in_one_line(tmp_path: Path, one_server: NatsCluster) -> None:
    log = tmp_path / "hub"
    _hub_log(log, 5, 1)
    for bad in ("-1", "0", "nan", "inf", "soon"):
        out = run_cli("ship", "--log", str(log), "--to", one_server.url, f"--wait={bad}")
        _one_line_error(out, "--wait", "a number of seconds > 0")
    usage = run_cli("follow", "--help").stdout
    assert "--source nats://" in usage.split("\n\n")[0] and "[--source" not in usage.split("\n\n")[0]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        nowhere = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        out = run_cli("restore", "--from", nowhere, "--hub", "h", "--log", str(tmp_path / "r"), "--wait", "0.5")
    finally:
        silent.close()
    assert "check the servers" in _one_line_error(out, "no NATS server answered", "within 0.5 s")
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.restoring").exists()
    run_cli("ship", "--log", str(log), "--to", one_server.url, "--hub", "h", check=True)
    spec = tmp_path / "fed.db"
    out = run_cli("replay", "--source", one_server.url, "--hub", "nope", "--projection", f"sqlite:///{spec}")
    _one_line_error(out, "holds nothing of hub nope")
    assert not spec.exists()
    other = tmp_path / "other"
    _hub_log(other, 5, 2)
    out = run_cli("ship", "--log", str(other), "--to", one_server.url, "--hub", "h")
    assert "check the servers" not in _one_line_error(out, "holds events of log")


# -- restore's aside directory ------------------------------------------------------------------------


def test_restore_refuses_an_aside_directory_it_did_not_make_and_keeps_it(tmp_path: Path,
                                                                        one_server: NatsCluster) -> None:
    path = tmp_path / "hub"
    _hub_log(path, 20, 5)
    run_cli("ship", "--log", str(path), "--to", one_server.url, "--hub", "h", check=True)
    target, aside = tmp_path / "K", tmp_path / "K.restoring"
    aside.mkdir()
    (aside / "notes.txt").write_text("precious\n")
    for hub in ("nope", "h"):  # a failing restore deleted it; a good one ended in a traceback on it
        out = run_cli("restore", "--from", one_server.url, "--hub", hub, "--log", str(target))
        _one_line_error(out, "K.restoring", "not a restore's leftover")
        assert (aside / "notes.txt").read_text() == "precious\n" and not target.exists()
    shutil.move(str(aside), str(tmp_path / "notes"))
    out = run_cli("restore", "--from", one_server.url, "--hub", "h", "--log", str(target), check=True)
    assert "Traceback" not in out.stderr and _raw(target) == _raw(path)
    assert not aside.exists()


# -- the command line's entry -------------------------------------------------------------------------


def test_an_interrupt_before_a_command_runs_is_one_line() -> None:
    # SIGINT while Python was still importing the commands printed a KeyboardInterrupt traceback.
    # A process started in the background of a shell without job control (make under nohup, as
    # a CI may be) inherits SIGINT ignored, and Python then keeps it ignored: the child restores
    # Python's own handler first, as an interactive start has it (the first full run hung here).
    code = ("import os, runpy, signal, sys, time\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "def interrupted_while_importing(*_):\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(30)\n"
            "sys.meta_path.insert(0, type('Hook', (), {'find_spec': staticmethod(\n"
            "    lambda name, *a: interrupted_while_importing() if name == 'tasklog.stream.feed' else None)}))\n"
            "runpy.run_module('tasklog', run_name='__main__', alter_sys=True)\n")
    out = subprocess.run([sys.executable, "-c", code, "follow"], capture_output=True, text=True, env=child_env(),
                         timeout=60)
    assert out.returncode == 130 and out.stderr == "tasklog: interrupted\n", out.stderr


# -- item 8: a follow catching up stops at the first signal ----------------------------------------


def _checkpoint(spec: str) -> int:
    """The events ``spec`` (a SQLite projection) has folded, by its hub checkpoints (0: none yet)."""
    if not os.path.exists(spec[len("sqlite:///"):]):
        return 0
    try:
        with projections.open(spec) as p:
            return sum(seq for _, seq in p.hubs.values())
    except Exception:  # not made yet, or being written
        return 0


def _started(spec: str, proc: subprocess.Popen[str]) -> bool:
    return _checkpoint(spec) > 0 or proc.poll() is not None


def test_a_follow_catching_up_stops_at_the_first_sigint(tmp_path: Path, one_server: NatsCluster) -> None:
    path = tmp_path / "hub"
    last = _hub_log(path, 6000, 9)
    # Small messages: the follow folds many batches, and the signal comes while it catches up.
    run_cli("ship", "--log", str(path), "--to", one_server.url, "--hub", "h", "--batch", "4", check=True)
    for trial in range(3):  # the first SIGINT was ignored in 2 of 3 trials
        spec = f"sqlite:///{tmp_path / f'j{trial}.db'}"
        proc = _tasklog("follow", "--source", one_server.url, "--projection", spec)
        try:
            wait_for(partial(_started, spec, proc), 60, "the follow to start folding")
            proc.send_signal(signal.SIGINT)  # once: it folded to the end and stopped only at a second one
            out, err = proc.communicate(timeout=15)  # a hang detector
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0 and err == "" and out.count("\n") == 1 and out.startswith("folded"), (out, err)
        folded = _checkpoint(spec)
        assert 0 < folded <= last and f"h at {folded}" in out  # what it says it folded is what the file holds


# -- item 8: a follow's projection deleted, or older than its consumer ---------------------------------


def _follow_to_the_end(url: str, spec: str, want: int) -> str:
    """Follow ``spec`` until it holds ``want`` tasks, stop it (SIGTERM); return what it printed."""
    proc = _tasklog("follow", "--source", url, "--projection", spec)
    try:
        wait_for(lambda: _records(spec) == want or proc.poll() is not None, 60, f"the follow to fold {want} tasks")
    finally:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == "" and _records(spec) == want, (out, err)
    return out


def test_a_follow_into_a_deleted_projection_folds_the_stream_again(tmp_path: Path, one_server: NatsCluster) -> None:
    path = tmp_path / "hub"
    last = _hub_log(path, 100, 11)
    run_cli("ship", "--log", str(path), "--to", one_server.url, "--hub", "h", "--batch", "8", check=True)
    with TaskLog.open(str(path), readonly=True) as log, projections.open("dict", log=log) as own:
        want = own.count({})
    db = tmp_path / "j.db"
    assert f"h at {last}" in _follow_to_the_end(one_server.url, f"sqlite:///{db}", want)
    db.unlink()  # its consumer, named after the file, had acked everything: the next follow folded nothing
    assert f"h at {last}" in _follow_to_the_end(one_server.url, f"sqlite:///{db}", want)


def test_a_follow_refuses_a_projection_behind_what_its_consumer_acked(tmp_path: Path,
                                                                     one_server: NatsCluster) -> None:
    path = tmp_path / "hub"
    _hub_log(path, 50, 12)
    run_cli("ship", "--log", str(path), "--to", one_server.url, "--hub", "h", check=True)
    db, old = tmp_path / "j.db", tmp_path / "old.db"
    spec = f"sqlite:///{db}"
    with TaskLog.open(str(path), readonly=True) as log, projections.open("dict", log=log) as own:
        want = own.count({})
    _follow_to_the_end(one_server.url, spec, want)
    shutil.copy(db, old)
    _append(path, *(f"later-{i}" for i in range(5)))
    run_cli("ship", "--log", str(path), "--to", one_server.url, "--hub", "h", check=True)
    _follow_to_the_end(one_server.url, spec, want + 5)
    shutil.copy(old, db)  # a backup put back: its consumer has acked what it lacks
    out = run_cli("follow", "--source", one_server.url, "--projection", spec)
    _one_line_error(out, "has acknowledged events of hub h", "--durable")
    assert _records(spec) == want  # refused, not folded past the gap nor reset
