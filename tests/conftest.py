"""Shared fixtures: log directories, a real MongoDB wire-protocol server, helper processes."""

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

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


# The modules that start ipyparallel clusters (a controller, its schedulers, up to nine engines with
# their nannies). Under pytest-xdist (`-n 2 --dist loadgroup`) they run one after another on one
# worker: two clusters at once on 2 cores starved engines past ipyparallel's own deadlines.
_CLUSTER_MODULES = {"test_ipyparallel_suite.py", "test_ipyparallel_cluster.py", "test_ipyparallel_label.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the tests that start ipyparallel clusters in one xdist group, first under xdist."""
    for item in items:
        if item.path.name in _CLUSTER_MODULES:
            item.add_marker(pytest.mark.xdist_group("ipyparallel"))
    if hasattr(config, "workerinput"):  # an xdist worker: every worker collects, in the same order
        # The group is the longest piece of work: started last, it ran alone at the end.
        items.sort(key=lambda item: item.path.name not in _CLUSTER_MODULES)


@pytest.fixture
def log_dir(tmp_path: Path) -> str:
    """A path where a new log may be created."""
    return str(tmp_path / "log")


def run_cli(*args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``tasklog`` command in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "tasklog", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if check and proc.returncode != 0:
        raise AssertionError(f"tasklog {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


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


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB wire-protocol server: TASKLOG_TEST_MONGO_URI, or SecantusDB on a random loopback port."""
    from mongo_server import session_server

    with session_server(tmp_path_factory) as uri:
        yield uri


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
