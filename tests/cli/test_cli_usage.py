"""The command line as a new user meets it: regex, time travel that stays, logs that are not mixed,
arguments that make no sense, commands that fail and leave nothing behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from bson.regex import Regex

import projections
from projections.errors import ProjectionError
from tasklog import TaskLog
from tasklog.demo import simulate
from tests.support import PROCS, REPO, projection_spec, run_cli


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A log of 300 simulated tasks."""
    path = str(tmp_path_factory.mktemp("demo") / "log")
    with TaskLog.open(path) as log:
        log.append_many(list(simulate(300, seed=5)))
    return path


def _count(out: subprocess.CompletedProcess[str]) -> int:
    return len(out.stdout.splitlines())


def _one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


REGEX_QUERIES: list[tuple[str, dict[str, Any]]] = [
    ('{"stdout": {"$regex": "step 0"}}', {"stdout": re.compile("step 0")}),
    ('{"stdout": {"$regex": "STEP 1 OF", "$options": "i"}}', {"stdout": re.compile("step 1 of", re.I)}),
    ('{"label": {"$not": {"$regex": "^job-1"}}}', {"label": {"$not": re.compile("^job-1")}}),
    ('{"label": {"$regularExpression": {"pattern": "^JOB-2", "options": "i"}}}', {"label": Regex("^job-2")}),
    ('{"label": {"$regex": "^job-", "$ne": "job-3"}}', {"label": {"$regex": "^job-", "$ne": "job-3"}}),
    ('{"label": {"$in": [{"$regularExpression": {"pattern": "-4$", "options": ""}}]}}',
     {"label": {"$in": [re.compile("-4$")]}}),
]


