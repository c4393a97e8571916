"""Start SecantusDB (a MongoDB wire-protocol server) on 127.0.0.1, a random port, a temp directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymongo

from . import ended
from .ports import listen_ports


def _server_command() -> list[str]:
    exe = shutil.which("secantusd-py", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "secantus"]


@contextmanager
def start_server(directory: Path, attempts: int = 3) -> Iterator[str]:
    """Run a server until the block ends; yield its URI."""
    for _ in range(attempts):
        port = listen_ports(1)[0]
        logf = open(directory / f"server-{port}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen([*_server_command(), "--host", "127.0.0.1", "--port", str(port),
                                 "--storage-path", str(directory / f"data-{port}"), "--log-level", "WARNING"],
                                stdout=logf, stderr=subprocess.STDOUT)
        uri = f"mongodb://127.0.0.1:{port}"
        if _wait_ready(uri, proc):
            try:
                yield uri
            finally:
                ended(proc, 10)
                logf.close()
            return
        proc.kill()
        logf.close()
    raise RuntimeError(f"SecantusDB did not start; see {directory}")


@contextmanager
def session_server(tmp_path_factory: Any) -> Iterator[str]:
    """TASKLOG_TEST_MONGO_URI when set (a real mongod), else SecantusDB on a random loopback port."""
    uri = os.environ.get("TASKLOG_TEST_MONGO_URI")
    if uri:
        yield uri.rstrip("/")
        return
    with start_server(tmp_path_factory.mktemp("secantus")) as started:
        yield started


def _wait_ready(uri: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            time.sleep(0.2)
    return False
