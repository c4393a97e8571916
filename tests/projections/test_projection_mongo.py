"""The projection contract on the MongoDB projection (a real wire-protocol server)."""

from __future__ import annotations

from pathlib import Path

import pytest

import projections
from tasklog import TaskLog
from tests.support import projection_spec
from tests.support.projection_contract import ProjectionContract


class TestMongoProjection(ProjectionContract):
    @classmethod
    def make(cls, log: TaskLog, tmp: Path, request: pytest.FixtureRequest) -> projections.Projection:
        """A new database on the session's server, caught up from ``log``."""
        return projections.open(projection_spec("mongo", tmp, request), log=log)

    @classmethod
    def dispose(cls, proj: projections.Projection) -> None:
        """Drop the database."""
        proj.drop_all()  # type: ignore[attr-defined]
        proj.close()
