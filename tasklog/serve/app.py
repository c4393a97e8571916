"""The web application: the pages (static files shipped in the package), the JSON API they
read (Extended JSON, as the CLI prints), the live feed of commits (server-sent events),
``/metrics`` and the export download. Everything it serves is read-only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import sys
import tempfile
import traceback
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from projections.errors import QueryError
from projections.paging import Cursor

from ..errors import InterfaceError, TaskLogError
from ..fields import at_micros, micros, utcnow
from ..views.export import FORMATS
from ..views.jsonfmt import dumps, loads
from .guard import Guard
from .server import CLOSED, Server
from .worker import QueryTimeout, ReaderLost, Worker, WorkerFailed

__all__ = ["build_app", "MAX_QUERY_BYTES", "PAGE_LIMIT"]

STATIC = Path(__file__).with_name("static")
#: The longest query text the API takes (a query is a filter, not a payload).
MAX_QUERY_BYTES = 16 * 1024
#: The most records one page of the API holds.
PAGE_LIMIT = 1000
_PAGES = {"/": "overview.html", "/tasks": "tasks.html", "/timeline": "timeline.html", "/hubs": "hubs.html"}
_KEEPALIVE = 15.0
_INTEGER = re.compile(r"-?[0-9]{1,20}")  # ASCII digits only: str.isdigit took "²", which int() refused (a 500)
_MAX_MICROS = 2**62
_NARROW = "narrow the query: an indexed field (submitted, started, completed, engine_uuid, client_uuid, label, queue)"
_EXPORT_TIMEOUT = 900.0


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def _errors(handler: Callable[[Server, Request], Any]) -> Callable[[Request], Any]:
    """A handler whose errors are answers: 400 for a bad request, 404, 503 for a timeout, 500 for a bug."""
    async def wrapped(request: Request) -> Response:
        server: Server = request.app.state.server
        try:
            return await handler(server, request)  # type: ignore[no-any-return]
        except QueryTimeout as exc:
            return _json({"error": exc.args[0], "hint": _NARROW}, 503)
        except ReaderLost as exc:
            return _json({"error": exc.args[0]}, 503)
        except LookupError as exc:
            return _json({"error": str(exc.args[0]) if exc.args else "not found"}, 404)
        except WorkerFailed as exc:
            return _json({"error": exc.args[0]}, 500)
        except TaskLogError as exc:
            return _json({"error": exc.args[0] if exc.args else str(exc)}, 400)
        except Exception:  # a bug here: its traceback on the server's stderr, one line to the page
            traceback.print_exc()
            return _json({"error": f"tasklog serve failed answering {request.url.path}: see its standard error"}, 500)
    return wrapped


def _query(request: Request) -> dict[str, Any]:
    text = request.query_params.get("q", "") or "{}"
    if len(text.encode()) > MAX_QUERY_BYTES:
        raise QueryError(f"the query is longer than {MAX_QUERY_BYTES:,} bytes")
    query = loads(text)
    if not isinstance(query, dict):
        raise QueryError("the query must be a JSON object")
    return query


def _keys(request: Request) -> list[str] | None:
    text = request.query_params.get("keys", "")
    return [k.strip() for k in text.split(",") if k.strip()] or None


def _cursor(text: str | None) -> Cursor | None:
    """The ``after`` cursor of a page, as the API gave it: base64 of JSON [value, msg_id, is-a-time]."""
    if not text:
        return None
    try:
        value, msg_id, is_time = json.loads(base64.urlsafe_b64decode(text.encode() + b"==").decode())
        return (at_micros(value) if is_time else value), msg_id
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError):
        raise QueryError("a cursor the API did not give") from None


def _encode_cursor(after: Cursor | None) -> str | None:
    # A time as whole microseconds: Extended JSON keeps milliseconds, and a page's cursor cut to
    # them skipped the tasks submitted in the same millisecond after it.
    if after is None:
        return None
    value, msg_id = after
    is_time = isinstance(value, datetime)
    raw = json.dumps([micros(value) if is_time else value, msg_id, is_time])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", "100")
    if not _INTEGER.fullmatch(text) or not 1 <= int(text) <= PAGE_LIMIT:
        raise QueryError(f"limit must be a whole number from 1 to {PAGE_LIMIT} (an export has no limit)")
    return int(text)


async def api_tasks(server: Server, request: Request) -> Response:
    """A page of tasks: ?q=QUERY&keys=A,B&sort=FIELD|-FIELD&limit=N&after=CURSOR&count=1."""
    query, keys, limit = _query(request), _keys(request), _limit(request)
    sort = request.query_params.get("sort", "-submitted")
    after = _cursor(request.query_params.get("after"))
    out = await server.run("page", query=query, keys=keys, sort=sort.lstrip("-"), descending=sort.startswith("-"),
                           limit=limit, after=after)
    out["after"] = _encode_cursor(out["after"])
    if request.query_params.get("count") == "1":
        out["count"] = await server.run("count", query=query)
    return _json(out)


async def api_task(server: Server, request: Request) -> Response:
    """One task: record, story, resubmit chain."""
    return _json(await server.run("task", msg_id=request.path_params["msg_id"]))


async def api_overview(server: Server, request: Request) -> Response:
    """The overview's figures."""
    return _json(await server.run("overview"))


