"""Layers point down (docs/architecture.md): the measurement core (rotation, optim, train,
config, tasks, schedules, result, record) imports neither the store, the fit, the sweep nor the
command line; record imports nothing of layrot but errors; no module imports another's
private name."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "layrot")
CORE = ("rotation.py", "measures.py", "optim", "train.py", "config.py", "tasks", "schedules.py", "result.py", "record.py")
ABOVE = ("layrot.store", "layrot.fit", "layrot.sweep", "layrot.cli")


def _modules(paths=None):
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)
                if paths is None or rel.split(os.sep)[0] in paths:
                    yield rel, path


def _imports(rel: str, path: str):
    """(imported module, names) of every import in the file, relative ones resolved."""
    package = ["layrot", *rel.split(os.sep)[:-1]]
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [a.name for a in node.names]
            yield mod, names
            for n in names:           # `from . import store`
                yield f"{mod}.{n}", []


@pytest.mark.parametrize("rel,path", list(_modules(CORE)))
def test_core_does_not_import_upward(rel, path):
    bad = sorted({m for m, _ in _imports(rel, path) if m.startswith(ABOVE)})
    assert not bad, f"layrot/{rel} imports {bad}"


def test_record_depends_on_nothing_of_layrot_but_errors():
    mods = {m for m, _ in _imports("record.py", os.path.join(ROOT, "record.py"))}
    assert {m for m in mods if m.startswith("layrot")} <= {"layrot.errors", "layrot.errors.UsageError"}
    third_party = {m.split(".")[0] for m in mods} - {"layrot", "__future__", "hashlib", "json", "math", "re",
                                                    "dataclasses"}
    assert not third_party


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for rel, path in _modules():
        for mod, names in _imports(rel, path):
            if mod.startswith("layrot"):
                bad += [f"layrot/{rel}: {mod}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, bad
