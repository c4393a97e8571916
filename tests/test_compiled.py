"""The compiled hot path (tasklog.native.COMPILED) and its pure-Python fallback give the same answers.

This process runs the compiled modules (a fresh ``make test`` builds them: not compiled is a
failure here, never a skip); a child started with ``TASKLOG_PURE_PYTHON=1`` runs their sources.
Both validate and encode the same events, good and bad, to the same bytes and the same errors,
and fold the same log to the same records.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import tasklog
from projections.fold import fold_all
from tasklog import Annotate, Complete, Drop, Output, Resubmit, Start, Submit
from tasklog.codec import encode
from tasklog.demo import simulate
from tasklog.native import COMPILED, PURE_ENV, choose_spec, stale_modules

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def _run_pure(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, PURE_ENV: "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)


def test_the_listed_modules_are_compiled() -> None:
    for name in COMPILED:
        module = importlib.import_module(name)
        assert str(module.__file__).endswith(SUFFIXES), f"{name} is not compiled: {module.__file__}"
    assert tasklog.compiled() == COMPILED and stale_modules() == []
    assert tasklog.native.describe() == "compiled (mypyc)"


def test_the_switch_imports_the_sources() -> None:
    code = ("import json, sys, tasklog, projections\n"
            "from tasklog.native import COMPILED\n"
            "import projections.fold\n"
            "print(json.dumps({'files': [sys.modules[n].__file__ for n in COMPILED], "
            "'compiled': tasklog.compiled(), 'describe': tasklog.native.describe()}))")
    out = json.loads(_run_pure(code).stdout)
    assert [Path(f).name for f in out["files"]] == [n.rpartition(".")[2] + ".py" for n in COMPILED]
    assert out["compiled"] == [] and out["describe"] == "pure Python"


def test_the_version_says_which() -> None:
    compiled = subprocess.run([sys.executable, "-m", "tasklog", "--version"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, check=True)
    assert compiled.stdout.strip() == f"tasklog {tasklog.__version__}, compiled (mypyc)"
    pure = _run_pure("import sys; from tasklog.__main__ import run; sys.argv[1:] = ['--version']; run()")
    assert pure.stdout.strip() == f"tasklog {tasklog.__version__}, pure Python"


def odd_events() -> list[Any]:
    """Events each check normalises or refuses (built alike in both processes: some do not pickle)."""
    naive = datetime(2024, 5, 1, 12, 0)
    return [
        Submit("a", header=None, buffers=[bytearray(b"x"), memoryview(b"y")], submitted=T0),
        Submit("a", header=MappingProxyType({"k": [1, {"n": None}]}), submitted=naive),
        Submit("a", header={"k": {1: 2}}, submitted=T0),
        Submit("a", header={"k": [{"ok": 1}, {2: 3}]}, submitted=T0),
        Submit("a", header={"s": {1, 2}}, submitted=T0),
        Submit("a", metadata={"big": 1 << 70}, submitted=T0),
        Submit("", submitted=T0), Submit("x" * 600, submitted=T0), Submit("é" * 200, submitted=T0),
        Submit("a", queue="bogus", submitted=T0), Submit("a", queue=None, submitted=T0),
        Submit("a", buffers=[1], submitted=T0), Submit("a", buffers=(b"t",), submitted=T0),
        Submit("a", client_uuid=5, submitted=T0), Submit("a", submitted="now"),
        Start("a", "engine", T0 + timedelta(seconds=1)), Start("a", 3, T0), Start(7, None, T0),
        Start("a", None, datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))),
        Output("a", "stdout", text="hi"), Output("a", "stdout"), Output("a", "stdout", text="x", content={}),
        Output("a", "display_data", content={"data": {"text/plain": "1"}}), Output("a", "error", text="t"),
        Output("a", "nonsense", text="x"), Output("a", "execute_result", content=[{1: "x"}]),
        Output("a", "display_data", content=("t", [1.5, None])),
        Complete("a", completed=T0, result_buffers=None), Complete("a", completed="yesterday"),
        Complete("a", completed=T0, started=naive, received=T0), Complete("a", completed=T0, result_buffers=[2]),
        Complete("a", completed=T0, result_header={"k": 1}, result_content=None, engine_uuid=b"e"),
        Resubmit("a", "b", T0), Resubmit("a", "", T0), Resubmit("", "b", T0), Resubmit("a", "b", "then"),
        Drop(["a", "b"]), Drop([]), Drop(["a", ""]), Drop(("a",)), Drop("ab"),
        Annotate("a", {"label": "x"}), Annotate("a", {"msg_id": "b"}), Annotate("a", "label"),
        Annotate("a", {"k": {3: 4}}), Annotate("a", {"_k": 1}),
        ("a",), "submit",
    ]


def outcomes(events: list[Any]) -> list[tuple[Any, ...]]:
    """Each event validated and encoded: its bytes, or its error's class, message and field."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        try:
            out.append(("ok", encode(tasklog.validate(event))))
        except Exception as exc:
            out.append((type(exc).__name__, str(exc), getattr(exc, "event_type", None), getattr(exc, "field", None)))
    return out


