"""Fold a stream into a dict projection, recording each message's lag from its commit; print
``ready`` once subscribed, read the last sequence number to wait for on stdin, then print
``p50=... p99=... max=... messages=...`` (seconds). Run by bench/test_bench_ship.py."""

from __future__ import annotations

import asyncio
import sys
import threading

import projections
from tasklog.stream.feed import StreamFeed


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


async def main(url: str, stream: str) -> None:
    """Follow until the hub's checkpoint reaches the number read from stdin."""
    proj = projections.open("dict")
    feed = StreamFeed(proj, url, stream, record_lag=True)
    target: list[int] = []

    def wait_for_target() -> None:
        target.append(int(sys.stdin.readline()))
    threading.Thread(target=wait_for_target, daemon=True).start()
    task = asyncio.create_task(feed.run(follow=True))
    await asyncio.sleep(0.5)  # the consumer exists before the writer starts
    print("ready", flush=True)
    while not (target and proj.hubs and max(seq for _, seq in proj.hubs.values()) >= target[0]):
        await asyncio.sleep(0.05)
    feed.stop()
    await task
    lags = feed.stats.lags
    print(f"p50={_quantile(lags, 0.5)} p99={_quantile(lags, 0.99)} max={max(lags)} messages={len(lags)}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
