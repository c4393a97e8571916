"""Start the server: bind, print the URL with its token, serve until stopped.

Its own process, never a Hub's: a Hub that wants one starts it as a child (``ServeChild``),
which ends when the Hub's process does (its standard input is a pipe only the Hub holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from ..errors import InterfaceError, MissingExtraError

__all__ = ["serve", "listen", "check_token", "new_token", "require_extra", "ServeChild", "TOKEN_ENV"]

#: The environment variable that sets the token (``--token`` wins).
TOKEN_ENV = "TASKLOG_SERVE_TOKEN"
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,256}")


def check_token(token: str) -> str:
    """``token`` if it can be a token (16 to 256 URL-safe characters); InterfaceError otherwise."""
    if not _TOKEN.fullmatch(token):
        raise InterfaceError("a token is 16 to 256 characters among A-Z a-z 0-9 . _ ~ -")
    return token


def new_token() -> str:
    """A random token (as Jupyter's: 48 hex digits)."""
    return secrets.token_hex(24)


def require_extra() -> None:
    """MissingExtraError unless what the server needs is installed (``tasklog[serve]``)."""
    missing = [name for name in ("starlette", "uvicorn", "prometheus_client", "numpy")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(", ".join(missing), "serve", "tasklog serve")


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: any free one); InterfaceError for an address that cannot be had."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InterfaceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


def serve(app: Any, sock: socket.socket, token: str, announce: TextIO, watch: Callable[[], Any],
          on_exit: Callable[[], None], stop_on_eof: bool = False) -> None:
    """Serve ``app`` on ``sock`` until interrupted (or, with ``stop_on_eof``, standard input ends);
    ``on_exit`` is called from the signal handler (it ends the live feeds, which are not waited for)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"http://{shown}:{port}/?token={token}", file=announce, flush=True)
    if _public(host):
        print(f"tasklog serve: listening on {host}: whoever can reach it and has the token reads every task",
              file=sys.stderr)

    class Uvicorn(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            on_exit()
    server = Uvicorn(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=3))

    async def main() -> None:
        watcher = asyncio.create_task(watch())
        if stop_on_eof:
            threading.Thread(target=_on_eof, args=(server,), daemon=True).start()
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    asyncio.run(main())


def _public(host: str) -> bool:
    """Whether ``host`` may be reachable from other machines (a name may resolve anywhere)."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _on_eof(server: Any) -> None:
    """Stop the server when standard input ends: the parent that started it is gone."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdin.buffer.read()
    server.should_exit = True


class ServeChild:
    """``tasklog serve`` as a child of a writer (``TaskLogDB.serve_port``); it ends with this process."""

    def __init__(self, log_path: str, host: str, port: int, token: str | None, logger: Any = None) -> None:
        self.command = [sys.executable, "-m", "tasklog", "serve", "--log", log_path, "--host", host,
                        "--port", str(port), "--stop-on-eof"]
        self.env = dict(os.environ)
        if token:
            self.env[TOKEN_ENV] = check_token(token)  # not in argv: ps shows argv to every user
        self.logger = logger
        self.url: str | None = None
        self._proc: subprocess.Popen[str] | None = None

    def start(self, wait: float = 30.0) -> ServeChild:
        """Start the child and wait for its URL (logged); InterfaceError if it fails first."""
        proc = self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True, env=self.env)
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("http"):
            proc.wait(wait)
            raise InterfaceError(f"tasklog serve did not start: {proc.stderr.read().strip() or line}")
        self.url = line
        threading.Thread(target=self._relay, args=(proc,), daemon=True).start()
        if self.logger is not None:
            self.logger.info("tasklog serve: %s", line)
        return self

    def _relay(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if self.logger is not None:
                self.logger.warning("%s", line.rstrip())

    @property
    def returncode(self) -> int | None:
        """The child's exit status (None: still running)."""
        return None if self._proc is None else self._proc.poll()

    def stop(self, wait: float = 10.0) -> None:
        """Ask the child to stop (its standard input closed); kill it past ``wait`` seconds."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
