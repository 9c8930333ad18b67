"""Every Python script under benchmarks/ (results folders included) still imports once the
package moves things around, does no work on import (its run sits behind
`if __name__ == "__main__"`), and takes nothing private from `parametric_memory`: a benchmark
that reaches past the package's public names breaks silently at the next refactor."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
TESTS = REPO / "tests"
SCRIPTS = sorted(BENCHMARKS.rglob("*.py"))
PACKAGE = "parametric_memory"


def _id(path: Path) -> str:
    return path.relative_to(BENCHMARKS).as_posix()


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.expr) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None for anything that is not a plain name chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _package_bindings(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted `parametric_memory` object it is bound to by an import."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[PACKAGE] = PACKAGE
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == PACKAGE
        ):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def private_uses(source: str) -> list[str]:
    """Each private `parametric_memory` name a script imports or reaches through an
    attribute of something it imported from the package (`store._link_shards`)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and any(_private(part) for part in parts):
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != PACKAGE:
                continue
            names = [alias.name for alias in node.names]
            if any(_private(part) for part in parts) or any(_private(n) for n in names):
                found.append(f"line {node.lineno}: from {node.module} import {', '.join(names)}")
    bound = _package_bindings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _dotted(node)
            if chain and chain[0] in bound and any(_private(part) for part in chain[1:]):
                found.append(f"line {node.lineno}: {'.'.join(chain)}")
    return sorted(set(found))


def _load(path: Path, monkeypatch) -> object:
    """Import `path` as a module the way its own folder's scripts import one another: with
    benchmarks/ and tests/ on sys.path, under a name that is not "__main__"."""
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), str(TESTS), *sys.path])
    name = "benchmark_script_" + _id(path).removesuffix(".py").replace("/", "_").replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_there_are_scripts():
    names = {_id(path) for path in SCRIPTS}
    assert {"quality.py", "speed.py", "common.py", "parallel_ingest.py"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=_id)
def test_script_imports(path, monkeypatch):
    module = _load(path, monkeypatch)
    assert module.__file__ == str(path)


def _does_work(node: ast.stmt) -> bool:
    """A module-level statement other than a docstring, import, definition, assignment, the
    `__main__` guard, or a sys.path / logging set-up call."""
    if isinstance(
        node,
        ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
    ):
        return False
    if isinstance(node, ast.Assign | ast.AnnAssign):
        return False
    if isinstance(node, ast.Expr):
        if isinstance(node.value, ast.Constant):
            return False
        if isinstance(node.value, ast.Call):
            func = node.value.func
            while isinstance(func, ast.Call | ast.Attribute):
                func = func.func if isinstance(func, ast.Call) else func.value
            chain = _dotted(node.value.func) or []
            root = func.id if isinstance(func, ast.Name) else None
            return not (chain[:2] == ["sys", "path"] or root == "logging")
    if isinstance(node, ast.If):
        test = node.test
        return not (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and test.left.id == "__name__"
            and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__"
        )
    return True


@pytest.mark.parametrize("path", SCRIPTS, ids=_id)
def test_script_runs_only_as_main(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    work = [
        f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}"
        for node in tree.body
        if _does_work(node)
    ]
    assert not work, f"{_id(path)} does work on import; put it in main() under __main__: {work}"


def test_no_script_imports_private_package_names():
    offenders = {_id(path): uses for path in SCRIPTS if (uses := private_uses(path.read_text()))}
    assert not offenders, f"private parametric_memory names in benchmarks: {offenders}"


def _resolve(dotted: str) -> object | None:
    """The module or module attribute `dotted` names, or None if there is none."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module_name, _, attribute = dotted.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attribute, None)
        except ImportError:
            return None


def test_package_attributes_used_by_scripts_exist():
    """`store.read_manifest` in a script fails only when that line runs; check each
    attribute a script reads off a `parametric_memory` module it imported."""
    missing = []
    for path in SCRIPTS:
        tree = ast.parse(path.read_text())
        bound = _package_bindings(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or isinstance(node.value, ast.Attribute):
                continue
            chain = _dotted(node)
            if not chain or chain[0] not in bound:
                continue
            target = _resolve(bound[chain[0]])
            if target is None or not hasattr(target, chain[1]):
                missing.append(f"{_id(path)} line {node.lineno}: {'.'.join(chain[:2])}")
    assert not missing, f"attributes the package no longer has: {missing}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from parametric_memory.engine.slot_training import SlotAdamW, _step_losses", 1),
        ("from parametric_memory import store\nstore._link_shards(1)", 1),
        ("import parametric_memory._version", 1),
        ("import parametric_memory as pm\npm.store._x", 1),
        ("from parametric_memory import MemoryConfig, store\nstore.commit", 0),
        ("from quality import _memory_config\nimport os\nos._exit", 0),
        ("from parametric_memory import __version__", 0),
    ],
)
def test_private_use_detection(source, expected):
    assert len(private_uses(source)) == expected
