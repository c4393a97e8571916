"""A one-file HTML report of what the cluster did: charts (matplotlib, embedded as PNG) and tables.

Read in one pass over the tasks' lifecycle states (from the log's read model, or its events; a
pruned log's start from its snapshot's tasks: a ``Baseline``), each tallied as it comes
(``tally``): a report of a million tasks never holds a row per task. Needs the ``report`` extra
(matplotlib); ``MissingExtraError`` says so otherwise.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
import logging
import warnings
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from ..baseline import Baseline
from ..errors import InterfaceError, MissingExtraError
from ..lifecycle import Lifecycle, TaskState
from ..log import TaskLog
from .tally import CHAINS, TIMES, Tally, TaskRow, at, micros

__all__ = ["TaskRow", "busy_fraction", "check_extra", "collect", "states", "write_report"]

_GANTT_MAX = 4000  # tasks drawn one bar each; past that, the busy fraction per engine and time bin
_BINS = 240  # time bins of that busy fraction: about one per 3 pixels of the chart
_ROWS = 40  # engines drawn a row each at most: past it, a busy fraction image, every k-th one named


def states(log: TaskLog, progress: Callable[[int], None] | None = None,
           base: Baseline | None = None) -> Iterator[TaskState]:
    """Each task's lifecycle state, from every event in the log (or from the tasks of ``base``, a
    snapshot or the read model, and the events after it): streamed when nothing follows ``base``."""
    if base is not None and base.seq >= log.last_seq:
        yield from base.tasks()
        return
    life = Lifecycle(None if base is None else {task.msg_id: task for task in base.tasks()})
    for chunk in log.read_chunks(1 if base is None else base.seq + 1):
        for _, ev in chunk:
            life.apply(ev)
        if progress is not None:
            progress(len(chunk))
    yield from life.tasks.values()


def collect(log: TaskLog, progress: Callable[[int], None] | None = None,
            base: Baseline | None = None) -> list[TaskRow]:
    """One row per task of ``states``, in a list."""
    return [TaskRow.of(task) for task in states(log, progress, base)]


def check_extra() -> None:
    """Raise MissingExtraError unless the report's extra (matplotlib) is installed."""
    _pyplot()


def _pyplot() -> Any:
    # matplotlib logs a warning when it cannot write its cache directory (it makes a temporary
    # one): the report says what it has to say in the report, never on stderr.
    quiet = logging.getLogger("matplotlib")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("matplotlib", "report", "tasklog report") from None
    finally:
        quiet.setLevel(level)
    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=96)
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _pct(ordered: Any, q: float) -> float:
    return float(ordered[min(int(q * len(ordered)), len(ordered) - 1)])


