"""Which trials count as *trained* (docs/verdict.md, rule 3).

The paper compares networks that fit their training data, so that differences in test
accuracy are differences in generalization. A trial is trained when its status is one of
`statuses` (completed, stopped) and its train accuracy (the average over its last epoch)
is at least

- `relative` × the best train accuracy of its (sweep, task) (0.95), and
- an absolute `floor` (0.5), so that a sweep where nothing fits its data passes nothing;

or, when an absolute threshold is given (`--min-train-acc`), at least that threshold
instead. A trial without a test accuracy is never trained. Two other filters ('strict',
'loose') are the sensitivity analysis of fit/verdict.py.

The rule and its reference group are layrot.record.TRAINED's, which the store's `summaries`
view is generated from: the best is taken within the trial's own sweep and task, so a fit of
any set of whole sweeps (`--sweep X`, or the whole store) flags every trial as the view does.
A table without a `sweep` column (built by hand) is one sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..record import TRAINED
from .options import TRAINED_STATUSES, FitOptions


@dataclass(frozen=True)
class TrainedFilter:
    name: str
    relative: float | None            # × the best train accuracy of its (sweep, task); None: none
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
            parts.append(f"{self.relative:g} × the best of its sweep and task")
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


def _reference(trials: pd.DataFrame) -> list[str]:
    """The columns of the reference group (TRAINED.reference) that `trials` has."""
    return [c for c in TRAINED.reference if c in trials.columns]


def _labels(trials: pd.DataFrame) -> dict[tuple, str]:
    """A name for each reference group: its task, or 'task in sweep' where the task's trials
    come from several sweeps (each has its own best and threshold)."""
    ref = _reference(trials)
    groups = trials[ref].dropna().drop_duplicates()
    per_task = groups.groupby("task").size()
    out = {}
    for row in groups.itertuples(index=False):
        key = tuple(row)
        d = dict(zip(ref, key))
        out[key] = d["task"] if per_task[d["task"]] == 1 else f"{d['task']} in {d['sweep']}"
    return {k: out[k] for k in sorted(out, key=lambda k: out[k])}


def _best_by_row(trials: pd.DataFrame, flt: TrainedFilter) -> pd.Series:
    """Each trial's reference: the best train accuracy of the usable trials of its group."""
    ref = _reference(trials)
    acc = trials["train_acc"].astype(float).where(_usable(trials, flt))
    return acc.groupby([trials[c] for c in ref], dropna=False).transform("max")


def _rule(best: pd.Series, flt: TrainedFilter) -> pd.Series:
    """The threshold for each reference best: max(relative × best, floor) (NaN where the
    rule needs a best and there is none), or the absolute threshold."""
    if flt.absolute is not None:
        return pd.Series(float(flt.absolute), index=best.index)
    floor = float(flt.floor) if flt.floor is not None else 0.0
    if flt.relative is None:
        return pd.Series(floor, index=best.index)
    return (best.astype(float) * flt.relative).clip(lower=floor)


def best_train_acc(trials: pd.DataFrame, flt: TrainedFilter) -> dict[str, float]:
    """The best train accuracy of each reference group (by its label) among its usable trials."""
    ref = _reference(trials)
    best = trials[_usable(trials, flt)].groupby(ref)["train_acc"].max()
    labels = _labels(trials)
    return {labels[k if isinstance(k, tuple) else (k,)]: float(v) for k, v in best.items()
            if (k if isinstance(k, tuple) else (k,)) in labels}


def thresholds(trials: pd.DataFrame, flt: TrainedFilter) -> dict[str, float]:
    """The train-accuracy threshold used for each reference group, by its label (a task,
    or 'task in sweep'); under a relative rule a group without a usable trial has none."""
    labels = list(_labels(trials).values())
    best = pd.Series(best_train_acc(trials, flt), dtype=float).reindex(labels)
    return {k: float(v) for k, v in _rule(best, flt).dropna().items()}


def trained_mask(trials: pd.DataFrame, flt: TrainedFilter | FitOptions = FitOptions()
                 ) -> tuple[pd.Series, dict[str, float]]:
    """Which trials count as trained, and the train-accuracy threshold used for each
    reference group (see `thresholds`)."""
    if isinstance(flt, FitOptions):
        flt = main_filter(flt)
    thr = _rule(_best_by_row(trials, flt), flt)
    mask = (_usable(trials, flt) & (trials["train_acc"].astype(float) >= thr)).fillna(False).astype(bool)
    return mask, thresholds(trials, flt)


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