def folded(events: list[Any]) -> tuple[dict[str, Any], Counter[str]]:
    """The records and anomalies of folding ``events`` (validated) in order."""
    anomalies: Counter[str] = Counter()
    records = fold_all([(seq, tasklog.validate(e)) for seq, e in enumerate(events, 1)], anomalies=anomalies)
    return records, anomalies


def child(path: str) -> None:
    """In the pure-Python child: the outcomes and the fold of the events pickled at ``path``."""
    with open(path, "rb") as f:
        events = pickle.load(f)
    with open(path, "wb") as f:
        pickle.dump((outcomes(events + odd_events()), folded(events)), f)


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """(the demo's events, what this process made of them, what the pure-Python child made of them)."""
    events = list(simulate(300, seed=5))
    path = tmp_path_factory.mktemp("both") / "events.pickle"
    path.write_bytes(pickle.dumps(events))
    _run_pure("import sys; from tests.test_compiled import child; child(sys.argv[1])", str(path))
    here = (outcomes(events + odd_events()), folded(events))
    return events, here, pickle.loads(path.read_bytes())


def test_same_bytes_and_errors_both_ways(both_ways: tuple[Any, Any, Any]) -> None:
    events, (here, _), (there, _) = both_ways
    assert here == there
    kinds = Counter(o[0] for o in here)
    assert kinds["ok"] > len(events) and {"EventError", "EncodeError"} <= set(kinds)  # good and bad, both kinds


def test_same_records_both_ways(both_ways: tuple[Any, Any, Any]) -> None:
    _, (_, (records, anomalies)), (_, (records_there, anomalies_there)) = both_ways
    assert len(records) >= 300 and records == records_there and anomalies == anomalies_there
    assert any(r is not None and r["stdout"] for r in records.values())  # stream text joined alike


def _built_pair(root: Path, source_newer: bool, checkout: bool = True) -> tuple[str, Path, Path]:
    """A copy of tasklog/fields' .so and .py under ``root``, the .py newer or older; a checkout
    has a setup.py (an editable install's tree), an installed copy has none."""
    built = Path(str(importlib.import_module("tasklog.fields").__file__))
    package = root / "tasklog"
    package.mkdir()
    so, py = package / built.name, package / "fields.py"
    shutil.copy(built, so)
    shutil.copy(ROOT / "tasklog" / "fields.py", py)
    if checkout:
        shutil.copy(ROOT / "setup.py", root / "setup.py")
    stamp = so.stat().st_mtime
    os.utime(py, (stamp + (10 if source_newer else -10),) * 2)
    return str(package), so, py


def test_a_source_newer_than_its_build_is_imported_with_a_warning(tmp_path: Path) -> None:
    package, _, py = _built_pair(tmp_path, source_newer=True)
    with pytest.warns(RuntimeWarning, match="tasklog.fields changed since the last build"):
        spec = choose_spec("tasklog.fields", [package])
    assert spec is not None and spec.origin == str(py)


def test_a_fresh_build_is_imported_and_the_switch_overrides_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    package, so, py = _built_pair(tmp_path, source_newer=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = choose_spec("tasklog.fields", [package])
        assert spec is not None and spec.origin == str(so)
        monkeypatch.setenv(PURE_ENV, "1")
        spec = choose_spec("tasklog.fields", [package])
        assert spec is not None and spec.origin == str(py)


def test_an_installed_copy_is_not_judged_by_its_files_times(tmp_path: Path) -> None:
    package, so, _ = _built_pair(tmp_path, source_newer=True, checkout=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = choose_spec("tasklog.fields", [package])
    assert spec is not None and spec.origin == str(so)
