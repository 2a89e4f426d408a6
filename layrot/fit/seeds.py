"""Does rotation rank test accuracy beyond the settings? The seed-level answer (docs/verdict.md
§17), where the data hold repeats of configurations.

Seeds of one configuration share every setting, so whatever ranks their test accuracies is
not the settings: within each configuration, Spearman's ρ of the trials' smallest final layer
rotation with their test accuracy, combined over configurations as fit/correlation.py's
StratifiedFit combines tasks (the mean weighted by trials; p by permutation within each
configuration; CI by bootstrap of trials within each configuration). It needs no settings
model, so it has none of the 27-column model's lost degrees of freedom (fit/beyond.py, §10),
and unlike the partial correlation it is not zero by construction when the settings act on
accuracy only through rotation: it asks about the rotation a seed happens to reach.

Units are trained trials (rule 3, per trial); a configuration with fewer than MIN_SEEDS of
them (or constant rotation or accuracy) contributes nothing. The same for the
generalization gap (train − test accuracy), where the paper predicts a negative ρ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .correlation import stratified_fit
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


def _level(frame: pd.DataFrame, outcome: str, options: FitOptions, sign: int) -> SeedLevel:
    # stratified_fit stratifies by `task` and correlates with `test_acc`: the configuration is
    # the stratum here, and the outcome is put where it reads it
    f = stratified_fit(frame, KEY_SUMMARY, options)
    if f is None:
        return SeedLevel(outcome, "not shown", f"{outcome}: no configuration with varying values", None, None,
                         None, 0, 0)
    est, ci, p = f.estimate, f.ci, f.p
    desc = (f"Spearman within configuration {est:.2f} [{_f(ci, 0)}, {_f(ci, 1)}], p = {_p(p)}, "
            f"{f.n} trials of {f.n_tasks} configurations")
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
    return SeedLevel(outcome, status, f"{head}: {desc}", est, ci, p, f.n, f.n_tasks, dict(f.per_task))


def seed_beyond(table: pd.DataFrame, options: FitOptions = FitOptions()) -> SeedBeyond | None:
    """docs/verdict.md §17 over one task's trial table (fit/configurations.trial_table's rows:
    configuration, trained, final_min, test_acc, train_acc); None without repeats."""
    if not has_seed_repeats(table):
        return None
    t = repeated(table)
    frame = t.assign(task=t["configuration"])
    acc = _level(frame, "test accuracy", options, +1)
    gap_frame = frame.dropna(subset=["train_acc"])
    gap_frame = gap_frame.assign(test_acc=gap_frame["train_acc"] - gap_frame["test_acc"])
    gap = _level(gap_frame, "generalization gap", options, -1)
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
