"""Projections: fold the tasklog event log into TaskRecords and answer MongoDB-style queries.

``projections.open(spec)`` with ``dict``, ``sqlite:///path/tasks.db``,
``mongodb://host:port/dbname`` or ``none``. Given a log, a persistent
projection catches up from its checkpoint on open.

Bottom up: ``errors``, ``fold`` (the one pure fold and its anomaly rules), ``query`` and
``parse`` (parsed once into a tree), ``hubs``, ``catchup`` and ``frames``, ``base`` (the
``Projection`` contract: five storage hooks, public hooks for live attachment); the backends
as siblings in ``backends`` (``dict``, ``none``, ``sqlite``, ``mongo``); ``snapshot``,
``writebehind`` (``WriteBehind``, itself a projection) and ``overlay``; ``live`` and
``maintenance`` on top. Only ``tasklog``'s core is imported from here, never its edges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tasklog.log import TaskLog

from . import snapshot
from .backends.dict import DictProjection
from .backends.none import NoProjection
from .base import BUFFER_MODES, Projection
from .errors import ProjectionError, QueryError
from .fold import RECORD_KEYS, fold
from .parse import parse

__all__ = ["open", "replay", "local_file", "Projection", "DictProjection", "NoProjection", "RECORD_KEYS", "fold",
           "parse", "QueryError", "ProjectionError", "SPEC_HELP"]

SPEC_HELP = "dict[?record_limit=N&size_limit=BYTES&cull_fraction=F], sqlite:///path/tasks.db, " \
            "mongodb://host:port/dbname, or none; any of them with buffers=inline to keep buffers in the " \
            "records instead of reading them from the log"
_DICT_OPTIONS = {"record_limit": int, "size_limit": int, "cull_fraction": float}
_KINDS = {int: "a whole number", float: "a number"}  # what an option's type is called in its error


def _dict_options(query: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        conv = _DICT_OPTIONS.get(key)
        if conv is None:
            raise ProjectionError(f"unknown dict option {key!r}; known: {sorted(_DICT_OPTIONS)}")
        try:
            opts[key] = conv(value)
        except ValueError:
            raise ProjectionError(f"dict option {key} needs {_KINDS[conv]}, got {value!r}") from None
    return opts


def _split_buffers(spec: str) -> tuple[str, str | None]:
    """Take the ``buffers=`` option out of a spec's query (every backend has it); the rest stays."""
    base, sep, query = spec.partition("?")
    mode = None
    rest = []
    for part in query.split("&") if sep else ():
        key, _, value = part.partition("=")
        if key == "buffers":
            mode = value
        else:
            rest.append(part)
    return (f"{base}?{'&'.join(rest)}" if rest else base), mode


def _build(spec: str, options: dict[str, Any]) -> Projection:
    if not isinstance(spec, str) or not spec:
        raise ProjectionError(f"a projection spec must be a non-empty string: {SPEC_HELP}")
    spec, mode = _split_buffers(spec)
    buffers = options.pop("buffers", "ref" if mode is None else mode)
    if buffers not in BUFFER_MODES:
        raise ProjectionError(f"option buffers must be one of {list(BUFFER_MODES)}, got {buffers!r}")
    proj = _backend(spec, options)
    proj.buffers = buffers
    return proj


def local_file(spec: str) -> str | None:
    """The file a projection spec keeps its records in (SQLite's; None for the others and memory)."""
    path = spec[len("sqlite:///"):] if spec.startswith("sqlite:///") else None
    return None if path in (None, "", ":memory:") else path


def _backend(spec: str, options: dict[str, Any]) -> Projection:
    if spec == "none":
        return NoProjection()
    if spec == "dict" or spec.startswith("dict?"):
        return DictProjection(**{**_dict_options(spec[5:]), **options})
    if spec.startswith("sqlite://"):
        from .backends.sqlite import SQLiteProjection

        path = spec[len("sqlite://"):]
        if not path.startswith("/") or path == "/":
            raise ProjectionError(f"bad SQLite spec {spec!r}: use sqlite:///relative/path.db or "
                                  "sqlite:////absolute/path.db")
        return SQLiteProjection(path[1:] or ":memory:", **options)
    if spec.startswith(("mongodb://", "mongodb+srv://")):
        from .backends.mongo import MongoProjection

        if not urlsplit(spec).hostname:
            raise ProjectionError(f"bad MongoDB spec {spec!r}: no host")
        return MongoProjection(spec, **options)
    raise ProjectionError(f"unknown projection spec {spec!r}: use {SPEC_HELP}")


def replay(log: TaskLog, spec: str | Projection, *, start: int | None = None, stop: int | None = None,
           rebuild: bool = False, progress: Callable[[int], None] | None = None) -> Projection:
    """Rebuild (or catch up) a projection from ``log``, optionally only up to seq ``stop`` (inclusive).

    With ``stop`` a projection shows the state as of that point in the log (time travel); a
    persistent projection already past it must be rebuilt, which ``rebuild=True`` does. An empty
    projection starts from the newest snapshot at or before ``stop``.
    """
    proj = _build(spec, {}) if isinstance(spec, str) else spec
    try:
        if rebuild:
            proj.clear()
        snapshot.catch_up(proj, log, start=start, stop=stop, progress=progress)
        if stop is not None:
            # Time travel stays where it was taken: a later open (a query) answers as of it.
            proj.pin(min(stop, log.last_seq))
    except BaseException:
        proj.close()
        raise
    return proj


def open(spec: str, log: TaskLog | None = None, **options: Any) -> Projection:
    """Open the projection named by ``spec``; with ``log``, catch it up from its checkpoint.

    A projection pinned by a time-travel replay stays as it is (checked to be of ``log``);
    ``replay`` without ``stop`` moves it on.
    """
    projection = _build(spec, options)
    if log is not None and projection.pinned is not None:
        try:
            projection.bind(log.identity)
        except BaseException:
            projection.close()
            raise
    elif log is not None:
        try:
            snapshot.catch_up(projection, log)
        except BaseException:
            projection.close()
            raise
    return projection
