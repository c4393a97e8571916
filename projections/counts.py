"""Events by type, counted as they are folded, per block of sequence numbers: what ``stats``
reads instead of decoding the whole log.

A projection counts the events it folds from one log (not a stream of hubs, whose numbers are
each hub's own) by (block, type), a block being ``BLOCK`` consecutive sequence numbers, and keeps
the counts with its records (SQLite in the same transaction as the checkpoint). Blocks, not one
total: a pruned log no longer holds the events of its first blocks, and ``in_log`` counts the one
block a prune cut through from the log itself, so the answer is always the log's own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tasklog.events import EVENT_TYPES, Event

__all__ = ["BLOCK", "EventCounts", "Counted", "key", "of_batch", "in_log"]

#: Sequence numbers per block: the most ``in_log`` decodes from the log is one block's worth.
BLOCK = 1 << 14
#: (block, event type) -> events.
EventCounts = Counter[tuple[int, str]]
_NAMES = {cls: name for name, cls in EVENT_TYPES.items()}


def key(seq: int, event: Event) -> tuple[int, str]:
    """Where event ``seq`` is counted."""
    return seq // BLOCK, event.type


def of_batch(batch: Sequence[tuple[int, Event]]) -> EventCounts:
    """The counts of ``batch``'s events."""
    if len(batch) == 1:  # a hub's call: one event (Counter's constructor was 2% of TaskLogDB's)
        seq, event = batch[0]
        one: EventCounts = Counter()
        one[seq // BLOCK, _NAMES[event.__class__]] = 1
        return one
    # By class first, named once per (block, class): ``key`` per event was 5% of a replay.
    by_class = Counter((seq // BLOCK, event.__class__) for seq, event in batch)
    return Counter({(block, _NAMES[kind]): n for (block, kind), n in by_class.items()})


def in_log(counts: EventCounts, counted_from: int | None, first: int, last: int,
           count_log: Callable[[int, int], Iterable[str]]) -> Counter[str]:
    """Events by type among ``first..last`` of the log, ``last`` being where ``counts`` end (the
    projection's checkpoint): from ``counts`` (complete from event ``counted_from``; None: not
    kept) for the blocks that lie whole in that range, the rest from ``count_log(a, b)``, the
    types of the log's events ``a..b-1``."""
    if last < first:
        return Counter()
    if counted_from is None:
        return Counter(count_log(first, last + 1))
    lower = max(first, counted_from)
    # The first block counted whole and held whole by the log (numbers start at 1: block 0 is
    # whole from there).
    whole = 0 if lower <= 1 else -(-lower // BLOCK)
    cut = min(whole * BLOCK, last + 1)  # where the counts take over from the log
    out: Counter[str] = Counter(count_log(first, cut) if first < cut else ())
    for (block, kind), n in counts.items():
        if block >= whole:
            out[kind] += n
    return out


_NOTHING: EventCounts = Counter()  # pending between stores: read, never written


@dataclass
class Counted:
    """A projection's folded events by (block, type), complete from event ``since`` (None: not
    kept, e.g. after a rewind or when fed from a stream of hubs)."""

    blocks: EventCounts = field(default_factory=Counter)
    since: int | None = 1
    #: The counts of the events being stored: a backend that keeps them stores them with the checkpoint.
    pending: EventCounts = field(default_factory=lambda: _NOTHING)

    def restart(self, since: int | None) -> None:
        """Forget the counts: complete from event ``since`` on (None: no longer kept)."""
        self.blocks, self.since, self.pending = Counter(), since, _NOTHING

    def storing(self, batch: EventCounts | None) -> Counted:
        """Around a store of events counted ``batch`` (None: not known, so no longer kept), as
        ``with counted.storing(batch):``: ``pending`` while it runs, added once it returned."""
        # A context manager of its own, not @contextmanager: this runs once per TaskLogDB call,
        # where the generator's machinery and two new Counters were 8% of the call (issue 24).
        if batch is None:
            self.restart(None)
        self.pending = batch or _NOTHING
        return self

    def __enter__(self) -> None:
        """Nothing more to start: ``storing`` set ``pending``."""

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """Add ``pending`` to the counts if the store returned; forget it either way."""
        if kind is None and self.since is not None:
            blocks = self.blocks
            for k, n in self.pending.items():  # not Counter.update: its Mapping check is an ABC's
                blocks[k] += n
        self.pending = _NOTHING

    def in_log(self, first: int, last: int, count_log: Callable[[int, int], Iterable[str]]) -> Counter[str]:
        """``in_log`` of these counts."""
        return in_log(self.blocks, self.since, first, last, count_log)
