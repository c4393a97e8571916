"""Shipping logs to a real NATS JetStream cluster (3 nats-server processes on loopback), folding
many hubs from the stream, and restoring a lost hub's log (issue 15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import projections
from tasklog import InterfaceError, StreamError, TaskLog
from tasklog.demo import simulate
from tasklog.stream.feed import StreamFeed
from tasklog.stream.restore import restore
from tasklog.stream.ship import Shipper
from tasklog.stream.wire import batch_of, first_gap, parse_servers
from tests.support import child_env, projection_spec, run_cli, stored
from tests.support.nats_cluster import NatsCluster, hub_spans, shipped_through, stream_leader, wait_for


def _hub_log(path: Path, tasks: int, seed: int) -> int:
    with TaskLog.open(str(path), "async") as log:
        log.append_many(list(simulate(tasks, seed=seed)))
        log.flush()
        return log.last_seq


def _own(path: Path) -> dict[str, dict[str, Any]]:
    """The records of a hub's own log, folded directly (buffers inline, as a stream-fed projection keeps them)."""
    with TaskLog.open(str(path), readonly=True) as log, projections.open("dict?buffers=inline") as p:
        p.catch_up(log.read())
        return {r["msg_id"]: r for r in p.find_records({})}


def _folded(spec: str) -> dict[str, dict[str, Any]]:
    with projections.open(spec) as p:
        return {r["msg_id"]: r for r in p.find_records({})}


def _without_hub(records: dict[str, dict[str, Any]], hub: str) -> dict[str, dict[str, Any]]:
    mine = {m: dict(r) for m, r in records.items() if r.get("hub") == hub}
    for r in mine.values():
        r.pop("hub")
    return mine


