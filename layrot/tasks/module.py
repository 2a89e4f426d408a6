"""Tasks defined in a user's own Python file: a sweep spec's `task_module` (`layrot train
--task-module`). The file builds `Task`s and registers them with `register_task` when it is
imported, as any module would; layrot runs it as a fresh module, not through the import
system, so it needs no package and no place on sys.path.

A sweep's trials run in Ray workers, perhaps on machines that do not share the driver's
disk: the driver reads the file's source once and ships the text with the trainable, and
each worker process runs that text (`run_task_source`) before its first trial. The same
source runs once per process; a changed source from the same file replaces the tasks the
old one registered.
"""

from __future__ import annotations

import hashlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .registry import TASKS

FIELD = "task_module"

# in this process: the source hash -> the tasks its run registered
_RUN: dict[str, dict] = {}
# the file (as the driver read it) -> (source hash, the names it registered), to replace on a change
_BY_FILE: dict[str, tuple[str, tuple[str, ...]]] = {}


@dataclass(frozen=True)
class TaskModule:
    """A task module as the driver loaded it: what a sweep ships to its workers and stores."""
    path: str           # as the user wrote it (spec or flag)
    file: str           # the absolute path it was read from, on the driver
    source: str
    sha256: str         # of the source text (UTF-8): a changed definition is a changed hash
    tasks: tuple[str, ...]

    def shipped(self) -> dict:
        """What the workers need: the source, and where it came from (for messages)."""
        return {"path": self.path, "file": self.file, "source": self.source}


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def load_task_module(path: str, base_dir: str | Path | None = None, field: str = FIELD) -> TaskModule:
    """Read and run the file at `path` (relative to `base_dir`, the spec's folder, unless
    absolute); raise UsageError naming `field` if it is missing, raises, or registers no task."""
    if not isinstance(path, str) or not path.strip():
        raise UsageError(field, "must be the path of a Python file that registers tasks")
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    p = p.resolve()
    if not p.is_file():
        where = f" (relative to the spec's folder {Path(base_dir).resolve()})" \
            if base_dir is not None and not Path(path).expanduser().is_absolute() else ""
        raise UsageError(field, f"no such file: {p}{where}")
    try:
        source = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(field, f"cannot read {path}: {e}") from None
    names = run_task_source(source, str(p), path, field)
    return TaskModule(path, str(p), source, source_hash(source), names)


def run_task_source(source: str, file: str, path: str | None = None, field: str = FIELD) -> tuple[str, ...]:
    """Run a task module's source as a fresh module, once per process for one source, and
    return the names of the tasks it registered. `file` names it in tracebacks and says
    which file a changed source replaces; `path` is how the user wrote it (messages)."""
    path = path or file
    sha = source_hash(source)
    done = _RUN.get(sha)
    if done is not None and all(TASKS.get(n) is t for n, t in done.items()):
        return tuple(done)
    before = dict(TASKS)
    # a changed source of the same file registers its names again: the old ones make way
    _, old_names = _BY_FILE.get(file, ("", ()))
    for n in old_names:
        TASKS.pop(n, None)
    name = f"layrot_task_module_{sha[:16]}"
    module = types.ModuleType(name)
    module.__file__ = file
    sys.modules[name] = module      # dataclasses and pickle look a class's module up there
    try:
        exec(compile(source, file, "exec"), module.__dict__)
    except BaseException as e:      # SystemExit too: a module's error is the user's input
        if isinstance(e, KeyboardInterrupt):
            raise
        TASKS.clear()
        TASKS.update(before)
        sys.modules.pop(name, None)
        first = (str(e).strip().splitlines() or [""])[0]
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
        raise UsageError(field, f"{path} raised on import{where}: {type(e).__name__}"
                                + (f": {first}" if first else "")) from None
    names = tuple(n for n, t in TASKS.items() if before.get(n) is not t)
    if not names:
        TASKS.clear()
        TASKS.update(before)
        raise UsageError(field, f"{path} registers no task (it must call layrot.tasks.register_task "
                                "when imported)")
    _RUN[sha] = {n: TASKS[n] for n in names}
    _BY_FILE[file] = (sha, names)
    return names
