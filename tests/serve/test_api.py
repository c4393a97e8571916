"""``tasklog serve``'s JSON API, its guard and /metrics, against a real server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import projections
from tasklog import Start, Submit, TaskLog
from tasklog.fields import utcnow
from tasklog.views.jsonfmt import dumps, loads
from tests.support import run_cli
from tests.support.served import TOKEN, Served, children, serving

KEYS = "msg_id,submitted,completed,engine_uuid,label"


def _query_cli(log: str, query: dict[str, Any], keys: str = KEYS) -> list[dict[str, Any]]:
    out = run_cli("query", dumps(query), "--log", log, "--keys", keys, check=True).stdout
    return sorted((loads(line) for line in out.splitlines()), key=lambda r: r["msg_id"])


def _walk(served: Served, query: dict[str, Any], sort: str, limit: int = 40, keys: str = KEYS) -> list[dict[str, Any]]:
    """Every page of a query through the API, following the cursor."""
    got: list[dict[str, Any]] = []
    after = None
    while True:
        params = {"q": dumps(query), "sort": sort, "limit": str(limit), "keys": keys}
        page = served.api("/api/tasks", **(params | ({"after": after} if after else {})))
        assert len(page["records"]) <= limit
        got += page["records"]
        after = page["after"]
        if after is None:
            return got


def test_it_listens_on_this_machine_only_and_prints_the_token(served: Served) -> None:
    assert served.base.startswith("http://127.0.0.1:")
    assert served.printed == f"{served.base}/?token={TOKEN}"


@pytest.mark.parametrize("path", ["/", "/tasks", "/task/x", "/api/tasks", "/api/overview", "/metrics",
                                  "/static/tasklog.js", "/api/live", "/nowhere"])
def test_every_request_needs_the_token(served: Served, path: str) -> None:
    for token in (None, "wrong-token-0123456789", TOKEN[:-1]):
        answer = served.get(path, token=token)
        assert answer.status == 403 and b"token" in answer.body
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert served.get(path, {"token": "nope"}, token=None).status == 403


def test_the_token_in_the_url_becomes_a_cookie_and_leaves_the_url(served: Served) -> None:
    answer = served.get("/tasks", {"token": TOKEN, "q": "{}"}, token=None)
    assert answer.status == 303 and answer.headers["Location"] == "/tasks?q=%7B%7D"
    cookie, port = answer.headers["Set-Cookie"], served.base.rsplit(":", 1)[1]
    assert cookie.startswith(f"tasklog-token-{port}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = served.get("/tasks", token=None, headers={"Cookie": f"tasklog-token-{port}={TOKEN}"})
    assert page.status == 200 and b'data-page="tasks"' in page.body
    for name, value in [("Content-Security-Policy", "script-src 'self'"), ("X-Content-Type-Options", "nosniff"),
                        ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY")]:
        assert value in page.headers[name]
    assert served.get("/tasks", token=None, headers={"Cookie": f"tasklog-token-{port}=bad; other=1"}).status == 403
    # Another server's cookie (another port) is not this one's: two dashboards never log each other out.
    assert served.get("/tasks", token=None, headers={"Cookie": f"tasklog-token-1={TOKEN}"}).status == 403


@pytest.mark.parametrize("query", [{}, {"engine_uuid": "engine-1"}, {"completed": None},
                                   {"label": {"$glob": "job-1*"}}, {"result_content.status": "error"},
                                   {"submitted": {"$gte": {"$date": "2000-01-01T00:00:00Z"}}}])
def test_pages_of_a_query_are_what_tasklog_query_prints(served: Served, demo_log: str, query: dict[str, Any]) -> None:
    want = _query_cli(demo_log, query)
    assert want or query == {"completed": None}
    got = _walk(served, query, "msg_id", limit=37)
    assert got == want


def test_pages_follow_the_sort_and_the_cursor_both_ways(served: Served, demo_log: str) -> None:
    want = _query_cli(demo_log, {})
    for sort in ("-submitted", "submitted", "engine_uuid", "-completed"):
        got = _walk(served, {}, sort, limit=50)
        assert sorted(got, key=lambda r: r["msg_id"]) == want
        field = sort.lstrip("-")
        keys = [(r[field] is not None, r[field] or "", r["msg_id"]) for r in got]
        assert keys == sorted(keys, key=lambda k: (k[0], k[1]), reverse=sort.startswith("-")) or \
            [k[:2] for k in keys] == sorted((k[:2] for k in keys), reverse=sort.startswith("-"))
    count = served.api("/api/tasks", q="{}", limit="1", count="1")["count"]
    assert count == len(want)


@pytest.mark.parametrize(("params", "says"), [
    ({"q": "{not json"}, "Extended JSON"), ({"q": "[1]"}, "object"), ({"q": '{"a": {"$nope": 1}}'}, "nope"),
    ({"q": json.dumps({"label": "x" * 20000})}, "longer than"), ({"sort": "stdout"}, "cannot sort"),
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"after": "!!"}, "cursor"), ({"after": "WzEsMl0"}, "cursor"), ({"keys": "a.b"}, "top-level"),
    ({"limit": "\u00b2"}, "limit"),  # str.isdigit says yes, int() says no: was a 500
])
def test_a_bad_request_is_one_line_and_400(served: Served, params: dict[str, str], says: str) -> None:
    answer = served.get("/api/tasks", params)
    assert answer.status == 400, answer.body
    error = answer.json()["error"]
    assert says in error and "\n" not in error


@pytest.mark.parametrize("params", [{"start": "-100000000000000000000"}, {"stop": "1e9"}, {"width": "0"},
                                    {"width": "\u00b2"}, {"start": "x"}])
def test_a_bad_timeline_window_is_400(served: Served, params: dict[str, str]) -> None:
    answer = served.get("/api/timeline", params)
    assert answer.status == 400 and "\n" not in answer.json()["error"]


def test_a_task_with_its_story_lineage_and_buffer_sizes(served: Served, demo_log: str) -> None:
    [again] = _query_cli(demo_log, {"resubmitted_from": {"$ne": None}}, "msg_id,resubmitted_from")[:1]
    task = served.api(f"/api/task/{again['msg_id']}")
    assert task["chain"][:2] == [again["resubmitted_from"], again["msg_id"]]
    assert task["state"] in ("completed", "failed", "running", "resubmitted")
    record = task["record"]
    assert all(set(b) == {"$size"} and b["$size"] > 0 for b in record["buffers"])
    types = [e["type"] for e in task["story"]["events"]]
    assert types[0] == "submit" and "resubmit" in types
    missing = served.get("/api/task/no-such-task")
    assert missing.status == 404 and "no-such-task" in missing.json()["error"]


def test_metrics_parse_and_agree_with_tasklog_stats(served: Served, demo_log: str) -> None:
    stats = loads(run_cli("stats", "--log", demo_log, "--json", check=True).stdout)
    answer = served.get("/metrics")
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    events = {s.labels["type"]: s.value for s in families["tasklog_log_events"].samples}
    assert events == stats["by_type"]
    assert {s.labels["state"]: s.value for s in families["tasklog_tasks"].samples} == stats["by_state"]
    assert families["tasklog_log_size_bytes"].samples[0].value == stats["disk_bytes"]
    assert families["tasklog_log_last_seq"].samples[0].value == stats["last_seq"]
    ran = len(_query_cli(demo_log, {"completed": {"$ne": None}, "started": {"$ne": None}}, "msg_id"))
    counts = {s.labels.get("le"): s.value for s in families["tasklog_task_run_seconds"].samples
              if s.name.endswith("_bucket")}
    assert counts["+Inf"] == ran
    assert served.api("/api/stats")["by_type"] == stats["by_type"]


def test_overview_and_timeline_answer(served: Served, demo_log: str) -> None:
    over = served.api("/api/overview")
    stats = loads(run_cli("stats", "--log", demo_log, "--json", check=True).stdout)
    assert over["states"] == stats["by_state"]
    assert sum(over["throughput"]["submitted"]) == over["tasks"] - over["states"]["dropped"]
    whole = served.api("/api/timeline", width="300")
    assert whole["mode"] in ("slices", "columns") and whole["engines"]
    mid = (whole["start"] + whole["stop"]) // 2
    zoomed = served.api("/api/timeline", start=str(mid), stop=str(mid + 2_000_000), width="300")
    assert zoomed["mode"] == "slices" and zoomed["start"] == mid
    assert all(s[1] < mid + 2_000_000 and s[2] >= mid for s in zoomed["slices"])


def test_a_commit_reaches_an_open_feed_and_the_next_page(served: Served, demo_log: str) -> None:
    seen: list[int] = []
    req = urllib.request.Request(served.base + "/api/live", headers={"Authorization": f"Bearer {TOKEN}"})

    def listen() -> None:
        with urllib.request.urlopen(req, timeout=30) as feed:
            for raw in feed:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    seen.append(int(line[6:]))
                    if len(seen) >= 2:
                        return
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(1)
    with TaskLog.open(demo_log) as log:
        now = utcnow()
        log.append(Submit("live-task-1", {"msg_id": "live-task-1"}, {}, {}, [], "client-x", "task",
                          now - timedelta(seconds=1), "<img src=x onerror=alert(1)>"))
        log.append(Start("live-task-1", "engine-live", now))
        last = log.last_seq
    listener.join(20)
    assert seen and seen[-1] == last
    [row] = served.api("/api/tasks", q=dumps({"msg_id": "live-task-1"}))["records"]
    assert row["label"] == "<img src=x onerror=alert(1)>" and row["engine_uuid"] == "engine-live"


#: A query Python's re answers in hours on the label below (nested quantifiers backtrack).
BACKTRACKING = {"q": dumps({"label": {"$regex": "^(a+)+$"}})}


def _log_with_a_backtracking_label(tmp_path: Path) -> str:
    log = str(tmp_path / "log")
    run_cli("demo", "--log", log, "--tasks", "30", "--seed", "3", "--projection", "none", check=True)
    with TaskLog.open(log) as writer:
        writer.append(Submit("slow", {"msg_id": "slow"}, {}, {}, [], "c", "task", utcnow(), "a" * 40 + "!"))
    return log


def _asking(server: Served, path: str, params: dict[str, str]) -> tuple[threading.Thread, list[Any]]:
    """A request in a thread of its own, started; its answer in the list when it comes."""
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(server.get(path, params)), daemon=True)
    thread.start()
    return thread, answers


def test_a_query_past_the_time_allowed_is_stopped_and_nothing_waits_on_it(tmp_path: Path) -> None:
    """A regular expression that backtracks for hours, evaluated in Python: the reader is killed at
    --query-timeout, and meanwhile the server answers everything that does not read."""
    log = _log_with_a_backtracking_label(tmp_path)
    with serving("--log", log, "--query-timeout", "2") as slow:
        asking, answers = _asking(slow, "/api/tasks", BACKTRACKING)
        time.sleep(0.5)
        assert slow.get("/static/tasklog.css").status == 200 and slow.get("/", token=None).status == 403
        assert not answers  # answered while the query still ran
        asking.join(120)
        assert answers[0].status == 503 and "took longer than 2 s" in answers[0].json()["error"]
        assert slow.api("/api/hubs")["fed"] is False  # a new reader answers the next read


@pytest.mark.parametrize(("args", "says"), [
    (["--log", "/nonexistent/log"], "nonexistent"), (["--log", "LOG", "--token", "short"], "token"),
    (["--log", "LOG", "--host", "203.0.113.1"], "cannot listen"),
    (["--log", "LOG", "--projection", "dict"], "not both"),
    (["--log", "LOG", "--port", "99999"], "0 to 65535"),
])
def test_a_server_that_cannot_start_says_why_in_one_line(demo_log: str, args: list[str], says: str) -> None:
    proc = run_cli("serve", "--port", "0", *[demo_log if a == "LOG" else a for a in args], timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert says in proc.stderr and proc.stderr.count("\n") == 1


def test_a_stream_fed_projection_shows_each_hub(tmp_path: Path, demo_log: str) -> None:
    """A projection `tasklog follow` keeps (folded here through the same call): hubs, tasks, metrics."""
    spec = f"sqlite:///{tmp_path / 'fed.db'}"
    with TaskLog.open(demo_log, readonly=True) as log:
        events = list(log.read(1, 201))
    with projections.open(spec) as fed:
        fed.apply_hub("log-a", "hub-a", events[:120], "nats stream S")
        fed.apply_hub("log-b", "hub-b", events[120:], "nats stream S")
        want = sorted(r["msg_id"] for r in fed.find_records({}))
    with serving("--projection", spec) as s:
        hubs = s.api("/api/hubs")
        assert hubs["fed"] and [(h["hub"], h["log"], h["checkpoint"]) for h in hubs["hubs"]] == \
            [("hub-a", "log-a", 120), ("hub-b", "log-b", 200)]
        assert sorted(r["msg_id"] for r in _walk(s, {}, "msg_id")) == want
        families = {f.name: f for f in text_string_to_metric_families(s.get("/metrics").body.decode())}
        assert {(x.labels["hub"], x.value) for x in families["tasklog_hub_checkpoint"].samples} == \
            {("hub-a", 120), ("hub-b", 200)}
        assert s.api("/api/overview")["tasks"] == len(want)
        with projections.open(spec) as fed:
            fed.apply_hub("log-b", "hub-b", [(201, Submit("fed-late"))], "nats stream S")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not s.api("/api/tasks", q=dumps({"msg_id": "fed-late"}))["records"]:
            time.sleep(0.2)
        assert s.api("/api/tasks", q=dumps({"msg_id": "fed-late"}))["records"]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_download_of_the_query_is_what_tasklog_query_prints(served: Served, demo_log: str, fmt: str) -> None:
    import io

    import pyarrow.csv
    import pyarrow.parquet

    query = {"engine_uuid": {"$in": ["engine-1", "engine-3"]}}
    want = _query_cli(demo_log, query, "msg_id,submitted,engine_uuid,label")
    answer = served.get("/api/export", {"q": dumps(query), "format": fmt, "keys": "submitted,engine_uuid,label"})
    assert answer.status == 200 and f'filename="tasks.{fmt}"' in answer.headers["Content-Disposition"]
    if fmt == "jsonl":
        rows = [loads(line) for line in answer.body.decode().splitlines()]
    else:
        table = (pyarrow.parquet.read_table(io.BytesIO(answer.body)) if fmt == "parquet"
                 else pyarrow.csv.read_csv(io.BytesIO(answer.body)))
        rows = table.to_pylist()
    got = sorted(rows, key=lambda r: r["msg_id"])
    assert set(got[0]) <= {"msg_id", "submitted", "engine_uuid", "label", "_irregular"}  # the keys asked for
    assert [r["msg_id"] for r in got] == [r["msg_id"] for r in want]
    assert [r["engine_uuid"] for r in got] == [r["engine_uuid"] for r in want]
    if fmt == "parquet":  # tz-aware times, to the microsecond the CLI prints to the millisecond
        assert all(abs((g["submitted"] - w["submitted"]).total_seconds()) < 0.001 for g, w in zip(got, want))
        assert all(g["submitted"].tzinfo is not None for g in got)
    bad = served.get("/api/export", {"q": "{}", "format": "xlsx"})
    assert bad.status == 400 and "format" in bad.json()["error"]


def test_a_signal_stops_the_server_with_live_pages_open(demo_log: str) -> None:
    """SIGINT and SIGTERM end it at once, open feeds or not, with no traceback."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        with serving("--log", demo_log) as s:
            feeds = [urllib.request.urlopen(urllib.request.Request(s.base + "/api/live", headers={
                "Authorization": f"Bearer {TOKEN}"}), timeout=30) for _ in range(3)]
            assert all(f.readline().startswith(b"event: commit") for f in feeds)
            s.proc.send_signal(sig)
            assert s.proc.wait(20) in (0, 130, -sig)
            err = s.proc.stderr.read() if s.proc.stderr else ""
            assert "Traceback" not in err and "CancelledError" not in err, err
            for f in feeds:
                f.close()


