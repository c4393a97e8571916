"""``tasklog export``: what it writes, read back, is what ``tasklog query`` prints for the same query."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tasklog import InterfaceError, TaskLog
from tasklog.views import export
from tasklog.views.jsonfmt import dumps, loads
from tests.support import child_env, make_demo_log, run_cli

TIMES = ("submitted", "started", "completed", "received")
QUERY = '{"label": {"$glob": "job-1*"}}'


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A demo log of a little more than one batch of tasks (so two Parquet row groups)."""
    return make_demo_log(tmp_path_factory, "export", 2100, 5)


def _query(log: str, query: str, *more: str) -> list[dict[str, Any]]:
    """What ``tasklog query`` prints, decoded, by msg_id."""
    lines = run_cli("query", "--log", log, query, *more, check=True).stdout.splitlines()
    return sorted((loads(line) for line in lines), key=lambda rec: rec["msg_id"])


def _export(log: str, query: str, out: Path, *more: str) -> subprocess.CompletedProcess[str]:
    done = run_cli("export", "--log", log, query, "-o", str(out), *more, check=True)
    assert done.stdout == ""
    return done


def _one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(word in done.stderr for word in words), done.stderr


def _sizes(buffers: list[bytes] | None) -> tuple[int | None, int | None]:
    return (None, None) if buffers is None else (len(buffers), sum(map(len, buffers)))


