"""Run the benchmarks of a profile, save pytest-benchmark JSON, print the summary table.

Usage: python -m bench.run --profile quick|full [-k EXPR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.report import charts, summarize

HERE = Path(__file__).parent


def main() -> int:
    """Run pytest-benchmark on bench/, then summarize the JSON it wrote."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", choices=["quick", "full"], default="quick")
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression")
    args = ap.parse_args()
    out = HERE / "results" / f"{args.profile}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider",
           f"--benchmark-json={out}", "--benchmark-columns=median,rounds", "--benchmark-sort=name"]
    if args.select:
        cmd += ["-k", args.select]
    env = {**os.environ, "TASKLOG_BENCH_PROFILE": args.profile}
    code = subprocess.call(cmd, env=env)
    if out.exists():
        table = summarize(out)
        print(table)
        (HERE / "results" / f"latest-{args.profile}.md").write_text(table + "\n")
        for png in charts(out, HERE / "charts" / args.profile):
            print(f"chart: {png.relative_to(HERE.parent)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