def _micros_param(params: Any, name: str) -> int | None:
    text = params.get(name)
    if not text:
        return None
    if not _INTEGER.fullmatch(text) or abs(int(text)) > _MAX_MICROS:
        raise QueryError(f"{name} is a whole number of microseconds since the epoch, got {text[:40]!r}")
    return int(text)


async def api_timeline(server: Server, request: Request) -> Response:
    """Engines against time: ?start=US&stop=US&width=PIXELS."""
    params = request.query_params
    width = params.get("width", "1000")
    if not _INTEGER.fullmatch(width) or not 1 <= int(width) <= 100_000:
        raise QueryError(f"width is a number of pixels, 1 to 100,000, got {width[:40]!r}")
    return _json(await server.run("timeline", start=_micros_param(params, "start"), stop=_micros_param(params, "stop"),
                                  width=int(width), now=micros(utcnow())))


async def api_hubs(server: Server, request: Request) -> Response:
    """Each hub's checkpoint (a stream-fed projection)."""
    return _json(await server.run("hubs"))


async def api_stats(server: Server, request: Request) -> Response:
    """What ``tasklog stats --json`` prints."""
    return _json(await server.run("stats", timeout=max(server.query_timeout, 60.0)))


async def metrics(server: Server, request: Request) -> Response:
    """Prometheus' text exposition format."""
    body, kind = await server.run("metrics", timeout=max(server.query_timeout, 60.0))
    return Response(body, media_type=kind)


async def api_export(server: Server, request: Request) -> Response:
    """The tasks a query matches as a file: ?q=QUERY&format=parquet|jsonl|csv&keys=A,B."""
    query, keys, fmt = _query(request), _keys(request), request.query_params.get("format", "parquet")
    if fmt not in FORMATS:
        raise QueryError(f"format must be one of {', '.join(FORMATS)}")
    fd, path = tempfile.mkstemp(prefix="tasklog-export-", suffix=f".{fmt}")
    os.close(fd)
    try:
        log = await server.run("log_path")
        # In a process of its own: a million tasks held the one reader, so every page, for half a
        # minute; stopped when the page goes away or the server stops.
        if log is not None:
            await _export_child(server, request, log, query, keys, fmt, path)
        else:
            await _export_reader(server, request, dict(query=query, keys=keys, fmt=fmt, path=path))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return FileResponse(path, filename=f"tasks.{fmt}", background=BackgroundTask(os.unlink, path))


