"""What a Chrome Trace Event Format file must hold to open in Perfetto (checked field by field)."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from typing import Any

# Required fields by phase (the format's document: "Trace Event Format", Google, section per phase).
REQUIRED = {"X": {"name", "ts", "dur", "pid", "tid"}, "B": {"name", "ts", "pid", "tid"},
            "b": {"name", "cat", "id", "ts", "pid"}, "e": {"name", "cat", "id", "ts", "pid"},
            "s": {"name", "cat", "id", "ts", "pid", "tid"}, "f": {"name", "cat", "id", "ts", "pid", "tid"},
            "M": {"name", "pid", "args"}}


def check_trace(doc: dict[str, Any]) -> dict[str, Any]:
    """Assert the trace is well-formed; return its slices per engine track and counts per phase."""
    events = doc["traceEvents"]
    assert isinstance(events, list) and events
    tracks: dict[int, str] = {}
    slices: dict[int, list[tuple[float, float]]] = defaultdict(list)
    phases: dict[str, int] = defaultdict(int)
    for ev in events:
        ph = ev["ph"]
        phases[ph] += 1
        missing = REQUIRED[ph] - set(ev)
        assert not missing, (ph, missing, ev)
        if "ts" in ev:
            assert isinstance(ev["ts"], (int, float)) and ev["ts"] > 0, ev
        if ph == "X":
            assert isinstance(ev["dur"], (int, float)) and ev["dur"] > 0, ev
            assert ev["args"]["msg_id"] and ev["args"]["status"], ev
            slices[ev["tid"]].append((ev["ts"], ev["ts"] + ev["dur"]))
        if ph == "M" and ev["name"] == "thread_name":
            assert ev["tid"] not in tracks, "one track per engine"
            tracks[ev["tid"]] = ev["args"]["name"]
    assert set(slices) <= set(tracks)
    assert len(set(tracks.values())) == len(tracks)
    return {"tracks": tracks, "slices": dict(slices), "phases": dict(phases)}


def overlaps(slices: list[tuple[float, float]]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Pairs of slices of one track that overlap."""
    ordered = sorted(slices)
    return [(a, b) for a, b in pairwise(ordered) if b[0] < a[1]]
