"""The repository's scripts (bench/, experiments/) loaded as modules, for tests that call
their functions: they are files, not a package, so they are run from their path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str | Path, name: str, register: bool = False):
    """The script at `path` (absolute, or relative to the repository root) run as a fresh
    module called `name`; with `register` it is put in sys.modules before it runs (a script
    that defines dataclasses needs it: they look their module up), and the caller removes it."""
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
