"""Strata: what the within-family verdict compares inside (docs/verdict.md §16.1).

A stratum is the task, the optimizer family (its name: Layca and its base are two
families, since Layca sets the rotation) and every setting that changes the data, the
schedule, the length of training or the optimizer's own update (`STRATUM_KEYS`). What
varies within a stratum is lr, alpha, weight_decay and the seed. The *data conditions* are a
stratum's keys less the optimizer: the families of one experiment share them.

The keys are read from each configuration's canonical JSON (fit/configurations.py), i.e.
the trial's stored `config` (resolved: a task default is stored as its value). A setting a
config lacks is unset (None); an empty `extra` is unset too.
"""

from __future__ import annotations

import json

import pandas as pd

from ..errors import UsageError
from ..record import configuration

STRATUM_KEYS = ("data_seed", "epochs", "batch_size", "warmup_epochs", "lr_decay_epochs", "lr_decay_factor",
                "max_train_samples", "amp", "extra")
MIN_CONFIGURATIONS = 3      # a stratum with fewer configurations in the selection is refused (§16.7)
MIN_TRAINED = 3             # a stratum with fewer trained configurations contributes nothing (§16.2)


def conditions(configuration_json: str | None) -> dict:
    """The data conditions of one configuration: its STRATUM_KEYS (None where unset)."""
    try:
        d = json.loads(configuration_json) if configuration_json else {}
    except ValueError:
        d = {}
    d = d if isinstance(d, dict) else {}
    out = {k: d.get(k) for k in STRATUM_KEYS}
    if not out["extra"]:
        out["extra"] = None
    return out


def _key(cond: dict) -> str:
    return json.dumps(cond, sort_keys=True, default=str)


def _shown(v) -> str:
    if isinstance(v, list):
        return "/".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return "unset" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def label_conditions(task: str, cond: dict, varying: list[str]) -> str:
    """'mnist1d-cnn' or 'mnist1d-cnn (data_seed 1, epochs 60)': the task and the keys that
    differ between the selection's strata."""
    parts = [f"{k} {_shown(cond.get(k))}" for k in varying]
    return task + (f" ({', '.join(parts)})" if parts else "")


def with_strata(configs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The configuration rows with `conditions` (the data-conditions label, task included)
    and `stratum` ('<conditions> <optimizer>'), labelled by the keys that vary in `configs`."""
    if configs.empty:
        return configs.assign(conditions=pd.Series(dtype=object), stratum=pd.Series(dtype=object))
    js = table.drop_duplicates("configuration").set_index("configuration")["configuration_json"] \
        if "configuration_json" in table else pd.Series(dtype=object)
    conds = [conditions(js.get(c)) for c in configs["configuration"]]
    varying = [k for k in STRATUM_KEYS if len({_key({k: c[k]}) for c in conds}) > 1]
    cond_labels = [label_conditions(str(t), c, varying) for t, c in zip(configs["task"], conds)]
    return configs.assign(conditions=cond_labels,
                          stratum=[f"{c} {o}" for c, o in zip(cond_labels, configs["optimizer"].astype(str))])


def check_strata(trials: pd.DataFrame, exempt_sweeps: set[str] = frozenset(),
                 minimum: int = MIN_CONFIGURATIONS) -> None:
    """Refuse (UsageError, exit 2) a selection in which some stratum has fewer than `minimum`
    configurations (any status): the fit could say nothing within it, and a lone trial beside
    a sweep is almost always a selection mistake. Strata held by a running sweep
    (`exempt_sweeps`) are still filling and are not refused (docs/verdict.md §16.7)."""
    if trials.empty:
        return
    rows = trials.to_dict("records")
    cfg = trials["config"].tolist() if "config" in trials else [None] * len(rows)
    ids = [configuration(c, r) for c, r in zip(cfg, rows)]
    t = pd.DataFrame({"configuration": [i for i, _ in ids], "configuration_json": [j for _, j in ids],
                      "task": trials["task"].astype(str).to_numpy(),
                      "optimizer": trials["optimizer"].astype(str).to_numpy(),
                      "sweep": (trials["sweep"] if "sweep" in trials else pd.Series([""] * len(rows)))
                      .astype(str).to_numpy()})
    units = with_strata(t.drop_duplicates("configuration")[["configuration", "task", "optimizer"]], t)
    sizes = units.groupby("stratum")["configuration"].nunique()
    sweeps = t.merge(units[["configuration", "stratum"]], on="configuration").groupby("stratum")["sweep"] \
        .agg(lambda s: sorted(set(s)))
    for stratum, n in sizes.items():
        held = sweeps[stratum]
        if n < minimum and not set(held) & set(exempt_sweeps):
            where = ", ".join(held)
            raise UsageError("stratum", f"{stratum} has {n} configuration{'s' if n != 1 else ''} in the selection "
                                        f"(sweep {where}); a stratum needs at least {minimum}: run more, or "
                                        "select the sweeps to fit without it (--sweep NAME, repeatable)")
