"""A one-file HTML report of what the cluster did: charts (matplotlib, embedded as PNG) and tables.

Read from the log's events in one pass: a small row per task (times, engine, status), not the
records (a pruned log's rows start from its snapshot's tasks: a ``Baseline``). Needs the ``report``
extra (matplotlib); ``MissingExtraError`` says so otherwise.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from ..baseline import Baseline
from ..errors import InterfaceError, MissingExtraError
from ..lifecycle import Lifecycle, TaskState
from ..log import TaskLog
from ..records import FAILED_STATUSES

__all__ = ["TaskRow", "busy_fraction", "check_extra", "collect", "write_report"]

_GANTT_MAX = 4000  # tasks drawn one bar each; past that, the busy fraction per engine and time bin
_BINS = 240  # time bins of that busy fraction: about one per 3 pixels of the chart


@dataclass(slots=True)
class TaskRow:
    """What the report needs of one task."""

    msg_id: str
    submitted: datetime | None = None
    started: datetime | None = None
    completed: datetime | None = None
    engine: str | None = None
    status: str | None = None
    error: str | None = None
    label: str | None = None
    resubmitted_as: str | None = None
    dropped: bool = False

    @property
    def wait(self) -> float | None:
        """Seconds between submission and start."""
        return _secs(self.submitted, self.started)

    @property
    def run(self) -> float | None:
        """Seconds between start and completion."""
        return _secs(self.started, self.completed)


def _secs(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None and b >= a else None


def collect(log: TaskLog, progress: Callable[[int], None] | None = None,
            base: Baseline | None = None) -> list[TaskRow]:
    """One row per task, from every event in the log (or from the tasks of ``base``, a snapshot or
    the read model, and the events after it)."""
    if base is not None and base.seq >= log.last_seq:  # nothing after it: its tasks, one at a time
        return [_row(task) for task in base.tasks()]
    life = Lifecycle(None if base is None else {task.msg_id: task for task in base.tasks()})
    for chunk in log.read_chunks(1 if base is None else base.seq + 1):
        for _, ev in chunk:
            life.apply(ev)
        if progress is not None:
            progress(len(chunk))
    return [_row(task) for task in life.tasks.values()]


def _row(s: TaskState) -> TaskRow:
    return TaskRow(s.msg_id, s.submitted, s.started, s.completed, s.engine_uuid, s.status, s.error, s.label,
                   s.resubmitted, s.dropped)


def check_extra() -> None:
    """Raise MissingExtraError unless the report's extra (matplotlib) is installed."""
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("matplotlib", "report", "tasklog report") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=96)
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def _throughput(plt: Any, rows: list[TaskRow]) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for name, when in (("submitted", "submitted"), ("started", "started"), ("completed", "completed")):
        times = sorted(getattr(r, when) for r in rows if getattr(r, when) is not None)
        if times:
            ax.step(*_steps(times), where="post", label=name)
    ax.set_ylabel("tasks (cumulative)")
    ax.set_title("Tasks submitted, started and completed over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    times = [t for r in rows for t in (r.submitted, r.started, r.completed) if t is not None]
    _time_axis(ax, (min(times), max(times)) if times else None)
    return _png(fig)


_STEPS = 2000  # points of a cumulative curve: about two per pixel of the chart


def _steps(times: list[datetime]) -> tuple[list[datetime], list[int]]:
    """The points of the cumulative count of sorted ``times`` (how many by each), at most about
    ``_STEPS`` of them and always the last: matplotlib took seconds to draw one per task."""
    every = max(len(times) // _STEPS, 1)
    picked = [*range(0, len(times), every), len(times) - 1]
    return [times[i] for i in picked], [i + 1 for i in picked]


# matplotlib draws dates in years 1-9999 only, and pads an axis past its data and rounds its ticks
# outwards: a task completed at 9999-12-31 raised its ValueError (issue 20, item 12). The axis is
# the data's span and a margin, kept a day inside those years: a time past them is drawn at the
# edge, and the tables show it as it is.
_AXIS_FIRST = datetime(1, 1, 2, tzinfo=timezone.utc)
_AXIS_LAST = datetime(9999, 12, 30, tzinfo=timezone.utc)


def _time_axis(ax: Any, span: tuple[datetime, datetime] | None, margin: float = 0.05) -> None:
    """Dates as a person reads them (hours and minutes, or seconds for a short log), UTC, over ``span``."""
    # Typed as Any: matplotlib is an optional extra, typed in some versions and not in others.
    mdates: Any = importlib.import_module("matplotlib.dates")
    locator = mdates.AutoDateLocator(tz=timezone.utc)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
    ax.set_xlabel("time (UTC)")
    if span is not None:
        first, last = (min(max(t, _AXIS_FIRST), _AXIS_LAST) for t in span)
        pad = max((last - first) * margin, timedelta(seconds=1))  # never one point: matplotlib would widen it
        ax.set_xlim(first - pad if first - _AXIS_FIRST > pad else _AXIS_FIRST,
                    last + pad if _AXIS_LAST - last > pad else _AXIS_LAST)


def _engines(plt: Any, rows: list[TaskRow]) -> tuple[str, str]:
    """The engines chart and its alt text, which says which of its two forms it took."""
    ran = [(r.engine or "?", r.started, r.completed, r.status in FAILED_STATUSES) for r in rows
           if r.started is not None and r.completed is not None]
    engines = sorted({engine for engine, *_ in ran})
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.45 * max(len(engines), 1)))
    if len(ran) <= _GANTT_MAX:
        for i, engine in enumerate(engines):
            mine = [(start, end, failed) for e, start, end, failed in ran if e == engine]
            ax.broken_barh([(start, end - start) for start, end, _ in mine], (i - 0.4, 0.8),
                           facecolors=["#d62728" if failed else "#1f77b4" for *_, failed in mine],
                           edgecolor="white", linewidth=0.3)  # back-to-back tasks stay distinct bars
        ax.set_title("Engines over time: one bar per task (red: failed)")
    else:  # bars a pixel wide each say nothing: the share of each interval an engine was busy
        first, last = min(start for _, start, _, _ in ran), max(end for _, _, end, _ in ran)
        busy = busy_fraction(ran, engines, first, last)
        mdates: Any = importlib.import_module("matplotlib.dates")
        shown = ax.imshow(busy, aspect="auto", cmap="Blues", vmin=0, vmax=1, origin="lower", interpolation="nearest",
                          extent=(mdates.date2num(first), mdates.date2num(last), -0.5, len(engines) - 0.5))
        ax.xaxis_date()
        fig.colorbar(shown, ax=ax, label="busy", pad=0.01)
        ax.set_title(f"Engines over time: busy fraction ({len(ran):,} tasks)")
    ax.set_yticks(range(len(engines)))
    ax.set_yticklabels([e[:12] for e in engines])
    ax.grid(alpha=0.3, axis="x")
    span = (min(start for _, start, _, _ in ran), max(end for _, _, end, _ in ran)) if ran else None
    _time_axis(ax, span, 0.05 if len(ran) <= _GANTT_MAX else 0)
    return _png(fig), "engines: one bar per task" if len(ran) <= _GANTT_MAX else "engines: busy fraction"


