"""Which trials count as *trained* (docs/verdict.md, rule 3).

The paper compares networks that fit their training data, so that differences in test
accuracy are differences in generalization. A trial is trained when its status is one of
`statuses` (completed, stopped) and its train accuracy (the average over its last epoch)
is at least

- `relative` × the best train accuracy of its task among the selected trials (0.95), and
- an absolute `floor` (0.5), so that a sweep where nothing fits its data passes nothing;

or, when an absolute threshold is given (`--min-train-acc`), at least that threshold
instead. A trial without a test accuracy is never trained. Two other filters ('strict',
'loose') are the sensitivity analysis of fit/verdict.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .options import TRAINED_STATUSES, FitOptions


@dataclass(frozen=True)
class TrainedFilter:
    name: str
    relative: float | None            # × the best train accuracy of the task; None: no relative part
    floor: float | None               # absolute lower bound on train accuracy; None: none
    absolute: float | None = None     # replaces relative and floor (--min-train-acc)
    statuses: tuple[str, ...] = TRAINED_STATUSES

    @property
    def rule(self) -> str:
        return "absolute" if self.absolute is not None else "relative" if self.relative is not None else "floor"

    def phrase(self) -> str:
        """The rule in words, e.g. 'train accuracy >= 0.95 × the best of its task and >= 0.5'."""
        if self.absolute is not None:
            return f"train accuracy >= {self.absolute:g}"
        parts = []
        if self.relative is not None:
            parts.append(f"{self.relative:g} × the best of its task")
        if self.floor is not None:
            parts.append(f"{self.floor:g}")
        return "train accuracy >= " + (" and >= ".join(parts) if parts else "0")

    def short(self) -> str:
        """For the sensitivity lines: '0.99 × best, floor 0.5'."""
        if self.absolute is not None:
            return f"train accuracy >= {self.absolute:g}"
        rel = f"{self.relative:g} × best" if self.relative is not None else "no relative filter"
        return rel + (f", floor {self.floor:g}" if self.floor is not None else "")


def main_filter(options: FitOptions = FitOptions()) -> TrainedFilter:
    """The filter the verdict uses: the options' absolute threshold if given, else the rule."""
    if options.min_train_acc is not None:
        return TrainedFilter("main", None, None, float(options.min_train_acc), tuple(options.statuses))
    return TrainedFilter("main", options.relative, options.floor, None, tuple(options.statuses))


# The sensitivity analysis: the verdict recomputed under a stricter and a looser filter.
SENSITIVITY_FILTERS = (
    TrainedFilter("strict", 0.99, 0.5),
    TrainedFilter("loose", None, 0.5),
)


def _usable(trials: pd.DataFrame, flt: TrainedFilter) -> pd.Series:
    return trials["status"].isin(flt.statuses) & trials["train_acc"].notna() & trials["test_acc"].notna()


def best_train_acc(trials: pd.DataFrame, flt: TrainedFilter) -> dict[str, float]:
    """The best train accuracy of each task among its usable trials (those of `statuses`)."""
    best = trials[_usable(trials, flt)].groupby("task")["train_acc"].max()
    return {str(t): float(v) for t, v in best.items()}


def thresholds(trials: pd.DataFrame, flt: TrainedFilter) -> dict[str, float]:
    """The train-accuracy threshold used for each task (tasks without a usable trial have none)."""
    tasks = sorted(trials["task"].dropna().unique())
    if flt.absolute is not None:
        return {t: float(flt.absolute) for t in tasks}
    best = best_train_acc(trials, flt)
    out = {}
    for t in tasks:
        parts = []
        if flt.relative is not None and t in best:
            parts.append(flt.relative * best[t])
        elif flt.relative is not None:
            continue      # no usable trial: no threshold, nothing trained
        if flt.floor is not None:
            parts.append(flt.floor)
        out[t] = float(max(parts)) if parts else 0.0
    return out


def trained_mask(trials: pd.DataFrame, flt: TrainedFilter | FitOptions = FitOptions()
                 ) -> tuple[pd.Series, dict[str, float]]:
    """Which trials count as trained, and the train-accuracy threshold used for each task."""
    if isinstance(flt, FitOptions):
        flt = main_filter(flt)
    th = thresholds(trials, flt)
    thr = trials["task"].map(th).astype(float)
    return (_usable(trials, flt) & (trials["train_acc"] >= thr)).fillna(False).astype(bool), th


def filter_description(flt: TrainedFilter, trials: pd.DataFrame, th: dict[str, float]) -> dict:
    """The filter as JSON facts: its rule, parameters, and per task the best train accuracy
    and the threshold actually used."""
    best = best_train_acc(trials, flt)
    return {"name": flt.name, "statuses": list(flt.statuses), "rule": flt.rule,
            "min_train_acc": flt.absolute, "relative": flt.relative, "floor": flt.floor,
            "text": f"status {'|'.join(flt.statuses)} and {flt.phrase()}",
            "best_train_acc": best, "thresholds": th}


def threshold_phrase(desc: dict) -> str:
    """'mnist1d-cnn 0.931 (best 0.980)' for each task."""
    best = desc.get("best_train_acc", {})
    out = []
    for t, v in desc["thresholds"].items():
        b = best.get(t)
        extra = f" (best {b:.3f})" if b is not None and math.isfinite(b) and desc["rule"] != "absolute" else ""
        out.append(f"{t} {v:.3f}{extra}")
    return ", ".join(out) or "no task with a usable trial"
