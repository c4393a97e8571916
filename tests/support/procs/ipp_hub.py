"""A child process playing the Hub: records tasks through TaskLogDB, then waits to be killed."""

from __future__ import annotations

import sys
import time

from ipyparallel.controller.hub import init_record
from jupyter_client.session import Session

from tasklog.ipyparallel import TaskLogDB

location, spec, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = TaskLogDB(location=location, projection=spec)
session = Session()
for i in range(n):
    msg = session.msg("apply_request", content={"i": i})
    msg["buffers"] = [b"x"]
    rec = init_record(msg)
    rec.update(client_uuid=session.session, queue="task")
    mid = rec["msg_id"]
    db.add_record(mid, rec)
    db.update_record(mid, {"engine_uuid": "e1"})
    db.update_record(mid, {"stdout": db.get_record(mid)["stdout"] + f"line {i}\n"})
    db.update_record(mid, {"result_header": {"msg_id": f"r{i}"}, "result_content": {"status": "ok"}})
    print(mid, flush=True)
db.tasklog.flush()  # everything acknowledged is durable; the write-behind batch is not stored yet
print("flushed", flush=True)
time.sleep(60)
