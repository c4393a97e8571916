"""``tasklog serve``: the web dashboard over a log's read model (``tasklog.serve``)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager

import projections

from ..errors import InterfaceError
from ..stream import wire
from ..stream.stopping import terminating_interrupts
from .common import DEFAULT_LOG, Command, add_servers, at_least, seconds

__all__ = ["SERVE"]


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted."""
    from ..serve.run import require_extra

    require_extra()
    from ..serve.app import build_app
    from ..serve.run import TOKEN_ENV, check_token, listen, new_token, serve
    from ..serve.server import Server

    terminating_interrupts()
    token = check_token(args.token or os.environ.get(TOKEN_ENV) or new_token())
    if args.log is not None and (args.projection or args.source):
        raise InterfaceError("give --log, or --projection/--source (a stream-fed view), not both")
    with _stream_follower(args) as spec, closing(listen(args.host, args.port)) as sock:  # a taken port: at once
        server = Server(args.log or (None if spec else DEFAULT_LOG), spec, args.query_timeout)
        try:
            server.run_now("refresh")  # a log that cannot be read fails here, before the URL is printed
            serve(build_app(server, token), sock, token, sys.stdout, server.watch, server.closing, args.stop_on_eof)
        finally:
            server.close()
    return 0


@contextmanager
def _stream_follower(args: argparse.Namespace) -> Iterator[str | None]:
    """The projection a stream-fed view reads: ``--projection``, kept by a `tasklog follow` child with ``--source``."""
    if not args.source:
        yield args.projection
        return
    import subprocess

    spec = args.projection or f"sqlite:///{_cache_file(args.source, args.stream)}"
    if not spec.startswith("sqlite:///"):
        raise InterfaceError("--source folds into a SQLite projection: --projection sqlite:///PATH")
    wire.parse_servers(args.source)
    child = subprocess.Popen([sys.executable, "-m", "tasklog", "follow", "--source", args.source, "--stream",
                              args.stream, "--projection", spec], stdin=subprocess.DEVNULL)
    try:
        yield spec
    finally:
        child.terminate()
        child.wait()


def _cache_file(servers: str, stream: str) -> str:
    """Where ``serve --source`` keeps the projection it folds (the user's cache directory)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "tasklog")
    os.makedirs(folder, exist_ok=True)
    digest = hashlib.sha256(f"{servers} {stream}".encode()).hexdigest()[:16]
    return os.path.join(folder, f"serve-{digest}.db")


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    port = at_least(0)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", metavar="DIR", help=f"the log directory (default {DEFAULT_LOG})")
    p.add_argument("--projection", metavar="SPEC", help="a projection folded from a stream of hubs (by `tasklog "
                   "follow`) to show instead of a log: " + projections.SPEC_HELP)
    add_servers(p, "--source", required=False)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine "
                   "only)")
    p.add_argument("--port", type=_port, default=8765, help="the port (default 8765; 0: any free one)")
    p.add_argument("--token", help="the token every request must carry (default: $TASKLOG_SERVE_TOKEN, else a "
                   "random one, printed in the URL)")
    p.add_argument("--query-timeout", type=seconds, default=10.0, metavar="SECONDS",
                   help="stop a query that takes longer (default 10)")
    p.add_argument("--stop-on-eof", action="store_true", help=argparse.SUPPRESS)  # ServeChild's: ends with its parent


SERVE = Command("serve", "serve a live web dashboard of the log (overview, tasks, a task, timeline, hubs), its "
                "JSON API and Prometheus /metrics, read-only, on 127.0.0.1 with a token (needs tasklog[serve])",
                _serve_args, cmd_serve)
