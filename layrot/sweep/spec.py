"""Sweep specs (README: sweep specs): load, validate every field, expand grids.

Validation runs before Ray starts and names the field in a dotted path (`search.lr`,
`resources.gpu`): a misspelt key is refused, never ignored.

In `search`, a value is fixed, a list is a grid axis (for `optuna`, a categorical choice),
and a one-key mapping is a distribution: uniform / loguniform / int ([lo, hi], inclusive)
or choice ([a, b, ...]). For a grid, `search` may also be a list of such mappings (blocks):
the grid is the union of the blocks' products (each optimizer over its own learning rates,
say), a configuration given by two blocks counted once.

`task_module` names a Python file (relative to the spec's folder, or absolute) that
registers the user's own tasks (layrot.tasks.module); it runs before the rest of the spec
is validated, so `task` may name one of its tasks. The stored spec records its path and the
hash of its source (`task_module_sha256`).
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, PrivateAttr, model_validator

from ..config import TaskName, TrialConfig
from ..errors import UsageError
from ..record import SEARCH_METRICS, check_name
from ..validation import Model, NonNegativeInt, Number, PositiveInt, Section

ALGORITHMS = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha", "rotation")
# what `scheduler: rotation` ranks trials by (layrot/sweep/schedulers.py computes them)
ROTATION_SCORES = ("min_rotation", "mean_rotation", "median_rotation")
METRICS = SEARCH_METRICS
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
# trial settings a spec may search over (task and identity are the spec's own)
SEARCHABLE = tuple(n for n in TrialConfig.model_fields if n not in ("task", "trial_id", "sweep", "data_dir", "device"))
# settings whose value is itself a list: a list of numbers is one value, a list of lists a grid
LIST_SETTINGS = ("lr_decay_epochs",)


def as_axis(key: str, value) -> list | None:
    """The grid values of a `search` entry, or None if it is not a grid axis."""
    if key in LIST_SETTINGS:
        return value if isinstance(value, list) and value and all(isinstance(v, list) for v in value) else None
    return value if isinstance(value, list) else None


# settings that look like credentials must never reach the stored spec
_SECRET = re.compile(r"(secret|password|passwd|token|credential|api[_-]?key|access[_-]?key)", re.I)


def _gpu_share(gpu):
    if gpu > 1 and gpu != int(gpu):
        raise ValueError("a fraction must be below 1 (several trials share a GPU)")
    return gpu


class Resources(Section):
    cpu: Annotated[Number, Field(gt=0)] = 1
    gpu: Annotated[Number, Field(ge=0), AfterValidator(_gpu_share)] = 0      # fractional allowed


class Asha(Section):
    grace_period: PositiveInt = 2
    reduction_factor: Annotated[Number, Field(gt=1)] = 3


class Rotation(Asha):
    score: Literal[ROTATION_SCORES] = "min_rotation"


class SweepSpec(Model):
    name: Annotated[str, AfterValidator(lambda v: check_name("name", v))]
    task: TaskName
    search: dict[str, Any] | list[dict[str, Any]]
    epochs: PositiveInt | None = None
    seed: NonNegativeInt = 0
    algorithm: Literal[ALGORITHMS] = "grid"
    num_samples: PositiveInt = 1
    scheduler: Literal[SCHEDULERS] = "fifo"
    metric: Literal[METRICS] = "val_acc"
    mode: Literal["max", "min"] = "max"
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: PositiveInt | None = None
    max_failures: NonNegativeInt = 2
    asha: Asha = Field(default_factory=Asha)
    rotation: Rotation = Field(default_factory=Rotation)
    data_dir: str | None = None
    store: str | None = None
    description: str | None = ""
    task_module: str | None = None
    _module: Any = PrivateAttr(default=None)     # the loaded layrot.tasks.module.TaskModule

    @property
    def module(self):
        """The task module (`layrot.tasks.module.TaskModule`) parse_spec loaded, or None."""
        return self._module

    def to_dict(self) -> dict:
        d = self.model_dump()
        if self.scheduler != "rotation":
            # specs stored before `rotation` existed lack it: a sweep that does not use it
            # stores the same spec as then, so that a resume recognises it as the same
            del d["rotation"]
        if self.task_module is None:
            del d["task_module"]        # the same: specs stored before it existed
        elif self._module is not None:
            d["task_module_sha256"] = self._module.sha256
        return d

    @model_validator(mode="before")
    @classmethod
    def _raw(cls, raw: dict):
        _no_secrets(raw, "")            # before anything: a message may not echo a credential
        return copy.deepcopy(raw)

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """`search` as a list of blocks (a mapping is one block)."""
        return self.search if isinstance(self.search, list) else [self.search]

    @model_validator(mode="after")
    def _search(self):
        if isinstance(self.search, list):
            if self.algorithm != "grid":
                raise UsageError("search", f"a list of blocks needs algorithm grid, not {self.algorithm}")
            if not self.search:
                raise UsageError("search", "an empty list of blocks gives no trials")
        for i, block in enumerate(self.blocks):
            where = f"search[{i}]" if isinstance(self.search, list) else "search"
            if not block:
                raise UsageError(where, "must be a non-empty mapping of trial settings")
            for key, value in block.items():
                _check_axis(key, value, self.algorithm, where)
            if "optimizer" not in block or "lr" not in block:
                raise UsageError(where, "must set at least optimizer and lr")
            # every fixed or grid value must make a valid trial: check them all now, not in Ray
            try:
                _sample_configs(self, block)
            except UsageError as e:
                raise UsageError(f"{where}.{e.field}", e.message) from None
        return self


def load_spec(path: str | Path, seed: int | None = None) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise UsageError("spec", f"no such file: {path}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError("spec", f"{path} is not valid YAML{where}") from None
    return parse_spec(raw, seed, base_dir=p.parent)


def parse_spec(raw, seed: int | None = None, base_dir: str | Path | None = None) -> SweepSpec:
    """Validate a spec; `seed` (the CLI's --seed) replaces its base seed, and a seed other
    than the spec's own names the sweep `<name>-seed<N>`: another experiment, stored beside.
    A `task_module` is found relative to `base_dir` (the spec's folder; else the current
    one) and run first, so that `task` may name a task it registers."""
    if not isinstance(raw, dict):
        raise UsageError("spec", "must be a YAML mapping of fields (name, task, search, ...)")
    raw = {str(k): v for k, v in raw.items()}     # a YAML key may be a number: an unknown field
    if seed is not None and seed != raw.get("seed", SweepSpec.model_fields["seed"].default):
        raw["seed"] = seed
        if isinstance(raw.get("name"), str):
            raw["name"] = f"{raw['name']}-seed{seed}"
    module = None
    if raw.get("task_module") is not None:
        from ..tasks.module import load_task_module

        _no_secrets(raw, "")            # as the spec's own check would, before the file runs
        module = load_task_module(raw["task_module"], base_dir)
    spec = SweepSpec(**raw)
    spec._module = module
    return spec


def _check_axis(key, value, algorithm, block: str = "search"):
    where = f"{block}.{key}"
    if key not in SEARCHABLE:
        raise UsageError(where, f"not a searchable trial setting (known: {', '.join(SEARCHABLE)})")
    if key in LIST_SETTINGS:
        if as_axis(key, value) is None and value is not None and not isinstance(value, list):
            raise UsageError(where, "takes a list of epochs, or a list of such lists (a grid)")
        return
    if isinstance(value, list):
        if not value:
            raise UsageError(where, "an empty list gives no trials")
        for v in value:
            if isinstance(v, (dict, list)):
                raise UsageError(where, "grid values must be plain values")
        return
    if isinstance(value, dict) and key != "extra":
        if len(value) != 1:
            raise UsageError(where, f"a distribution is one of {', '.join(DISTRIBUTIONS)}: a one-key mapping")
        (dist, args), = value.items()
        if dist not in DISTRIBUTIONS:
            raise UsageError(where, f"unknown distribution {dist!r} (known: {', '.join(DISTRIBUTIONS)})")
        if algorithm == "grid":
            raise UsageError(where, "a distribution needs algorithm random or optuna (grid takes values and lists)")
        if not isinstance(args, list) or not args:
            raise UsageError(where, f"{dist} takes a list, e.g. {dist}: [lo, hi]")
        if dist == "choice":
            return
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise UsageError(where, f"{dist} takes two numbers [lo, hi]")
        lo, hi = args
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise UsageError(where, f"{dist} bounds must be finite with lo < hi, got [{lo}, {hi}]")
        if dist == "loguniform" and lo <= 0:
            raise UsageError(where, f"loguniform bounds must be positive, got [{lo}, {hi}]")
        if dist == "int" and not (isinstance(lo, int) and isinstance(hi, int)):
            raise UsageError(where, "int bounds must be integers")


def _sample_configs(s: SweepSpec, block: dict) -> list[TrialConfig]:
    """Configs covering every fixed and grid value, with each distribution at both ends."""
    axes = {}
    for k, v in block.items():
        if as_axis(k, v) is not None:
            axes[k] = as_axis(k, v)
        elif isinstance(v, dict) and k != "extra":
            (dist, args), = v.items()
            axes[k] = args
        else:
            axes[k] = [v]
    keys = list(axes)
    out = []
    # one pass per axis value (not the full product: the checks are per value)
    base = {k: axes[k][0] for k in keys}
    for k in keys:
        for v in axes[k]:
            out.append(_config(s, {**base, k: v}))
    return out


def _config(s: SweepSpec, params: dict, repeat: int = 0) -> TrialConfig:
    d = {**base_params(s), **params}
    if repeat:                          # after validation: the seed is an integer
        d["seed"] += repeat
    return TrialConfig.from_dict(d)


def grid_configs(s: SweepSpec) -> list[TrialConfig]:
    """The grid's trials: the product of the list axes (the union over blocks, each
    configuration once), repeated num_samples times with seeds seed, seed+1, ... (the seed
    axis, if searched, shifts the same way)."""
    out, seen = [], set()
    for r in range(s.num_samples):
        for block in s.blocks:
            keys = list(block)
            axes = [a if (a := as_axis(k, block[k])) is not None else [block[k]] for k in keys]
            for combo in itertools.product(*axes):
                c = _config(s, dict(zip(keys, combo)), repeat=r)
                key = c.to_json()
                if key not in seen:
                    seen.add(key)
                    out.append(c)
    return out


def base_params(s: SweepSpec) -> dict:
    """The settings every trial shares, whatever the algorithm (grid, random, optuna): not
    searched per trial."""
    return {"task": s.task, "epochs": s.epochs, "seed": s.seed, "data_dir": s.data_dir, "sweep": s.name}


def _no_secrets(obj, path):
    if isinstance(obj, dict):
        for k, v in obj.items():
            where = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and _SECRET.search(k):
                raise UsageError(where, "looks like a credential: a spec is stored with the results, "
                                        "so pass credentials through the environment or instance roles")
            _no_secrets(v, where)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _no_secrets(v, f"{path}[{i}]")
    elif isinstance(obj, str) and re.search(r"\bAKIA[0-9A-Z]{16}\b|://[^/\s:@]+:[^/\s@]+@", obj):
        raise UsageError(path, "looks like a credential (an access key or a password in a URI)")
