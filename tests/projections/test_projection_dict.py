"""The projection contract on the dict projection."""

from __future__ import annotations

from pathlib import Path

import pytest

import projections
from tasklog import TaskLog
from tests.support.projection_contract import ProjectionContract


class TestDictProjection(ProjectionContract):
    @classmethod
    def make(cls, log: TaskLog, tmp: Path, request: pytest.FixtureRequest) -> projections.Projection:
        """A dict projection caught up from ``log``."""
        return projections.open("dict", log=log)