def _ship(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tasklog", "ship", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())


def _exactly_once(spans: list[tuple[int, int]], last: int) -> None:
    """Every event 1..last is in the stream, none twice."""
    assert first_gap(spans, 1) == last + 1, spans[-5:]
    assert sum(b - a + 1 for a, b in spans) == last, "an event is in the stream twice"


def _caught_up_then_stopped(shipper: subprocess.Popen[str], url: str, last: int) -> None:
    """Wait until the stream holds event ``last`` of hub h, stop the following shipper as a user
    would (SIGTERM), and check every event 1..last is in the stream once."""
    wait_for(lambda: shipped_through(url, "TASKLOG", "h") == last, 90, "the shipper to catch up")
    shipper.send_signal(signal.SIGTERM)
    out, err = shipper.communicate(timeout=30)
    assert shipper.returncode == 0 and f"the stream holds events 1..{last}" in out, err
    _exactly_once(hub_spans(url, "TASKLOG", "h"), last)


# -- the vocabulary and bad input --------------------------------------------------------


def test_addresses_names_and_messages_are_checked() -> None:
    assert parse_servers("nats://a:1,b:2") == ["nats://a:1", "nats://b:2"]
    for bad in ("http://a:1", "nats://a", "a:b", ""):
        with pytest.raises(InterfaceError, match="not a NATS server address"):
            parse_servers(bad)
    assert first_gap([(1, 5), (9, 9), (6, 8)], 1) == 10 and first_gap([(1, 5), (7, 9)], 1) == 6
    assert first_gap([(3, 4)], 1) == 1
    with pytest.raises(StreamError, match="not a tasklog batch"):
        batch_of({"Nats-Msg-Id": "x"}, b"junk")


def test_a_hubs_batches_come_back_in_order_once() -> None:
    from tasklog.codec import SCHEMA_VERSION
    from tasklog.stream.wire import Batch, HubOrder

    def batch(seq: int, last: int, ordinal: int) -> Batch:
        return Batch("log", "h", seq, last - seq + 1, ordinal, SCHEMA_VERSION, 0.0, [(seq, 1.0)],
                     [b"e%d" % s for s in range(seq, last + 1)])
    order = HubOrder()
    order.add(batch(11, 20, 2), "m2")  # a failover: the second message landed first
    assert order.take(0, begun=False) == ([], [], [])  # it waits for the hub's first message
    order.add(batch(1, 10, 1), "m1")
    events, commits, used = order.take(0, begun=False)
    assert [s for s, _ in events] == list(range(1, 21)) and events[0][1] == b"e1"
    assert commits == [(1, 1.0), (11, 1.0)] and [item for _, item in used] == ["m1", "m2"]
    order.add(batch(11, 20, 2), "again")  # a repeat: used up, nothing new
    order.add(batch(15, 25, 3), "overlap")  # a resend with other bounds: its new tail only
    order.add(batch(30, 31, 5), "after a gap")
    events, _, used = order.take(20)
    assert [s for s, _ in events] == list(range(21, 26)) and [i for _, i in used] == ["again", "overlap"]
    assert list(order.held) == [30]
    with pytest.raises(StreamError, match="has schema 99"):
        order.add(Batch("log", "h", 40, 1, 6, 99, 0.0, [], [b"x"]))


def test_a_missing_nats_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tasklog import MissingExtraError
    _hub_log(tmp_path / "log", 3, seed=1)
    monkeypatch.setitem(sys.modules, "nats", None)  # what a machine without the extra sees
    with TaskLog.open(str(tmp_path / "log"), readonly=True) as log, \
            pytest.raises(MissingExtraError, match=r"tasklog\[nats\]"):
        Shipper(log, "nats://127.0.0.1:4222").run_sync()


def test_command_line_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    _hub_log(log, 5, seed=1)
    cases = [
        (["ship", "--log", str(log), "--to", "http://x:1"], "not a NATS server address"),
        (["ship", "--log", str(log), "--to", "nats://127.0.0.1:1", "--wait", "0.5"], "no NATS server answered"),
        (["ship", "--log", str(log), "--to", "nats://127.0.0.1:1", "--hub", "a.b"], "hub name"),
        (["replay", "--source", "nats://127.0.0.1:1", "--projection", "dict", "--to", "3"], "--to selects"),
        (["follow", "--projection", "dict"], "required: --source"),
        (["restore", "--from", "nats://127.0.0.1:1", "--hub", "h", "--log", str(log)], "not empty"),
    ]
    for args, words in cases:
        out = run_cli(*args)
        assert out.returncode != 0 and words in out.stderr and out.stderr.count("\n") == 1, (args, out.stderr)


def test_hubs_fold_under_their_own_checkpoints_and_never_mix_with_a_log(tmp_path: Path) -> None:
    from projections import ProjectionError
    from tasklog import Submit
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.submit("t0")
        spec = f"sqlite:///{tmp_path / 'fed.db'}"
        with projections.open(spec) as fed:
            assert fed.apply_hub("log-a", "a", [(1, Submit("x1")), (2, Submit("x2"))], "nats stream S") == 2
            assert fed.apply_hub("log-a", "a", [(2, Submit("x2")), (3, Submit("x3"))], "nats stream S") == 1
            assert fed.apply_hub("log-b", "b", [(1, Submit("y1"))], "nats stream S") == 1
            with pytest.raises(ProjectionError, match="is hub a"):
                fed.apply_hub("log-a", "other", [(4, Submit("x4"))], "nats stream S")
            with pytest.raises(ProjectionError, match="not from nats stream T"):
                fed.apply_hub("log-c", "c", [(1, Submit("z1"))], "nats stream T")
        with projections.open(spec) as again:  # the checkpoints are stored with the records
            assert again.hubs == {"log-a": ("a", 3), "log-b": ("b", 1)}
            assert [r["msg_id"] for r in again.find_records({"hub": "b"})] == ["y1"]
            with pytest.raises(ProjectionError, match="built from nats stream S"):
                projections.replay(log, again)
        own = projections.replay(log, f"sqlite:///{tmp_path / 'own.db'}")
        with own, pytest.raises(ProjectionError, match="fold a stream into a projection of its own"):
            own.apply_hub("log-a", "a", [(1, Submit("x1"))], "nats stream S")
        with projections.open("none") as none, pytest.raises(ProjectionError, match="cannot be fed from a stream"):
            none.apply_hub("log-a", "a", [(1, Submit("x1"))], "nats stream S")


# -- shipping, folding, restoring on a 3-node cluster -------------------------------------


def test_two_hubs_ship_at_once_and_fold_into_sqlite_and_mongodb(tmp_path: Path, cluster: NatsCluster,
                                                                 request: pytest.FixtureRequest) -> None:
    for hub, seed in (("a", 1), ("b", 2)):
        _hub_log(tmp_path / hub, 800, seed)
    ships = [_ship("--log", str(tmp_path / h), "--to", cluster.url, "--hub", h, "--batch", "16") for h in "ab"]
    for proc in ships:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "the stream holds events 1.." in out
    sqlite = projection_spec("sqlite", tmp_path, request)
    out = run_cli("replay", "--source", cluster.url, "--projection", sqlite, check=True)
    assert "hubs: a at" in out.stdout and "b at" in out.stdout
    mongo = projection_spec("mongo", tmp_path, request)
    with projections.open(mongo) as p:
        stats = StreamFeed(p, cluster.url).run_sync()
        assert stats.applied == sum(TaskLog.open(str(tmp_path / h), readonly=True).last_seq for h in "ab")
        assert p.count({"hub": "a"}) == len(_own(tmp_path / "a"))  # relayed to the server as a query
    owns = {hub: _own(tmp_path / hub) for hub in "ab"}
    for spec in (sqlite, mongo):
        folded = _folded(spec)
        with projections.open(spec) as p:  # once: opening it per record made this test take a minute
            for hub, own in owns.items():
                assert _without_hub(folded, hub) == {m: stored(p, r) for m, r in own.items()}, (spec, hub)
        assert len(folded) == sum(map(len, owns.values()))
    picked = run_cli("query", "--projection", sqlite, '{"hub": "b"}', "--keys", "msg_id", check=True)
    assert len(picked.stdout.splitlines()) == len(owns["b"])
    again = run_cli("replay", "--source", cluster.url, "--projection", sqlite, check=True)
    assert again.stdout.startswith("folded 0 events")  # every hub's checkpoint skips what it holds


def test_restore_rebuilds_the_same_log(tmp_path: Path, cluster: NatsCluster) -> None:
    original = tmp_path / "hub"
    with TaskLog.open(str(original), "async") as log:
        log.append_many(list(simulate(500, seed=9)))
        log.submit("big", buffers=[os.urandom(300_000)])  # a message holds fewer events near max_payload
        log.submit("gone")
        log.drop(["gone"])
    assert run_cli("ship", "--log", str(original), "--to", cluster.url, "--hub", "h").returncode == 0
    new = tmp_path / "restored"
    out = run_cli("restore", "--from", cluster.url, "--hub", "h", "--log", str(new), check=True)
    assert "restored" in out.stdout
    assert run_cli("verify", "--log", str(new)).returncode == 0
    with TaskLog.open(str(original), readonly=True) as a, TaskLog.open(str(new), readonly=True) as b:
        assert list(a.read_raw()) == list(b.read_raw())
        assert a.commits() == b.commits() and a.identity == b.identity
        assert b.events_of("big") == a.events_of("big")  # the stream index is rebuilt too
        assert b.committed_at([1, b.last_seq]) == a.committed_at([1, a.last_seq])
    assert _own(new) == _own(original)
    # Bad input: an unknown hub leaves nothing behind; a restored log cannot take a second restore.
    missing = run_cli("restore", "--from", cluster.url, "--hub", "nobody", "--log", str(tmp_path / "x"))
    assert missing.returncode != 0 and "holds nothing of hub nobody" in missing.stderr
    assert not (tmp_path / "x").exists()
    with TaskLog.open(str(new)) as log, pytest.raises(InterfaceError, match="already holds events"):
        restore(log, cluster.url, "TASKLOG", "h")


def test_a_hub_name_holds_one_log_and_an_event_must_fit_a_message(tmp_path: Path, one_server: NatsCluster) -> None:
    _hub_log(tmp_path / "a", 20, 1)
    _hub_log(tmp_path / "b", 20, 2)
    with TaskLog.open(str(tmp_path / "a"), readonly=True) as log:
        assert Shipper(log, one_server.url, hub="same").run_sync().shipped == log.last_seq
    with TaskLog.open(str(tmp_path / "b"), readonly=True) as log, \
            pytest.raises(StreamError, match="holds events of log"):
        Shipper(log, one_server.url, hub="same").run_sync()
    with TaskLog.open(str(tmp_path / "c")) as log:
        log.submit("huge", buffers=[b"x" * (2 << 20)])
        with pytest.raises(StreamError, match="max_payload"):
            Shipper(log, one_server.url, hub="c").run_sync()
        with pytest.raises(StreamError, match="cannot create stream OTHER with 3 replicas"):
            Shipper(log, one_server.url, stream="OTHER", replicas=3).run_sync()


@pytest.mark.slow
def test_killing_the_stream_leader_while_a_hub_ships_loses_and_doubles_nothing(tmp_path: Path,
                                                                              cluster: NatsCluster) -> None:
    path = tmp_path / "hub"
    stop = threading.Event()
    with TaskLog.open(str(path), "async") as log:
        log.append_many(list(simulate(200, seed=3)))
        log.flush()
        shipper = _ship("--log", str(path), "--to", cluster.url, "--hub", "h", "--follow", "--batch", "8",
                        "--window", "16")

        def hub() -> None:  # a Hub writing all along
            seed = 100
            while not stop.is_set():
                log.append_many(list(simulate(20, seed=seed)))
                seed += 1
                time.sleep(0.01)
        writer = threading.Thread(target=hub)
        writer.start()
        try:
            wait_for(lambda: shipped_through(cluster.url, "TASKLOG", "h") > 500, what="shipping to begin")
            leader = stream_leader(cluster.url, "TASKLOG")
            cluster.kill(cluster.index_of(leader))
            time.sleep(3)  # the Hub goes on writing through the election
        finally:
            stop.set()
            writer.join()
        log.flush()
        last = log.last_seq
    up = ",".join(f"nats://127.0.0.1:{p}" for i, p in enumerate(cluster.client_ports) if cluster.procs[i])
    _caught_up_then_stopped(shipper, up, last)
    assert stream_leader(up, "TASKLOG") != leader
    spec = f"sqlite:///{tmp_path / 'fed.db'}"
    run_cli("replay", "--source", up, "--projection", spec, check=True)
    assert _without_hub(_folded(spec), "h") == _own(path)


@pytest.mark.slow
def test_losing_two_servers_of_three_stalls_shipping_until_they_return(tmp_path: Path, cluster: NatsCluster) -> None:
    path = tmp_path / "hub"
    _hub_log(path, 100, 21)
    shipper = _ship("--log", str(path), "--to", cluster.url, "--hub", "h", "--follow", "--batch", "8")
    try:
        with TaskLog.open(str(path), readonly=True) as log:
            first = log.last_seq
        wait_for(lambda: shipped_through(cluster.url, "TASKLOG", "h") == first or shipper.poll() is not None, 60,
                 "the first events")
        assert shipper.poll() is None, shipper.communicate()
        for i in (0, 1):
            cluster.kill(i)
        with TaskLog.open(str(path), "async") as log:  # the Hub goes on while the stream has no quorum
            log.append_many(list(simulate(300, seed=22)))
            log.flush()
            last = log.last_seq
        time.sleep(3)
        assert shipper.poll() is None  # still trying
        for i in (0, 1):
            cluster.start(i)
        _caught_up_then_stopped(shipper, cluster.url, last)
    finally:
        if shipper.poll() is None:
            shipper.kill()


@pytest.mark.slow
def test_a_shipper_killed_mid_window_resumes_without_duplicates_or_gaps(tmp_path: Path,
                                                                       cluster: NatsCluster) -> None:
    path = tmp_path / "hub"
    last = _hub_log(path, 20000, 5)
    first = _ship("--log", str(path), "--to", cluster.url, "--hub", "h", "--batch", "1", "--window", "4")
    wait_for(lambda: shipped_through(cluster.url, "TASKLOG", "h") > 200, what="shipping to begin")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    midway = shipped_through(cluster.url, "TASKLOG", "h")
    assert 0 < midway < last, "the shipper finished before it was killed: nothing was tested"
    again = _ship("--log", str(path), "--to", cluster.url, "--hub", "h")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert f"events 1..{last}" in out
    _exactly_once(hub_spans(cluster.url, "TASKLOG", "h"), last)
    new = tmp_path / "restored"
    run_cli("restore", "--from", cluster.url, "--hub", "h", "--log", str(new), check=True)
    with TaskLog.open(str(path), readonly=True) as a, TaskLog.open(str(new), readonly=True) as b:
        assert list(a.read_raw()) == list(b.read_raw())


@pytest.mark.slow
def test_a_shipper_started_while_the_cluster_is_down_catches_up(tmp_path: Path) -> None:
    (tmp_path / "nats").mkdir()
    down = NatsCluster(tmp_path / "nats", 3)
    path = tmp_path / "hub"
    last = _hub_log(path, 300, 7)
    shipper = _ship("--log", str(path), "--to", down.url, "--hub", "h", "--follow")
    try:
        time.sleep(1.5)
        assert shipper.poll() is None, shipper.stderr.read() if shipper.stderr else ""
        down.start()
        _caught_up_then_stopped(shipper, down.url, last)
    finally:
        if shipper.poll() is None:
            shipper.kill()
        down.stop()


@pytest.mark.slow
def test_follow_keeps_a_projection_current_and_resumes_after_a_restart(tmp_path: Path, cluster: NatsCluster) -> None:
    path = tmp_path / "hub"
    _hub_log(path, 200, 11)
    spec = f"sqlite:///{tmp_path / 'followed.db'}"
    env = child_env()
    command = [sys.executable, "-m", "tasklog", "follow", "--source", cluster.url, "--projection", spec]
    for round_ in range(2):
        if round_:
            with TaskLog.open(str(path), "async") as log:  # the Hub went on while the feed was down
                log.append_many(list(simulate(100, seed=12)))
        assert run_cli("ship", "--log", str(path), "--to", cluster.url, "--hub", "h").returncode == 0
        own = _own(path)
        want = len(own)
        feed = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_for(lambda want=want: len(_folded(spec)) == want, 60, "the feed to fold every task")
        finally:
            feed.send_signal(signal.SIGTERM)
            out, err = feed.communicate(timeout=30)
        assert feed.returncode == 0 and "hubs: h at" in out, err
        assert _without_hub(_folded(spec), "h") == own


def test_tasklogdb_ships_while_the_hub_runs(tmp_path: Path, one_server: NatsCluster) -> None:
    from tasklog.ipyparallel import TaskLogDB
    db = TaskLogDB(location=str(tmp_path), ship_to=one_server.url, ship_hub="hub1")
    now = time.time()
    from datetime import datetime, timezone
    for i in range(50):
        m = f"task-{i}"
        db.add_record(m, {"msg_id": m, "header": {"msg_id": m}, "content": {}, "buffers": [b"b"],
                          "submitted": datetime.fromtimestamp(now, timezone.utc), "queue": "task"})
        db.update_record(m, {"engine_uuid": "e"})
    db.close()
    with TaskLog.open(str(tmp_path / "tasklog"), readonly=True) as log:
        assert shipped_through(one_server.url, "TASKLOG", "hub1") == log.last_seq == 100
    assert db.shipping is not None and db.shipping.returncode == 0 and db.shipping.errors == []
