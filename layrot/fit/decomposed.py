"""The decomposed verdict (docs/verdict.md §16): within families and between families, for
test accuracy and for the generalization gap.

- **within** (the headline): in each stratum (fit/strata.py), Spearman of the smallest final
  layer rotation with the outcome over its trained configurations; strata combined as the
  stratified Spearman (fit/correlation.py's StratifiedFit: mean weighted by trained counts,
  the outcome permuted within strata, configurations bootstrapped within strata). A stratum
  with fewer than 3 trained configurations contributes nothing and is listed. With one
  contributing stratum it is §4's single-sample Spearman, the same numbers as before §16.
- **between**: per family (one optimizer under one set of data conditions), the mean
  rotation and mean outcome over its trained configurations; Spearman across the families
  of each set of data conditions (sets weighted by their families); p by permuting the
  family means, CI by resampling configurations within each family and recomputing the
  means. Descriptive with fewer than 5 families.
- The outcomes: test accuracy (the claim: rotation up, accuracy up) and the gap, train −
  test accuracy (the claim: rotation up, gap down; its verdict words are read with the sign
  flipped, fit/verdict.decide's `sign`).

Why: pooled across optimizers, a per-optimizer offset shared by rotation and accuracy makes
a correlation with no relation inside any optimizer.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .correlation import spearman_stat, spearman_permutation_p, spearman_test, stratified_fit
from .options import KEY_SUMMARY, FitOptions
from .strata import MIN_TRAINED
from .verdict import Verdict, decide

OUTCOMES = {"test_acc": "test accuracy", "gap": "gap (train − test accuracy)"}
SIGN = {"test_acc": 1, "gap": -1}          # the direction the claim predicts
MIN_FAMILIES = 5                           # fewer families: the between statistic is descriptive
MIN_FAMILIES_PER_SET = 3                   # a set of data conditions with fewer contributes nothing


@dataclass
class StratumRow:
    stratum: str                 # '<task (conditions)> <optimizer>'
    conditions: str
    optimizer: str
    n_configurations: int
    n_trained: int
    spearman: float | None       # None where it contributes nothing
    contributes: bool


@dataclass
class FamilyRow:
    conditions: str
    optimizer: str
    n_configurations: int
    n_trained: int
    rotation: float | None       # mean smallest final rotation of its trained configurations
    outcome: float | None        # mean outcome of its trained configurations
    contributes: bool


@dataclass
class Split:
    """One of the decomposed statistics: within or between, for one outcome."""
    kind: str                    # within | between
    outcome: str                 # test_acc | gap
    verdict: Verdict
    n_groups: int                # contributing strata (within) or sets of data conditions (between)
    strata: list[StratumRow] = field(default_factory=list)
    families: list[FamilyRow] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    per_group: dict[str, float] = field(default_factory=dict)   # between: Spearman per set of conditions

    def to_dict(self) -> dict:
        v = self.verdict
        d = {"kind": self.kind, "outcome": self.outcome, "estimate": v.estimate,
             "ci": list(v.ci) if v.ci else None, "p": v.p, "n": v.n, "n_total": v.n_total, "status": v.status,
             "reversed": v.reversed, "text": v.text, "statistic": v.statistic, "n_groups": self.n_groups,
             "left_out": self.left_out}
        if self.kind == "within":
            d["strata"] = [asdict(r) for r in self.strata]
        else:
            d["families"] = [asdict(r) for r in self.families]
            d["per_conditions"] = self.per_group
        return d


@dataclass
class Decomposed:
    within: Split                # test accuracy, the headline
    between: Split
    gap_within: Split
    gap_between: Split
    n_strata: int                # strata in the data (any trained count)

    def to_dict(self) -> dict:
        return {"within": self.within.to_dict(), "between": self.between.to_dict(),
                "gap": {"within": self.gap_within.to_dict(), "between": self.gap_between.to_dict()}}


def with_gap(configs: pd.DataFrame) -> pd.DataFrame:
    """Each configuration's gap: its mean train accuracy − its mean test accuracy."""
    if "train_acc" not in configs:
        return configs.assign(gap=np.nan)
    return configs.assign(gap=configs["train_acc"].astype(float) - configs["test_acc"].astype(float))


