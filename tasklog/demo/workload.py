"""A simulated hub under heavy load: the workload of ``tasklog demo`` and of the benchmarks.

Tasks overlap as on a real hub: a window of tasks is in flight, each advances
one step at a time in random order, a few outputs arrive before their submit
(IOPub beats the request) and about 5% of tasks are resubmitted. The times the
events carry follow a simulated schedule (bursts of submits, eight engines that
each run one task at a time) that ends at the moment the demo starts.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from ..events import Complete, Event, Output, Resubmit, Start, Submit
from ..fields import utcnow

__all__ = ["simulate", "ENGINES", "CLIENTS"]

ENGINES = [f"engine-{i}" for i in range(8)]
CLIENTS = [f"client-{i}" for i in range(3)]


# Failures as a cluster shows them: mostly one kind, a few others.
_ERRORS = (("ValueError", "bad input"), ("ValueError", "bad input"), ("KeyError", "'missing'"),
           ("TimeoutError", "took too long"), ("MemoryError", ""))
_MEAN_RUN = 0.25  # seconds; run times are uniform on 1..500 ms


class _Schedule:
    """A simulated clock: clients submit in bursts and each engine runs one task at a time.

    The times the events carry then read like a real cluster's (queue waits, idle engines),
    which is what ``tasklog timeline`` and ``tasklog report`` draw.
    """

    def __init__(self, rng: random.Random, tasks: int) -> None:
        self.rng = rng
        # Ends about now: a demo log describes the recent past, never the future.
        self.clock = utcnow() - timedelta(seconds=tasks * _MEAN_RUN / len(ENGINES) * 1.25)
        self.free = {engine: self.clock for engine in ENGINES}
        self.burst = 0

    def submitted(self) -> Any:
        """The submit time of the next task: a burst of one client's tasks shares an instant."""
        if self.burst == 0:
            self.burst = self.rng.randint(5, 120)
            self.clock += timedelta(seconds=self.burst * _MEAN_RUN / len(ENGINES) * self.rng.uniform(0.8, 1.6))
        self.burst -= 1
        return self.clock

    def run(self, at: Any) -> tuple[str, Any, Any]:
        """(engine, started, completed) of a task submitted ``at``: the engine free first takes it."""
        engine = min(ENGINES, key=self.free.__getitem__)
        started = max(at, self.free[engine]) + timedelta(microseconds=self.rng.randint(200, 3000))
        done = started + timedelta(milliseconds=self.rng.randint(1, 500))
        self.free[engine] = done
        return engine, started, done


def _id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


def _complete(rng: random.Random, msg_id: str, engine: str, started: Any, done: Any,
              error: dict[str, str] | None) -> Complete:
    status: dict[str, Any] = {"status": "error", **error} if error else {"status": "ok"}
    reply = {"msg_id": _id(rng), "msg_type": "apply_reply"}
    return Complete(msg_id=msg_id, result_header=reply, result_content=status, result_metadata={"engine": engine},
                    result_buffers=[rng.randbytes(32)], started=started, completed=done, received=done,
                    engine_uuid=engine)


def _task(rng: random.Random, msg_id: str, chunks: int, early: bool, resubmit: bool,
          schedule: _Schedule) -> list[Event]:
    submitted = schedule.submitted()
    engine, started, done = schedule.run(submitted)
    header = {"msg_id": msg_id, "msg_type": "apply_request", "session": "s", "username": "demo"}
    submit = Submit(msg_id=msg_id, header=header, content={}, metadata={}, buffers=[rng.randbytes(64)],
                    client_uuid=rng.choice(CLIENTS), queue=rng.choice(("task", "task", "mux")),
                    submitted=submitted, label=f"job-{rng.randint(0, 99)}")
    outs: list[Event] = [Output(msg_id=msg_id, name="stdout", text=f"step {i} of {msg_id[:8]}\n")
                         for i in range(chunks)]
    steps: list[Event] = [submit, Start(msg_id=msg_id, engine_uuid=engine, started=started), *outs]
    if early and outs:  # IOPub output can beat the request to the hub
        steps.insert(0, steps.pop(2))
    error = dict(zip(("ename", "evalue"), rng.choice(_ERRORS))) if rng.random() < 0.03 else None
    if error:  # the engine's error output and its reply name the same error
        steps.append(Output(msg_id=msg_id, name="error", content=error))
    steps.append(_complete(rng, msg_id, engine, started, done, error))
    if resubmit:
        new = _id(rng)
        again, started, finished = schedule.run(done)
        steps += [Resubmit(msg_id=msg_id, new_msg_id=new, submitted=done),
                  Start(msg_id=new, engine_uuid=again, started=started),
                  Output(msg_id=new, name="stdout", text="retry\n"),
                  _complete(rng, new, again, started, finished, None)]
    return steps


def simulate(tasks: int, seed: int = 0, chunks: tuple[int, int] = (1, 3), window: int = 64,
             resubmit_rate: float = 0.05, early_rate: float = 0.02) -> Iterator[Event]:
    """Yield the events of ``tasks`` overlapping task lifecycles, deterministically from ``seed``."""
    rng = random.Random(seed)
    schedule = _Schedule(rng, tasks)
    live: list[list[Event]] = []
    made = 0
    while made < tasks or live:
        while made < tasks and len(live) < window:
            msg_id = _id(rng)
            live.append(_task(rng, msg_id, rng.randint(*chunks), rng.random() < early_rate,
                              rng.random() < resubmit_rate, schedule))
            made += 1
        i = rng.randrange(len(live))
        steps = live[i]
        yield steps.pop(0)
        if not steps:
            live[i] = live[-1]
            live.pop()
