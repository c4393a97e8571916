"""A dependency-free progress bar with rate and ETA, shown only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Count work done; redraw a bar on a TTY at most ten times a second, stay silent elsewhere."""

    def __init__(self, total: int | None, label: str = "", unit: str = "ev",
                 stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.started = time.perf_counter()
        self._drawn = 0.0

    def update(self, n: int = 1) -> None:
        """Record ``n`` more units of work."""
        self.done += n
        if self.enabled:
            now = time.perf_counter()
            if now - self._drawn >= 0.1:
                self._drawn = now
                self._draw(now)

    @property
    def elapsed(self) -> float:
        """Seconds since the bar started."""
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        """Units per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def _draw(self, now: float) -> None:
        rate = self.rate
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            text = (f"\r{self.label} [{bar:<30}] {frac:4.0%} {self.done:,}/{self.total:,} "
                    f"{rate:,.0f} {self.unit}/s ETA {eta:5.1f}s ")
        else:
            text = f"\r{self.label} {self.done:,} {rate:,.0f} {self.unit}/s "
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line (on a terminal)."""
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