def busy_fraction(ran: list[tuple[str, datetime, datetime, bool]], engines: list[str], first: datetime,
                  last: datetime) -> list[list[float]]:
    """Per engine and per time bin, the share of the bin its tasks ran (capped at 1)."""
    span = max((last - first).total_seconds(), 1e-6)
    width = span / _BINS
    row = {engine: i for i, engine in enumerate(engines)}
    busy = [[0.0] * _BINS for _ in engines]
    for engine, start, end, _ in ran:
        a, b = (start - first).total_seconds(), (end - first).total_seconds()
        for k in range(int(a / width), min(int(b / width), _BINS - 1) + 1):
            busy[row[engine]][k] += max(0.0, min(b, (k + 1) * width) - max(a, k * width)) / width
    return [[min(x, 1.0) for x in bins] for bins in busy]


def _distribution(plt: Any, values: list[float], what: str) -> tuple[str, str]:
    fig, ax = plt.subplots(figsize=(4, 3))
    if values:
        ax.hist(values, bins=40, color="#2ca02c")
        for q, style in ((0.5, "-"), (0.9, "--"), (0.99, ":")):
            ax.axvline(_pct(values, q), color="k", linestyle=style, label=f"p{int(q * 100)} {_pct(values, q):.3g} s")
        ax.legend(fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_title(what)
    summary = (f"p50 {_pct(values, 0.5):.3g} s, p90 {_pct(values, 0.9):.3g} s, p99 {_pct(values, 0.99):.3g} s"
               if values else "no tasks")
    return _png(fig), summary


def _failures(plt: Any, rows: list[TaskRow]) -> str | None:
    counts = Counter(r.error or r.status or "?" for r in rows if r.status in FAILED_STATUSES)
    if not counts:
        return None
    names, values = zip(*counts.most_common(12))
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.4 * len(names)))
    ax.barh(names, values, color="#d62728")
    ax.invert_yaxis()
    ax.set_title("Failures by error name")
    return _png(fig)


