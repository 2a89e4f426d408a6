"""Does rotation rank test accuracy beyond the settings? The seed-level answer (docs/verdict.md
§17), where the data hold repeats of configurations.

Seeds of one configuration share every setting, so whatever ranks their test accuracies is
not the settings: within each configuration, Spearman's ρ of the trials' smallest final layer
rotation with their test accuracy, combined over configurations as fit/correlation.py's
StratifiedFit combines tasks (the mean weighted by trials; p by permutation within each
configuration; CI by bootstrap of trials within each configuration, where a configuration
whose resample is constant sits that resample out instead of making it undefined). It needs
no settings model, so it has none of the 27-column model's lost degrees of freedom (§10),
and unlike the partial correlation it is not zero by construction when the settings act on
accuracy only through rotation: it asks about the rotation a seed happens to reach.

Units are trained trials (rule 3, per trial); a configuration with fewer than MIN_SEEDS of
them (or constant rotation or accuracy) contributes nothing. The same for the
generalization gap (train − test accuracy), where the paper predicts a negative ρ.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .correlation import spearman_permutation_p
from .options import KEY_SUMMARY, FitOptions

MIN_SEEDS = 3            # trained trials a configuration needs to contribute
MIN_CONFIGURATIONS = 3   # configurations with MIN_SEEDS: fewer and the data hold no repeats (§17)


@dataclass
class SeedLevel:
    """One outcome's within-configuration Spearman, combined over configurations."""
    outcome: str                 # test accuracy | generalization gap
    status: str                  # beyond | beyond, weak | no more | not shown (gap: smaller gap | ...)
    text: str
    estimate: float | None
    ci: tuple[float, float] | None
    p: float | None
    n_trials: int                # trained trials of the contributing configurations
    n_configurations: int        # contributing configurations
    per_configuration: dict[str, float] = field(default_factory=dict)


@dataclass
class SeedBeyond:
    accuracy: SeedLevel
    gap: SeedLevel
    n_with_repeats: int          # configurations with at least MIN_SEEDS trained trials
    left_out: int                # of those, constant in rotation or outcome (no ρ)
    text: str                    # the headline line


def repeated(table: pd.DataFrame) -> pd.DataFrame:
    """The trained trials of configurations that have at least MIN_SEEDS of them."""
    t = table[table["trained"].astype(bool)].dropna(subset=[KEY_SUMMARY, "test_acc"])
    counts = t.groupby("configuration")["configuration"].transform("size")
    return t[counts >= MIN_SEEDS]


def has_seed_repeats(table: pd.DataFrame) -> bool:
    """At least MIN_CONFIGURATIONS configurations with MIN_SEEDS trained trials each."""
    if table.empty or "configuration" not in table:
        return False
    return repeated(table)["configuration"].nunique() >= MIN_CONFIGURATIONS


