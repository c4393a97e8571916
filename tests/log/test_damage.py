"""Damaged logs: a clear error naming the problem, never a wrong answer."""

from __future__ import annotations

import os
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tasklog import CorruptEventError, SchemaVersionError, StorageError, TaskLog
from tasklog.codec import SCHEMA_VERSION, pack_key
from tests.support import run_cli


def _log(path: str, n: int = 50) -> None:
    with TaskLog.open(path) as log:
        for i in range(n):
            log.output(f"t{i}", "stdout", text=f"line {i} " * 20)


def _flip_in_file(path: str, needle: bytes) -> None:
    data = bytearray(Path(path, "data.mdb").read_bytes())
    at = data.find(needle)
    assert at > 0
    while at >= 0:  # copy-on-write leaves stale copies in free pages: damage every copy
        data[at] ^= 0x01
        at = data.find(needle, at + 1)
    Path(path, "data.mdb").write_bytes(bytes(data))


def test_flipped_bit_inside_an_event_names_its_seq(log_dir: str) -> None:
    _log(log_dir)
    _flip_in_file(log_dir, b"line 17 line 17")
    with TaskLog.open(log_dir, readonly=True) as log:
        with pytest.raises(CorruptEventError, match="event 18 is corrupt: checksum"):
            list(log.read())
        assert [s for s, _ in log.read(1, 18)] == list(range(1, 18))  # the rest stays readable
    out = run_cli("verify", "--log", log_dir)
    assert out.returncode == 1 and "event 18 is corrupt" in out.stdout


def test_truncated_data_file_is_refused(log_dir: str) -> None:
    _log(log_dir, 400)
    data = Path(log_dir, "data.mdb")
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StorageError, match="truncated"):
        TaskLog.open(log_dir, readonly=True)
    out = run_cli("verify", "--log", log_dir)
    assert out.returncode == 1 and "truncated" in out.stdout
    assert data.stat().st_size == size // 2  # left as it was


def test_event_from_a_newer_schema(log_dir: str) -> None:
    _log(log_dir, 3)
    with TaskLog.open(log_dir) as log, log.store.env.begin(write=True) as txn:
        raw = bytearray(txn.get(pack_key(2), db=log.store.events))
        raw[0] = SCHEMA_VERSION + 1
        raw[1:5] = zlib.crc32(bytes(raw[5:])).to_bytes(4, "big")
        txn.put(pack_key(2), bytes(raw), db=log.store.events)
    with TaskLog.open(log_dir, readonly=True) as log, pytest.raises(SchemaVersionError, match="event 2"):
        list(log.read())
    out = run_cli("verify", "--log", log_dir)
    assert out.returncode == 1 and "event 2 has schema version" in out.stdout


def test_stale_lock_file_does_not_stop_a_writer(log_dir: str) -> None:
    _log(log_dir, 3)
    # What a dead writer leaves: the lock files stay on disk, their locks went with the process.
    assert os.path.exists(os.path.join(log_dir, "lock.mdb"))
    assert os.path.exists(os.path.join(log_dir, "writer.lock"))
    with TaskLog.open(log_dir, "async") as log:
        assert log.start("after") == 4
    assert run_cli("verify", "--log", log_dir).returncode == 0


def _fill_until_full(path: str, mode: str, match: str, make_room: Callable[[TaskLog], None], **opts: Any) -> None:
    """Append until the storage refuses; check the refusal, what was acknowledged, and the recovery."""
    from tasklog import StorageFullError
    with TaskLog.open(path, mode, map_size=1 << 20, **opts) as log:
        acked = []
        with pytest.raises(StorageFullError, match=match):
            for i in range(20_000):
                seq = log.output(f"t{i}", "stdout", text="x" * 500)
                if mode == "async":
                    seq.wait()  # type: ignore[attr-defined]
                acked.append(int(seq))
        assert acked and acked == list(range(1, len(acked) + 1))
        assert [s for s, _ in log.read()] == acked  # everything acknowledged is readable
        make_room(log)  # space returns
        after = log.output("after", "stdout", text="ok")
        log.flush()
        assert int(after) == len(acked) + 1
    with TaskLog.open(path, readonly=True) as log:
        assert log.last_seq == len(acked) + 1
    assert run_cli("verify", "--log", path).returncode == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_out_of_space_fails_that_append_and_keeps_the_rest(log_dir: str, mode: str) -> None:
    def raise_cap(log: TaskLog) -> None:
        log.max_map_size = 8 << 20
    _fill_until_full(log_dir, mode, "max_map_size", raise_cap, max_map_size=1 << 20)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs mounted for the test (needs mount rights: root in a container, as on CI)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the max_map_size test covers the "
                    "same failure path")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_full_disk_fails_that_append_and_keeps_the_rest(small_fs: Path, mode: str) -> None:
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (1 << 20))  # taken back later: "space returns"
    # The real ENOSPC, as LMDB reports it (ENOSPC) or as a short write on a disk that is full (EIO):
    # which one depends on where the commit's pages fall when the space runs out.
    _fill_until_full(str(small_fs / "log"), mode, "(?i)no space left on device",
                     lambda log: filler.unlink())