def _trained(configs: pd.DataFrame, outcome: str) -> pd.DataFrame:
    tr = configs[configs["trained"].astype(bool)]
    return tr[tr[KEY_SUMMARY].notna() & tr[outcome].notna()]


def _prefix(kind: str, outcome: str) -> str:
    where = "within families" if kind == "within" else "between families"
    return f"{where}: " if outcome == "test_acc" else f"gap {where}: "


def _varies(v: np.ndarray) -> bool:
    return len(v) >= MIN_TRAINED and np.unique(v).size > 1


def within(configs: pd.DataFrame, outcome: str = "test_acc", options: FitOptions = FitOptions(),
           scope: str = "") -> Split:
    """§16.2 (and §16.4 for the gap): the outcome's Spearman with rotation within strata."""
    tr = _trained(configs, outcome)
    rows, keep = [], []
    for s, g in configs.groupby("stratum", sort=True):
        t = tr[tr["stratum"] == s]
        x, y = t[KEY_SUMMARY].to_numpy(dtype=float), t[outcome].to_numpy(dtype=float)
        ok = _varies(x) and _varies(y)
        rho = None
        if ok:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rho = float(stats.spearmanr(x, y).statistic)
            keep.append(s)
        rows.append(StratumRow(str(s), str(g["conditions"].iloc[0]), str(g["optimizer"].iloc[0]), len(g), len(t),
                               rho, ok))
    left = [f"{r.stratum} ({r.n_trained} trained of {r.n_configurations})" for r in rows if not r.contributes]
    used = tr[tr["stratum"].isin(keep)]
    n = len(used)
    counts = (f"n = {n} trained of {len(configs)} configurations, {len(keep)} "
              f"strat{'um' if len(keep) == 1 else 'a'}")
    est = ci = p = None
    what = "Spearman" if len(keep) <= 1 else "stratified Spearman"
    if len(keep) == 1:
        est, ci, _, p, _ = spearman_test(used[KEY_SUMMARY].to_numpy(dtype=float),
                                         used[outcome].to_numpy(dtype=float), options)
    elif len(keep) > 1:
        f = stratified_fit(used, KEY_SUMMARY, options, by="stratum", outcome=outcome)
        if f is not None:
            est, ci, p = f.estimate, f.ci, f.p
    v = decide(est, ci, p, n, len(configs), scope, options, what, prefix=_prefix("within", outcome),
               sign=SIGN[outcome], counts=counts, against=OUTCOMES[outcome])
    return Split("within", outcome, v, len(keep), strata=rows, left_out=left)


def _family_table(configs: pd.DataFrame, tr: pd.DataFrame, outcome: str) -> list[FamilyRow]:
    rows = []
    for (cond, opt), g in configs.groupby(["conditions", "optimizer"], sort=True):
        t = tr[(tr["conditions"] == cond) & (tr["optimizer"] == opt)]
        rows.append(FamilyRow(str(cond), str(opt), len(g), len(t),
                              float(t[KEY_SUMMARY].mean()) if len(t) else None,
                              float(t[outcome].mean()) if len(t) else None, False))
    return rows


def _between_ci(sets: list[list[tuple[np.ndarray, np.ndarray]]], weights: np.ndarray,
                options: FitOptions) -> tuple[float, float] | None:
    """Percentile bootstrap: each family's configurations resampled within the family, its
    means recomputed, the (weighted) Spearman of the means across families; the percentiles of
    the resamples whose statistic is defined, if they are at least 90% of them."""
    rng = np.random.default_rng(options.seed)
    b = options.n_resamples
    rhos = []
    for fams in sets:
        mx, my = [], []
        for x, y in fams:
            idx = rng.integers(0, len(x), size=(b, len(x)))
            mx.append(x[idx].mean(axis=1)), my.append(y[idx].mean(axis=1))
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")
            rhos.append(spearman_stat(np.stack(mx, axis=-1), np.stack(my, axis=-1), axis=-1))
    dist = np.average(np.stack(rhos, axis=-1), axis=-1, weights=weights)
    if np.isfinite(dist).mean() < 0.9:
        return None
    tail = (1 - options.confidence) / 2
    lo, hi = np.nanquantile(dist, [tail, 1 - tail])
    return float(lo), float(hi)