async def _until_done(request: Request, job: Any, abort: Callable[[], None]) -> Any:
    """``job``'s result; ``abort()`` and ReaderLost if the page goes away first (Starlette goes on with
    a request whose client left: an abandoned download ran its export to the end)."""
    task = asyncio.ensure_future(job)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                abort()
                raise ReaderLost("the download's page went away")
    except asyncio.CancelledError:
        abort()
        raise


async def _export_child(server: Server, request: Request, log: str, query: dict[str, Any], keys: list[str] | None,
                        fmt: str, path: str) -> None:
    """``tasklog export`` of ``query`` into ``path``; its one-line error as an InterfaceError."""
    args = [sys.executable, "-m", "tasklog", "export", dumps(query), "--log", log, "--format", fmt, "-o", path]
    proc = await asyncio.create_subprocess_exec(*args, *(["--keys", ",".join(keys)] if keys else []),
                                                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)

    def abort() -> None:
        if proc.returncode is None:
            proc.terminate()  # SIGTERM: the export removes its half-written file
    server.aborts.add(abort)
    try:
        _, err = await _until_done(request, asyncio.wait_for(proc.communicate(), _EXPORT_TIMEOUT), abort)
    except asyncio.TimeoutError:
        abort()
        raise QueryTimeout(f"the export took longer than {_EXPORT_TIMEOUT:g} s and was stopped") from None
    finally:
        server.aborts.discard(abort)
        if proc.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            if proc.returncode is None:
                proc.kill()
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise InterfaceError(lines[-1] if lines else f"tasklog export failed ({proc.returncode})")


async def _export_reader(server: Server, request: Request, kwargs: dict[str, Any]) -> None:
    """An export from a stream-fed projection, by a reader of its own (the shared one stays free)."""
    reader = Worker(*server.worker.args)

    def abort() -> None:
        reader.stop(closing=True)
    server.aborts.add(abort)
    loop = asyncio.get_running_loop()
    try:
        await _until_done(request, loop.run_in_executor(None, reader.call, "export", kwargs, _EXPORT_TIMEOUT), abort)
    finally:
        server.aborts.discard(abort)
        abort()


async def live(server: Server, request: Request) -> Response:
    """Server-sent events: ``commit`` with the folded sequence number, whenever one lands."""
    queue = server.listen()

    async def events() -> AsyncIterator[str]:
        try:
            first = server.seq
            if first < 0:  # nothing watched yet: the page hears where the log is now, not 0
                with contextlib.suppress(TaskLogError):
                    first = await server.run("refresh")
            yield f"event: commit\ndata: {max(first, 0)}\n\n"
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    seq = await asyncio.wait_for(queue.get(), _KEEPALIVE)
                    if seq == CLOSED:  # the server stops: end the stream, so it is not waited for
                        return
                    yield f"event: commit\ndata: {seq}\n\n"
                    continue
                yield ": still here\n\n"
        finally:
            server.unlisten(queue)
    return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


def _page(name: str) -> Callable[[Request], Any]:
    async def page(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type="text/html")
    return page


def build_app(server: Server, token: str) -> Guard:
    """The application, behind its guard."""
    routes: list[Route | Mount] = [Route(path, _page(name)) for path, name in _PAGES.items()]
    routes += [Route("/task/{msg_id:path}", _page("task.html")),
               Route("/api/tasks", _errors(api_tasks)), Route("/api/task/{msg_id:path}", _errors(api_task)),
               Route("/api/overview", _errors(api_overview)), Route("/api/timeline", _errors(api_timeline)),
               Route("/api/hubs", _errors(api_hubs)), Route("/api/stats", _errors(api_stats)),
               Route("/api/export", _errors(api_export)), Route("/api/live", _errors(live)),
               Route("/metrics", _errors(metrics)), Mount("/static", StaticFiles(directory=STATIC))]
    app = Starlette(routes=routes)
    app.state.server = server
    return Guard(app, token)
