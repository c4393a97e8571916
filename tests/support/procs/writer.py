"""A helper process: append events to a log and report each acknowledged sequence number.

Usage: python writer.py LOG DURABILITY COUNT SEED ACKFILE
Each line of ACKFILE is written only after the append was acknowledged
(returned in sync/process mode; its receipt waited on in async mode).
"""

from __future__ import annotations

import os
import random
import sys

from tasklog import TaskLog


def main() -> None:
    path, durability, count, seed, ackfile = sys.argv[1:6]
    rng = random.Random(int(seed))
    with TaskLog.open(path, durability, commit_interval=0.001) as log, open(ackfile, "a", buffering=1) as acks:
        pending = []
        for i in range(int(count)):
            msg_id = f"{seed}-{i}"
            n = rng.randint(1, 3)
            if n == 1:
                seqs = [log.submit(msg_id, client_uuid=f"p{os.getpid()}", buffers=[rng.randbytes(50)])]
            elif n == 2:
                seqs = [log.output(msg_id, "stdout", text=f"chunk {i}\n")]
            else:
                seqs = log.append_many(_pair(msg_id))
            if durability == "async":
                pending.extend((int(s), msg_id) for s in seqs)
                if len(pending) >= 50:
                    log.flush()
                    acks.write("".join(f"{s} {m}\n" for s, m in pending))
                    pending = []
            else:
                acks.write("".join(f"{s} {msg_id}\n" for s in seqs))


def _pair(msg_id: str) -> list:
    from tasklog import Complete, Start
    return [Start(msg_id, "e1"), Complete(msg_id, result_content={"status": "ok"})]


if __name__ == "__main__":
    main()