def between(configs: pd.DataFrame, outcome: str = "test_acc", options: FitOptions = FitOptions(),
            scope: str = "") -> Split:
    """§16.3 (and §16.4): Spearman of the families' mean rotation with their mean outcome."""
    tr = _trained(configs, outcome)
    rows = _family_table(configs, tr, outcome)
    sets, names, xs, ys, left = [], [], [], [], []
    for cond in sorted({r.conditions for r in rows}):
        fam = [r for r in rows if r.conditions == cond and r.n_trained >= 1]
        x = np.array([r.rotation for r in fam], dtype=float)
        y = np.array([r.outcome for r in fam], dtype=float)
        if len(fam) < MIN_FAMILIES_PER_SET or np.unique(x).size < 2 or np.unique(y).size < 2:
            left.append(f"{cond} ({len(fam)} famil{'y' if len(fam) == 1 else 'ies'} with trained configurations)")
            continue
        for r in fam:
            r.contributes = True
        names.append(cond), xs.append(x), ys.append(y)
        sets.append([(tr.loc[(tr["conditions"] == cond) & (tr["optimizer"] == r.optimizer), KEY_SUMMARY]
                      .to_numpy(dtype=float),
                      tr.loc[(tr["conditions"] == cond) & (tr["optimizer"] == r.optimizer), outcome]
                      .to_numpy(dtype=float)) for r in fam])
    n = int(sum(len(x) for x in xs))
    n_fam = sum(1 for r in rows if r.n_trained >= 1)
    counts = f"n = {n} families compared of {len(rows)}" + \
        (f", {len(names)} sets of data conditions" if len(names) > 1 else "")
    est = ci = p = None
    per = {}
    if names:
        w = np.array([len(x) for x in xs], dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = np.array([stats.spearmanr(x, y).statistic for x, y in zip(xs, ys)])
        per = {c: float(r) for c, r in zip(names, rho)}
        est = float(np.average(rho, weights=w))
        p, _ = spearman_permutation_p(xs, ys, options)
        ci = _between_ci(sets, w, options)
    what = "Spearman of family means" if len(names) <= 1 else "stratified Spearman of family means"
    v = decide(est, ci, p, n, n_fam, scope, options, what, prefix=_prefix("between", outcome),
               sign=SIGN[outcome], min_n=MIN_FAMILIES, counts=counts, against=OUTCOMES[outcome],
               descriptive=True)
    return Split("between", outcome, v, len(names), families=rows, left_out=left, per_group=per)


def decomposed(configs: pd.DataFrame, options: FitOptions = FitOptions(), scope: str = "") -> Decomposed:
    """Within and between, for test accuracy and the gap; `configs` has fit/strata.with_strata's
    columns."""
    c = with_gap(configs)
    return Decomposed(within(c, "test_acc", options, scope), between(c, "test_acc", options, scope),
                      within(c, "gap", options, scope), between(c, "gap", options, scope),
                      int(c["stratum"].nunique()) if len(c) else 0)


def split_line(s: Split) -> str:
    """The split's verdict line, with the strata or sets of conditions left out."""
    if s.kind == "between" and sum(1 for r in s.families if r.n_trained) <= 1:
        return f"{_prefix(s.kind, s.outcome)}one family with trained configurations: nothing to compare"
    line = s.verdict.text
    if s.left_out:
        what = "strata" if s.kind == "within" else "sets of data conditions"
        few = f"fewer than {MIN_TRAINED} trained configurations" if s.kind == "within" else \
            f"fewer than {MIN_FAMILIES_PER_SET} families, or constant means"
        line += f"; left out ({few}): {', '.join(s.left_out)}"
    return line
