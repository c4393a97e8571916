"""What the CLI and the reading API say (issue 20, items 12, 13 and 14): one line for a bad argument,
never a traceback; no control character from a log reaches the terminal; no option ignored in
silence; dates as Extended JSON; words that read right."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import projections
from tasklog import InterfaceError, MissingEventError, Submit, TaskLog
from tasklog.demo import simulate
from tasklog.views.jsonfmt import loads, printable
from tests.support import run_cli


def _one_line(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


@pytest.fixture
def small_log(tmp_path: Path) -> str:
    """A log of 20 simulated tasks."""
    path = str(tmp_path / "log")
    with TaskLog.open(path) as log:
        log.append_many(list(simulate(20, seed=3)))
    return path


# -- item 12: a bad argument is one line ------------------------------------------------


@pytest.mark.parametrize("msg_id", ["", "x" * 600])
def test_story_of_an_id_no_event_can_have_is_one_line(small_log: str, msg_id: str) -> None:
    _one_line(run_cli("story", "--log", small_log, msg_id), "msg_id")


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_events_of_and_event_refuse_what_names_no_event(tmp_path: Path, durability: str) -> None:
    with TaskLog.open(str(tmp_path / "log"), durability) as log:
        log.submit("a")
        for bad in ("", 5, None, b"a", "x" * 600):
            with pytest.raises(InterfaceError, match="msg_id"):
                log.events_of(bad)  # type: ignore[arg-type]
        for seq in (-1, 0, "1", 1.0, True, None):
            with pytest.raises(InterfaceError, match="seq"):
                log.event(seq)  # type: ignore[arg-type]
        with pytest.raises(MissingEventError, match="not committed"):
            log.event(2**70)  # past any log: said as such, not a struct.error
        assert [s for s, _ in log.events_of("a")] == [1] and log.event(1).msg_id == "a"  # type: ignore[union-attr]


# -- item 13: no control character from the log reaches the terminal --------------------

HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x9b31m\nfake line"


def test_story_escapes_control_characters_as_tail_does(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    with TaskLog.open(path) as log:
        log.submit("t" + HOSTILE, label=HOSTILE, queue="task", client_uuid=HOSTILE)
        log.start("t" + HOSTILE, HOSTILE)
        log.complete("t" + HOSTILE, engine_uuid=HOSTILE,
                     result_content={"status": "error" + HOSTILE, "ename": HOSTILE})
        log.complete("t" + HOSTILE, engine_uuid="e", result_content={"status": "error", "ename": HOSTILE})
        log.resubmit("t" + HOSTILE, "u" + HOSTILE)
        log.annotate("u" + HOSTILE, {"note" + HOSTILE: 1})
        log.drop(["u" + HOSTILE])
    told = run_cli("story", "--log", path, "t" + HOSTILE, check=True).stdout
    tail = run_cli("tail", "--log", path, check=True).stdout
    for out in (told, tail):
        assert not any((c < " " and c != "\n") or "\x7f" <= c <= "\x9f" for c in out), repr(out)
        assert "fake line" not in out.replace("\\nfake line", "")  # no line forged by a newline
    assert printable(HOSTILE) in told and printable(HOSTILE, quoted=True) in tail
    assert len(told.splitlines()) == 1 + 7  # the head and one line per event


def test_printable_leaves_ordinary_text_alone() -> None:
    assert printable("job-1 ünïcode ✓") == "job-1 ünïcode ✓"
    assert printable("a\x1bb") == "a\\x1bb" and printable("a\x1bb", quoted=True) == "'a\\x1bb'"
    assert printable(["\x07"]) == "['\\x07']" and printable(3) == "3"


# -- item 14: no option ignored, dates as Extended JSON, words that read right -----------


def test_query_of_a_stream_fed_file_refuses_a_log(small_log: str, tmp_path: Path) -> None:
    spec = f"sqlite:///{tmp_path / 'fed.db'}"
    with projections.open(spec) as fed:
        fed.apply_hub("log-a", "a", [(1, Submit("x1")), (2, Submit("x2"))], "nats stream S")
    _one_line(run_cli("query", "--log", small_log, "--projection", spec, "{}"), "--log", "nats stream S")
    answered = run_cli("query", "--projection", spec, "{}", "--keys", "msg_id", check=True).stdout
    assert sorted(loads(line)["msg_id"] for line in answered.splitlines()) == ["x1", "x2"]


def test_a_bad_dict_option_and_a_foreign_projection_say_what_to_do(small_log: str, tmp_path: Path) -> None:
    proc = run_cli("query", "--log", small_log, "--projection", "dict?record_limit=many", "{}")
    _one_line(proc, "record_limit needs a whole number")
    other = str(tmp_path / "other")
    with TaskLog.open(other) as log:
        log.submit("o")
    spec = f"sqlite:///{tmp_path / 'p.db'}"
    run_cli("replay", "--log", other, "--projection", spec, check=True)
    _one_line(run_cli("replay", "--log", small_log, "--projection", spec), "replay with --rebuild")


def test_stats_json_dates_are_extended_json(small_log: str) -> None:
    out = run_cli("stats", "--log", small_log, "--json", check=True).stdout
    raw: dict[str, Any] = json.loads(out)
    assert set(raw["first_commit"]) == {"$date"} and set(raw["last_commit"]) == {"$date"}
    doc = loads(out)
    assert doc["first_commit"].tzinfo is not None and doc["first_commit"] <= doc["last_commit"]
    assert doc["last_seq"] == raw["last_seq"] > 0


def test_verify_of_an_empty_log_says_it_holds_no_events(tmp_path: Path) -> None:
    path = str(tmp_path / "empty")
    TaskLog.open(path).close()
    out = run_cli("verify", "--log", path, check=True).stdout
    assert "sound" in out and "no events" in out and "1..0" not in out


# -- F6: words that fit the failure ------------------------------------------------------------


def test_an_event_past_the_end_says_so_without_the_pruning_hint(tmp_path: Path) -> None:
    with TaskLog.open(str(tmp_path / "log")) as log:
        log.submit("a")
        log.submit("b")
        with pytest.raises(MissingEventError) as caught:
            log.event(10**20)
    message = str(caught.value)
    assert "past the end" in message and "last is 2" in message and "snapshot" not in message, message


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_output_to_a_full_device_does_not_speak_of_the_log(small_log: str) -> None:
    proc = run_cli("timeline", "--log", small_log, "-o", "/dev/full")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "/dev/full" in lines[0] and "no space left" in lines[0], lines[0]
    assert "the log keeps working" not in lines[0], lines[0]
