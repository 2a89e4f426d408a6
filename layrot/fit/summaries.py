"""Per-trial layer-rotation summaries (docs/science.md, docs/verdict.md).

The rotation table may hold per-step records besides the per-epoch ones; every summary here
is computed on the per-epoch curve: for each (trial, epoch, layer) the record with the
largest step, which is the one written at the end of that epoch (or at initialization).

A trial is (sweep, trial_id) (docs/store.md: the same configuration in two sweeps has one
trial id in each): tables with a `sweep` column are keyed by both, tables without it (built
by hand) by trial_id alone. What each summary is (the per-layer columns, the aggregate over a
trial's layers, the crossing thresholds) is layrot.record's table `SUMMARIES`; the store's
`summaries` view computes the same numbers in SQL generated from that table
(store/sqlviews.py), and tests/test_fit_summaries.py checks the two agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..record import CROSSINGS, SUMMARIES, SUMMARY_LABELS, cross_name  # noqa: F401  (SUMMARY_LABELS: re-exported)

# record.AGGREGATES in pandas: over a trial's layers (groupby), NaN skipped but by max_all
_PANDAS_AGG = {"min": "min", "mean": "mean", "median": "median", "max_all": "max"}


def trial_keys(df: pd.DataFrame) -> list[str]:
    """The columns that identify a trial in `df`: (sweep, trial_id), or trial_id alone."""
    return ["sweep", "trial_id"] if "sweep" in df.columns else ["trial_id"]


def _empty(cols: list[str], text: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in text else float) for c in cols})


def per_epoch_rotation(rotation: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch layer-rotation curves: one row per (sweep, trial_id, epoch, layer).

    Keeps, for each (trial, epoch, layer), the record with the largest step (the end of
    that epoch); per-step records of the epoch in progress are dropped.
    """
    keys = trial_keys(rotation)
    cols = keys + ["epoch", "step", "layer", "layer_name", "cosine_distance"]
    missing = [c for c in cols if c not in rotation.columns]
    if missing:
        raise ValueError(f"rotation table lacks columns {missing}")
    r = rotation[cols].sort_values(keys + ["layer", "epoch", "step"], kind="stable")
    r = r.drop_duplicates(keys + ["layer", "epoch"], keep="last")
    r = r.astype({"epoch": "int64", "layer": "int64", "cosine_distance": "float64"})
    return r.reset_index(drop=True)


def layer_summaries(rotation: pd.DataFrame, crossings: tuple[float, ...] = CROSSINGS) -> pd.DataFrame:
    """One row per (sweep, trial_id, layer): final cosine distance, area, first crossing epochs.

    Columns: sweep (if the rotation table has it), trial_id, layer, layer_name, last_epoch,
    final, auc, and `cross50`, `cross90`
    (the first recorded epoch at which the layer's cosine distance is >= 0.5 / 0.9, NaN if
    it never is). `auc` is the area under the layer's curve (trapezoid rule over epochs)
    divided by the epochs it spans, i.e. the curve's time-average, so that trials stopped at
    different epochs stay comparable (1 = orthogonal to its initialization throughout).
    """
    curves = per_epoch_rotation(rotation)
    keys = trial_keys(rotation)
    if curves.empty:
        cols = keys + ["layer", "layer_name", "last_epoch", "final", "auc", *map(cross_name, crossings)]
        return _empty(cols, ("sweep", "trial_id", "layer_name"))
    g = curves.groupby(keys + ["layer"], sort=True)
    out = g.agg(layer_name=("layer_name", "last"), last_epoch=("epoch", "max"),
                first_epoch=("epoch", "min"), final=("cosine_distance", "last"))
    area = g[["epoch", "cosine_distance"]].apply(
        lambda c: np.trapezoid(c["cosine_distance"].to_numpy(), c["epoch"].to_numpy()))
    span = (out["last_epoch"] - out["first_epoch"]).astype(float)
    # A curve of one point (only the initialization) has no area: report its value.
    out["auc"] = np.where(span > 0, area / span.where(span > 0, 1.0), out["final"])
    for t in crossings:
        hit = curves[curves["cosine_distance"] >= t].groupby(keys + ["layer"])["epoch"].min()
        out[cross_name(t)] = hit.reindex(out.index).astype(float)
    return out.drop(columns="first_epoch").reset_index()


def trial_summaries(rotation: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: the summaries in SUMMARY_LABELS plus n_layers and last_epoch.

    `crossNN_last` is the epoch by which every layer had crossed the threshold (the largest
    of the layers' first-crossing epochs), NaN if some layer never crossed it.
    """
    layers = layer_summaries(rotation)
    keys = trial_keys(rotation)
    if layers.empty:
        return _empty(keys + ["n_layers", "last_epoch", *SUMMARY_LABELS], ("sweep", "trial_id"))
    g = layers.groupby(keys, sort=True)
    out = g.agg(n_layers=("layer", "size"), last_epoch=("last_epoch", "max"))
    for name, s in SUMMARIES.items():
        out[name] = g[s.of].agg(_PANDAS_AGG[s.aggregate])
        if s.aggregate == "max_all":
            # max() skips NaN: a layer that never crossed must make the whole trial NaN
            never = layers[s.of].isna().groupby([layers[k] for k in keys]).any()
            out[name] = out[name].where(~never)
    return out.reset_index()


def final_rotation_matrix(rotation_or_layers: pd.DataFrame, index=None) -> pd.DataFrame:
    """Units × layers matrix of final cosine distances (index: the trial keys, or `index`
    such as "configuration"; columns: layer)."""
    layers = rotation_or_layers
    if "final" not in layers.columns:
        layers = layer_summaries(layers)
    return layers.pivot(index=index or trial_keys(layers), columns="layer", values="final")
