"""The timeline page's data: engines against time, in a window a page zooms to.

Few enough tasks in the window come as slices (one per task run, to click through to its
page); more than a browser can draw come aggregated: for each engine, how many tasks ran on
average in each of ``width`` columns of the window, computed from sorted starts and ends with
prefix sums (exact, whatever the number of tasks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .tasks import Arrays

__all__ = ["lanes", "MAX_SLICES", "MAX_LANES"]

#: At most this many slices in a window; past it, columns.
MAX_SLICES = 4000
#: Engines drawn, busiest first (the others counted).
MAX_LANES = 64
_MAX_WIDTH = 4000


def lanes(t: Arrays, start: int | None, stop: int | None, width: int, now: int) -> dict[str, Any]:
    """Engines' runs between ``start`` and ``stop`` (µs; None: the first/last run), ``width`` columns."""
    width = max(1, min(width, _MAX_WIDTH))
    ran = (t.started >= 0) & (t.engine >= 0)
    begin = t.started[ran]
    end = np.where(t.completed[ran] >= 0, t.completed[ran], now)
    end = np.maximum(end, begin)
    if not begin.size:
        return {"start": start, "stop": stop, "engines": [], "more_engines": 0, "mode": "empty"}
    lo = int(begin.min()) if start is None else start
    hi = int(end.max()) if stop is None else stop
    hi = max(hi, lo + 1)
    seen = (begin < hi) & (end >= lo)
    engine = t.engine[ran]
    counts = np.bincount(engine[seen], minlength=len(t.engines))
    order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c]][:MAX_LANES]
    order.sort(key=lambda c: t.engines[c])
    out: dict[str, Any] = {"start": lo, "stop": hi, "engines": [t.engines[c] for c in order],
                           "more_engines": int(np.count_nonzero(counts)) - len(order)}
    if int(seen.sum()) <= MAX_SLICES:
        rows = t.rows[ran]
        failed = t.failed[ran]
        out["mode"] = "slices"
        out["slices"] = [[lane, int(begin[i]), int(end[i]), bool(failed[i]), t.ids[int(rows[i])]]
                         for lane, c in enumerate(order) for i in np.flatnonzero(seen & (engine == c))]
        return out
    # Relative to the window, so that the prefix sums stay exact in float64 at any zoom.
    edges = np.linspace(0, hi - lo, width + 1)
    out["mode"] = "columns"
    out["columns"] = [np.round(_busy(begin[engine == c] - lo, end[engine == c] - lo, edges), 3).tolist()
                      for c in order]
    return out


def _busy(begin: np.ndarray[Any, Any], end: np.ndarray[Any, Any], edges: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Tasks running on average in each column between ``edges``: the busy time up to each edge,
    sum(t - s for starts s < t) - sum(t - e for ends e < t), differenced."""
    s, e = np.sort(begin).astype(np.float64), np.sort(end).astype(np.float64)
    ps, pe = np.concatenate(([0.0], np.cumsum(s))), np.concatenate(([0.0], np.cumsum(e)))
    ks, ke = np.searchsorted(s, edges), np.searchsorted(e, edges)
    busy = (ks * edges - ps[ks]) - (ke * edges - pe[ke])
    out: np.ndarray[Any, Any] = np.diff(busy) / np.diff(edges)
    return out
