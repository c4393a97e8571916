"""A simulated hub under heavy load: the workload of ``tasklog demo`` and of the benchmarks.

Tasks overlap as on a real hub: a window of tasks is in flight, each advances
one step at a time in random order, a few outputs arrive before their submit
(IOPub beats the request) and about 5% of tasks are resubmitted.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from .events import Complete, Event, Output, Resubmit, Start, Submit, utcnow

__all__ = ["simulate", "ENGINES", "CLIENTS"]

ENGINES = [f"engine-{i}" for i in range(8)]
CLIENTS = [f"client-{i}" for i in range(3)]


def _task(rng: random.Random, msg_id: str, chunks: int, early: bool, resubmit: bool,
          t0: Any) -> list[Event]:
    engine = rng.choice(ENGINES)
    submitted = t0 + timedelta(milliseconds=rng.randint(0, 50))
    header = {"msg_id": msg_id, "msg_type": "apply_request", "session": "s", "username": "demo"}
    submit = Submit(msg_id=msg_id, header=header, content={}, metadata={}, buffers=[rng.randbytes(64)],
                    client_uuid=rng.choice(CLIENTS), queue=rng.choice(("task", "task", "mux")),
                    submitted=submitted, label=f"job-{rng.randint(0, 99)}")
    outs: list[Event] = [Output(msg_id=msg_id, name="stdout", text=f"step {i} of {msg_id[:8]}\n")
                         for i in range(chunks)]
    steps: list[Event] = [submit, Start(msg_id=msg_id, engine_uuid=engine, started=submitted), *outs]
    if early and outs:  # IOPub output can beat the request to the hub
        steps.insert(0, steps.pop(2))
    failed = rng.random() < 0.03
    if failed:
        steps.append(Output(msg_id=msg_id, name="error", content={"ename": "ValueError", "evalue": "bad input"}))
    done = submitted + timedelta(milliseconds=rng.randint(1, 500))
    reply = {"msg_id": str(uuid.UUID(int=rng.getrandbits(128))), "msg_type": "apply_reply"}
    steps.append(Complete(msg_id=msg_id, result_header=reply, result_content={"status": "error" if failed else "ok"},
                          result_metadata={"engine": engine}, result_buffers=[rng.randbytes(32)],
                          started=submitted, completed=done, received=done, engine_uuid=engine))
    if resubmit:
        new = str(uuid.UUID(int=rng.getrandbits(128)))
        steps += [Resubmit(msg_id=msg_id, new_msg_id=new, submitted=done),
                  Start(msg_id=new, engine_uuid=rng.choice(ENGINES), started=done),
                  Output(msg_id=new, name="stdout", text="retry\n"),
                  Complete(msg_id=new, result_header={"msg_id": new}, result_content={"status": "ok"},
                           result_metadata={}, result_buffers=[], started=done, completed=done, received=done,
                           engine_uuid=engine)]
    return steps


def simulate(tasks: int, seed: int = 0, chunks: tuple[int, int] = (1, 3), window: int = 64,
             resubmit_rate: float = 0.05, early_rate: float = 0.02) -> Iterator[Event]:
    """Yield the events of ``tasks`` overlapping task lifecycles, deterministically from ``seed``."""
    rng = random.Random(seed)
    t0 = utcnow()
    live: list[list[Event]] = []
    made = 0
    while made < tasks or live:
        while made < tasks and len(live) < window:
            msg_id = str(uuid.UUID(int=rng.getrandbits(128)))
            live.append(_task(rng, msg_id, rng.randint(*chunks), rng.random() < early_rate,
                              rng.random() < resubmit_rate, t0))
            made += 1
        i = rng.randrange(len(live))
        steps = live[i]
        yield steps.pop(0)
        if not steps:
            live[i] = live[-1]
            live.pop()