def _throughput(plt: Any, tally: Tally) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ends: list[int] = []
    for name in TIMES:
        times = sorted(tally.times[name])
        if times:
            ax.step(*_steps(times), where="post", label=name)
            ends += (times[0], times[-1])
    ax.set_ylabel("tasks (cumulative)")
    ax.set_title("Tasks submitted, started and completed over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    _time_axis(ax, (at(min(ends)), at(max(ends))) if ends else None)
    return _png(fig)


_STEPS = 2000  # points of a cumulative curve: about two per pixel of the chart


def _steps(times: list[int]) -> tuple[list[datetime], list[int]]:
    """The points of the cumulative count of sorted ``times`` (µs: how many by each), at most about
    ``_STEPS`` of them and always the last: matplotlib took seconds to draw one per task."""
    every = max(len(times) // _STEPS, 1)
    picked = [*range(0, len(times), every), len(times) - 1]
    return [at(times[i]) for i in picked], [i + 1 for i in picked]


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


def _engines(plt: Any, tally: Tally) -> tuple[str, str]:
    """The engines chart and its alt text, which says which of its two forms it took."""
    names = sorted(tally.engines)
    n = len(tally.ran_engine)
    # A row per engine, up to _ROWS: 10,000 engine ids (a new one at each restart) drew a PNG
    # 216,057 pixels tall in two minutes.
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.45 * min(max(len(names), 1), _ROWS)))
    first, last = (min(tally.ran_start), max(tally.ran_end)) if n else (0, 0)
    bars = n <= _GANTT_MAX and len(names) <= _ROWS
    if bars:
        ran = _ran(tally)
        for i, engine in enumerate(names):
            mine = [(start, end, failed) for e, start, end, failed in ran if e == engine]
            ax.broken_barh([(start, end - start) for start, end, _ in mine], (i - 0.4, 0.8),
                           facecolors=["#d62728" if failed else "#1f77b4" for *_, failed in mine],
                           edgecolor="white", linewidth=0.3)  # back-to-back tasks stay distinct bars
        ax.set_title("Engines over time: one bar per task (red: failed)")
    else:  # bars a pixel wide each say nothing: the share of each interval an engine was busy
        busy = _busy(tally, names, first, last)
        mdates: Any = importlib.import_module("matplotlib.dates")
        shown = ax.imshow(busy, aspect="auto", cmap="Blues", vmin=0, vmax=1, origin="lower", interpolation="nearest",
                          extent=(mdates.date2num(at(first)), mdates.date2num(at(last)), -0.5, len(names) - 0.5))
        ax.xaxis_date()
        fig.colorbar(shown, ax=ax, label="busy", pad=0.01)
        ax.set_title(f"Engines over time: busy fraction ({n:,} tasks, {len(names):,} engines)")
    every = -(-len(names) // _ROWS)  # past _ROWS engines, every k-th one named
    ax.set_yticks(range(0, len(names), every))
    ax.set_yticklabels([e[:12] for e in names[::every]])
    ax.grid(alpha=0.3, axis="x")
    _time_axis(ax, (at(first), at(last)) if n else None, 0.05 if bars else 0)
    return _png(fig), "engines: one bar per task" if bars else "engines: busy fraction"


def _ran(tally: Tally) -> list[tuple[str, datetime, datetime, bool]]:
    """The tasks that ran, as (engine, start, end, failed): only for a chart of few enough to draw each."""
    name = {i: engine for engine, i in tally.engines.items()}
    return [(name[e], at(a), at(b), bool(f))
            for e, a, b, f in zip(tally.ran_engine, tally.ran_start, tally.ran_end, tally.ran_failed)]


def busy_fraction(ran: list[tuple[str, datetime, datetime, bool]], engines: list[str], first: datetime,
                  last: datetime) -> list[list[float]]:
    """Per engine and per time bin, the share of the bin its tasks ran (capped at 1)."""
    tally = Tally()
    for engine, start, end, failed in ran:
        tally.add(TaskState("", started=start, completed=end, engine_uuid=engine,
                            reply_status="error" if failed else None))
    return _busy(tally, engines, micros(first), micros(last))


def _busy(tally: Tally, engines: list[str], first: int, last: int) -> list[list[float]]:
    """``busy_fraction`` of the tally's tasks that ran, between ``first`` and ``last`` (µs)."""
    # Per engine, the time its tasks ran before each bin's edge, from sorted starts and ends:
    # F(t) = sum of ends before t + t * (tasks started by t, not ended) - sum of starts before t.
    # A bin's busy time is F at its right edge less F at its left: a task a loop over bins each
    # took a second at 200,000 tasks (issue 22).
    np: Any = importlib.import_module("numpy")  # matplotlib's own dependency
    span = max((last - first) / 1e6, 1e-6)
    edges = np.linspace(0.0, span, _BINS + 1)
    engine = np.frombuffer(tally.ran_engine, dtype=np.int32)
    starts = (np.frombuffer(tally.ran_start, dtype=np.int64) - first) / 1e6
    ends = (np.frombuffer(tally.ran_end, dtype=np.int64) - first) / 1e6
    out = []
    for name in engines:
        mine = (engine == tally.engines[name]) & (ends >= starts)
        a, b = np.sort(starts[mine]), np.sort(ends[mine])
        a_sum, b_sum = np.concatenate(([0.0], np.cumsum(a))), np.concatenate(([0.0], np.cumsum(b)))
        began, ended = np.searchsorted(a, edges), np.searchsorted(b, edges)
        ran = b_sum[ended] + edges * (began - ended) - a_sum[began]
        out.append(np.minimum(np.diff(ran) / (span / _BINS), 1.0).tolist())
    return out


def _distribution(plt: Any, durations: array[float], what: str) -> tuple[str, str]:
    fig, ax = plt.subplots(figsize=(4, 3))
    # An array, not a list: matplotlib looked into each of a list's 200,000 floats (two seconds).
    np: Any = importlib.import_module("numpy")  # matplotlib's own dependency
    values = np.sort(np.frombuffer(durations))
    if len(values):
        ax.hist(values, bins=40, color="#2ca02c")
        for q, style in ((0.5, "-"), (0.9, "--"), (0.99, ":")):
            ax.axvline(_pct(values, q), color="k", linestyle=style, label=f"p{int(q * 100)} {_pct(values, q):.3g} s")
        ax.legend(fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_title(what)
    summary = (f"p50 {_pct(values, 0.5):.3g} s, p90 {_pct(values, 0.9):.3g} s, p99 {_pct(values, 0.99):.3g} s"
               if len(values) else "no tasks")
    return _png(fig), summary


def _failures(plt: Any, tally: Tally) -> str | None:
    if not tally.failures:
        return None
    # Ties by name: the same chart whatever order the tasks came in.
    names, values = zip(*sorted(tally.failures.items(), key=lambda kv: (-kv[1], kv[0]))[:12])
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.4 * len(names)))
    ax.barh(names, values, color="#d62728")
    ax.invert_yaxis()
    ax.set_title("Failures by error name")
    return _png(fig)


