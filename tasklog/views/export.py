"""Records written to a file: Parquet, JSON Lines or CSV, a batch at a time (bounded memory).

``write_records`` reads its records ``BATCH`` at a time and writes each batch before it reads the
next: a Parquet file gets one row group per batch, and nothing but the batch in hand is held.

- **jsonl**: each record as the one line of Extended JSON ``tasklog query`` prints for it
  (``jsonfmt.dumps``), whatever it holds. Needs nothing beyond tasklog.
- **parquet** and **csv** (``pip install 'tasklog[serve]'``: pyarrow) have typed columns, one per
  field of the records, in ``RECORD_KEYS`` order (those of a ``keys`` selection only), then the
  other fields the records carry (annotations), then ``_irregular``:

  ============================================  =============================================
  submitted, started, completed, received       ``timestamp("us", tz="UTC")``
  msg_id, client_uuid, engine_uuid, queue,      string
  label, resubmitted, resubmitted_from,
  stdout, stderr
  buffers, result_buffers                       ``X_count`` and ``X_bytes`` (int64: how many
                                                buffers, their total size); with
                                                ``buffers=True`` the bytes themselves:
                                                ``list<binary>`` in Parquet, in CSV the
                                                buffers' base64 joined by spaces
  any other field (header, content, result_*,   its Extended JSON text (string), as
  execute_*, display_data, error, annotations)  ``tasklog query`` prints it
  ============================================  =============================================

  A missing field, or a None, is null. Times keep their microseconds (Extended JSON, so jsonl and
  the JSON columns, keeps milliseconds, as ``tasklog query`` prints them). A naive datetime is
  taken as UTC, as the Extended JSON writes it (a log never holds one: an appended naive time is
  read as local time and stored in UTC, ``tasklog.fields.utc``).

**The irregular rule.** A log holds whatever a Hub was given, so a value may not fit its column
(an annotated label of 7, a ``completed`` of "yesterday", buffers that are not a list of bytes),
and a field may first appear after the columns were fixed (by the first batch, when no ``keys``
selection names them; or a field whose name is one a column already has, such as
``buffers_count``). Such a value is never dropped and never stops the export: its column holds
null, and the row's ``_irregular`` column holds one Extended JSON object of every such field
with its value as the record held it (null when everything fitted). A JSON column takes any value.
"""

from __future__ import annotations

import base64
import importlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO

from ..errors import InterfaceError, MissingExtraError
from ..records import RECORD_KEYS
from .jsonfmt import dumps

__all__ = ["FORMATS", "BATCH", "IRREGULAR", "check_format", "columns", "write_records"]

FORMATS = ("parquet", "jsonl", "csv")
#: Records read, converted and written at a time: a Parquet row group each.
BATCH = 2000
#: The column of the values that did not fit their own (see the module's docstring).
IRREGULAR = "_irregular"
_TIMES = frozenset({"submitted", "started", "completed", "received"})
_TEXTS = frozenset({"msg_id", "client_uuid", "engine_uuid", "queue", "label", "resubmitted", "resubmitted_from",
                    "stdout", "stderr"})
_BUFFERS = frozenset({"buffers", "result_buffers"})

# What each kind of field converts to, per row: the column values, or _MISFIT (irregular).
_MISFIT = object()
_Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class _Field:
    """One field of the records and the columns it is written to (two for buffer sizes)."""

    key: str
    kind: str  # time | text | json | sizes | bytes
    names: tuple[str, ...]


def check_format(fmt: str) -> None:
    """Raise InterfaceError for an unknown format, MissingExtraError when it needs pyarrow and pyarrow is missing."""
    if fmt not in FORMATS:
        raise InterfaceError(f"unknown format {fmt!r}: give one of {', '.join(FORMATS)}")
    if fmt != "jsonl":
        _arrow()


def _arrow() -> Any:
    """pyarrow (typed as Any: an optional extra, without type information)."""
    try:
        pa = importlib.import_module("pyarrow")
        for sub in ("csv", "parquet"):
            importlib.import_module(f"pyarrow.{sub}")
    except ImportError:
        raise MissingExtraError("pyarrow", "serve", "tasklog export to parquet or csv") from None
    return pa


