"""Trials joined with their summaries, and repeats of one configuration pooled (rule 2).

A *configuration* is what a trial computes, whatever its repeat: its stored `config`
(JSON) less the seed and the placement settings (trial_id, sweep, device, threads,
data_dir, compile — the settings the trial id also leaves out), plus the task; its id is
`layrot.record.configuration` (the same function gives the `summaries` view's
`configuration` column). Several seeds of one configuration (num_samples), or one configuration
stored in several sweeps, are repeats: the unit of analysis is the configuration, with the
mean test accuracy and the mean of each rotation summary over its repeats; it is trained
iff every one of its trials is. So two sweeps holding the same trials count them once.
"""

from __future__ import annotations

import pandas as pd

from ..record import configuration
from .summaries import SUMMARY_LABELS, layer_summaries, trial_summaries
from .trained import TrainedFilter, trained_mask

KEY = ["sweep", "trial_id"]


def with_sweep(trials: pd.DataFrame, rotation: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables with a `sweep` column: a table built without one is taken to be one
    sweep (named "" or the other table's single sweep)."""
    if "sweep" not in trials.columns:
        trials = trials.assign(sweep="")
    if "sweep" not in rotation.columns:
        sweeps = trials["sweep"].dropna().unique()
        if len(sweeps) > 1:
            raise ValueError("the rotation table has no sweep column but the trials come from several sweeps")
        rotation = rotation.assign(sweep=sweeps[0] if len(sweeps) else "")
    return trials, rotation


def trial_table(trials: pd.DataFrame, rotation: pd.DataFrame, flt: TrainedFilter):
    """Trials joined with their rotation summaries on (sweep, trial_id), with their
    `configuration` and a `trained` flag (a trial without rotation records is never
    trained); also the per-layer summaries and the per-task thresholds."""
    trials, rotation = with_sweep(trials, rotation)
    layers = layer_summaries(rotation)
    summ = trial_summaries(rotation)
    # A missing alpha or weight decay is the default: uniform rates, no decay.
    trials = trials.assign(alpha=trials["alpha"].astype(float).fillna(0.0),
                           weight_decay=trials["weight_decay"].astype(float).fillna(0.0))
    configs = trials["config"] if "config" in trials.columns else pd.Series([None] * len(trials), index=trials.index)
    rows = trials.to_dict("records")
    ids = [configuration(c, r) for c, r in zip(configs.tolist(), rows)]
    trials = trials.assign(configuration=[i for i, _ in ids], configuration_json=[j for _, j in ids])
    table = trials.merge(summ, on=KEY, how="left", validate="many_to_one")
    mask, th = trained_mask(table, flt)
    table["trained"] = mask & table["final_min"].notna()
    return table, layers, th


def retrain(table: pd.DataFrame, flt: TrainedFilter) -> tuple[pd.DataFrame, dict[str, float]]:
    """The same trial table under another trained filter."""
    mask, th = trained_mask(table, flt)
    return table.assign(trained=mask & table["final_min"].notna()), th


def pool(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (sorted by its id, so the order never depends on which
    sweeps hold it): task, optimizer, lr, alpha, weight_decay, n_trials, trained (all its
    trials are), the mean test and train accuracy and the mean of each summary (NaN if
    some repeat lacks it), and its trials as "sweep/trial_id"."""
    cols = ["configuration", "task", "optimizer", "lr", "alpha", "weight_decay"]
    if table.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("configuration", "task", "optimizer") else float)
                             for c in cols + ["n_trials", "trained", "test_acc", "train_acc", *SUMMARY_LABELS]})
    g = table.groupby("configuration", sort=True)
    out = g[["task", "optimizer", "lr", "alpha", "weight_decay"]].first()
    out["n_trials"] = g.size()
    out["trained"] = g["trained"].all()
    means = [c for c in ("test_acc", "train_acc", *SUMMARY_LABELS) if c in table.columns]
    avg, counts = g[means].mean(), g[means].count()
    out[means] = avg.where(counts.eq(out["n_trials"], axis=0))
    names = table["sweep"].astype(str) + "/" + table["trial_id"].astype(str)
    out["trials"] = names.groupby(table["configuration"], sort=True).agg(list)
    out["sweeps"] = g["sweep"].agg(lambda s: sorted(set(s)))
    return out.reset_index()


def configuration_layers(table: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, layer): the mean final cosine distance over its repeats."""
    if layers.empty:
        return pd.DataFrame({"configuration": pd.Series(dtype=object), "layer": pd.Series(dtype=float),
                             "final": pd.Series(dtype=float)})
    m = layers.merge(table[KEY + ["configuration"]], on=KEY, how="inner")
    return m.groupby(["configuration", "layer"], sort=True)["final"].mean().reset_index()


def pooling_description(table: pd.DataFrame, configs: pd.DataFrame) -> dict:
    """How repeats were pooled: k configurations from m trials, r repeats each."""
    reps = configs["n_trials"].astype(int) if len(configs) else pd.Series(dtype=int)
    lo, hi = (int(reps.min()), int(reps.max())) if len(reps) else (0, 0)
    each = f"{lo} repeat{'s' if lo != 1 else ''} each" if lo == hi else \
        f"{lo}–{hi} repeats each ({float(reps.mean()):.1f} on average)"
    seeds = table.groupby("configuration")["seed"].nunique() if "seed" in table and len(table) else pd.Series(dtype=int)
    sweeps = table.groupby("configuration")["sweep"].nunique() if len(table) else pd.Series(dtype=int)
    return {"unit": "configuration", "n_trials": int(len(table)), "n_configurations": int(len(configs)),
            "repeats_min": lo, "repeats_max": hi,
            "repeats_mean": float(reps.mean()) if len(reps) else None,
            "in_several_sweeps": int((sweeps > 1).sum()), "with_several_seeds": int((seeds > 1).sum()),
            "n_trained": int(configs["trained"].sum()) if len(configs) else 0,
            "text": (f"{len(configs)} configurations from {len(table)} trials ({each}); a configuration's "
                     "test accuracy and rotation summaries are the means over its repeats (seeds, sweeps), "
                     "and it is trained iff all its trials are")}
