"""Where ``-o`` writes (issue 20, items 1 and 12): never inside a log directory, in place into a FIFO
or a device, through a symlink, to standard output for ``-``; a directory, a missing parent, a
read-only directory or a full disk is one line, and nothing is left behind."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasklog import TaskLog
from tasklog.demo import simulate
from tests.support import mounted_tmpfs, readonly_bind, run_cli


@pytest.fixture
def small_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A log of 40 simulated tasks, each test its own (outside the test's tmp_path)."""
    path = str(tmp_path_factory.mktemp("out") / "log")
    with TaskLog.open(path) as log:
        log.append_many(list(simulate(40, seed=7)))
    return path


def _files(path: Path) -> dict[str, object]:
    """Each file's bytes; LMDB's lock file (its reader table, which every reader changes) by inode."""
    return {str(p.relative_to(path)): p.stat().st_ino if p.name == "lock.mdb" else p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _one_line(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def _trace_of(text: str) -> list[dict[str, object]]:
    events = json.loads(text)["traceEvents"]
    assert events, text[:200]
    return events  # type: ignore[no-any-return]


@pytest.mark.parametrize("command, name", [("timeline", "data.mdb"), ("report", "TASKLOG"),
                                           ("timeline", "lock.mdb"), ("timeline", "new.json")])
def test_a_path_inside_a_log_directory_is_refused(small_log: str, command: str, name: str) -> None:
    log = Path(small_log)
    before = _files(log)
    proc = run_cli(command, "--log", small_log, "-o", str(log / name))
    _one_line(proc, "log directory")
    assert _files(log) == before  # not one byte changed, nothing added
    assert "sound" in run_cli("verify", "--log", small_log, check=True).stdout


def test_another_log_and_a_symlink_into_a_log_are_refused_too(small_log: str, tmp_path: Path) -> None:
    other = tmp_path / "other"
    with TaskLog.open(str(other)) as log:
        log.submit("x")
    (other / "snapshots").mkdir(exist_ok=True)
    link = tmp_path / "innocent.json"
    link.symlink_to(Path(small_log) / "data.mdb")
    before, before_other = _files(Path(small_log)), _files(other)
    for target in (other / "t.json", other / "snapshots" / "t.json", link):
        _one_line(run_cli("timeline", "--log", small_log, "-o", str(target)), "log directory")
    assert _files(Path(small_log)) == before and _files(other) == before_other
    assert link.is_symlink()


def test_a_fifo_is_written_in_place_for_its_reader(small_log: str, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    try:
        run_cli("timeline", "--log", small_log, "-o", str(fifo), check=True)
        read, _ = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:  # the FIFO was replaced: nothing will ever open its other end
            reader.kill()
            reader.wait()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert _trace_of(read)
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


def test_a_character_device_stays_one(small_log: str, tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is, made here
    done = run_cli("timeline", "--log", small_log, "-o", str(null), check=True)
    assert "trace events" in done.stdout
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert sorted(os.listdir(tmp_path)) == ["null"]
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_a_symlink_is_followed(small_log: str, tmp_path: Path) -> None:
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("old")
    target.chmod(0o640)
    link.symlink_to(target)
    run_cli("timeline", "--log", small_log, "-o", str(link), check=True)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert _trace_of(target.read_text())
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the file keeps its permissions
    dangling, absent = tmp_path / "dangling.json", tmp_path / "made.json"
    dangling.symlink_to(absent)
    run_cli("timeline", "--log", small_log, "-o", str(dangling), check=True)
    assert dangling.is_symlink() and _trace_of(absent.read_text())
    assert sorted(os.listdir(tmp_path)) == ["dangling.json", "link.json", "made.json", "target.json"]


def test_dash_is_standard_output_for_report_as_for_timeline(small_log: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the command runs here: a file named "-" would show
    page = run_cli("report", "--log", small_log, "-o", "-", check=True)
    assert page.stdout.startswith("<!doctype html>") and page.stdout.rstrip().endswith("</html>")
    trace = run_cli("timeline", "--log", small_log, "-o", "-", check=True)
    assert _trace_of(trace.stdout)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["timeline", "report"])
def test_a_directory_or_a_missing_parent_is_one_line(small_log: str, tmp_path: Path, command: str) -> None:
    _one_line(run_cli(command, "--log", small_log, "-o", str(tmp_path)), "is a directory")
    _one_line(run_cli(command, "--log", small_log, "-o", str(tmp_path / "missing" / "x.out")), "no directory")
    assert os.listdir(tmp_path) == [] and not os.path.exists(f"{tmp_path}.json")


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory seen through a read-only bind mount (needs mount rights: root, as on CI)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.json").write_text("old")
    with readonly_bind(src, tmp_path / "ro") as mnt:
        yield mnt


def test_a_read_only_directory_is_one_line(small_log: str, readonly_dir: Path) -> None:
    for name in ("t.json", "new.json"):
        _one_line(run_cli("timeline", "--log", small_log, "-o", str(readonly_dir / name)), "Read-only file system")
    assert _files(readonly_dir) == {"t.json": b"old"}


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted for the test."""
    with mounted_tmpfs(tmp_path / "tiny", "64k") as mnt:
        yield mnt


def test_a_full_disk_is_one_line_and_keeps_the_old_file(small_log: str, tiny_fs: Path) -> None:
    (tiny_fs / "t.json").write_text("old")
    fd = os.open(tiny_fs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: the disk is full
        pass
    finally:
        os.close(fd)
    proc = run_cli("timeline", "--log", small_log, "-o", str(tiny_fs / "t.json"))
    _one_line(proc, "no space left")
    assert (tiny_fs / "t.json").read_text() == "old"
    assert sorted(os.listdir(tiny_fs)) == ["filler", "t.json"]