def _fields(keys: Iterable[str], buffers: bool) -> list[_Field]:
    """The fields of ``keys`` with their columns: known ones in RECORD_KEYS order, then the others."""
    chosen = list(dict.fromkeys(keys))
    ordered = [k for k in RECORD_KEYS if k in chosen] + [k for k in chosen if k not in RECORD_KEYS]
    fields: list[_Field] = []
    taken = {IRREGULAR}
    for key in ordered:
        if key in _BUFFERS and not buffers:
            field = _Field(key, "sizes", (f"{key}_count", f"{key}_bytes"))
        else:
            kind = ("bytes" if key in _BUFFERS else "time" if key in _TIMES else "text" if key in _TEXTS
                    else "json")
            field = _Field(key, kind, (key,))
        if taken.isdisjoint(field.names):  # an annotation named buffers_count: irregular, not a clash
            fields.append(field)
            taken.update(field.names)
    return fields


def columns(keys: Sequence[str] | None = None, buffers: bool = False, first: Iterable[dict[str, Any]] = ()) -> \
        list[str]:
    """The columns of a Parquet or CSV export of records read with ``keys`` (None: whole records,
    and the other fields ``first`` records hold)."""
    return [name for field in _plan(keys, buffers, list(first)) for name in field.names] + [IRREGULAR]


def _plan(keys: Sequence[str] | None, buffers: bool, first: list[dict[str, Any]]) -> list[_Field]:
    """The fields written: those of a ``keys`` selection, or every known one and the others ``first`` holds."""
    if keys is not None:
        return _fields(keys, buffers)
    others = dict.fromkeys(k for rec in first for k in rec if k not in RECORD_KEYS)
    return _fields([*RECORD_KEYS, *others], buffers)


