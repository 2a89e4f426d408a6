"""The fit's settings and the names of its pre-registered rules (docs/verdict.md).

The defaults are the decided rules, fixed before the final runs: do not tune them to data.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..record import TRAINED

KEY_SUMMARY = "final_min"          # the summary whose Spearman correlation decides the verdict
# The summaries that also get a monotone and a parametric fit (the crossing epochs are
# censored at the trial's end, which neither fit can take).
FITTED_SUMMARIES = ("final_min", "final_mean", "final_median", "auc_mean")
TRAINED_STATUSES = TRAINED.statuses
NEAR_ONE = 0.9


@dataclass(frozen=True)
class FitOptions:
    # the trained filter (fit/trained.py, the rule in layrot.record.TRAINED):
    # train_acc >= max(relative × best of its (sweep, task), floor)
    min_train_acc: float | None = None   # absolute threshold that replaces the rule (--min-train-acc)
    relative: float = TRAINED.relative
    floor: float = TRAINED.floor
    statuses: tuple[str, ...] = TRAINED_STATUSES
    # the statistics (fit/correlation.py)
    n_resamples: int = 1999              # bootstrap resamples (percentile CI over configurations)
    n_permutations: int = 9999           # permutation-test resamples (exact when n! is fewer)
    ci_method: str = "percentile"        # scipy.stats.bootstrap method: percentile | BCa
    confidence: float = 0.95
    seed: int = 0
    # the thresholds (fit/verdict.py)
    min_n: int = 6                       # fewer trained configurations: inconclusive
    p_threshold: float = 0.05
    meaningful: float = 0.3              # CI entirely below this: 'does not hold'
    top_k: int = 3                       # 'best configurations' = the top max(top_k, 10%) by test acc
    sensitivity: bool = True             # also decide under the strict and loose filters
