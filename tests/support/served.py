"""A real ``tasklog serve`` in a subprocess, and requests to it with or without its token."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from typing import Any

from tasklog.views.jsonfmt import loads

from . import child_env, ended

__all__ = ["TOKEN", "Served", "Answer", "serving", "children"]

TOKEN = "test-token-0123456789abcdef"


@dataclass
class Answer:
    """One HTTP answer."""

    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        """The body as Extended JSON."""
        return loads(self.body.decode())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass
class Served:
    """A running server: its base URL, the URL it printed, its process."""

    base: str
    printed: str
    proc: subprocess.Popen[str]

    def get(self, path: str, params: dict[str, Any] | None = None, token: str | None = TOKEN,
            headers: dict[str, str] | None = None, timeout: float = 60) -> Answer:
        """GET ``path`` (``token`` sent as a bearer token; None: none)."""
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(url, headers=dict(headers or {}))
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with _OPENER.open(req, timeout=timeout) as res:
                return Answer(res.status, res.headers, res.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.headers, exc.read())

    def api(self, path: str, **params: Any) -> Any:
        """The JSON answer of an API call that must succeed."""
        answer = self.get(path, {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()})
        assert answer.status == 200, (path, answer.status, answer.body[:300])
        return answer.json()


def children(pid: int) -> dict[int, str]:
    """The processes ``pid`` started, with their command lines (its reader is started from a thread:
    a thread's children are its own)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            for child in f.read().split():
                with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline") as cmd:
                    out[int(child)] = cmd.read().replace("\0", " ")
    return out


@contextmanager
def serving(*args: str, token: str = TOKEN, wait: float = 60) -> Iterator[Served]:
    """``tasklog serve --port 0 ARGS`` until the block ends; its URL read from its first line."""
    env = {**child_env(), "TASKLOG_SERVE_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "-m", "tasklog", "serve", "--port", "0", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], wait)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            proc.kill()
            raise AssertionError(f"tasklog serve did not start: {line!r} {proc.stderr.read()[-2000:]}")
        yield Served(line.split("/?token=")[0], line, proc)
    finally:
        ended(proc, 15)
