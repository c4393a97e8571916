"""A writer killed with SIGKILL mid-stream loses nothing it acknowledged."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasklog import TaskLog
from tasklog.verify import verify
from tests.support import PROCS, run_cli


def _acked(ackfile: Path) -> list[tuple[int, str]]:
    out = []
    for line in ackfile.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # the last line may be cut by the kill
            out.append((int(parts[0]), parts[1]))
    return out


@pytest.mark.parametrize("mode", ["sync", "process", "async"])
@pytest.mark.parametrize("seed", [11, 22, 33])
def test_sigkill_mid_stream_keeps_every_acknowledged_event(tmp_path: Path, mode: str, seed: int) -> None:
    log_dir, ackfile = str(tmp_path / "log"), tmp_path / "acks"
    ackfile.touch()
    proc = subprocess.Popen([sys.executable, str(PROCS / "writer.py"), log_dir, mode, "1000000",
                             str(seed), str(ackfile)])
    deadline = time.monotonic() + 60
    want = 200 + seed * 7  # kill at a different point for each seed
    while len(_acked(ackfile)) < want and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    acked = _acked(ackfile)
    assert len(acked) >= want
    with TaskLog.open(log_dir, mode) as log:  # a new writer is not stopped by the dead one's locks
        stored = {seq: ev for seq, ev in log.read()}
        assert verify(log) == []
        assert sorted(stored) == list(range(1, len(stored) + 1))
        for seq, msg_id in acked:
            assert stored[seq].msg_id == msg_id
            assert seq in {s for s, _ in log.events_of(msg_id)}  # indexed in the same commit
        nxt = int(log.start("after-crash"))
        log.flush()
        assert nxt == len(stored) + 1
    assert run_cli("verify", "--log", log_dir).returncode == 0
