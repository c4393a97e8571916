"""Which modules are compiled (mypyc), and the switch back to their Python source.

``COMPILED`` is the one list of the modules ``setup.py`` compiles: the build reads it (this
module imports nothing of tasklog, so the build can run it alone), and so do the import guard
below and the tests. Each compiled module keeps its ``.py`` beside its ``.so``, and the ``.py``
is imported instead when ``TASKLOG_PURE_PYTHON`` is set (to a value other than 0), or, with a
warning, when a ``.py`` is newer than its ``.so`` in a source tree (edited since the last build):
then every compiled module's source is, since their ``.so`` files share one library.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ["COMPILED", "PURE_ENV", "pure_requested", "stale_modules", "choose_spec", "SourceGuard", "install",
           "compiled", "describe"]

# The write path's per-event checks and encoding, and the read path's fold (BENCHMARKS.md,
# "Compiled hot path"). Each must pass mypy --strict; their sources stay importable as they are.
COMPILED = ("tasklog.fields", "tasklog.codec", "tasklog.numbers", "tasklog.streamindex", "projections.fold")
PURE_ENV = "TASKLOG_PURE_PYTHON"


_WARNED: dict[Any, Any] = {}  # the stale build's warning, once a process


def pure_requested() -> bool:
    """Whether the environment asks for the Python sources of the compiled modules."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def _is_extension(origin: str | None) -> bool:
    return origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def _source_of(origin: str, name: str) -> str:
    return os.path.join(os.path.dirname(origin), name.rpartition(".")[2] + ".py")


def _in_source_tree(source: str, name: str) -> bool:
    # A checkout (setup.py above the package, as an editable install runs) is edited; an installed
    # wheel is not, and its files' times are those of the install, in no useful order.
    root = source
    for _ in range(name.count(".") + 1):
        root = os.path.dirname(root)
    return os.path.exists(os.path.join(root, "setup.py"))


def _stale(origin: str, source: str, name: str) -> bool:
    return _in_source_tree(source, name) and os.path.getmtime(source) > os.path.getmtime(origin)


def _locations(package: str) -> list[str] | None:
    loaded = sys.modules.get(package)
    spec = loaded.__spec__ if loaded is not None else importlib.util.find_spec(package)
    return None if spec is None or spec.submodule_search_locations is None else list(spec.submodule_search_locations)


def stale_modules() -> list[str]:
    """The compiled modules whose source, in a source tree, is newer than their build."""
    names = []
    for name in COMPILED:
        spec = importlib.machinery.PathFinder.find_spec(name, _locations(name.rpartition(".")[0]))
        if spec is not None and _is_extension(spec.origin):
            source = _source_of(str(spec.origin), name)
            if os.path.exists(source) and _stale(str(spec.origin), source, name):
                names.append(name)
    return names


def choose_spec(name: str, path: Sequence[str] | None) -> ModuleSpec | None:
    """The spec ``name`` is imported by: its ``.so``, or its ``.py`` when asked or when any
    compiled module is stale (all or none: the compiled modules share one library)."""
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or not _is_extension(spec.origin):
        return spec
    source = _source_of(str(spec.origin), name)
    if not os.path.exists(source):
        return spec
    if not pure_requested():
        stale = [name] if _stale(str(spec.origin), source, name) else []
        stale += [n for n in stale_modules() if n != name]
        if not stale:
            return spec
        # A stale .so would run yesterday's code without a word: the sources win, slower, and say so
        # in one line, once a process (a warning a test can catch; no source line under it).
        warnings.warn_explicit(f"{', '.join(sorted(stale))} changed since the last build; importing the sources "
                               "of the compiled modules (`pip install -e .` or make compiles them again)",
                               RuntimeWarning, "<tasklog build>", 0, registry=_WARNED)
    return importlib.util.spec_from_file_location(name, source)


class SourceGuard:
    """A meta-path finder for the compiled modules only: each one's ``.so``, unless ``choose_spec``
    takes its source instead."""

    @classmethod
    def find_spec(cls, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        """The spec of a compiled module; None (ask the next finder) for every other name."""
        if fullname not in COMPILED:
            return None
        return choose_spec(fullname, path)


def install() -> None:
    """Put the guard first on ``sys.meta_path`` (once), before any compiled module is imported."""
    if SourceGuard not in sys.meta_path:
        sys.meta_path.insert(0, SourceGuard)


def _spec_of(name: str) -> ModuleSpec | None:
    """The spec ``name`` is (or would be) imported by, without importing its package."""
    locations = _locations(name.rpartition(".")[0])
    return None if locations is None else choose_spec(name, locations)


def compiled() -> tuple[str, ...]:
    """The names of the compiled modules in use: loaded (or to be loaded) from a ``.so``."""
    names = []
    for name in COMPILED:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) if module is not None else getattr(_spec_of(name), "origin", None)
        if _is_extension(origin):
            names.append(name)
    return tuple(names)


def describe() -> str:
    """How the hot path runs: "compiled (mypyc)", "pure Python", or which modules are compiled."""
    names = compiled()
    if len(names) == len(COMPILED):
        return "compiled (mypyc)"
    if not names:
        return "pure Python"
    return f"partly compiled (mypyc: {', '.join(names)})"


install()  # on import: tasklog/__init__.py imports this module before any compiled one