def test_a_log_removed_while_served_is_said_and_let_go(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    run_cli("demo", "--log", log, "--tasks", "30", "--seed", "4", "--projection", "none", check=True)
    with serving("--log", log) as s:
        assert s.api("/api/tasks", q="{}")["records"]
        assert [p for p in _open_files(s.proc.pid) if p.startswith(log)]
        shutil.rmtree(log)
        answer = s.get("/api/tasks", {"q": "{}"})
        assert answer.status == 400 and "was removed while it was served" in answer.json()["error"]
        assert not [p for p in _open_files(s.proc.pid) if p.startswith(log)]  # its reader's too


def _open_files(pid: int) -> list[str]:
    """The files ``pid`` and its children hold open."""
    out = []
    for p in [pid, *children(pid)]:
        for fd in os.listdir(f"/proc/{p}/fd"):
            with contextlib.suppress(OSError):
                out.append(os.readlink(f"/proc/{p}/fd/{fd}"))
    return out


def _reader_of(pid: int) -> int:
    """The server's reader process."""
    readers = [child for child, cmd in children(pid).items() if "spawn_main" in cmd]
    assert readers, "no reader process"
    return readers[0]


def test_a_stopped_reader_holds_no_read_for_long(demo_log: str) -> None:
    with serving("--log", demo_log, "--query-timeout", "1") as s:
        assert s.api("/api/tasks", q="{}")["records"]
        reader = _reader_of(s.proc.pid)
        os.kill(reader, signal.SIGSTOP)
        try:
            stuck = s.get("/api/tasks", {"q": "{}"}, timeout=60)
            assert stuck.status == 503, stuck.body  # its time, or the refresh's, ran out: the reader was killed
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(reader, signal.SIGCONT)
        assert s.api("/api/tasks", q="{}")["records"]  # a new reader
        assert _reader_of(s.proc.pid) != reader


def test_a_signal_during_a_read_ends_it_at_once(tmp_path: Path) -> None:
    with serving("--log", _log_with_a_backtracking_label(tmp_path), "--query-timeout", "600") as s:
        asking, answers = _asking(s, "/api/tasks", BACKTRACKING)
        time.sleep(1)
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(30) in (0, 130)  # not the 600 s the read was allowed
        asking.join(10)
        err = s.proc.stderr.read() if s.proc.stderr else ""
        assert "Traceback" not in err and "CancelledError" not in err, err
        assert not answers or answers[0].status == 503


def test_a_download_whose_page_went_away_is_stopped(tmp_path: Path) -> None:
    import socket

    with serving("--log", _log_with_a_backtracking_label(tmp_path)) as s:
        host, port = s.base[len("http://"):].split(":")
        q = urllib.parse.quote(BACKTRACKING["q"])
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(f"GET /api/export?format=csv&q={q} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
            deadline = time.monotonic() + 30
            while not any(" export " in c for c in children(s.proc.pid).values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert any(" export " in c for c in children(s.proc.pid).values())
        deadline = time.monotonic() + 30
        while any(" export " in c for c in children(s.proc.pid).values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(" export " in c for c in children(s.proc.pid).values())  # stopped, not run to its end