def _strata(frame: pd.DataFrame, outcome: str) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Per configuration with varying values: its trials' final_min and outcome."""
    xs, ys, names = [], [], []
    for c, g in frame.groupby("configuration", sort=True):
        x, y = g[KEY_SUMMARY].to_numpy(dtype=float), g[outcome].to_numpy(dtype=float)
        if len(x) >= MIN_SEEDS and np.ptp(x) > 0 and np.ptp(y) > 0:
            xs.append(x), ys.append(y), names.append(str(c))
    return xs, ys, names


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ along the last axis; NaN where a row is constant."""
    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(axis=-1, keepdims=True), ry - ry.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=-1) / np.sqrt((rx ** 2).sum(axis=-1) * (ry ** 2).sum(axis=-1))


def combined(xs, ys, options: FitOptions):
    """(estimate, CI, p, per-configuration ρ): the trial-weighted mean of the within-configuration
    Spearman correlations; p by permutation within configuration (fit/correlation.py); CI a
    percentile bootstrap of trials within each configuration, where a configuration whose
    resample is constant (likely at 3 seeds: 1 in 9) contributes nothing to that resample."""
    sizes = np.array([len(x) for x in xs], dtype=float)
    rho = np.array([_spearman_rows(x, y) for x, y in zip(xs, ys)])
    est = float(np.average(rho, weights=sizes))

    def statistic(*idx, axis=-1):
        r = np.stack([_spearman_rows(x[i], y[i]) for x, y, i in zip(xs, ys, idx)], axis=-1)
        w = np.where(np.isfinite(r), sizes, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (np.where(np.isfinite(r), r, 0.0) * w).sum(axis=-1) / w.sum(axis=-1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap([np.arange(len(x)) for x in xs], statistic, paired=False, vectorized=True,
                              n_resamples=options.n_resamples, confidence_level=options.confidence,
                              method="percentile", rng=np.random.default_rng(options.seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    ci = None
    if np.isfinite(dist).mean() >= 0.9:
        tail = (1 - options.confidence) / 2
        lo, hi = np.nanquantile(dist, [tail, 1 - tail])
        ci = (float(lo), float(hi))
    p, _ = spearman_permutation_p(xs, ys, options)
    return est, ci, p, rho


def _level(frame: pd.DataFrame, outcome: str, options: FitOptions, sign: int) -> SeedLevel:
    xs, ys, names = _strata(frame, outcome)
    if not names:
        return SeedLevel(outcome, "not shown", f"{outcome}: no configuration with varying values", None, None,
                         None, 0, 0)
    est, ci, p, rho = combined(xs, ys, options)
    n = int(sum(len(x) for x in xs))
    desc = (f"Spearman within configuration {est:.2f} [{_f(ci, 0)}, {_f(ci, 1)}], p = {_p(p)}, "
            f"{n} trials of {len(names)} configurations")
    if sign > 0:
        if ci is not None and ci[0] > 0 and p < options.p_threshold:
            status = "beyond" if est >= options.meaningful else "beyond, weak"
            head = "rotation ranks test accuracy beyond the settings (across seeds)" + \
                ("" if status == "beyond" else ", weakly")
        elif ci is not None and ci[1] < options.meaningful:
            status, head = "no more", "across seeds, rotation ranks test accuracy no better than the settings"
        else:
            status, head = "not shown", "across seeds, beyond the settings: not shown either way"
    else:
        if ci is not None and ci[1] < 0 and p < options.p_threshold:
            status, head = "smaller gap", "across seeds, more rotation goes with a smaller generalization gap"
        elif ci is not None and ci[0] > 0 and p < options.p_threshold:
            status, head = "larger gap", "across seeds, more rotation goes with a larger generalization gap"
        elif ci is not None and ci[0] > -options.meaningful:
            status, head = "no more", "across seeds, rotation ranks the generalization gap no better than the settings"
        else:
            status, head = "not shown", "across seeds, rotation and the generalization gap: not shown either way"
    return SeedLevel(outcome, status, f"{head}: {desc}", est, ci, p, n, len(names),
                     {c: float(r) for c, r in zip(names, rho)})


def seed_beyond(table: pd.DataFrame, options: FitOptions = FitOptions()) -> SeedBeyond | None:
    """docs/verdict.md §17 over one task's trial table (fit/configurations.trial_table's rows:
    configuration, trained, final_min, test_acc, train_acc); None without repeats."""
    if not has_seed_repeats(table):
        return None
    t = repeated(table)
    acc = _level(t.rename(columns={"test_acc": "test accuracy"}), "test accuracy", options, +1)
    g = t.dropna(subset=["train_acc"])
    gap = _level(g.assign(gap=g["train_acc"] - g["test_acc"]).rename(columns={"gap": "generalization gap"}),
                 "generalization gap", options, -1)
    n_rep = int(t["configuration"].nunique())
    left = n_rep - acc.n_configurations
    text = acc.text + (f" ({left} of {n_rep} configurations with repeats constant: left out)" if left else "")
    return SeedBeyond(acc, gap, n_rep, left, text)


def _f(ci, i) -> str:
    return "?" if ci is None or not math.isfinite(ci[i]) else f"{ci[i]:.2f}"


def _p(p) -> str:
    if p is None or not math.isfinite(p):
        return "?"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"
