"""The errors of the projection layer: still branches of the one root, ``tasklog.TaskLogError``."""

from __future__ import annotations

from tasklog.errors import InterfaceError, TaskLogError

__all__ = ["QueryError", "ProjectionError"]


class QueryError(InterfaceError, ValueError):
    """A query is malformed or uses an unknown operator."""


class ProjectionError(TaskLogError):
    """A projection could not be opened, reached or kept in step with its log."""
