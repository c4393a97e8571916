"""Benchmarks (pytest-benchmark) and probes; run through ``python -m bench.run``."""
