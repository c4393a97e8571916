"""Applying many events to a projection in batches: a log read from a checkpoint on open,
replay and a live attachment's catch-up (``projections.snapshot.catch_up``), or by hand."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar

from tasklog.events import Event

__all__ = ["Applies", "apply_chunks", "batches", "catch_up", "gc_paused"]

T = TypeVar("T")


class Applies(Protocol):
    """What a catch-up feeds: a projection, whose ``apply`` skips events it already folded."""

    def apply(self, batch: Sequence[tuple[int, Event]]) -> int:
        """Fold ``batch``; how many of its events were new."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector while folding many events."""
    # A replay allocates millions of small dicts and tuples and no reference cycles; the cyclic
    # collector rescanning the growing set of records cost a quarter of replay time.
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def catch_up(proj: Applies, events: Iterable[tuple[int, Event]], batch_size: int = 4096,
             progress: Callable[[int], None] | None = None) -> int:
    """Apply every event from ``events`` (e.g. ``log.read(p.last_seq + 1)``) in batches."""
    return apply_chunks(proj, batches(events, batch_size), batch_size, progress)


def apply_chunks(proj: Applies, chunks: Iterable[Sequence[tuple[int, Event]]], batch_size: int = 4096,
                 progress: Callable[[int], None] | None = None) -> int:
    """Apply lists of events in order (e.g. ``log.read_chunks(...)``), about ``batch_size`` per batch."""
    done = 0
    batch: list[tuple[int, Event]] = []
    with gc_paused():
        for chunk in chunks:
            batch += chunk
            if len(batch) >= batch_size:
                done += proj.apply(batch)
                if progress:
                    progress(len(batch))
                batch = []
        if batch:
            done += proj.apply(batch)
            if progress:
                progress(len(batch))
    return done
