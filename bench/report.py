"""Turn pytest-benchmark JSON into events/s and the ratios the issues ask for."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def _rate(b: dict[str, Any]) -> float:
    return float(b["extra_info"]["events"]) / float(b["stats"]["median"])


def _find(benches: list[dict[str, Any]], role: str, events: int | None = None) -> dict[str, Any] | None:
    same = [b for b in benches if b["extra_info"].get("role") == role]
    if events is not None:
        exact = [b for b in same if b["extra_info"]["events"] == events]
        same = exact or same
    return max(same, key=lambda b: b["extra_info"]["events"]) if same else None


def machine(data: dict[str, Any]) -> str:
    """One line naming the machine, Python and the libraries that bound the figures."""
    info = data.get("machine_info", {})
    import lmdb
    import msgpack
    return (f"{info.get('cpu', {}).get('count', '?')} cores, Python {platform.python_version()}, "
            f"lmdb {lmdb.__version__}, msgpack {'.'.join(map(str, msgpack.version))}, "
            f"{info.get('system', '')} {info.get('release', '')}")


def summarize(path: Path) -> str:
    """A markdown table: each figure, its durability, and its ratio to the baseline it answers to."""
    data = json.loads(path.read_text())
    benches = data["benchmarks"]
    rows = ["| benchmark | events | events/s | durability | ratio | against |", "|---|---|---|---|---|---|"]
    for b in sorted(benches, key=lambda b: (b["group"] or "", b["name"])):
        info = b["extra_info"]
        base_role = info.get("baseline")
        ratio, against = "", ""
        if base_role:
            base = _find(benches, base_role, info.get("baseline_events", info["events"]))
            if base is not None:
                unit = info.get("unit_per_event", 1.0) / base["extra_info"].get("unit_per_event", 1.0)
                ratio = f"{_rate(b) / _rate(base) / unit:.2f}x"
                against = f"{base['name']}"
        rows.append(f"| {b['name']} | {info['events']:,} | {_rate(b):,.0f} | {info.get('durability', '')} "
                    f"| {ratio} | {against} |")
    return f"Machine: {machine(data)}\n\n" + "\n".join(rows)
