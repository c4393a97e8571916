"""The MongoDB projection: pymongo, bulk writes per batch, queries relayed to the server.

Documents use the msg_id as ``_id``. Each carries ``_seq``, the last sequence
number folded into it, so replaying an event after a crash between the bulk
write and the checkpoint is a no-op. Operators MongoDB lacks are translated
before the query is relayed: ``$glob`` becomes an anchored ``$regex`` and the
seed's ``$ge``/``$le`` were already mapped to ``$gt``/``$lt`` by the parser.
"""

from __future__ import annotations

import re
from datetime import timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pymongo
from bson.codec_options import CodecOptions
from bson.regex import Regex
from pymongo.errors import BulkWriteError, PyMongoError

from tasklog.records import INDEXED_FIELDS

from ..base import Projection, Records
from ..errors import ProjectionError
from ..query import Cond, Logical, Node, Not, glob_to_regex

__all__ = ["MongoProjection", "translate"]

_LIVE = {"_dropped": {"$ne": True}}
_HIDE = {"_id": 0, "_seq": 0, "_dropped": 0}
_FLAG_LETTERS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


class MongoProjection(Projection):
    """Records in a MongoDB database: ``mongodb://host:port/dbname``."""

    persistent = True
    keeps_hubs = True
    datetime_resolution = timedelta(milliseconds=1)  # BSON dates: what MongoDB itself keeps

    def __init__(self, uri: str, timeout_ms: int = 3000) -> None:
        super().__init__()
        self.spec = uri
        parts = urlsplit(uri)
        dbname = parts.path.lstrip("/") or "tasklog"
        if "/" in dbname or "." in dbname or " " in dbname:
            raise ProjectionError(f"bad database name {dbname!r} in {uri}")
        try:
            self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                socketTimeoutMS=max(timeout_ms * 10, 30000), tz_aware=True, tzinfo=timezone.utc)
            self._client.admin.command("ping")
        except PyMongoError as exc:
            reason = str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0]
            raise ProjectionError(f"cannot reach MongoDB at {uri}: {reason}"[:300]) from None
        except Exception as exc:  # pymongo raises ValueError/ConfigurationError on a malformed URI
            raise ProjectionError(f"bad MongoDB URI {uri}: {exc}") from None
        opts: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=timezone.utc)
        self._db = self._client.get_database(dbname, codec_options=opts)
        self._records = self._db["records"]
        self._meta = self._db["meta"]
        self._guard(self._setup)

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except BulkWriteError as exc:
            first = (exc.details.get("writeErrors") or [{}])[0]
            raise ProjectionError(f"MongoDB refused a record: {first.get('errmsg', exc)}"[:400]) from None
        except PyMongoError as exc:
            raise ProjectionError(f"MongoDB at {self.spec} failed: {exc}"[:400]) from None

    def _setup(self) -> None:
        # _id is the msg_id, so it is the unique msg_id index; msg_id is also kept as a field.
        self._records.create_index("msg_id", unique=True)
        for field in INDEXED_FIELDS:
            self._records.create_index(field)
        doc = self._meta.find_one({"_id": "checkpoint"})
        self.last_seq = int(doc["seq"]) if doc else 0
        marks = self._meta.find_one({"_id": "marks"}) or {}
        self.log_identity, self.pinned = marks.get("log_identity"), marks.get("pinned")
        hubs = self._meta.find_one({"_id": "hubs"}) or {}
        self.hubs = {k: (v["hub"], int(v["seq"])) for k, v in hubs.items() if k != "_id"}

    def _load(self, msg_ids: set[str]) -> Records:
        def fetch() -> Records:
            out: Records = {}
            for doc in self._records.find({"_id": {"$in": list(msg_ids)}}):
                doc.pop("_id")
                out[doc["msg_id"]] = doc
            return out
        result: Records = self._guard(fetch)
        return result

    def _store(self, records: Records, changed: set[str], last_seq: int) -> None:
        self._write(records, changed, "checkpoint", {"seq": last_seq})

    def store_hubs(self, records: Records, changed: set[str], hubs: dict[str, tuple[str, int]]) -> None:
        fields = {identity: {"hub": hub, "seq": seq} for identity, (hub, seq) in hubs.items()}
        self._write(records, changed, "hubs", fields)

    def _write(self, records: Records, changed: set[str], checkpoint: str, fields: dict[str, Any]) -> None:
        """The ``changed`` records, then ``fields`` set in the meta document ``checkpoint``."""
        ops: list[Any] = [pymongo.ReplaceOne({"_id": m}, {"_id": m, **rec}, upsert=True) if (rec := records[m])
                          is not None else pymongo.DeleteOne({"_id": m}) for m in changed]  # None: a rewind's delete

        def write() -> None:
            if ops:
                self._records.bulk_write(ops, ordered=False)
            # The checkpoint comes after the records: a crash in between replays events that
            # each record's _seq then ignores.
            self._meta.update_one({"_id": checkpoint}, {"$set": fields}, upsert=True)
        self._guard(write)

    def _find(self, node: Logical, keys: list[str] | None) -> list[dict[str, Any]]:
        filt = _live_filter(node)
        proj = _HIDE if keys is None else {"_id": 0, **{k: 1 for k in keys}}
        found: list[dict[str, Any]] = self._guard(lambda: list(self._records.find(filt, proj)))
        return found

    def _count(self, node: Logical) -> int:
        n: int = self._guard(self._records.count_documents, _live_filter(node))
        return n

    def _history(self) -> list[str]:
        cursor = self._records.find(_LIVE, {"_id": 1}).sort([("submitted", 1), ("_id", 1)])
        ids: list[str] = self._guard(lambda: [d["_id"] for d in cursor])
        return ids

    def drop_all(self) -> None:
        """Drop the whole database (records, checkpoint, indexes)."""
        self._guard(self._client.drop_database, self._db.name)
        self.last_seq, self.log_identity, self.pinned = 0, None, None

    def _clear(self) -> None:
        """Delete every record and the checkpoint."""
        self._guard(self._records.delete_many, {})
        self._guard(self._meta.delete_many, {"_id": {"$in": ["checkpoint", "hubs"]}})

    def _save_marks(self) -> None:
        """Store which log the records come from and the event they are pinned at."""
        self._guard(self._meta.replace_one, {"_id": "marks"},
                    {"_id": "marks", "log_identity": self.log_identity, "pinned": self.pinned}, True)

    def close(self) -> None:
        """Close the client."""
        self._client.close()


