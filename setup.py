"""The build: the modules tasklog.native lists, compiled with mypyc; pure Python when that fails.

pyproject.toml holds the project's metadata; this file only adds the compiled modules (one list,
``tasklog.native.COMPILED``). Without a C compiler, or when mypyc fails, the install goes on as
pure Python, saying so in one line. ``TASKLOG_PURE_PYTHON=1`` at build time skips compiling.
"""

from __future__ import annotations

import ast
import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _constants(path: str) -> dict[str, Any]:
    """The constants a module assigns (read, not run: the package's dependencies are not here)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant | ast.Tuple):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name):
                found[target.id] = ast.literal_eval(node.value)
    return found


NATIVE = _constants(os.path.join(HERE, "tasklog", "native.py"))
COMPILED: tuple[str, ...] = NATIVE["COMPILED"]
PURE_ENV: str = NATIVE["PURE_ENV"]


def _warn(why: object) -> None:
    if isinstance(why, SystemExit):  # mypy's errors are printed above it
        why = "mypyc found errors in the compiled modules"
    text = (str(why).splitlines() or [repr(why)])[0]
    print(f"tasklog: building pure Python, not compiled ({text[:160]})", file=sys.stderr)


class _OptionalBuildExt(build_ext):
    """build_ext that leaves the package pure Python when a compiled module cannot be built: all
    or nothing, since each module's .so needs mypyc's shared library beside it."""

    def run(self) -> None:
        self.failure: BaseException | None = None
        try:
            super().run()
        except Exception as exc:  # no compiler, a failed compile: the .py sources still work
            self.failure = self.failure or exc
        if self.failure is not None:
            _remove_earlier_builds()  # those of this build in the tree too
            for ext in self.extensions:
                path = os.path.join(self.build_lib, self.get_ext_filename(ext.name))
                if os.path.exists(path):
                    os.remove(path)
            _warn(self.failure)

    def build_extension(self, ext: Any) -> None:
        if self.failure is None:
            try:
                super().build_extension(ext)
            except Exception as exc:
                self.failure = exc


# setuptools runs this file for each step of a build (its requirements, its metadata, the wheel):
# only the steps that build extensions compile.
_BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def _remove_earlier_builds() -> None:
    """Delete the compiled modules in the tree (an earlier build's, or a failed one's): a build
    that compiles nothing must not leave .so files to be imported beside new sources."""
    for name in COMPILED:
        folder, _, module = os.path.join(HERE, *name.split(".")).rpartition(os.sep)
        for entry in os.listdir(folder):
            if entry.startswith(module + ".") and entry.endswith(".so"):
                os.remove(os.path.join(folder, entry))
    for entry in os.listdir(HERE):
        if "__mypyc" in entry and entry.endswith(".so"):
            os.remove(os.path.join(HERE, entry))


def _ext_modules() -> list[Any]:
    if not _BUILDS & set(sys.argv[1:]):
        return []
    _remove_earlier_builds()
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        _warn(f"{PURE_ENV} is set")
        return []
    try:
        from mypyc.build import mypycify

        paths = [os.path.join(*name.split(".")) + ".py" for name in COMPILED]
        # The build environment has none of the package's dependencies: mypy must not need them;
        # what the compiled modules import is not read (Any to mypyc): seconds, not a minute.
        flags = ["--ignore-missing-imports", "--follow-imports=skip", "--no-warn-unused-ignores",
                 "--no-warn-return-any"]
        return list(mypycify([*flags, *paths], opt_level="3", debug_level="0"))
    except BaseException as exc:  # mypyc missing or refusing the sources (SystemExit on a type error)
        _warn(exc)
        return []


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": _OptionalBuildExt})
