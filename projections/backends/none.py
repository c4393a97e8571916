"""The none projection: stores nothing, like ipyparallel's NoDB."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from tasklog.events import Event

from ..base import Projection, Records
from ..fold import Anomalies
from ..query import Logical

__all__ = ["NoProjection"]

_WHY = "the 'none' projection keeps no records (like ipyparallel's NoDB); replay the log into another projection"


class NoProjection(Projection):
    """Accepts every event, keeps nothing; every read raises KeyError."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = "none"

    def apply(self, batch: Sequence[tuple[int, Event]]) -> int:
        """Count the events and forget them."""
        fresh = [item for item in batch if item[0] > self.last_seq]
        if fresh:
            self.last_seq = fresh[-1][0]
            self.applied += len(fresh)
        return len(fresh)

    def apply_one(self, seq: int, event: Event) -> int:
        """Count the event and forget it."""
        return self.apply([(seq, event)])

    def restore(self, records: Iterable[dict[str, Any]], last_seq: int, anomalies: Anomalies) -> None:
        """Skip the snapshot's records; only its position counts."""
        self.last_seq = self.restored_from = last_seq

    def _clear(self) -> None:
        """Nothing to forget but the checkpoint, which clear() resets."""

    def _refuse(self) -> NoReturn:
        raise KeyError(_WHY)

    def _load(self, msg_ids: set[str]) -> Records:
        self._refuse()

    def _store(self, records: Records, changed: set[str], last_seq: int) -> None:
        self._refuse()

    def _find(self, node: Logical, keys: list[str] | None) -> list[dict[str, Any]]:
        self._refuse()

    def _history(self) -> list[str]:
        self._refuse()

    def stats(self) -> dict[str, Any]:
        """Applied events and the checkpoint; there are no records to count."""
        return {"spec": self.spec, "last_seq": self.last_seq, "applied": self.applied, "records": 0,
                "anomalies": {}}
