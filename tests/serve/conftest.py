"""The dashboard's tests share a demo log and a server on it (one of each per test module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import make_demo_log
from tests.support.served import Served, serving


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A demo log of 300 tasks."""
    return make_demo_log(tmp_path_factory, "served", 300, 11)


@pytest.fixture(scope="module")
def served(demo_log: str) -> Iterator[Served]:
    """A server on the module's demo log."""
    with serving("--log", demo_log) as s:
        yield s
