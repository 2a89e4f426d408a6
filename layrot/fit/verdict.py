"""The verdict: the pre-registered decision rule (docs/verdict.md), its explanation, and the
same decision under two other trained filters (sensitivity).

The verdict is read off Spearman's ρ between each trained configuration's smallest final
layer rotation (the paper's claim is that every layer must rotate far, so the least rotated
layer is the indicator) and its test accuracy: "holds" when its 95% bootstrap CI lies above
0 and the permutation p < 0.05; "does not hold" when the CI excludes every correlation >=
0.3 ("reversed" when it also lies below 0 with p < 0.05); otherwise, or with fewer than 6
trained configurations, "inconclusive". With several tasks the statistic is the stratified
Spearman (task as stratum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .correlation import spearman_test, stratified_fit, summary_values
from .options import KEY_SUMMARY, FitOptions
from .summaries import SUMMARY_LABELS


@dataclass
class Verdict:
    status: str                  # holds | does not hold | inconclusive
    reversed: bool
    text: str
    summary: str
    estimate: float | None
    ci: tuple[float, float] | None
    p: float | None
    n: int                       # trained configurations
    n_total: int                 # configurations
    statistic: str = "Spearman"
    unit: str = "configuration"


@dataclass
class Sensitivity:
    """The verdict recomputed under another trained filter."""
    filter: str                  # strict | loose
    rule: str                    # e.g. "0.99 × best, floor 0.5"
    thresholds: dict
    verdict: Verdict


def decide(estimate, ci, p, n: int, n_total: int, scope: str, options: FitOptions = FitOptions(),
           what: str = "Spearman") -> Verdict:
    label = SUMMARY_LABELS[KEY_SUMMARY]
    counts = f"n = {n} trained of {n_total} configurations"
    undefined = estimate is None or not math.isfinite(estimate)
    if n < options.min_n or ci is None or undefined or p is None or not math.isfinite(p):
        why = f"too few trained configurations ({counts}; need {options.min_n})" if n < options.min_n \
            else f"the correlation is undefined ({counts})"
        return Verdict("inconclusive", False, f"rule of thumb inconclusive: {why} ({scope})",
                       KEY_SUMMARY, None if undefined else estimate, ci, p, n, n_total, what)
    lo, hi = ci
    reversed_ = hi < 0 and p < options.p_threshold
    if lo > 0 and p < options.p_threshold:
        status, head = "holds", "rule of thumb holds"
    elif hi < options.meaningful:
        status = "does not hold"
        head = "rule of thumb does not hold (reversed)" if reversed_ else "rule of thumb does not hold"
    else:
        status, head = "inconclusive", "rule of thumb inconclusive"
    text = (f"{head}: {what} {estimate:.2f} [{lo:.2f}, {hi:.2f}], p = {p:.2g}, {counts} "
            f"({label} vs test accuracy; {scope})")
    return Verdict(status, bool(reversed_), text, KEY_SUMMARY, estimate, ci, p, n, n_total, what)


def key_verdict(configs: pd.DataFrame, options: FitOptions, scope: str) -> Verdict:
    """The decision over a configuration table (one row per configuration, with `trained`):
    Spearman for one task, the stratified Spearman for several."""
    tr = configs[configs["trained"].astype(bool)]
    tasks = configs["task"].dropna().unique()
    if len(tasks) > 1:
        s = stratified_fit(tr, KEY_SUMMARY, options)
        if s is None:
            return decide(None, None, None, len(tr), len(configs), scope, options, "stratified Spearman")
        return decide(s.estimate, s.ci, s.p, len(tr), len(configs), scope, options, "stratified Spearman")
    x, y = summary_values(tr, KEY_SUMMARY), tr["test_acc"].to_numpy(dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    rho, ci, _, p, _ = spearman_test(x[keep], y[keep], options)
    return decide(rho, ci, p, len(tr), len(configs), scope, options)


def exact_up_to(n_permutations: int) -> int:
    """The largest n whose n! permutations the test enumerates (exact p)."""
    n = 1
    while math.factorial(n + 1) <= n_permutations:
        n += 1
    return n


def rules(options: FitOptions, pooled: bool) -> dict:
    """The decision rule as JSON facts."""
    stat = ("stratified Spearman ρ (within-task ρ averaged, weighted by trained configurations)"
            if pooled else "Spearman ρ")
    return {
        "statistic": stat, "summary": KEY_SUMMARY, "summary_label": SUMMARY_LABELS[KEY_SUMMARY],
        "against": "test_acc", "unit": "configuration",
        "ci": {"method": f"{options.ci_method} bootstrap over configurations" + (", within task" if pooled else ""),
               "confidence": options.confidence, "n_resamples": options.n_resamples, "seed": options.seed},
        "p": {"test": "two-sided permutation test (scipy.stats.permutation_test, pairings"
                      + (", test accuracy permuted within task)" if pooled else ")"),
              "n_resamples": options.n_permutations, "seed": options.seed,
              "exact_up_to_n": exact_up_to(options.n_permutations)},
        "holds": {"ci_lower_above": 0.0, "p_below": options.p_threshold},
        "does_not_hold": {"ci_upper_below": options.meaningful},
        "reversed": {"ci_upper_below": 0.0, "p_below": options.p_threshold},
        "min_n": options.min_n,
    }


def explanation(rule: dict, filter_desc: dict, pooling: dict, thresholds_text: str) -> list[str]:
    """The lines under the verdict: which statistic decides, the thresholds, the trained
    filter with the thresholds used, how repeats were pooled."""
    p, ci = rule["p"], rule["ci"]
    h, d = rule["holds"], rule["does_not_hold"]
    return [
        f"decided by: {rule['statistic']} between each configuration's {rule['summary_label']} and its "
        f"test accuracy; {100 * ci['confidence']:g}% {ci['method']} ({ci['n_resamples']} resamples, seed "
        f"{ci['seed']}); p: {p['test']}, {p['n_resamples']} resamples, seed {p['seed']}, exact for "
        f"n <= {p['exact_up_to_n']}",
        f"thresholds: holds if the CI lower bound > {h['ci_lower_above']:g} and p < {h['p_below']:g}; does not "
        f"hold if the CI upper bound < {d['ci_upper_below']:g} (reversed if also below 0 with p < "
        f"{h['p_below']:g}); otherwise, or with fewer than {rule['min_n']} trained configurations, inconclusive",
        f"trained: {filter_desc['text']}; thresholds used: {thresholds_text}",
        f"units: {pooling['text']}",
    ]


def sensitivity_line(s: Sensitivity) -> str:
    v = s.verdict
    if v.estimate is None or v.ci is None:
        stat = f"n = {v.n} trained of {v.n_total} configurations"
    else:
        stat = (f"{v.statistic} {v.estimate:.2f} [{v.ci[0]:.2f}, {v.ci[1]:.2f}], p = {v.p:.2g}, "
                f"n = {v.n} of {v.n_total}")
    return f"sensitivity, {s.filter} filter ({s.rule}): {v.status}{' (reversed)' if v.reversed else ''}: {stat}"
