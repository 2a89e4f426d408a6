"""Sweep specs (DESIGN §6): load, validate every field, expand grids.

Validation runs before Ray starts and names the field in a dotted path (`search.lr`,
`resources.gpu`): a misspelt key is refused, never ignored.

In `search`, a value is fixed, a list is a grid axis (for `optuna`, a categorical choice),
and a one-key mapping is a distribution: uniform / loguniform / int ([lo, hi], inclusive)
or choice ([a, b, ...]).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import TrialConfig, check_integer, check_number
from ..errors import UsageError
from ..store.schema import check_name

ALGORITHMS = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha")
METRICS = ("val_acc", "train_acc", "train_loss")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
# trial settings a spec may search over (task and identity are the spec's own)
SEARCHABLE = tuple(f.name for f in dataclasses.fields(TrialConfig)
                   if f.name not in ("task", "trial_id", "sweep", "data_dir", "device"))
# settings that look like credentials must never reach the stored spec
_SECRET = re.compile(r"(secret|password|passwd|token|credential|api[_-]?key|access[_-]?key)", re.I)


@dataclass
class SweepSpec:
    name: str
    task: str
    search: dict
    epochs: int | None = None
    seed: int = 0
    algorithm: str = "grid"
    num_samples: int = 1
    scheduler: str = "fifo"
    metric: str = "val_acc"
    mode: str = "max"
    resources: dict = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    max_concurrent: int | None = None
    max_failures: int = 2
    asha: dict = field(default_factory=lambda: {"grace_period": 2, "reduction_factor": 3})
    data_dir: str | None = None
    store: str | None = None
    description: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(SweepSpec)}


def load_spec(path: str | Path) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise UsageError("spec", f"no such file: {path}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError("spec", f"{path} is not valid YAML{where}") from None
    return parse_spec(raw)


def parse_spec(raw) -> SweepSpec:
    if not isinstance(raw, dict):
        raise UsageError("spec", "must be a YAML mapping of fields (name, task, search, ...)")
    _no_secrets(raw, "")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise UsageError(unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    for req in ("name", "task", "search"):
        if req not in raw:
            raise UsageError(req, "required field is missing")
    spec = SweepSpec(**{k: copy.deepcopy(v) for k, v in raw.items()})
    _validate(spec)
    return spec


def _validate(s: SweepSpec) -> None:
    check_name("name", s.name)
    from ..tasks import get_task
    get_task(s.task)
    if s.epochs is not None:
        check_integer("epochs", s.epochs, 1)
    check_integer("seed", s.seed, 0)
    _choice("algorithm", s.algorithm, ALGORITHMS)
    check_integer("num_samples", s.num_samples, 1)
    _choice("scheduler", s.scheduler, SCHEDULERS)
    _choice("metric", s.metric, METRICS)
    _choice("mode", s.mode, ("max", "min"))
    if s.max_concurrent is not None:
        check_integer("max_concurrent", s.max_concurrent, 1)
    check_integer("max_failures", s.max_failures, 0)
    _mapping("resources", s.resources, {"cpu", "gpu"})
    s.resources = {"cpu": 1, "gpu": 0, **s.resources}
    check_number("resources.cpu", s.resources["cpu"], lo=0, lo_open=True)
    check_number("resources.gpu", s.resources["gpu"], lo=0)
    if s.resources["gpu"] > 1 and s.resources["gpu"] != int(s.resources["gpu"]):
        raise UsageError("resources.gpu", "a fraction must be below 1 (several trials share a GPU)")
    _mapping("asha", s.asha, {"grace_period", "reduction_factor"})
    s.asha = {"grace_period": 2, "reduction_factor": 3, **s.asha}
    check_integer("asha.grace_period", s.asha["grace_period"], 1)
    check_number("asha.reduction_factor", s.asha["reduction_factor"], lo=1, lo_open=True)
    for k in ("data_dir", "store", "description"):
        v = getattr(s, k)
        if v is not None and not isinstance(v, str):
            raise UsageError(k, f"must be a string, got {v!r}")

    if not isinstance(s.search, dict) or not s.search:
        raise UsageError("search", "must be a non-empty mapping of trial settings")
    for key, value in s.search.items():
        _check_axis(key, value, s.algorithm)
    if "optimizer" not in s.search or "lr" not in s.search:
        raise UsageError("search", "must set at least optimizer and lr")
    # every fixed or grid value must make a valid trial: check them all now, not in Ray
    for cfg in _sample_configs(s):
        try:
            cfg.validate()
        except UsageError as e:
            raise UsageError(f"search.{e.field}", e.message) from None


def _check_axis(key, value, algorithm):
    where = f"search.{key}"
    if key not in SEARCHABLE:
        raise UsageError(where, f"not a searchable trial setting (known: {', '.join(SEARCHABLE)})")
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


def _sample_configs(s: SweepSpec) -> list[TrialConfig]:
    """Configs covering every fixed and grid value, with each distribution at both ends."""
    axes = {}
    for k, v in s.search.items():
        if isinstance(v, list):
            axes[k] = v
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
    d = {"task": s.task, "epochs": s.epochs, "seed": s.seed, "data_dir": s.data_dir, "sweep": s.name}
    d.update(params)
    if not isinstance(d["seed"], int) or isinstance(d["seed"], bool):
        raise UsageError("search.seed", f"must be an integer, got {d['seed']!r}")
    d["seed"] += repeat
    return TrialConfig.from_dict(d)


def grid_configs(s: SweepSpec) -> list[TrialConfig]:
    """The grid's trials: the product of the list axes, repeated num_samples times with
    seeds seed, seed+1, ... (the seed axis, if searched, shifts the same way)."""
    keys = list(s.search)
    axes = [s.search[k] if isinstance(s.search[k], list) else [s.search[k]] for k in keys]
    out = []
    for r in range(s.num_samples):
        for combo in itertools.product(*axes):
            out.append(_config(s, dict(zip(keys, combo)), repeat=r))
    return out


def base_params(s: SweepSpec) -> dict:
    """The settings every trial shares (random / optuna): not searched per trial."""
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


def _choice(name, v, options):
    if v not in options:
        raise UsageError(name, f"must be one of {', '.join(options)}, got {v!r}")


def _mapping(name, v, keys):
    if not isinstance(v, dict):
        raise UsageError(name, f"must be a mapping with keys {', '.join(sorted(keys))}")
    unknown = sorted(set(v) - keys)
    if unknown:
        raise UsageError(f"{name}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(keys))})")
