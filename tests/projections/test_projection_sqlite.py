"""The projection contract on the SQLite projection, and on SQLite behind WriteBehind (as TaskLogDB uses it)."""

from __future__ import annotations

from pathlib import Path

import pytest

import projections
from projections import snapshot
from projections.backends.sqlite import SQLiteProjection
from projections.overlay import Overlay
from projections.writebehind import WriteBehind
from tasklog import TaskLog
from tests.support.projection_contract import ProjectionContract


class TestSQLiteProjection(ProjectionContract):
    @classmethod
    def make(cls, log: TaskLog, tmp: Path, request: pytest.FixtureRequest) -> projections.Projection:
        """A new SQLite file caught up from ``log``."""
        return projections.open(f"sqlite:///{tmp / 'records.db'}", log=log)


class TestWriteBehindOverSQLite(ProjectionContract):
    @classmethod
    def make(cls, log: TaskLog, tmp: Path, request: pytest.FixtureRequest) -> projections.Projection:
        """A write-behind overlay over a new SQLite file, fed event by event with a partial batch left pending."""
        proj = WriteBehind(projections.open(f"sqlite:///{tmp / 'records.db'}"), batch=7)
        for seq, event in log.read():
            proj.apply_one(seq, event)
        return proj


class TestOverlayOverSQLite(ProjectionContract):
    @classmethod
    def make(cls, log: TaskLog, tmp: Path, request: pytest.FixtureRequest) -> projections.Projection:
        """A Hub's file as a reader sees it: half the log stored, read-only, the rest folded in memory over it."""
        path = tmp / "records.db"
        with projections.open(f"sqlite:///{path}") as writer:
            snapshot.catch_up(writer, log, stop=log.last_seq // 2)
        overlay = Overlay(SQLiteProjection(str(path), readonly=True))
        snapshot.catch_up(overlay, log)
        assert overlay.inner.last_seq == log.last_seq // 2 and overlay.last_seq == log.last_seq
        return overlay
