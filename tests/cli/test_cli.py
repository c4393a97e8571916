"""The tasklog command: every subcommand, its help, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasklog import TaskLog
from tests.support import run_cli


@pytest.mark.parametrize("command", ["demo", "stats", "tail", "verify", "query", "replay"])
def test_help(command: str) -> None:
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "--log" in proc.stdout


def test_demo_stats_tail_verify(log_dir: str) -> None:
    demo = run_cli("demo", "--log", log_dir, "--tasks", "400", check=True)
    assert "events/s" in demo.stdout and "400 tasks" in demo.stdout
    stats = json.loads(run_cli("stats", "--log", log_dir, "--json", check=True).stdout)
    by_type = stats["by_type"]
    assert by_type["submit"] == 400 and by_type["resubmit"] > 0
    assert by_type["start"] == by_type["complete"] == 400 + by_type["resubmit"]
    assert stats["first_seq"] == 1 and stats["last_seq"] == stats["events"] == sum(by_type.values())
    assert stats["disk_bytes"] > 0
    tail = run_cli("tail", "--log", log_dir, "--from", "1", "--json", check=True).stdout.splitlines()
    docs = [json.loads(line) for line in tail]
    assert [d["seq"] for d in docs] == list(range(1, stats["events"] + 1))
    submit = next(d for d in docs if d["type"] == "submit")
    assert "$date" in submit["submitted"] and "$binary" in submit["buffers"][0]
    early = {d["msg_id"] for d in docs if d["type"] == "submit"}
    first_seen: dict[str, str] = {}
    for d in docs:
        if "msg_id" in d:
            first_seen.setdefault(d["msg_id"], d["type"])
    assert any(first_seen[m] == "output" for m in early)  # some outputs beat their submit
    plain = run_cli("tail", "--log", log_dir, "-n", "3", check=True).stdout.splitlines()
    assert len(plain) == 3 and plain[-1].split()[0] == str(stats["last_seq"])
    ok = run_cli("verify", "--log", log_dir)
    assert ok.returncode == 0 and "sound" in ok.stdout


def test_verify_lists_problems(log_dir: str) -> None:
    with TaskLog.open(log_dir) as log:
        for i in range(5):
            log.start(f"t{i}")
        with log.store.env.begin(write=True) as txn:  # damage one value in place, as a bad disk would
            key = (3).to_bytes(8, "big")
            raw = bytearray(txn.get(key, db=log.store.events))
            raw[-1] ^= 0x10
            txn.put(key, bytes(raw), db=log.store.events)
            txn.delete((4).to_bytes(8, "big"), db=log.store.events)
    bad = run_cli("verify", "--log", log_dir)
    assert bad.returncode == 1
    assert "event 3 is corrupt: checksum mismatch" in bad.stdout
    assert "gap: events 4..4 are missing" in bad.stdout


def test_errors_are_one_line(tmp_path: Path) -> None:
    plain = tmp_path / "file"
    plain.write_text("x")
    for args in (["stats", "--log", str(plain)], ["tail", "--log", str(tmp_path / "nope")],
                 ["demo", "--log", str(tmp_path / "d"), "--tasks", "0"]):
        proc = run_cli(*args)
        assert proc.returncode != 0
        assert len(proc.stderr.strip().splitlines()) == 1 and "error:" in proc.stderr
        assert "Traceback" not in proc.stderr
    unknown = run_cli("frobnicate")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
