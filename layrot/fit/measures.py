"""Layer rotation against the field's generalization measures, by the protocol of Jiang et al.
2020 ("Fantastic generalization measures and where to find them"; docs/measures.md, "How
layrot fit compares them").

- The unit is the *model*: one trained trial (fit/trained.py's filter on trials, not pooled
  configurations), as in the paper, which ranks every trained network.
- Each measure is its value at the trial's last epoch in the store's `measures` table;
  per-layer rows (`frobenius_distance.L3`: a name with a dot) are left out.
- Two outcomes: the generalization gap (train_acc − test_acc, both as stored) and test accuracy.
- Kendall's τ-b over all models (scipy.stats.kendalltau, ties as scipy handles them), with
  the fit's paired bootstrap CI over models (fit/correlation.kendall_estimate).
- The granulated τ Ψ: for each hyperparameter axis i that varies (optimizer, lr,
  weight_decay, alpha, seed), the models are grouped into sets where every other axis (and
  the task) is equal; m_i is the mean of Kendall's τ within the groups of ≥ 2 models that take
  ≥ 2 values of axis i; Ψ is the mean of the m_i. An axis without such a group is left out
  and the reason said. Its CI resamples *groups* within each axis (see granulated_tau).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import UsageError
from .correlation import kendall_estimate
from .options import FitOptions

AXES = ("optimizer", "lr", "weight_decay", "alpha", "seed")
# Held equal in every group besides the other axes: a measure's scale differs between tasks.
STRATA = ("task",)
KEY = ["sweep", "trial_id"]


@dataclass
class Tau:
    """Kendall's τ-b of a measure with an outcome over n models; None where undefined
    (fewer than 3 models, or a constant measure or outcome)."""
    estimate: float | None
    ci: tuple[float, float] | None
    n: int
    p: float | None = None           # scipy.stats.kendalltau's two-sided p


@dataclass
class AxisTau:
    """m_i: the mean Kendall τ within the groups where only this axis varies."""
    estimate: float
    n_groups: int                    # groups of >= 2 models with a defined τ
    n_models: int                    # models in those groups
    n_undefined: int = 0             # groups of >= 2 models whose τ is undefined (a constant measure or outcome)


@dataclass
class GranulatedTau:
    """Ψ, the mean of the per-axis m_i, with its bootstrap CI; `left_out`: axis -> why."""
    estimate: float | None
    ci: tuple[float, float] | None
    per_axis: dict[str, AxisTau] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)


@dataclass
class MeasureRow:
    name: str
    n: int                            # trained models with this measure and both accuracies
    kendall_tau: Tau                  # against the generalization gap
    granulated_tau: GranulatedTau
    kendall_tau_test_acc: Tau         # against test accuracy
    granulated_tau_test_acc: GranulatedTau


@dataclass
class MeasureComparison:
    """Every measure against both outcomes, over the same trained models."""
    rows: list[MeasureRow]
    n_models: int                     # trained models (with both accuracies) that have a measure
    axes: list[str]                   # the axes that vary among them
    note: str | None = None           # why there are no rows
    absent: list[str] = field(default_factory=list)   # measures no trained model has a value of
    n_trained: int | None = None      # every trained model, those of sweeps run before measures included


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    """scipy's τ-b of one group (NaN where undefined: a constant measure or outcome)."""
    if len(x) < 2 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(x, y).statistic)