def _charts(plt: Any, tally: Tally) -> list[str]:
    """The HTML of the charts: throughput, engines, waits and run times, failures."""
    wait_png, wait_txt = _distribution(plt, tally.waits, "Queue wait (submitted to started)")
    run_png, run_txt = _distribution(plt, tally.runs, "Run time (started to completed)")
    fail_png = _failures(plt, tally)
    engines_png, engines_alt = _engines(plt, tally)
    return [
        f"<h2>Throughput</h2><img alt='throughput' src='data:image/png;base64,{_throughput(plt, tally)}'>",
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
    (starting from the tasks of ``base``, a snapshot or the read model, and the events after it, if given)."""
    plt = _pyplot()
    tally = Tally()
    for task in states(log, progress, base):
        tally.add(task)
    if not tally.tasks:
        raise InterfaceError(f"{log.path} holds no task to report on")
    with _drawing(plt):
        charts = _charts(plt, tally)
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>tasklog report</title><style>{_CSS}</style>"
        "</head><body>",
        f"<h1>What the cluster did</h1><p class=muted>{html.escape(log.path)}: {_source(log, base)}"
        f", report made {made}</p>",
        "<div class=cards>" + "".join(f"<div class=card><b>{v:,}</b>{k}</div>" for k, v in _cards(tally)) + "</div>",
        *charts,
        "<h2>Slowest tasks</h2>" + _table(["msg_id", "label", "engine", "run (s)", "status"],
                                          [[r.msg_id, r.label or "", r.engine or "", f"{r.run or 0:.3f}",
                                            r.status or ""] for r in tally.slowest]),
        "<h2>Resubmissions</h2>" + _table(["original", "resubmitted as", "original's status"],
                                          [[r.msg_id, r.resubmitted_as, r.status or "not run"] for r in tally.chains])
        + (f"<p class=muted>and {tally.resubmitted - CHAINS:,} more</p>" if tally.resubmitted > CHAINS else ""),
        "</body></html>",
    ]
    with open(out, "w") if isinstance(out, str) else nullcontext(out) as f:  # a stream: `report -o -`
        f.write("\n".join(parts))
    return tally.tasks


def _cards(tally: Tally) -> list[tuple[str, int]]:
    return [("tasks", tally.tasks), ("completed", tally.done), ("failed", tally.failed),
            ("running or pending", tally.tasks - tally.done - tally.dropped), ("purged", tally.dropped),
            ("resubmitted", tally.resubmitted), ("engines", len(tally.engines_done))]
