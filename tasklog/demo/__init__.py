"""The simulated hub under heavy load that ``tasklog demo`` and the benchmarks write (``workload``)."""

from .workload import CLIENTS, ENGINES, simulate

__all__ = ["simulate", "ENGINES", "CLIENTS"]