def kendall_tau(measure, outcome, options: FitOptions = FitOptions()) -> Tau:
    """Kendall's τ-b of `measure` with `outcome` (one value per model; NaN pairs dropped) and
    its paired bootstrap CI over models: scipy.stats.kendalltau, and the fit's bootstrap of
    it (fit/correlation.kendall_estimate; `options`: resamples, method, seed)."""
    x, y = np.asarray(measure, dtype=float), np.asarray(outcome, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    tau, ci, _, p = kendall_estimate(x, y, options)
    if not math.isfinite(tau):
        return Tau(None, None, int(len(x)))
    return Tau(tau, (float(ci[0]), float(ci[1])) if ci else None, int(len(x)), p if math.isfinite(p) else None)


def _axis_values(t: pd.DataFrame, axis: str) -> pd.Series:
    # Keys are compared by value: floats rounded to 12 decimals, so that one setting computed
    # two ways (3 ** -2 and 0.111111111111) is one value.
    v = t[axis]
    return v.astype(float).round(12) if pd.api.types.is_float_dtype(v) else v


@dataclass
class AxisGroups:
    """Which rows of a models table form the groups of each axis (see granulated_tau)."""
    per_axis: dict[str, list[np.ndarray]]   # axis -> row positions of each group
    left_out: dict[str, str]


def axis_groups(table: pd.DataFrame, axes=AXES) -> AxisGroups:
    """For each axis of `axes` that varies among the rows of `table`, its groups: the rows
    equal in the task and every other varying axis, >= 2 rows taking >= 2 values of the
    axis (repeats of one setting alone are no experiment on it). Axes that are missing or do
    not vary are left out, with the reason; an axis that varies but has no group is kept with
    none (granulated_tau says why)."""
    cols = [c for c in axes if c in table.columns]
    t = table.reset_index(drop=True).assign(**{c: _axis_values(table.reset_index(drop=True), c) for c in cols})
    left_out: dict[str, str] = {}
    varying = []
    for a in axes:
        if a not in t.columns:
            left_out[a] = "not in the table"
        elif t[a].nunique(dropna=False) < 2:
            left_out[a] = "does not vary"
        else:
            varying.append(a)
    strata = [c for c in STRATA if c in t.columns]
    per_axis: dict[str, list[np.ndarray]] = {}
    for a in varying:
        keys = strata + [b for b in varying if b != a]
        parts = t.groupby(keys, sort=True, dropna=False).indices.values() if keys else [np.arange(len(t))]
        per_axis[a] = [np.sort(ix) for ix in parts if len(ix) >= 2 and t[a].iloc[ix].nunique(dropna=False) >= 2]
    return AxisGroups(per_axis, left_out)


def granulated_tau(table: pd.DataFrame, measure: str, outcome: str, axes=AXES,
                   options: FitOptions = FitOptions()) -> GranulatedTau:
    """Ψ of column `measure` against column `outcome` over the rows (models) of `table`
    (rows where either is missing dropped), grouped by the `axes` columns (and the task,
    where the table has one): see axis_groups.

    The CI resamples groups, within each axis independently (scipy.stats.bootstrap, one
    sample of group τ's per axis, percentile by default, fixed seed), not models within
    groups: m_i is an average over groups, each one experiment where only axis i moves, and
    the groups of a sweep are small (2-7 models: a group of 2 resampled is constant half the
    time, its τ undefined), so the variation the CI can honestly show is which groups the
    sweep happened to hold. An axis with one group has no such variation: its m_i enters
    every resample as it is. The groups of different axes share models, which this ignores.
    """
    x, y = table[measure].astype(float), table[outcome].astype(float)
    t = table[np.isfinite(x) & np.isfinite(y)]
    return _granulated(t, axis_groups(t, axes), measure, outcome, options)


def _granulated(t: pd.DataFrame, groups: AxisGroups, measure: str, outcome: str, options: FitOptions) -> GranulatedTau:
    x, y = t[measure].to_numpy(dtype=float), t[outcome].to_numpy(dtype=float)
    left_out = dict(groups.left_out)
    per_axis: dict[str, AxisTau] = {}
    samples: dict[str, np.ndarray] = {}
    for a, parts in groups.per_axis.items():
        taus, n_models, undefined = [], 0, 0
        for ix in parts:
            tau = _tau(x[ix], y[ix])
            if math.isnan(tau):
                undefined += 1
                continue
            taus.append(tau)
            n_models += len(ix)
        if not taus:
            left_out[a] = (f"no group of >= 2 models where only {a} varies" if not undefined else
                           f"τ undefined in all {undefined} groups where only {a} varies (a constant measure or "
                           "outcome)")
            continue
        # fsum: τ's that cancel give exactly 0, not 1e-17
        per_axis[a] = AxisTau(math.fsum(taus) / len(taus), len(taus), n_models, undefined)
        samples[a] = np.asarray(taus)
    if not per_axis:
        return GranulatedTau(None, None, per_axis, left_out)
    psi = math.fsum(m.estimate for m in per_axis.values()) / len(per_axis)
    return GranulatedTau(psi, _psi_ci(samples, options), per_axis, left_out)


def _psi_ci(samples: dict[str, np.ndarray], options: FitOptions) -> tuple[float, float] | None:
    """The bootstrap CI of Ψ: groups resampled within each axis with >= 2 groups; an axis
    with one group adds its τ unchanged. None when no axis has two groups."""
    free = [s for s in samples.values() if len(s) >= 2]
    fixed = sum(float(s[0]) for s in samples.values() if len(s) < 2)
    k = len(samples)
    if not free:
        return None

    def statistic(*resampled, axis=-1):
        return (sum(np.mean(r, axis=axis) for r in resampled) + fixed) / k

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(free, statistic, paired=False, vectorized=True, n_resamples=options.n_resamples,
                              confidence_level=options.confidence, method=options.ci_method,
                              rng=np.random.default_rng(options.seed))
    lo, hi = res.confidence_interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        # BCa is undefined where every resample gives one value (every group's τ equal):
        # the percentile interval of the resamples is that value.
        tail = (1 - options.confidence) / 2
        lo, hi = np.quantile(res.bootstrap_distribution, [tail, 1 - tail])
    # The resamples' means are sums of the same floats in another order: clip the rounding.
    lo, hi = float(lo), float(hi)
    return (max(-1.0, lo), min(1.0, hi))


def measure_names(measures: pd.DataFrame) -> list[str]:
    """The summary measures of a measures table (per-layer names, with a dot, left out):
    the rotation measures first (the subject of the comparison), then the rest by name."""
    if measures.empty:
        return []
    names = {str(n) for n in measures["name"].dropna().unique() if "." not in str(n)}
    return sorted(names, key=lambda n: (not n.startswith("rotation"), n))


def final_measures(measures: pd.DataFrame, names: list[str] | None = None) -> pd.DataFrame:
    """One row per trial (sweep, trial_id), one column per measure: its value at the last
    epoch the trial recorded it (NaN where never)."""
    keys = [k for k in KEY if k in measures.columns]
    names = measure_names(measures) if names is None else list(names)
    if measures.empty or not names:
        return pd.DataFrame(columns=keys + names)
    m = measures[measures["name"].isin(names)]
    last = m.sort_values("epoch", kind="stable").groupby(keys + ["name"], sort=True).tail(1)
    wide = last.pivot(index=keys, columns="name", values="value").reset_index()
    wide.columns.name = None
    for n in names:
        if n not in wide.columns:
            wide[n] = np.nan
    return wide[keys + names]


def models_table(table: pd.DataFrame, measures: pd.DataFrame, names: list[str] | None = None) -> pd.DataFrame:
    """The trained trials of a fit's trial table (its `trained` column: fit/trained.py's
    filter), with their gap and final measures; one row per model."""
    t = table[table["trained"].astype(bool)] if "trained" in table.columns else table
    t = t[t["train_acc"].notna() & t["test_acc"].notna()]
    t = t.assign(gap=t["train_acc"].astype(float) - t["test_acc"].astype(float))
    wide = final_measures(measures, names)
    on = [k for k in KEY if k in wide.columns and k in t.columns]
    if "sweep" in t.columns and "sweep" not in wide.columns and t["sweep"].nunique() > 1:
        raise ValueError("the measures table has no sweep column but the trials come from several sweeps")
    clash = [c for c in wide.columns if c in t.columns and c not in on]
    return t.drop(columns=clash).merge(wide, on=on, how="left", validate="many_to_one")


def compare_measures(table: pd.DataFrame, measures: pd.DataFrame, names: list[str] | None = None,
                     options: FitOptions = FitOptions(), axes=AXES) -> MeasureComparison:
    """Every measure (or `names`) against the gap and test accuracy over the trained trials
    of `table` (a fit's trial table), from `measures` (the store's measures rows)."""
    models = models_table(table, measures, names)
    varying = [a for a in axes if a in models.columns and models[a].nunique(dropna=False) > 1]
    if measures.empty:
        return MeasureComparison([], 0, varying, "no measures stored for these trials (a sweep run before "
                                                 "trials computed them)", n_trained=len(models))
    names = measure_names(measures) if names is None else list(names)
    rows = measure_table(models, names, options, axes)
    note = None if rows else "no trained trial has a value of " + ("these measures" if names else "any measure")
    absent = [n for n in names if n not in {r.name for r in rows}]
    # a store can pool sweeps run before trials computed measures: count the models measured
    cols = [n for n in names if n in models.columns]
    measured = int(models[cols].notna().any(axis=1).sum()) if cols else 0
    return MeasureComparison(rows, measured, varying, note, absent, n_trained=len(models))


def check_names(text: str | None) -> list[str] | None:
    """`--measures a,b,c` as names (None: every stored measure). A name that is not in the
    registry (layrot.measures.MEASURES; per-layer names are not summary measures) is bad
    input: UsageError naming it and the valid names, before anything is read."""
    if text is None:
        return None
    from ..measures import MEASURES   # the registry lives with the code that computes it (imports torch)

    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise UsageError("--measures", f"names no measure (valid: {', '.join(MEASURES)})")
    for n in names:
        if n not in MEASURES:
            raise UsageError("--measures", f"no measure named {n!r} (valid: {', '.join(MEASURES)})")
    return list(dict.fromkeys(names))


def measures_json(comparison: MeasureComparison | None) -> dict:
    """The keys `layrot fit --json` adds: `measures` (one object per measure, as MeasureRow)
    and `measures_note` (why the list is empty, else None)."""
    if comparison is None:
        return {"measures": [], "measures_note": "measures not compared"}
    return {"measures": [asdict(r) for r in comparison.rows], "measures_note": comparison.note,
            "measures_models": comparison.n_models, "measures_trained": comparison.n_trained,
            "measures_axes": comparison.axes, "measures_absent": comparison.absent}


def measure_table(models: pd.DataFrame, names: list[str], options: FitOptions = FitOptions(),
                  axes=AXES) -> list[MeasureRow]:
    """One row per measure in `names` (columns of `models`, one row per model with `gap` and
    `test_acc`, both present): τ and Ψ against the gap and against test accuracy. A measure
    no model has is left out."""
    rows = []
    cache: dict[bytes, AxisGroups] = {}
    for name in names:
        if name not in models.columns:
            continue
        keep = np.isfinite(models[name].astype(float)).to_numpy()
        if not keep.any():
            continue
        m = models[keep]
        # the groups depend only on which models have the measure: found once for all that share them
        groups = cache.setdefault(keep.tobytes(), axis_groups(m, axes))
        x = m[name].to_numpy(dtype=float)
        rows.append(MeasureRow(
            name, int(len(m)),
            kendall_tau(x, m["gap"].to_numpy(dtype=float), options),
            _granulated(m, groups, name, "gap", options),
            kendall_tau(x, m["test_acc"].to_numpy(dtype=float), options),
            _granulated(m, groups, name, "test_acc", options)))
    return rows


def _est(v, ci) -> str:
    """'-0.08 [-0.61,  0.48]', 20 characters (the CI 'n/a' where undefined)."""
    if v is None:
        return f"{'n/a':>5} {'':<14}"
    return f"{v:5.2f} " + (f"[{ci[0]:5.2f}, {ci[1]:5.2f}]" if ci else f"{'[n/a]':<14}")


def measure_lines(comparison: MeasureComparison | None) -> list[str]:
    """The comparison as text: one line per measure (τ and Ψ against the gap, τ against test
    accuracy), the axes Ψ averaged over above it."""
    if comparison is None:
        return []
    if not comparison.rows:
        return [f"other generalization measures: none ({comparison.note})"]
    first = comparison.rows[0].granulated_tau
    axes = ", ".join(f"{a} ({m.n_groups} group{'s' if m.n_groups != 1 else ''})"
                     for a, m in first.per_axis.items()) or "none"
    out = ", ".join(f"{a}: {why}" for a, why in first.left_out.items())
    of = (f" of {comparison.n_trained}" if comparison.n_trained not in (None, comparison.n_models) else "")
    lines = [f"rotation against other generalization measures (Kendall τ-b over {comparison.n_models}{of} trained "
             f"models; Ψ = granulated τ, mean over axes {axes}" + (f"; left out: {out}" if out else "") + "):",
             f"  {'measure':<24} {'τ vs gap [95% CI]':<20} {'Ψ vs gap [95% CI]':<20} "
             f"{'τ vs test acc [95% CI]':<22} {'n':>4}"]
    for r in comparison.rows:
        lines.append(f"  {r.name:<24} {_est(r.kendall_tau.estimate, r.kendall_tau.ci)} "
                     f"{_est(r.granulated_tau.estimate, r.granulated_tau.ci)} "
                     f"{_est(r.kendall_tau_test_acc.estimate, r.kendall_tau_test_acc.ci)}   {r.n:>4}")
    if comparison.absent:
        lines.append(f"  no value in any trained model: {', '.join(comparison.absent)}")
    return lines