def _regex(pattern: re.Pattern[str]) -> Regex[str]:
    flags = "".join(letter for flag, letter in _FLAG_LETTERS if pattern.flags & flag)
    return Regex(pattern.pattern, flags)


def _operand(op: str, arg: Any) -> Any:
    if op == "$regex":
        return _regex(arg)
    if op == "$glob":
        return Regex(glob_to_regex(arg, r"\z"), "s")
    if op in ("$in", "$nin", "$all"):
        return [_regex(a) if isinstance(a, re.Pattern) else a for a in arg]
    return arg


def _cond(c: Cond) -> dict[str, Any]:
    if c.op in ("$regex", "$glob"):
        return {c.path: {"$regex": _operand(c.op, c.arg)}}
    return {c.path: {c.op: _operand(c.op, c.arg)}}


def _live_filter(node: Logical) -> dict[str, Any]:
    """The filter of ``node`` over live records, as one flat document when the keys allow."""
    # A top-level $and wrapping the query kept SecantusDB from its indexes (BENCHMARKS.md, "Design
    # notes moved from the code"); a flat document is what every server plans best.
    # SecantusDB 0.7 answers a regex inside $in wrongly through an index (no match at all), so
    # those queries keep the wrapped form, which it scans.
    translated = translate(node)
    wrapped = {"$and": [_LIVE, translated]}
    if any(isinstance(c, Cond) and c.op in ("$in", "$nin", "$all") and any(isinstance(a, re.Pattern) for a in c.arg)
           for c in node.children):
        return wrapped
    flat: dict[str, Any] = dict(_LIVE)
    for part in _conjuncts(translated):
        for key, value in part.items():
            if key not in flat:
                flat[key] = value
            elif _mergeable(flat[key], value):  # {"$gte": a} and {"$lt": b} on one field: a range
                flat[key] = {**flat[key], **value}
            else:
                return wrapped
    return flat


def _conjuncts(filt: dict[str, Any]) -> list[dict[str, Any]]:
    """The documents a filter is the conjunction of (nested $and lists opened up)."""
    if set(filt) == {"$and"}:
        return [part for sub in filt["$and"] for part in _conjuncts(sub)]
    return [filt]


def _mergeable(a: Any, b: Any) -> bool:
    return (isinstance(a, dict) and isinstance(b, dict) and all(k.startswith("$") for k in (*a, *b))
            and not set(a) & set(b) and "$not" not in a and "$not" not in b)


def translate(node: Node) -> dict[str, Any]:
    """The MongoDB filter for a parsed query."""
    if isinstance(node, Cond):
        return _cond(node)
    if isinstance(node, Not):
        inner: dict[str, Any] = {}
        for c in node.inner:
            if c.op in ("$regex", "$glob"):
                return {node.path: {"$not": _operand(c.op, c.arg)}} if len(node.inner) == 1 else \
                    {"$nor": [{"$and": [_cond(x) for x in node.inner]}]}
            inner[c.op] = _operand(c.op, c.arg)
        return {node.path: {"$not": inner}}
    if not node.children:
        return {}
    return {node.op: [translate(c) for c in node.children]}
