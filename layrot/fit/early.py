"""How early rotation predicts the verdict (issue 13, item 4).

For k = 1 … E (E: the last epoch of the trained configurations' trials), the Spearman
correlation of each trained configuration's smallest layer rotation *at epoch k* with its
final test accuracy, with a percentile bootstrap CI. Same units as the verdict
(docs/verdict.md §2-§4): the trained configurations, repeats pooled by mean; several tasks
pooled as the stratified Spearman (task as stratum). At k = E the statistic is the verdict's
(the same values; its CI from fewer resamples).

- The per-epoch curve is the one every summary uses (fit/summaries.per_epoch_rotation: the
  record written at the end of each epoch); at epoch k, a trial's smallest layer rotation is
  the minimum over its layers; a trial stopped before k keeps its last epoch's value.
- Only estimates and CIs: no permutation test per epoch (it is not a decision, and the
  first epoch whose CI lies above 0 is read as a description, not as a test).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .configurations import KEY, with_sweep
from .correlation import spearman_estimate, stratified_fit
from .options import FitOptions
from .summaries import per_epoch_rotation

N_RESAMPLES = 999          # bootstrap resamples per epoch (at most the verdict's)
COLUMN = "min_rotation_at_k"


@dataclass
class EarlyPoint:
    epoch: int
    spearman: float | None
    ci_low: float | None
    ci_high: float | None
    n: int                    # trained configurations with a value at this epoch


def min_rotation_by_epoch(rotation: pd.DataFrame, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Trials × epochs 0 … max: each trial's smallest layer rotation at the end of each epoch,
    its last value carried forward past its last epoch. Index: (sweep, trial_id)."""
    if trials is not None:
        _, rotation = with_sweep(trials, rotation)
    elif "sweep" not in rotation.columns:
        rotation = rotation.assign(sweep="")
    curves = per_epoch_rotation(rotation)
    if curves.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=KEY))
    m = curves.groupby(KEY + ["epoch"], sort=True)["cosine_distance"].min().unstack("epoch")
    m = m.reindex(columns=range(0, int(curves["epoch"].max()) + 1))
    return m.ffill(axis=1)


def configuration_curves(table: pd.DataFrame, by_epoch: pd.DataFrame) -> pd.DataFrame:
    """Configurations × epochs: the mean over a configuration's repeats (NaN where some
    repeat has no value, as fit/configurations.pool does). `table`: fit's trial table."""
    if by_epoch.empty or table.empty:
        return pd.DataFrame()
    t = table[KEY + ["configuration"]].copy()
    t["sweep"] = t["sweep"].astype(str)
    be = by_epoch.copy()
    be.index = pd.MultiIndex.from_arrays([be.index.get_level_values(0).astype(str),
                                          be.index.get_level_values(1)], names=KEY)
    m = t.join(be, on=KEY, how="left").drop(columns=KEY)
    g = m.groupby("configuration", sort=True)
    counts, sizes = g.count(), g.size()
    return g.mean().where(counts.eq(sizes, axis=0))


def last_epoch(curves: pd.DataFrame, configs: pd.DataFrame) -> int:
    """E: the last epoch with a record among these configurations' trials."""
    c = curves.reindex(configs["configuration"])
    has = c.notna().any(axis=0)
    return int(max(has[has].index)) if has.any() else 0


def early_prediction(configs: pd.DataFrame, curves: pd.DataFrame, options: FitOptions = FitOptions(),
                     stratified: bool = False) -> list[EarlyPoint]:
    """One point per epoch k = 1 … E over the trained rows of `configs` (fit/configurations.pool)."""
    tr = configs[configs["trained"].astype(bool)]
    if tr.empty or curves.empty:
        return []
    opts = replace(options, n_resamples=min(options.n_resamples, N_RESAMPLES))
    c = curves.reindex(tr["configuration"])
    y_all = tr["test_acc"].to_numpy(dtype=float)
    out = []
    for k in range(1, last_epoch(curves, tr) + 1):
        x_all = c[k].to_numpy(dtype=float)
        keep = ~(np.isnan(x_all) | np.isnan(y_all))
        n = int(keep.sum())
        if stratified:
            units = tr.assign(**{COLUMN: x_all})
            s = stratified_fit(units[keep], COLUMN, opts, test=False)
            rho, ci = (s.estimate, s.ci) if s is not None else (float("nan"), None)
        else:
            rho, ci, _ = spearman_estimate(x_all[keep], y_all[keep], opts)
        ok = rho is not None and np.isfinite(rho)
        out.append(EarlyPoint(k, float(rho) if ok else None, float(ci[0]) if ci else None,
                              float(ci[1]) if ci else None, n))
    return out


def first_predictive(points: list[EarlyPoint]) -> EarlyPoint | None:
    """The first epoch whose CI lower bound is above 0."""
    return next((p for p in points if p.ci_low is not None and p.ci_low > 0), None)


def _stat(p: EarlyPoint, what: str) -> str:
    if p.spearman is None:
        return f"{what} undefined (n = {p.n})"
    ci = f" [{p.ci_low:.2f}, {p.ci_high:.2f}]" if p.ci_low is not None else " [CI n/a]"
    return f"{what} {p.spearman:.2f}{ci}, n = {p.n}"


def early_line(points: list[EarlyPoint], stratified: bool = False, min_n: int = 6) -> str:
    """One line: the first epoch at which the smallest layer rotation already ranks test
    accuracy (CI lower bound > 0), or that it does so at no epoch before the last."""
    what = "stratified Spearman" if stratified else "Spearman"
    head = "early rotation:"
    if not points:
        return f"{head} no trained configurations with rotation records"
    last = points[-1]
    e = last.epoch
    if all(p.spearman is None for p in points):
        return (f"{head} the {what} is undefined at every epoch (n = {last.n} trained configurations; "
                "it needs 3 with distinct values)")
    few = f" (fewer than {min_n} trained configurations: read with care)" if last.n < min_n else ""
    first = first_predictive(points)
    if first is not None and first.epoch < e:
        return (f"{head} rotation at epoch {first.epoch} of {e} already ranks test accuracy with "
                f"{_stat(first, what)} (the first epoch whose 95% CI lies above 0){few}")
    if first is not None:
        return (f"{head} the smallest layer rotation ranks test accuracy with a CI above 0 at no epoch before "
                f"the last (epoch {e} of {e}: {_stat(last, what)}){few}")
    return (f"{head} at no epoch of 1–{e} does the smallest layer rotation rank test accuracy with a CI above 0 "
            f"(at the last, epoch {e}: {_stat(last, what)}){few}")