def _ms(value: datetime | None) -> datetime | None:
    """A time as Extended JSON (so ``tasklog query``) writes it: to the millisecond; Parquet and CSV
    keep the microseconds."""
    return None if value is None else value.replace(microsecond=value.microsecond // 1000 * 1000)


def _same_as_query(row: dict[str, Any], rec: dict[str, Any]) -> None:
    """A row of a Parquet (or CSV) export holds what the query's record does, typed."""
    for key, value in rec.items():
        if key in TIMES:
            assert _ms(row[key]) == value and (value is None or row[key].utcoffset() == timedelta(0)), key
        elif key in ("buffers", "result_buffers"):
            assert (row[f"{key}_count"], row[f"{key}_bytes"]) == _sizes(value), key
        elif isinstance(value, (str, type(None))):
            assert row[key] == value, key
        else:
            assert loads(row[key]) == value, key
    assert row["_irregular"] is None


def test_parquet_reads_back_as_the_query_typed(demo_log: str, tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    done = _export(demo_log, "{}", out)
    expected = _query(demo_log, "{}")
    assert f"exported {len(expected):,} records to {out} (parquet)" in done.stderr
    table = pq.read_table(out)
    assert table.schema.field("submitted").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("buffers_count").type == pa.int64() and "buffers" not in table.schema.names
    assert table.schema.names[:6] == ["msg_id", "header", "metadata", "content", "buffers_count", "buffers_bytes"]
    assert table.schema.names[-1] == "_irregular"
    rows = table.to_pylist()
    assert [r["msg_id"] for r in rows] == [r["msg_id"] for r in expected]  # by msg_id, as iter_records reads
    for row, rec in zip(rows, expected):
        _same_as_query(row, rec)
    assert pq.ParquetFile(out).metadata.num_row_groups == -(-len(rows) // export.BATCH) == 2
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_jsonl_lines_are_the_query_lines(demo_log: str, tmp_path: Path) -> None:
    out = tmp_path / "some.jsonl"
    _export(demo_log, QUERY, out)  # the format from the extension
    printed = run_cli("query", "--log", demo_log, QUERY, check=True).stdout.splitlines()
    written = out.read_text().splitlines()
    assert len(written) > 100 and sorted(written) == sorted(printed)
    piped = run_cli("export", "--log", demo_log, QUERY, "--format", "jsonl", check=True)
    assert piped.stdout.splitlines() == written and "exported" not in piped.stderr  # -o - is the default


def test_csv_has_typed_columns_pyarrow_reads(demo_log: str, tmp_path: Path) -> None:
    out = tmp_path / "some.csv"
    _export(demo_log, QUERY, out)
    table = pcsv.read_csv(out)
    assert table.schema.field("submitted").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("completed").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("buffers_bytes").type == pa.int64()
    assert table.schema.field("result_buffers_count").type == pa.int64()
    rows = sorted(table.to_pylist(), key=lambda r: r["msg_id"])
    expected = _query(demo_log, QUERY)
    assert [r["msg_id"] for r in rows] == [r["msg_id"] for r in expected]
    for row, rec in zip(rows, expected):
        assert [_ms(row[t]) for t in TIMES] == [rec[t] for t in TIMES]
        assert (row["buffers_count"], row["buffers_bytes"]) == _sizes(rec["buffers"])
        assert loads(row["header"]) == rec["header"] and row["label"] == rec["label"]
        assert row["stdout"] == rec["stdout"]


def test_keys_pick_the_columns(demo_log: str, tmp_path: Path) -> None:
    out = tmp_path / "keys.parquet"
    _export(demo_log, QUERY, out, "--keys", "label,started, result_content")
    table = pq.read_table(out)
    assert table.schema.names == ["msg_id", "started", "result_content", "label", "_irregular"]  # RECORD_KEYS order
    expected = _query(demo_log, QUERY, "--keys", "label,started,result_content")
    assert sorted(expected[0]) == ["label", "msg_id", "result_content", "started"]
    for row, rec in zip(table.to_pylist(), expected):
        _same_as_query(row, rec)
    lines = tmp_path / "keys.jsonl"
    _export(demo_log, QUERY, lines, "--keys", "label,started,result_content")
    assert sorted(lines.read_text().splitlines()) == sorted(
        run_cli("query", "--log", demo_log, QUERY, "--keys", "label,started,result_content").stdout.splitlines())


def test_buffers_writes_the_bytes(demo_log: str, tmp_path: Path) -> None:
    out = tmp_path / "bytes.parquet"
    _export(demo_log, QUERY, out, "--buffers", "--keys", "buffers,result_buffers")
    table = pq.read_table(out)
    assert table.schema.field("buffers").type == pa.list_(pa.binary())
    expected = _query(demo_log, QUERY, "--keys", "buffers,result_buffers")
    rows = table.to_pylist()
    assert [[r["buffers"], r["result_buffers"]] for r in rows] == \
        [[r["buffers"], r["result_buffers"]] for r in expected]
    assert all(r["buffers"] for r in rows)
    text = tmp_path / "bytes.csv"
    _export(demo_log, QUERY, text, "--buffers", "--keys", "buffers")
    read = pcsv.read_csv(text, convert_options=pcsv.ConvertOptions(column_types={"buffers": pa.string()}))
    assert [[base64.b64decode(b) for b in cell.split()] for cell in read.column("buffers").to_pylist()] == \
        [r["buffers"] for r in expected]


def test_an_empty_result_is_a_file_with_the_columns(demo_log: str, tmp_path: Path) -> None:
    nothing = '{"label": "no such label"}'
    for name in ("none.parquet", "none.csv", "none.jsonl"):
        done = _export(demo_log, nothing, tmp_path / name)
        assert "exported 0 records" in done.stderr
    table = pq.read_table(tmp_path / "none.parquet")
    assert table.num_rows == 0 and table.schema.names == export.columns()
    assert (tmp_path / "none.csv").read_text().splitlines() == [",".join(f'"{c}"' for c in export.columns())]
    assert (tmp_path / "none.jsonl").read_bytes() == b""


def test_a_bad_query_is_one_line_and_leaves_no_file(demo_log: str, tmp_path: Path) -> None:
    out = tmp_path / "bad.parquet"
    for query in ('{"label": {"$bogus": 1}}', "[1]", "{not json"):
        _one_line_error(run_cli("export", "--log", demo_log, query, "-o", str(out)))
    _one_line_error(run_cli("export", "--log", demo_log, "{}", "-o", str(out), "--keys", "a.b"), "a.b")
    assert os.listdir(tmp_path) == []


def test_output_inside_the_log_and_bad_formats_are_refused(demo_log: str, tmp_path: Path) -> None:
    before = sorted(os.listdir(demo_log))
    _one_line_error(run_cli("export", "--log", demo_log, "{}", "-o", f"{demo_log}/out.parquet"),
                    "inside the log directory")
    assert sorted(os.listdir(demo_log)) == before
    _one_line_error(run_cli("export", "--log", demo_log, "{}", "--format", "xml", "-o", str(tmp_path / "x")),
                    "--format", "xml")
    _one_line_error(run_cli("export", "--log", demo_log, "{}", "-o", str(tmp_path / "x.txt")), "--format")
    _one_line_error(run_cli("export", "--log", demo_log, "{}"), "--format")
    assert os.listdir(tmp_path) == []
    with pytest.raises(InterfaceError, match="unknown format 'xml'"):
        export.write_records([], "xml", io.BytesIO())


def test_irregular_values_are_null_in_their_column_and_kept_in_irregular(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    t0 = datetime(2026, 11, 27, 9, 0, 0, 123456, tzinfo=timezone.utc)  # Parquet keeps the microseconds
    with TaskLog.open(path) as log:
        for i in range(3):
            log.submit(f"t{i}", submitted=t0, label=f"job-{i}", buffers=[b"abc"])
            log.complete(f"t{i}", completed=t0 + timedelta(seconds=1), result_content={"status": "ok"})
        log.annotate("t0", {"label": 7, "completed": "yesterday", "engine_uuid": ["a", "b"]})
        log.annotate("t1", {"buffers": "not bytes", "result_content": 3, "note": {"by": "me", "at": t0}})
        log.annotate("t2", {"buffers_count": 99})  # a column's own name
    out = tmp_path / "odd.parquet"
    _export(path, "{}", out)
    rows = {r["msg_id"]: r for r in pq.read_table(out).to_pylist()}
    assert rows["t0"]["label"] is None and rows["t0"]["completed"] is None and rows["t0"]["engine_uuid"] is None
    assert loads(rows["t0"]["_irregular"]) == {"label": 7, "completed": "yesterday", "engine_uuid": ["a", "b"]}
    assert rows["t1"]["buffers_count"] is None and loads(rows["t1"]["_irregular"]) == {"buffers": "not bytes"}
    assert loads(rows["t1"]["result_content"]) == 3  # a JSON column takes any value
    assert loads(rows["t1"]["note"]) == {"by": "me", "at": _ms(t0)} and rows["t0"]["note"] is None
    assert rows["t2"]["buffers_count"] == 1 and loads(rows["t2"]["_irregular"]) == {"buffers_count": 99}
    assert rows["t2"]["label"] == "job-2" and rows["t2"]["completed"] == t0 + timedelta(seconds=1)
    lines = tmp_path / "odd.jsonl"
    _export(path, "{}", lines)
    assert sorted(lines.read_text().splitlines()) == sorted(run_cli("query", "--log", path, "{}").stdout.splitlines())


def _records(n: int, seen: list[int]) -> Iterator[dict[str, Any]]:
    """``n`` records; ``seen[0]`` says how many have been read so far."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(n):
        seen[0] = i + 1
        yield {"msg_id": f"m{i:06d}", "submitted": t0 + timedelta(seconds=i), "buffers": [b"x" * (i % 5)],
               "label": f"job-{i % 7}", "header": {"i": i}}


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_the_writer_reads_records_a_batch_at_a_time(fmt: str) -> None:
    seen = [0]
    read_when_written: list[int] = []
    out = io.BytesIO()
    n = export.write_records(_records(5000, seen), fmt, out, progress=lambda k: read_when_written.append(seen[0]))
    assert n == 5000
    assert read_when_written == [2000, 4000, 5000]  # each batch written before the next was read
    if fmt == "parquet":
        parquet = pq.ParquetFile(io.BytesIO(out.getvalue()))
        assert parquet.metadata.num_row_groups == 3
        assert parquet.read().column("buffers_bytes").to_pylist() == [i % 5 for i in range(5000)]


def test_parquet_through_a_pipe(demo_log: str) -> None:
    read, write = os.pipe()
    got = bytearray()

    def drain() -> None:
        with open(read, "rb") as f:
            while chunk := f.read(65536):
                got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with open(write, "wb") as pipe:
        assert not pipe.seekable()
        seen = [0]
        export.write_records(_records(4100, seen), "parquet", pipe)
    reader.join()
    table = pq.read_table(io.BytesIO(bytes(got)))
    assert table.num_rows == 4100 and table.column("msg_id")[4099].as_py() == "m004099"
    # The command's standard output a pipe: Parquet there, the summary line not written.
    done = subprocess.run([sys.executable, "-m", "tasklog", "export", "--log", demo_log, QUERY, "--format", "parquet"],
                          capture_output=True, env=child_env(), timeout=120, check=True)
    assert done.stderr == b""
    assert sorted(pq.read_table(io.BytesIO(done.stdout)).column("msg_id").to_pylist()) == \
        [r["msg_id"] for r in _query(demo_log, QUERY)]


def test_jsonl_needs_no_pyarrow_and_the_others_say_what_to_install(demo_log: str, tmp_path: Path) -> None:
    """Without pyarrow (an import that fails, as in an install without the extra)."""
    no_arrow = "import sys; sys.modules['pyarrow'] = None; from tasklog.cli import main; sys.exit(main(sys.argv[1:]))"
    base = [sys.executable, "-c", no_arrow, "export", "--log", demo_log, QUERY, "-o"]
    done = subprocess.run([*base, str(tmp_path / "a.jsonl")], capture_output=True, text=True, env=child_env(),
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.jsonl").read_text().count("\n") == len(_query(demo_log, QUERY))
    for name in ("a.parquet", "a.csv"):
        failed = subprocess.run([*base, str(tmp_path / name)], capture_output=True, text=True, env=child_env(),
                                timeout=120)
        _one_line_error(failed, "needs pyarrow", "pip install 'tasklog[serve]'")
    assert os.listdir(tmp_path) == ["a.jsonl"]


def test_naive_datetimes_are_utc_and_columns_follow_record_keys() -> None:
    naive = datetime(2026, 3, 1, 12, 0)
    records = [{"label": "x", "msg_id": "a", "started": naive, "extra": [1]}]
    assert export.columns(first=records)[-3:] == ["resubmitted_from", "extra", "_irregular"]
    out = io.BytesIO()
    export.write_records(records, "parquet", out)
    row = pq.read_table(io.BytesIO(out.getvalue())).to_pylist()[0]
    assert row["started"] == naive.replace(tzinfo=timezone.utc) and row["extra"] == "[1]"
    lines = io.BytesIO()
    export.write_records(records, "jsonl", lines)
    assert lines.getvalue().decode() == dumps(records[0]) + "\n"
    assert json.loads(lines.getvalue())["started"] == {"$date": "2026-03-01T12:00:00Z"}
