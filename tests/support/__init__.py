"""What the tests (and the benchmarks) share: the real CLI in a subprocess, projection specs, the
values a projection stores, a small tmpfs, and where the helper processes are.

Imported as a package (``from tests.support import run_cli``); the fixtures are in
``tests/conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

__all__ = ["REPO", "PROCS", "SCHEMA_2_LOG", "run_cli", "make_demo_log", "ended", "projection_spec", "stored",
           "mounted_tmpfs", "readonly_bind", "child_env"]

#: The repository's root; a child process started by a test finds tasklog and tests there.
REPO = Path(__file__).resolve().parents[2]
#: The helper processes tests start by path (a writer to kill, a Hub, a fork holder).
PROCS = Path(__file__).resolve().parent / "procs"
#: A log the tasklog of commit d5235e5 wrote (schema 2, its index keyed by msg_id): copy it before use.
SCHEMA_2_LOG = REPO / "tests" / "log" / "data" / "schema2-log"


def child_env() -> dict[str, str]:
    """The environment of a child that imports tasklog or tests from this checkout, as of now
    (a snapshot taken at import missed the cache directory the run sets later: conftest.py)."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def run_cli(*args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``tasklog`` command in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "tasklog", *args], capture_output=True, text=True,
                          timeout=timeout, env=child_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"tasklog {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


def ended(proc: subprocess.Popen[Any], wait: float) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL past ``wait`` seconds."""
    proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_demo_log(factory: pytest.TempPathFactory, name: str, tasks: int, seed: int) -> str:
    """A new log of the demo's ``tasks`` tasks (its events as a Hub under load writes them)."""
    path = str(factory.mktemp(name) / "log")
    run_cli("demo", "--log", path, "--tasks", str(tasks), "--seed", str(seed), "--projection", "none", check=True)
    return path


def projection_spec(kind: str, tmp: Path, request: pytest.FixtureRequest, mongo_fixture: str = "mongo_uri") -> str:
    """A fresh spec of projection ``kind`` (dict, sqlite, mongo, none): a new file or database each call."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.db'}"
    if kind == "mongo":
        return f"{request.getfixturevalue(mongo_fixture)}/t{uuid.uuid4().hex[:12]}"
    return kind


def stored(proj: Any, value: Any) -> Any:
    """``value`` as projection ``proj`` keeps it: exact, or datetimes cut to its resolution (MongoDB: ms)."""
    if isinstance(value, datetime):
        step = proj.datetime_resolution // timedelta(microseconds=1)
        return value.replace(microsecond=value.microsecond - value.microsecond % step)
    if isinstance(value, dict):
        return {k: stored(proj, v) for k, v in value.items()}
    if isinstance(value, list):
        return [stored(proj, v) for v in value]
    return value



@contextmanager
def mounted_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``mnt``, unmounted after (needs mount rights: root in a container, as on CI)."""
    mnt.mkdir(exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@contextmanager
def readonly_bind(src: Path, mnt: Path) -> Iterator[Path]:
    """``src`` seen read-only at ``mnt`` through a bind mount, unmounted after (needs mount rights:
    root in a container, as on CI; skipped without them)."""
    mnt.mkdir(exist_ok=True)
    bind = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({bind.stderr.strip()})")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True, capture_output=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