def _charts(plt: Any, rows: list[TaskRow]) -> list[str]:
    """The HTML of the charts: throughput, engines, waits and run times, failures."""
    wait_png, wait_txt = _distribution(plt, [w for r in rows if (w := r.wait) is not None],
                                       "Queue wait (submitted to started)")
    run_png, run_txt = _distribution(plt, [x for r in rows if (x := r.run) is not None],
                                     "Run time (started to completed)")
    fail_png = _failures(plt, rows)
    engines_png, engines_alt = _engines(plt, rows)
    return [
        f"<h2>Throughput</h2><img alt='throughput' src='data:image/png;base64,{_throughput(plt, rows)}'>",
        f"<h2>Engines</h2><img alt='{engines_alt}' src='data:image/png;base64,{engines_png}'>",
        f"<h2>Waiting and running</h2><p>Queue wait: {wait_txt}. Run time: {run_txt}.</p><div class=pair>"
        f"<img alt='queue wait' src='data:image/png;base64,{wait_png}'>"
        f"<img alt='run time' src='data:image/png;base64,{run_png}'></div>",
        "<h2>Failures</h2>" + (f"<img alt='failures' src='data:image/png;base64,{fail_png}'>" if fail_png
                               else "<p class=muted>none</p>"),
    ]


@contextmanager
def _drawing(plt: Any) -> Iterator[None]:
    """Charts drawn quietly, their text as it is."""
    # Issue 20 (items 12, 14): matplotlib's warnings (a layout too narrow for long names, a glyph the
    # font lacks for a control character) went to stderr, and a `$` in an engine id, label or error
    # name was parsed as mathematics and raised. The charts say what the log holds, whatever it is.
    with warnings.catch_warnings(), plt.rc_context({"text.parse_math": False}):
        warnings.simplefilter("ignore")
        yield


def _source(log: TaskLog, base: Baseline | None) -> str:
    """Which events the report read."""
    if base is None:
        text = f"events {log.start_seq}..{log.last_seq}"
    else:
        text = f"tasks as of event {base.seq}" + (f", then events {base.seq + 1}..{log.last_seq}"
                                                  if log.last_seq > base.seq else "")
    if log.start_seq > 1:
        text += f" (events 1..{log.start_seq - 1} were pruned: a task purged before then is only counted)"
    return text


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if rows else "<p class=muted>none</p>"


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.6em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#f5f7fa;border-radius:8px;padding:.7em 1em}
.card b{display:block;font-size:1.4em}.pair{display:flex;gap:1em;flex-wrap:wrap}img{max-width:100%}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
.muted{color:#888}"""


def write_report(log: TaskLog, out: str | TextIO, progress: Callable[[int], None] | None = None,
                 base: Baseline | None = None) -> int:
    """Write the report of ``log`` (one self-contained HTML file) to a path or a stream; return its tasks
    (starting from the tasks of ``base``, a snapshot, and the events after it, if given)."""
    plt = _pyplot()
    rows = collect(log, progress, base)
    if not rows:
        raise InterfaceError(f"{log.path} holds no task to report on")
    with _drawing(plt):
        charts = _charts(plt, rows)
    done = [r for r in rows if r.completed is not None and not r.dropped]
    dropped = sum(r.dropped for r in rows)
    slowest = sorted((r for r in rows if r.run is not None), key=lambda r: -(r.run or 0))[:10]
    chains = [r for r in rows if r.resubmitted_as]
    cards = [("tasks", len(rows)), ("completed", len(done)), ("failed", sum(r.status in FAILED_STATUSES for r in done)),
             ("running or pending", len(rows) - len(done) - dropped), ("purged", dropped),
             ("resubmitted", len(chains)), ("engines", len({r.engine for r in done if r.engine}))]
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>tasklog report</title><style>{_CSS}</style>"
        "</head><body>",
        f"<h1>What the cluster did</h1><p class=muted>{html.escape(log.path)}: {_source(log, base)}"
        f", report made {made}</p>",
        "<div class=cards>" + "".join(f"<div class=card><b>{v:,}</b>{k}</div>" for k, v in cards) + "</div>",
        *charts,
        "<h2>Slowest tasks</h2>" + _table(["msg_id", "label", "engine", "run (s)", "status"],
                                          [[r.msg_id, r.label or "", r.engine or "", f"{r.run:.3f}", r.status or ""]
                                           for r in slowest]),
        "<h2>Resubmissions</h2>" + _table(["original", "resubmitted as", "original's status"],
                                          [[r.msg_id, r.resubmitted_as, r.status or "not run"] for r in chains[:20]])
        + (f"<p class=muted>and {len(chains) - 20:,} more</p>" if len(chains) > 20 else ""),
        "</body></html>",
    ]
    with open(out, "w") if isinstance(out, str) else nullcontext(out) as f:  # a stream: `report -o -`
        f.write("\n".join(parts))
    return len(rows)
