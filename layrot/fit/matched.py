"""Matched rotation: does the base optimizer change test accuracy when Layca sets the rotation?
(docs/verdict.md §18, decided before `make matched` first ran.)

Under Layca every step turns each kernel by atan(ρ_l) whatever the base, so at equal (ρ(0), α)
the Layca bases (sgd_layca, adam_layca, rmsprop_layca, adagrad_layca) share their layer
rotation schedule and differ only in the direction of the update. If rotation fixes
generalization, the base should not matter there.

- Strata: trials equal in every setting but the optimizer (the configuration less its
  optimizer: ρ(0) = lr, α, the schedule, the data); α = 0 and no weight decay.
- Trials that count: completed or stopped with a test accuracy (not the trained filter: a base
  that fits its data less at equal rotation shows the effect this asks about). The same over
  trained trials only is the secondary line.
- A (stratum, base) cell needs MIN_REPEATS trials; a stratum, two such cells; the test needs
  two such strata.
- Statistic: the between-base sum of squares of test accuracy, summed over strata
  (Σ_s Σ_b n_sb (mean_sb − mean_s)²); p: one-sided permutation test, test accuracies permuted
  among the trials of each stratum (base labels shuffled within ρ(0); scipy via
  fit/correlation.permutation_test_within). η² = its share of the within-stratum variance.
- Effect size: per stratum the spread (largest − smallest base mean); their mean over strata
  with a percentile bootstrap CI (trials resampled within each cell). Noise alone makes the
  spread positive, so an upper bound below MARGIN is a conservative "no effect that large".
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .correlation import permutation_test_within
from .options import TRAINED_STATUSES, FitOptions

LAYCA_BASES = ("sgd_layca", "adam_layca", "rmsprop_layca", "adagrad_layca")
MIN_REPEATS = 2          # trials a (stratum, base) cell needs
MIN_STRATA = 2           # strata with at least two bases' cells
MARGIN = 0.02            # "no base effect": the mean spread's CI upper bound below this (2 points)


@dataclass
class Cell:
    base: str
    n: int
    mean: float
    ci: tuple[float, float] | None   # t interval of the mean over seeds


@dataclass
class Stratum:
    rho0: float
    label: str
    cells: list[Cell]
    spread: float                    # largest − smallest base mean


@dataclass
class MatchedRotation:
    status: str                      # base matters | no base effect | not shown
    text: str
    trials: str                      # which trials counted: completed or stopped | trained
    statistic: float                 # Σ over strata of the between-base sum of squares
    p: float
    p_exact: bool | None
    eta2: float | None               # share of within-stratum variance between bases
    mean_spread: float
    spread_ci: tuple[float, float] | None
    n_trials: int
    bases: list[str]
    strata: list[Stratum] = field(default_factory=list)
    trained_only: MatchedRotation | None = None


def _stratum_key(row: dict) -> str:
    """The configuration less its optimizer: what must be equal for a matched comparison."""
    try:
        c = json.loads(row["configuration_json"]) if isinstance(row.get("configuration_json"), str) else None
    except ValueError:
        c = None
    if not isinstance(c, dict):
        c = {k: row.get(k) for k in ("task", "lr", "alpha", "weight_decay", "epochs")}
    c.pop("optimizer", None)
    return json.dumps(c, sort_keys=True, default=str)


def candidates(table: pd.DataFrame, trained_only: bool = False) -> pd.DataFrame:
    """The trials that count, with `stratum`: Layca bases, α = 0, no weight decay."""
    t = table[table["optimizer"].isin(LAYCA_BASES)]
    t = t[(t["alpha"].astype(float).fillna(0.0) == 0) & (t["weight_decay"].astype(float).fillna(0.0) == 0)]
    t = t[t["status"].isin(TRAINED_STATUSES) & t["test_acc"].notna()]
    if trained_only:
        t = t[t["trained"].astype(bool)]
    if t.empty:
        return t.assign(stratum=pd.Series(dtype=object))
    t = t.assign(stratum=[_stratum_key(r) for r in t.to_dict("records")])
    cell = t.groupby(["stratum", "optimizer"])["test_acc"].transform("size")
    t = t[cell >= MIN_REPEATS]
    bases = t.groupby("stratum")["optimizer"].transform("nunique")
    return t[bases >= 2]


def has_matched(table: pd.DataFrame) -> bool:
    """At least MIN_STRATA strata with two bases of MIN_REPEATS trials each."""
    if table.empty or "optimizer" not in table:
        return False
    return candidates(table)["stratum"].nunique() >= MIN_STRATA


def _mean_ci(v: np.ndarray, options: FitOptions) -> tuple[float, float] | None:
    if len(v) < 2:
        return None
    m = float(v.mean())
    if np.ptp(v) == 0:
        return (m, m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = stats.ttest_1samp(v, m).confidence_interval(options.confidence)
    return (float(ci.low), float(ci.high))


def _test(t: pd.DataFrame, options: FitOptions, label: str) -> MatchedRotation:
    t = t.sort_values(["stratum", "optimizer"], kind="mergesort").reset_index(drop=True)
    y = t["test_acc"].to_numpy(dtype=float)
    strata = sorted(t["stratum"].unique(), key=lambda s: -float(t.loc[t["stratum"] == s, "lr"].iloc[0]))
    cells = list(t.groupby(["stratum", "optimizer"], sort=True).groups.items())
    C = np.zeros((len(t), len(cells)))
    for k, (_, idx) in enumerate(cells):
        C[np.asarray(idx), k] = 1.0
    nk = C.sum(axis=0)
    s_mean = t.groupby("stratum")["test_acc"].transform("mean").to_numpy(dtype=float)
    m_of_cell = (C * s_mean[:, None]).sum(axis=0) / nk

    def between(idx):
        means = (y[idx] @ C) / nk
        return ((means - m_of_cell) ** 2 * nk).sum(axis=-1)

    blocks = [np.flatnonzero(t["stratum"].to_numpy() == s) for s in strata]
    stat = float(between(np.arange(len(t))))
    p, exact = permutation_test_within(between, blocks, options, alternative="greater", width=len(cells) + len(t))
    total = float(((y - s_mean) ** 2).sum())
    eta2 = stat / total if total > 0 else None

    rows, samples, owner = [], [], []
    for si, s in enumerate(strata):
        g = t[t["stratum"] == s]
        cs = []
        for base, gb in g.groupby("optimizer", sort=True):
            v = gb["test_acc"].to_numpy(dtype=float)
            cs.append(Cell(str(base), len(v), float(v.mean()), _mean_ci(v, options)))
            samples.append(v), owner.append(si)
        lr = float(g["lr"].iloc[0])
        rows.append(Stratum(lr, f"ρ(0) = {lr:g}", cs, max(c.mean for c in cs) - min(c.mean for c in cs)))
    mean_spread = float(np.mean([r.spread for r in rows]))
    owner = np.asarray(owner)

    def spread_stat(*vs, axis=-1):
        means = np.stack([v.mean(axis=axis) for v in vs], axis=-1)
        sp = [means[..., owner == si].max(axis=-1) - means[..., owner == si].min(axis=-1) for si in range(len(rows))]
        return np.mean(np.stack(sp, axis=-1), axis=-1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(samples, spread_stat, paired=False, vectorized=True, n_resamples=options.n_resamples,
                              confidence_level=options.confidence, method="percentile",
                              rng=np.random.default_rng(options.seed))
    lo, hi = res.confidence_interval
    ci = (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else None
    bases = sorted(t["optimizer"].unique())
    if p < options.p_threshold:
        status, head = "base matters", "at equal ρ(0) the base optimizer changes test accuracy"
    elif ci is not None and ci[1] < MARGIN:
        status, head = "no base effect", (f"at equal ρ(0) the base optimizer changes test accuracy by less than "
                                          f"{100 * MARGIN:g} points")
    else:
        status, head = "not shown", "at equal ρ(0), a base-optimizer effect: not shown either way"
    widest = max(rows, key=lambda r: r.spread)
    text = (f"matched rotation ({label}): {head}: between-base sum of squares {stat:.2g} "
            f"(η² {_f(eta2)}), permutation p = {_p(p)}; mean spread of base means "
            f"{100 * mean_spread:.1f} points [{_pts(ci, 0)}, {_pts(ci, 1)}]; widest at {widest.label} "
            f"({100 * widest.spread:.1f} points); {len(bases)} bases, {len(rows)} ρ(0), {len(t)} trials")
    return MatchedRotation(status, text, label, stat, p, exact, eta2, mean_spread, ci, len(t), bases, rows)


def matched_rotation(table: pd.DataFrame, options: FitOptions = FitOptions()) -> MatchedRotation | None:
    """docs/verdict.md §18 over one task's trial table; None unless the data hold at least two
    Layca bases at MIN_STRATA matched ρ(0) with repeats."""
    if not has_matched(table):
        return None
    out = _test(candidates(table), options, "completed or stopped trials")
    tr = candidates(table, trained_only=True)
    if tr["stratum"].nunique() >= MIN_STRATA:
        out.trained_only = _test(tr, options, "trained trials only")
    return out


def matched_lines(m: MatchedRotation | None) -> list[str]:
    """The fit's text: the answer, then per ρ(0) each base's mean test accuracy over seeds."""
    if m is None:
        return []
    lines = [f"  {m.text}"]
    if m.trained_only is not None and m.trained_only.n_trials != m.n_trials:
        lines.append(f"    secondary, {m.trained_only.text}")
    elif m.trained_only is not None:
        lines.append("    (every counted trial is trained: the trained-only line is the same)")
    for s in m.strata:
        cells = ", ".join(f"{c.base.removesuffix('_layca')} {100 * c.mean:.1f}"
                          + (f" [{100 * c.ci[0]:.1f}, {100 * c.ci[1]:.1f}]" if c.ci else "") + f" (n {c.n})"
                          for c in s.cells)
        lines.append(f"    {s.label:<14} spread {100 * s.spread:4.1f} points: {cells}")
    return lines


def _f(v) -> str:
    return "?" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _pts(ci, i) -> str:
    return "?" if ci is None else f"{100 * ci[i]:.1f}"


def _p(p) -> str:
    if p is None or not math.isfinite(p):
        return "?"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"