@pytest.mark.parametrize("kind", ["dict", "sqlite", "mongo"])
def test_regex_from_the_command_line_matches_the_api(demo_log: str, kind: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    spec = projection_spec(kind, tmp_path, request)
    with TaskLog.open(demo_log, readonly=True) as log, projections.open(spec, log=log) as api:
        for text, same in REGEX_QUERIES:
            want = api.count(same)
            assert want > 0, text
            out = run_cli("query", "--log", demo_log, "--projection", spec, text, "--keys", "msg_id", check=True)
            assert _count(out) == want, (text, kind)
        if kind == "mongo":
            api.drop_all()  # type: ignore[attr-defined]
    for bad, word in (('{"stdout": {"$regex": "("}}', "bad $regex"), ('{"a": {"$regex": "x", "$options": "z"}}',
                      "$options"), ('{"a": {"$regularExpression": {"pattern": "[", "options": ""}}}', "bad regex")):
        _one_line_error(run_cli("query", "--log", demo_log, "--projection", spec, bad), word)


def test_query_from_standard_input_or_a_file(demo_log: str, tmp_path: Path) -> None:
    with TaskLog.open(demo_log, readonly=True) as log:
        ids = [r["msg_id"] for r in projections.open("dict", log=log).find_records({}, keys=["msg_id"])]
    big = json.dumps({"msg_id": {"$in": ids + [f"none-{i}" for i in range(100_000)]}})  # past ARG_MAX
    (tmp_path / "q.json").write_text(big)
    out = run_cli("query", "--log", demo_log, f"@{tmp_path / 'q.json'}", "--keys", "msg_id", check=True)
    assert sorted(json.loads(line)["msg_id"] for line in out.stdout.splitlines()) == sorted(ids)
    piped = subprocess.run([sys.executable, "-m", "tasklog", "query", "--log", demo_log, "-", "--keys", "msg_id"],
                           input=big, capture_output=True, text=True, timeout=120,
                           env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert piped.returncode == 0 and sorted(piped.stdout.splitlines()) == sorted(out.stdout.splitlines())
    _one_line_error(run_cli("query", "--log", demo_log, f"@{tmp_path / 'missing.json'}"), "cannot read the query")


def test_a_time_travel_projection_stays_where_it_was_built(tmp_path: Path) -> None:
    path, db = str(tmp_path / "log"), f"sqlite:///{tmp_path / 'then.db'}"
    with TaskLog.open(path) as log:
        log.append_many(list(simulate(100, seed=1)))
        cut_seq, cut_time = log.last_seq, datetime.now(timezone.utc)
        time.sleep(0.05)
        log.append_many(list(simulate(100, seed=2)))
        then = projections.replay(log, "dict", stop=cut_seq).count({})
        now = projections.open("dict", log=log).count({})
    assert then < now
    out = run_cli("replay", "--log", path, "--projection", db, "--to", str(cut_seq), check=True)
    assert f"at event {cut_seq}:" in out.stdout and "pinned" in out.stdout
    for _ in range(2):  # a query answers from it as it is, and leaves it so
        got = run_cli("query", "--log", path, "--projection", db, "{}", "--keys", "msg_id", check=True)
        assert _count(got) == then and f"pinned at event {cut_seq}" in got.stderr
    with TaskLog.open(path) as log:
        log.start("late")
        assert projections.open(db, log=log).last_seq == cut_seq  # opening with the log keeps it pinned too
    moved = run_cli("replay", "--log", path, "--projection", db, check=True)
    assert "pinned" not in moved.stdout
    got = run_cli("query", "--log", path, "--projection", db, "{}", "--keys", "msg_id", check=True)
    assert _count(got) == now + 1 and got.stderr == ""
    # One command answers "what did the hub know then?" with no file at all.
    for flag, value in (("--to", str(cut_seq)), ("--as-of", cut_time.isoformat())):
        got = run_cli("query", "--log", path, "{}", flag, value, "--keys", "msg_id", check=True)
        assert _count(got) == then, flag
    _one_line_error(run_cli("query", "--log", path, "--projection", db, "{}", "--to", "5"), "dict projection")


@pytest.mark.parametrize("kind", ["sqlite", "mongo"])
def test_a_projection_of_another_log_is_refused(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    la, lb = str(tmp_path / "la"), str(tmp_path / "lb")
    for path, seed in ((la, 1), (lb, 2)):
        with TaskLog.open(path) as log:
            log.append_many(list(simulate(50, seed=seed)))
    spec = projection_spec(kind, tmp_path, request)
    run_cli("replay", "--log", la, "--projection", spec, check=True)
    with TaskLog.open(la, readonly=True) as a, TaskLog.open(lb, readonly=True) as b:
        assert a.identity and b.identity and a.identity != b.identity
        with pytest.raises(ProjectionError, match=f"built from log {a.identity}, not from this log .{b.identity}"):
            projections.open(spec, log=b)
        for command in (["query", "{}"], ["replay"]):
            _one_line_error(run_cli(*command, "--log", lb, "--projection", spec), a.identity, b.identity)
        run_cli("replay", "--log", lb, "--projection", spec, "--rebuild", check=True)
        with projections.open(spec, log=b) as rebuilt:
            assert rebuilt.log_identity == b.identity
            assert rebuilt.get_history() == projections.open("dict", log=b).get_history()
            if kind == "mongo":
                rebuilt.drop_all()  # type: ignore[attr-defined]


def test_a_snapshot_of_another_log_is_refused(tmp_path: Path) -> None:
    la, lb = str(tmp_path / "la"), str(tmp_path / "lb")
    for path in (la, lb):
        with TaskLog.open(path) as log:
            log.append_many(list(simulate(20, seed=3)))
    run_cli("snapshot", "--log", la, "--at", "10", check=True)
    (Path(lb) / "snapshots").mkdir()
    (Path(la) / "snapshots" / f"snapshot-{10:020d}.msgpack").rename(
        Path(lb) / "snapshots" / f"snapshot-{10:020d}.msgpack")
    _one_line_error(run_cli("replay", "--log", lb, "--projection", "dict"), "was taken of log", "not of this log")


def test_replay_says_when_it_started_from_a_snapshot(demo_log: str, tmp_path: Path) -> None:
    import shutil

    path = str(tmp_path / "log")
    shutil.copytree(demo_log, path)
    run_cli("snapshot", "--log", path, "--at", "500", check=True)
    out = run_cli("replay", "--log", path, "--projection", "dict", check=True)
    assert "after restoring snapshot 500" in out.stdout
    assert "stub_created" not in out.stdout and "noted while folding:" in out.stdout


def test_prune_accepts_a_snapshot_at_its_own_point(demo_log: str, tmp_path: Path) -> None:
    import shutil

    path = str(tmp_path / "log")
    shutil.copytree(demo_log, path)
    run_cli("snapshot", "--log", path, "--at", "700", check=True)
    out = run_cli("prune", "--log", path, "--before", "700", check=True)
    assert "pruned 699 events" in out.stdout and "starts at event 700" in out.stdout
    refused = run_cli("prune", "--log", path, "--before", "600")
    _one_line_error(refused, "snapshot at event 600 or earlier")


def test_arguments_that_make_no_sense_are_refused(demo_log: str) -> None:
    bad: list[tuple[list[str], str]] = [
        (["replay", "--projection", "dict?record_limit=-5"], "record_limit must be a whole number >= 1"),
        (["replay", "--projection", "dict?cull_fraction=5"], "cull_fraction must be in (0, 1]"),
        (["replay", "--projection", "dict?size_limit=-1"], "size_limit must be a whole number >= 0"),
        (["replay", "--projection", "dict", "--from", "-5"], "must be >= 1"),
        (["replay", "--projection", "dict", "--from", "500", "--to", "100"], "--from 500 is after"),
        (["replay", "--projection", "dict", "--to", "99999999"], "past the log's last event"),
        (["query", "{}", "--to", "99999999"], "past the log's last event"),
        (["tail", "-n", "-3"], "must be >= 0"),
        (["tail", "--from", "0"], "must be >= 1"),
        (["snapshot", "--at", "-1"], "must be >= 0"),
        (["demo", "--tasks", "0"], "must be >= 1"),
    ]
    for args, words in bad:
        _one_line_error(run_cli(*args[:1], "--log", demo_log, *args[1:]), words)


def test_failing_commands_leave_nothing_behind(tmp_path: Path, demo_log: str) -> None:
    new = tmp_path / "new"
    _one_line_error(run_cli("prune", "--log", str(new), "--before", "5"), "does not exist")
    assert not new.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(run_cli("prune", "--log", str(empty), "--before", "5"), "is an empty directory")
    assert list(empty.iterdir()) == []
    _one_line_error(run_cli("demo", "--log", str(new), "--tasks", "5", "--projection", "mongodb://127.0.0.1:1/db"),
                    "cannot reach MongoDB")
    assert not new.exists()
    db = tmp_path / "x.db"
    _one_line_error(run_cli("replay", "--log", demo_log, "--projection", f"sqlite:///{db}", "--to", "99999999"),
                    "past the log's last event")
    assert not db.exists()


def test_the_none_projection_explains_itself(tmp_path: Path, demo_log: str) -> None:
    _one_line_error(run_cli("query", "--log", demo_log, "--projection", "none", "{}"), "keeps no records")
    out = run_cli("demo", "--log", str(tmp_path / "d"), "--tasks", "50", "--projection", "none", check=True)
    assert "keeps no records" in out.stdout


def test_each_demo_run_writes_new_tasks(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    for _ in range(2):
        out = run_cli("demo", "--log", log, "--tasks", "100", "--projection", "dict", check=True)
        assert "noted while folding:" in out.stdout and "stub_created" not in out.stdout
    with TaskLog.open(log, readonly=True) as opened:
        p = projections.open("dict", log=opened)
        assert p.count({"resubmitted_from": None}) == 200 and "duplicate_submit" not in p.anomalies
        assert all(r["stdout"].count("step 0 ") <= 1 for r in p.find_records({}, keys=["stdout"]))
    seeded = [run_cli("demo", "--log", str(tmp_path / f"s{i}"), "--tasks", "10", "--seed", "7", check=True)
              for i in range(2)]
    assert all("seed 7" in s.stdout for s in seeded)


def test_stats_figures_agree_under_a_live_writer(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    writer = subprocess.Popen([sys.executable, str(PROCS / "writer.py"), log, "sync", "4000", "1",
                               str(tmp_path / "acks")])
    try:
        seen = 0
        for _ in range(40):
            out = run_cli("stats", "--log", log, "--json")
            if out.returncode != 0:  # the writer has not made the log yet
                continue
            st = json.loads(out.stdout)
            assert st["events"] == st["last_seq"] - st["first_seq"] + 1 == sum(st["by_type"].values()), st
            seen += st["events"] > 0
    finally:
        writer.wait(120)
    assert seen > 0


def test_every_command_documents_its_options() -> None:
    for command in ("demo", "stats", "tail", "verify", "query", "replay", "snapshot", "prune"):
        text = run_cli(command, "--help", check=True).stdout
        assert "--log DIR" in text and "default ./tasklog-data" in text, command
    assert "local time" in " ".join(run_cli("replay", "--help").stdout.split())
    assert "local time" in " ".join(run_cli("query", "--help").stdout.split())
