"""CLI commands that compose the log with projections (registered into tasklog.cli)."""

from __future__ import annotations

__all__: list[str] = []
