"""Turn pytest-benchmark JSON into rates, the ratios the issues ask for, and charts.

``python bench/report.py CHART_DIR RUN.json [LATER.json ...]`` merges runs (a later figure
replaces an earlier one of the same name), prints the table and draws the charts.
"""

from __future__ import annotations

import json
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any


def _rate(b: dict[str, Any], unit: str = "events") -> float:
    info = b["extra_info"]
    # A row in events/s that also counts its tasks compares in tasks/s with a row in tasks/s.
    work = info["tasks"] if unit == "tasks" and info.get("unit", "events") != "tasks" else info["events"]
    return float(work) / float(b["stats"]["median"])


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


def _ratios(benches: list[dict[str, Any]], b: dict[str, Any]) -> list[str]:
    info = b["extra_info"]
    roles = [info.get("baseline"), *(info.get("also") or [])]
    out = []
    for role in dict.fromkeys(r for r in roles if r):
        base = _find(benches, role, info.get("baseline_events", info["events"]))
        if base is not None and base is not b:
            label = base["extra_info"].get("series") or base["name"]
            unit = base["extra_info"].get("unit", "events")
            if unit == "tasks" and info.get("unit", "events") != "tasks":
                label = f"{label} (tasks/s)"
            out.append(f"{_rate(b, unit) / _rate(base):.2f}x {label}")
    return out


def _figure(b: dict[str, Any]) -> str:
    info = b["extra_info"]
    if "p95_ms" in info:  # a distribution of answer times against a ceiling
        first = f", first {info['first_ms']} ms" if "first_ms" in info else ""
        return (f"p50 {info['p50_ms']} ms, p95 {info['p95_ms']} ms, p99 {info['p99_ms']} ms, max {info['max_ms']} ms "
                f"(ceiling {info['ceiling_ms']} ms{first})")
    if "peak_rss_mb" in info and "limit_mb" in info:
        return f"peak RSS {info['peak_rss_mb']} MB (limit {info['limit_mb']} MB)"
    if "peak_rss_mb" in info:  # a command timed as a user runs it
        return f"{float(b['stats']['median']):.2f} s, peak RSS {info['peak_rss_mb']} MB"
    if "rss_anon_growth_mb" in info:
        grown = ", ".join(f"{store} {mb} MB" for store, mb in info["rss_anon_growth_mb"].items())
        return f"RssAnon growth {grown} ({info['pace']} pace)"
    if "lag_p99_ms" in info:
        return (f"lag p50 {info['lag_p50_ms']} ms, p99 {info['lag_p99_ms']} ms, max {info['lag_max_ms']} ms "
                f"({info['tasks_written']:,} tasks, {info['events_written']:,} events written)")
    return f"{_rate(b):,.0f} {info.get('unit', 'events')}/s"


def load(paths: Path | list[Path]) -> dict[str, Any]:
    """One run's JSON, or several merged (a later run's figure replaces an earlier one of the same name)."""
    paths = paths if isinstance(paths, list) else [paths]
    runs = [json.loads(p.read_text()) for p in paths]
    merged: dict[str, dict[str, Any]] = {}
    for run in runs:
        merged.update({b["fullname"]: b for b in run["benchmarks"]})
    return {"machine_info": runs[0].get("machine_info", {}), "benchmarks": list(merged.values())}


def summarize(path: Path | list[Path]) -> str:
    """A markdown table: each figure, its durability, and its ratios to the baselines it answers to."""
    data = load(path)
    benches = data["benchmarks"]
    rows = ["| benchmark | work | figure | durability | ratio |", "|---|---|---|---|---|"]
    for b in sorted(benches, key=lambda b: (b["group"] or "", b["name"])):
        info = b["extra_info"]
        hits = f" ({info['hits']:,} hits)" if "hits" in info else ""
        rows.append(f"| {b['name']} | {info['events']:,} {info.get('unit', 'events')}{hits} | {_figure(b)} "
                    f"| {info.get('durability', '')} | {'; '.join(_ratios(benches, b))} |")
    return f"Machine: {machine(data)}\n\n" + "\n".join(rows)


def charts(path: Path | list[Path], out_dir: Path) -> list[Path]:
    """One PNG per scenario: throughput against work size (or stdout chunks), a line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load(path)
    scenarios: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if "scenario" in info:
            x = info["chunks"] if "chunks" in info else info["events"]
            y = float(b["stats"]["median"]) if info.get("plot") == "seconds" else _rate(b)
            scenarios[info["scenario"]][info["series"]].append((x, y))
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for scenario, series in sorted(scenarios.items()):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for name, points in sorted(series.items()):
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=name)
        chunks = "chunks" in scenario
        ax.set_xlabel("stdout chunks per task" if chunks else "work size")
        ax.set_ylabel("tasks/s" if chunks else scenario.split("(")[-1].rstrip(")") if "(" in scenario else "per second")
        if not chunks:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(scenario)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        target = out_dir / (scenario.split(" (")[0].replace(" ", "-").replace(",", "") + ".png")
        fig.savefig(target, dpi=90)
        plt.close(fig)
        made.append(target)
    return made


if __name__ == "__main__":
    import sys

    files = [Path(a) for a in sys.argv[2:]]
    print(summarize(files))
    for png in charts(files, Path(sys.argv[1])):
        print(f"chart: {png}")
