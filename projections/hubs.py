"""Per-hub checkpoints: a projection folded from a stream of many hubs (``tasklog.stream.feed``)
keeps, for each hub's log, the last event it applied, in place of one log's checkpoint."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from tasklog.events import Event

from .counts import Counted
from .errors import ProjectionError
from .fold import Records, is_tombstone

__all__ = ["HubFed", "apply_hub", "hub_checkpoint"]


class HubFed(Protocol):
    """What a stream of hubs feeds: a projection (``projections.base.Projection``)."""

    spec: str
    keeps_hubs: bool
    log_identity: str | None
    applied: int
    counted: Counted
    #: log identity -> (hub name, last sequence number applied)
    hubs: dict[str, tuple[str, int]]

    @property
    def lock(self) -> threading.RLock:
        """The lock every apply holds."""

    def bind(self, identity: str | None) -> None:
        """Tie the records to ``identity``."""

    def fold_batch(self, fresh: Sequence[tuple[int, Event]], refer: bool) -> tuple[Records, set[str]]:
        """The stored records ``fresh`` touches with its events folded in, and the ids it changed."""

    def store_hubs(self, records: Records, changed: set[str], hubs: dict[str, tuple[str, int]]) -> None:
        """Persist the ``changed`` records and the per-hub checkpoints ``hubs`` together."""


def hub_checkpoint(proj: HubFed, identity: str, hub: str) -> int:
    """The last event of log ``identity`` (hub ``hub``) folded into ``proj`` (0: none)."""
    known = proj.hubs.get(identity)
    if known is not None and known[0] != hub:
        raise ProjectionError(f"log {identity} is hub {known[0]} in {proj.spec}, not {hub}")
    return known[1] if known else 0


def _check_origin(proj: HubFed, origin: str) -> None:
    if not proj.keeps_hubs:
        raise ProjectionError(f"{proj.spec} cannot be fed from a stream of hubs (use dict, sqlite or mongodb)")
    if proj.log_identity not in (None, origin):
        raise ProjectionError(f"{proj.spec} was built from {proj.log_identity}, not from {origin}; "
                              "fold a stream into a projection of its own")


def apply_hub(proj: HubFed, identity: str, hub: str, batch: Sequence[tuple[int, Event]], origin: str) -> int:
    """Fold events of hub ``hub`` (log ``identity``) read from ``origin`` (a stream); events at or
    below that hub's checkpoint are skipped. Records say their hub (``hub``); many hubs fold into
    one projection, which is then tied to ``origin`` rather than to one log."""
    with proj.lock:
        _check_origin(proj, origin)
        last = hub_checkpoint(proj, identity, hub)
        fresh = [item for item in batch if item[0] > last]
        if not fresh:
            return 0
        proj.bind(origin)  # checked above: ties a new projection to the stream, refuses nothing
        records, changed = proj.fold_batch(fresh, False)  # no log of its own to refer to: buffers inline
        for m in changed:
            rec = records[m]
            if rec is not None and not is_tombstone(rec):
                rec["hub"] = hub
        proj.counted.restart(None)  # each hub numbers its own events: there are no log's blocks to count
        proj.store_hubs(records, changed, {identity: (hub, fresh[-1][0])})
        proj.hubs[identity] = (hub, fresh[-1][0])
        proj.applied += len(fresh)
        return len(fresh)