def _batches(records: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """``records`` in lists of at most BATCH, each read only when the one before was written."""
    it = iter(records)
    while True:
        batch = list(itertools.islice(it, BATCH))
        if not batch:
            return
        yield batch


def write_records(records: Iterable[dict[str, Any]], fmt: str, out: BinaryIO, buffers: bool = False,
                  progress: Callable[[int], None] | None = None, keys: Sequence[str] | None = None) -> int:
    """Write every record to ``out`` as ``fmt``, a batch at a time (``keys``: their selection); return how many."""
    check_format(fmt)
    batches = _batches(records)
    if fmt == "jsonl":
        n = 0
        for batch in batches:
            out.write("".join(f"{dumps(rec)}\n" for rec in batch).encode("utf-8"))
            n += len(batch)
            if progress is not None:
                progress(len(batch))
        return n
    first = next(batches, [])
    fields = _plan(keys, buffers, first)
    return _write_arrow(itertools.chain([first] if first else [], batches), fmt, out, fields, progress)


def _write_arrow(batches: Iterable[list[dict[str, Any]]], fmt: str, out: BinaryIO, fields: list[_Field],
                 progress: Callable[[int], None] | None) -> int:
    """Write the batches through pyarrow's Parquet or CSV writer; nothing more reaches ``out`` once one fails."""
    pa = _arrow()
    schema = _schema(pa, fields, fmt)
    sink = _Sink(out)
    writer = (pa.parquet.ParquetWriter(sink, schema) if fmt == "parquet"
              else pa.csv.CSVWriter(sink, schema))
    n = 0
    try:
        for batch in batches:
            writer.write_batch(pa.RecordBatch.from_arrays(_arrays(pa, schema, batch, fields, fmt), schema=schema))
            n += len(batch)
            if progress is not None:
                progress(len(batch))
    except BaseException:
        sink.failed = True  # no footer after a failure: a reader of a pipe sees a broken file, not a short one
        with suppress(Exception):
            writer.close()
        raise
    writer.close()
    return n


def _schema(pa: Any, fields: list[_Field], fmt: str) -> Any:
    """The Arrow schema of ``fields`` written as ``fmt``."""
    types = {"time": pa.timestamp("us", tz="UTC"), "text": pa.string(), "json": pa.string(),
             "bytes": pa.list_(pa.binary()) if fmt == "parquet" else pa.string()}
    cols = []
    for field in fields:
        if field.kind == "sizes":
            cols += [pa.field(name, pa.int64()) for name in field.names]
        else:
            cols.append(pa.field(field.key, types[field.kind]))
    return pa.schema([*cols, pa.field(IRREGULAR, pa.string())])


def _arrays(pa: Any, schema: Any, batch: list[dict[str, Any]], fields: list[_Field], fmt: str) -> list[Any]:
    """The batch's columns as Arrow arrays; each value that did not fit noted in its row's ``_irregular``."""
    misfits: dict[int, dict[str, Any]] = {}
    known = {field.key for field in fields}
    for row, rec in enumerate(batch):
        for key in rec.keys() - known:
            misfits.setdefault(row, {})[key] = rec[key]
    values: list[list[Any]] = []
    for field in fields:
        convert = _CONVERT[field.kind] if field.kind != "bytes" or fmt == "parquet" else _base64
        null = (None, None) if field.kind == "sizes" else None
        column: list[Any] = []
        for row, rec in enumerate(batch):
            value = rec.get(field.key)
            got = null if value is None else convert(value)
            if got is _MISFIT:
                misfits.setdefault(row, {})[field.key] = value
                got = null
            column.append(got)
        values += [[v[0] for v in column], [v[1] for v in column]] if field.kind == "sizes" else [column]
    values.append([dumps(misfits[row]) if row in misfits else None for row in range(len(batch))])
    return [pa.array(column, type=schema.field(i).type) for i, column in enumerate(values)]


def _time(value: Any) -> Any:
    if not isinstance(value, datetime):
        return _MISFIT
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _text(value: Any) -> Any:
    return value if isinstance(value, str) else _MISFIT


def _buffer_list(value: Any) -> list[bytes] | None:
    """``value`` as a list of bytes; None when it is not one."""
    if not isinstance(value, (list, tuple)):
        return None
    out = []
    for item in value:
        if not isinstance(item, (bytes, bytearray, memoryview)):
            return None
        out.append(bytes(item))
    return out


def _sizes(value: Any) -> Any:
    if not isinstance(value, (list, tuple)) or not all(isinstance(b, (bytes, bytearray, memoryview)) for b in value):
        return _MISFIT
    return len(value), sum(memoryview(b).nbytes for b in value)


def _bytes(value: Any) -> Any:
    found = _buffer_list(value)
    return _MISFIT if found is None else found


def _base64(value: Any) -> Any:
    found = _buffer_list(value)
    return _MISFIT if found is None else " ".join(base64.b64encode(b).decode("ascii") for b in found)


_CONVERT: dict[str, _Converter] = {"time": _time, "text": _text, "json": dumps, "sizes": _sizes, "bytes": _bytes}


class _Sink:
    """What pyarrow writes to: ``out`` (a pipe too: positions are counted, never asked), closed by its owner."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.position = 0
        self.failed = False
        self.closed = False

    def write(self, data: Any) -> int:
        """Write ``data`` to ``out``, unless the export failed."""
        if self.failed:
            raise OSError("the export failed: nothing more is written")
        written = memoryview(data).nbytes
        self.out.write(data)
        self.position += written
        return written

    def tell(self) -> int:
        """Bytes written so far."""
        return self.position

    def flush(self) -> None:
        """Flush ``out``."""
        self.out.flush()

    def close(self) -> None:
        """Flush, and leave ``out`` open: whoever opened it closes it."""
        if not self.failed:
            self.out.flush()
        self.closed = True

    def writable(self) -> bool:
        """Always: a sink is for writing."""
        return True

    def seekable(self) -> bool:
        """Never: positions are counted, and a pipe cannot seek."""
        return False
