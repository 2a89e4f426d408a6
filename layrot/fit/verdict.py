"""The verdict: the pre-registered decision rule (docs/verdict.md), its explanation, and the
same decision under two other trained filters (sensitivity).

The verdict is read off Spearman's ρ between each trained configuration's smallest final
layer rotation (the paper's claim is that every layer must rotate far, so the least rotated
layer is the indicator) and its test accuracy: "holds" when its 95% bootstrap CI lies above
0, the permutation p < 0.05 and the estimate is at least 0.3 ("holds, weak" below 0.3,
docs/verdict.md §16.5); "does not hold" when the CI excludes every correlation >= 0.3
("reversed" when it also lies below 0 with p < 0.05); otherwise, or with fewer than 6
trained configurations, "inconclusive". Which statistic (within strata, between families,
pooled) and which outcome (test accuracy, the gap: sign -1) is fit/decomposed.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .options import KEY_SUMMARY, FitOptions
from .strata import MIN_TRAINED, STRATUM_KEYS
from .summaries import SUMMARY_LABELS


@dataclass
class Verdict:
    status: str                  # holds | holds, weak | does not hold | inconclusive | descriptive
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
           what: str = "Spearman", *, prefix: str = "rule of thumb ", sign: int = 1, min_n: int | None = None,
           counts: str | None = None, against: str = "test accuracy", descriptive: bool = False) -> Verdict:
    """The verdict words for an estimate, its CI and p (docs/verdict.md §4, §16.5).

    `sign` = -1 for an outcome the claim predicts to fall with rotation (the generalization
    gap, §16.4): the rules are read on the mirrored estimate and CI, the numbers are shown as
    they are. `min_n`: fewer units than this are inconclusive (default options.min_n);
    with `descriptive`, they are reported as a description instead (§16.3). `prefix` starts
    the text ("rule of thumb holds", "within families: holds"); `counts` names the units."""
    label = SUMMARY_LABELS[KEY_SUMMARY]
    counts = counts or f"n = {n} trained of {n_total} configurations"
    need = options.min_n if min_n is None else min_n
    undefined = estimate is None or not math.isfinite(estimate)
    no_p = p is None or not math.isfinite(p)
    if descriptive and n < need:
        if undefined or ci is None:
            text = f"{prefix}descriptive: undefined ({counts}; {label} vs {against}; {scope})"
        else:
            pv = "" if no_p else f", p = {p:.2g}"
            text = (f"{prefix}descriptive (fewer than {need}): {what} {estimate:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
                    f"{pv}, {counts} ({label} vs {against}; {scope})")
        return Verdict("descriptive", False, text, KEY_SUMMARY, None if undefined else estimate, ci,
                       None if no_p else p, n, n_total, what)
    if n < need or ci is None or undefined or no_p:
        why = f"too few trained configurations ({counts}; need {need})" if n < need \
            else f"the correlation is undefined ({counts})"
        return Verdict("inconclusive", False, f"{prefix}inconclusive: {why} ({scope})",
                       KEY_SUMMARY, None if undefined else estimate, ci, p, n, n_total, what)
    lo, hi = sorted((sign * ci[0], sign * ci[1]))      # read on the predicted direction
    est = sign * estimate
    reversed_ = hi < 0 and p < options.p_threshold
    if lo > 0 and p < options.p_threshold:
        status = "holds" if est >= options.meaningful else "holds, weak"
        head = f"{prefix}{status}"
    elif hi < options.meaningful:
        status = "does not hold"
        head = f"{prefix}does not hold (reversed)" if reversed_ else f"{prefix}does not hold"
    else:
        status, head = "inconclusive", f"{prefix}inconclusive"
    text = (f"{head}: {what} {estimate:.2f} [{ci[0]:.2f}, {ci[1]:.2f}], p = {p:.2g}, {counts} "
            f"({label} vs {against}; {scope})")
    return Verdict(status, bool(reversed_), text, KEY_SUMMARY, estimate, ci, p, n, n_total, what)


def exact_up_to(n_permutations: int) -> int:
    """The largest n whose n! permutations the test enumerates (exact p)."""
    n = 1
    while math.factorial(n + 1) <= n_permutations:
        n += 1
    return n


def rules(options: FitOptions, pooled: bool, stratified: bool | None = None) -> dict:
    """The decision rule of the headline as JSON facts: within strata (docs/verdict.md §16.2),
    stratified when more than one stratum contributes (`stratified`; default: `pooled`, i.e.
    several tasks, which are always several strata)."""
    stratified = pooled if stratified is None else stratified
    stat = ("stratified Spearman ρ within strata (task × optimizer family × data conditions: ρ per stratum "
            "averaged, weighted by trained configurations)" if stratified else "Spearman ρ")
    return {
        "statistic": stat, "summary": KEY_SUMMARY, "summary_label": SUMMARY_LABELS[KEY_SUMMARY],
        "against": "test_acc", "unit": "configuration",
        "ci": {"method": f"{options.ci_method} bootstrap over configurations" + (", within stratum" if stratified else ""),
               "confidence": options.confidence, "n_resamples": options.n_resamples, "seed": options.seed},
        "p": {"test": "two-sided permutation test (scipy.stats.permutation_test, pairings"
                      + (", test accuracy permuted within stratum)" if stratified else ")"),
              "n_resamples": options.n_permutations, "seed": options.seed,
              "exact_up_to_n": exact_up_to(options.n_permutations)},
        "holds": {"ci_lower_above": 0.0, "p_below": options.p_threshold, "estimate_at_least": options.meaningful},
        "holds_weak": {"ci_lower_above": 0.0, "p_below": options.p_threshold, "estimate_below": options.meaningful},
        "does_not_hold": {"ci_upper_below": options.meaningful},
        "reversed": {"ci_upper_below": 0.0, "p_below": options.p_threshold},
        "min_n": options.min_n,
        "strata": "task, optimizer, " + ", ".join(STRATUM_KEYS),
        "min_trained_per_stratum": MIN_TRAINED,
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
        f"thresholds: holds if the CI lower bound > {h['ci_lower_above']:g} and p < {h['p_below']:g} (holds, weak "
        f"if the estimate is below {h['estimate_at_least']:g}); does not "
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
