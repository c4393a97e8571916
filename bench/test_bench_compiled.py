"""The compiled hot path (tasklog.native.COMPILED, mypyc) against its pure-Python fallback (issue 24).

Per pair of rows, the same work twice in this process: once with the compiled modules, once with
a second copy of the package imported under ``TASKLOG_PURE_PYTHON=1`` (the switch's own way in),
whose events, log and fold are its own. The work: validating and encoding the demo's events, the
append path (``append_many``, sync), the fold of the demo's events into records, and a replay of
a demo log into a new dict projection (read, decode, fold).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

import tasklog
from bench.harness import record
from tasklog.native import COMPILED, PURE_ENV

N = 100_000  # events per round: the demo's mix (about 5.2 a task)
ROUNDS = 3
_ROOTS = ("tasklog", "projections")


def _ours(name: str) -> bool:
    return name.split(".")[0] in _ROOTS


def _import_package() -> dict[str, ModuleType]:
    """Import tasklog and projections afresh; return the modules a benchmark reads."""
    import projections.fold  # noqa: F401 (read from sys.modules: the package's fold is a function)
    import tasklog.codec
    import tasklog.demo
    import tasklog.events

    return {"codec": tasklog.codec, "events": tasklog.events, "demo": tasklog.demo,
            "fold": sys.modules["projections.fold"], "projections": sys.modules["projections"],
            "tasklog": sys.modules["tasklog"]}


@pytest.fixture(scope="module")
def ways() -> Iterator[dict[str, dict[str, ModuleType]]]:
    """The package's modules as compiled ("compiled") and as a second, pure-Python copy ("pure")."""
    assert tasklog.compiled() == COMPILED, "build the package first (pip install -e . compiles it)"
    compiled = _import_package()
    saved = {k: v for k, v in sys.modules.items() if _ours(k)}
    guards = list(sys.meta_path)
    os.environ[PURE_ENV] = "1"
    try:
        for k in saved:
            del sys.modules[k]
        pure = _import_package()
        assert pure["tasklog"].compiled() == (), "the pure copy imported a compiled module"
    finally:
        del os.environ[PURE_ENV]
        for k in [k for k in sys.modules if _ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
        sys.meta_path[:] = guards  # the copy's guard goes with it
    yield {"compiled": compiled, "pure": pure}


def _events(way: dict[str, ModuleType]) -> list[Any]:
    return list(way["demo"].simulate(N // 5, seed=1))[:N]


def _validate_encode(way: dict[str, ModuleType], evs: list[Any]) -> None:
    validate, encode = way["events"].validate, way["codec"].encode
    for e in evs:
        encode(validate(e))


def _append_many(way: dict[str, ModuleType], path: str, evs: list[Any]) -> None:
    with way["tasklog"].TaskLog.open(path, "sync") as log:
        for s in range(0, len(evs), 1000):
            log.append_many(evs[s:s + 1000])


def _fold(way: dict[str, ModuleType], batch: list[tuple[int, Any]]) -> None:
    way["fold"].fold_all(batch)


def _replay(way: dict[str, ModuleType], path: str) -> None:
    with way["tasklog"].TaskLog.open(path, readonly=True) as log:
        way["projections"].open("dict", log=log).close()


def _labels(kind: str, way: str, what: str) -> dict[str, Any]:
    """The row's role, and for the compiled row its baseline: the pure row of the same work."""
    other = {"baseline": f"{kind}_pure"} if way == "compiled" else {}
    series = f"{what}, {'compiled (mypyc)' if way == 'compiled' else 'pure Python'}"
    return {"role": f"{kind}_{way}", "scenario": "compiled hot path (events/s)", "series": series, **other}


@pytest.mark.parametrize("way", ["compiled", "pure"])
def test_validate_encode(benchmark: Any, ways: dict[str, dict[str, ModuleType]], way: str) -> None:
    evs = _events(ways[way])
    record(benchmark, len(evs), "n/a (no log)", "compiled hot path", **_labels("validate_encode", way,
                                                                             "validate + encode"))
    benchmark.pedantic(_validate_encode, args=(ways[way], evs), rounds=ROUNDS)


@pytest.mark.parametrize("way", ["compiled", "pure"])
def test_append_many(benchmark: Any, ways: dict[str, dict[str, ModuleType]], fresh_dir: Callable[[], str],
                     way: str) -> None:
    evs = _events(ways[way])
    record(benchmark, len(evs), "sync", "compiled hot path", batch=1000,
           **_labels("append_many_sync", way, "append_many sync"))
    benchmark.pedantic(_append_many, setup=lambda: ((ways[way], fresh_dir(), evs), {}), rounds=ROUNDS)


@pytest.mark.parametrize("way", ["compiled", "pure"])
def test_fold_replay(benchmark: Any, ways: dict[str, dict[str, ModuleType]], way: str) -> None:
    validate = ways[way]["events"].validate
    batch = [(seq, validate(e)) for seq, e in enumerate(_events(ways[way]), 1)]
    record(benchmark, len(batch), "n/a (read)", "compiled hot path", **_labels("fold_replay", way, "fold replay"))
    benchmark.pedantic(_fold, args=(ways[way], batch), rounds=ROUNDS)


@pytest.fixture(scope="module")
def demo_log(ways: dict[str, dict[str, ModuleType]], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A log of N of the demo's events, written before any clock starts (the same bytes both ways)."""
    path = str(tmp_path_factory.mktemp("compiled") / "log")
    _append_many(ways["compiled"], path, _events(ways["compiled"]))
    return path


@pytest.mark.parametrize("way", ["compiled", "pure"])
def test_replay_into_dict(benchmark: Any, ways: dict[str, dict[str, ModuleType]], demo_log: str, way: str) -> None:
    """Read, decode and fold the log into a new dict projection."""
    record(benchmark, N, "n/a (read)", "compiled hot path", **_labels("replay_dict", way, "replay into dict"))
    benchmark.pedantic(_replay, args=(ways[way], demo_log), rounds=ROUNDS)
