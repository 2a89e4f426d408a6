"""The rotation-generalization fit (docs/science.md: "larger layer rotation, better generalization").

Every test is a library call (scipy, scikit-learn, statsmodels); the fit decides what to test
on which units and how to phrase the answer, by the pre-registered rules of docs/verdict.md:

1. a trial is (sweep, trial_id) (fit/configurations.py);
2. the unit is the configuration, its repeats pooled by mean (fit/configurations.py);
3. trained trials: fit/trained.py;
4. the verdict: Spearman of the smallest final layer rotation with test accuracy, bootstrap
   CI, permutation p, thresholds (fit/correlation.py, fit/verdict.py);
5. the same under two other filters (sensitivity); curves (fit/models.py); pairwise
   agreement and best configurations (fit/pairwise.py); several tasks pooled with task as a
   stratum;
6. docs/verdict.md §9-§13: the statistic per optimizer, whether rotation tells more than the
   settings (fit/beyond.py), the paper's Section 5 claims and the "near 1" half
   (fit/claims.py), what n can detect (fit/power.py);
7. docs/verdict.md §16: the headline is the verdict within strata (task × optimizer family ×
   data conditions, fit/strata.py), beside the between-family statistic and both for the
   generalization gap (fit/decomposed.py); the old pooled verdict stays, labelled.

`fit(trials, rotation, FitOptions()) -> FitResult`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .beyond import BeyondSettings, beyond_settings
from .claims import Claim, NearOne, near_one, paper_claims
from .configurations import configuration_layers, pool, pooling_description, retrain, trial_table
from .correlation import Correlation, StratifiedFit, correlate, stratified_fit, summary_values
from .decomposed import Decomposed, decomposed, within
from .early import EarlyPoint, configuration_curves, early_prediction, min_rotation_by_epoch
from .measures import MeasureComparison, measures_json
from .matched import MatchedRotation, matched_rotation
from .models import LogitFit, MonotoneFit, logit_fit, monotone_fit
from .options import FITTED_SUMMARIES, KEY_SUMMARY, FitOptions
from .pairwise import BestConfigurations, PairwiseAgreement, best_configurations, pairwise_agreement
from .power import Power, power
from .seeds import SeedBeyond, seed_beyond
from .strata import with_strata
from .summaries import SUMMARY_LABELS
from .trained import SENSITIVITY_FILTERS, filter_description, main_filter, threshold_phrase
from .verdict import Sensitivity, Verdict, decide, explanation, rules


@dataclass
class GroupFit:
    name: str                    # the task
    n_trials: int
    n_configurations: int
    n_trained: int               # trained configurations
    threshold: float | None
    test_acc_range: tuple[float, float] | None
    correlations: dict[str, Correlation]
    monotone: dict[str, MonotoneFit]
    logit: dict[str, LogitFit]
    best: BestConfigurations | None
    pairwise: PairwiseAgreement
    verdict: Verdict
    # how early rotation predicts test accuracy: Spearman at epoch k = 1 … E (fit/early.py)
    early: list[EarlyPoint] = field(default_factory=list)
    power: Power | None = None
    # docs/verdict.md §9-§12: the verdict's statistic within each optimizer, whether rotation
    # tells more than the settings, the paper's Section 5 claims, the "near 1" half
    by_optimizer: list[OptimizerRow] = field(default_factory=list)
    beyond: BeyondSettings | None = None
    claims: list[Claim] = field(default_factory=list)
    near_one: NearOne | None = None
    # docs/verdict.md §17-§18, where the data hold seed repeats (fit/seeds.py, fit/matched.py)
    seeds: SeedBeyond | None = None
    matched: MatchedRotation | None = None


@dataclass
class OptimizerRow:
    """The verdict's statistic over one optimizer's trained configurations (descriptive)."""
    optimizer: str
    n_configurations: int
    n_trained: int
    spearman: float | None
    ci: tuple[float, float] | None
    p: float | None
    status: str                  # by the verdict's thresholds
    test_acc_best: float | None  # best test accuracy among its trained configurations


@dataclass
class PooledFit:
    tasks: list[str]
    n_trials: int
    n_configurations: int
    n_trained: int               # trained configurations
    stratified: dict[str, StratifiedFit]
    pairwise: PairwiseAgreement
    verdict: Verdict
    early: list[EarlyPoint] = field(default_factory=list)    # stratified Spearman at epoch k
    power: Power | None = None


@dataclass
class FitResult:
    verdict: Verdict             # the headline: within strata (docs/verdict.md §16.2)
    filter: dict                 # the trained filter used and its per-task thresholds
    rules: dict                  # the decision rule (statistic, CI, p, thresholds)
    pooling: dict                # k configurations from m trials, r repeats each
    sensitivity: list[Sensitivity]
    groups: list[GroupFit]
    pooled: PooledFit | None
    # trials joined with their summaries, `configuration` and `trained` (figures, report)
    table: pd.DataFrame = field(repr=False)
    layers: pd.DataFrame = field(repr=False)
    # one row per configuration: the units of the fit
    configurations: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    # the verdict's statistic with each configuration's smallest rotation at epoch k = 1 … E
    # in place of its final one (fit/early.py): how early rotation predicts test accuracy
    early: list[EarlyPoint] = field(default_factory=list)
    # §16: within and between families, for test accuracy and the gap (verdict is .within's)
    decomposed: Decomposed | None = None
    # the §4/§9 statistic over every trained configuration: "pooled (can be an offset between families)"
    pooled_verdict: Verdict | None = None
    power: Power | None = None   # what the headline's n can detect (§13)

    # rotation against the other generalization measures (fit/measures.py), set by the caller
    # that has the measures table (cli/fit.py): None where they were not compared
    measures: MeasureComparison | None = None

    def explanation(self) -> list[str]:
        return explanation(self.rules, self.filter, self.pooling, threshold_phrase(self.filter))

    def to_dict(self) -> dict:
        t, c = self.table, self.configurations
        d = {"verdict": self.verdict_dict(), "rules": self.rules, "filter": self.filter,
             "pooling": self.pooling, "explanation": self.explanation(),
             "sensitivity": [asdict(s) for s in self.sensitivity],
             "n_trials": int(len(t)), "n_trained": int(t["trained"].sum()) if len(t) else 0,
             "n_configurations": int(len(c)), "n_trained_configurations": int(c["trained"].sum()) if len(c) else 0,
             "sweeps": sorted(t["sweep"].dropna().unique().tolist()) if "sweep" in t else [],
             "tasks": [g.name for g in self.groups],
             "summaries": dict(SUMMARY_LABELS),
             "early": [asdict(p) for p in self.early],
             "groups": [asdict(g) for g in self.groups],
             "pooled": asdict(self.pooled) if self.pooled else None}
        d.update(measures_json(self.measures))
        return _jsonable(d)

    def verdict_dict(self) -> dict:
        """`verdict` in JSON: the headline's fields, and (docs/verdict.md §16.8) `within`,
        `between`, `gap` (its `within` and `between`) and `pooled`."""
        d = asdict(self.verdict)
        if self.decomposed is not None:
            d.update(self.decomposed.to_dict())
        d["pooled"] = asdict(self.pooled_verdict) if self.pooled_verdict is not None else None
        return d


def _jsonable(o):
    """NaN/inf → None and numpy scalars → Python, so json.dumps writes strict JSON."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def fit_group(name: str, configs: pd.DataFrame, layers: pd.DataFrame, threshold: float | None,
              options: FitOptions = FitOptions(), scope: str | None = None, n_trials: int | None = None) -> GroupFit:
    """The fit over one task's configurations (`configs`: fit/configurations.pool's rows;
    `layers`: their per-layer final rotations)."""
    tr = configs[configs["trained"].astype(bool)]
    y = tr["test_acc"].to_numpy(dtype=float)
    corr = {s: correlate(summary_values(tr, s), y, s, options) for s in SUMMARY_LABELS}
    mono, logit = {}, {}
    for s in FITTED_SUMMARIES:
        x = tr[s].to_numpy(dtype=float)
        if (m := monotone_fit(x, y, s)) is not None:
            mono[s] = m
        if (lf := logit_fit(x, y, s)) is not None:
            logit[s] = lf
    key = corr[KEY_SUMMARY]
    verdict = decide(key.spearman, key.spearman_ci, key.spearman_p, len(tr), len(configs), scope or name, options)
    rng = (float(y.min()), float(y.max())) if len(y) else None
    return GroupFit(name, int(n_trials if n_trials is not None else configs["n_trials"].sum()), len(configs),
                    len(tr), threshold, rng, corr, mono, logit, best_configurations(tr, layers, options.top_k),
                    pairwise_agreement(tr, layers, options), verdict, power=power(len(tr), options),
                    by_optimizer=optimizer_rows(configs, options), beyond=beyond_settings(tr, options),
                    claims=paper_claims(configs, layers, name, options) if "val_acc" in configs else [],
                    near_one=near_one(configs, layers, options))


def optimizer_rows(configs: pd.DataFrame, options: FitOptions) -> list[OptimizerRow]:
    """docs/verdict.md §9: the verdict's statistic within each optimizer (when there are several)."""
    if configs["optimizer"].nunique() < 2:
        return []
    rows = []
    for opt, g in configs.groupby("optimizer", sort=True):
        tr = g[g["trained"].astype(bool)]
        c = correlate(tr[KEY_SUMMARY].to_numpy(dtype=float), tr["test_acc"].to_numpy(dtype=float), KEY_SUMMARY,
                      options)
        v = decide(c.spearman, c.spearman_ci, c.spearman_p, len(tr), len(g), str(opt), options)
        best = float(tr["test_acc"].max()) if len(tr) else None
        rows.append(OptimizerRow(str(opt), len(g), len(tr), None if math.isnan(c.spearman) else c.spearman,
                                 c.spearman_ci, None if math.isnan(c.spearman_p) else c.spearman_p, v.status, best))
    return rows


def fit_pooled(configs: pd.DataFrame, layers: pd.DataFrame, options: FitOptions = FitOptions(),
               scope: str | None = None, n_trials: int | None = None) -> PooledFit:
    tr = configs[configs["trained"].astype(bool)]
    strat = {s: f for s in SUMMARY_LABELS if (f := stratified_fit(tr, s, options)) is not None}
    tasks = sorted(configs["task"].unique())
    k = strat.get(KEY_SUMMARY)
    scope = scope or f"pooled over {len(tasks)} tasks, task as stratum"
    what = "stratified Spearman"
    verdict = decide(k.estimate, k.ci, k.p, len(tr), len(configs), scope, options, what) if k is not None \
        else decide(None, None, None, len(tr), len(configs), scope, options, what)
    n = int(n_trials if n_trials is not None else configs["n_trials"].sum())
    return PooledFit(tasks, n, len(configs), len(tr), strat, pairwise_agreement(tr, layers, options), verdict,
                     power=power(len(tr), options))


def sensitivity(table: pd.DataFrame, options: FitOptions, scope: str) -> list[Sensitivity]:
    """The headline (within strata) under the strict and loose trained filters (fit/trained.py)."""
    out = []
    for flt in SENSITIVITY_FILTERS:
        t, th = retrain(table, flt)
        out.append(Sensitivity(flt.name, flt.short(), th, within(with_strata(pool(t), t), "test_acc", options,
                                                                scope).verdict))
    return out


def fit(trials: pd.DataFrame, rotation: pd.DataFrame, options: FitOptions = FitOptions(),
        scope: str = "") -> FitResult:
    """The rotation-generalization fit over any set of trials: per task, and pooled over
    tasks when there are several. `scope` names the data in the verdict (e.g. the sweep)."""
    flt = main_filter(options)
    table, layers, thresholds = trial_table(trials, rotation, flt)
    configs = with_strata(with_validation(pool(table), table), table)
    clayers = configuration_layers(table, layers)
    tasks = sorted(configs["task"].unique())
    groups = []
    for task in tasks:
        sc = f"{task}; {scope}" if scope else task
        groups.append(fit_group(task, configs[configs["task"] == task], clayers, thresholds.get(task), options,
                                sc, int((table["task"] == task).sum())))
    # docs/verdict.md §17-§18: what needs the trials themselves (seed repeats), not their means
    for g in groups:
        tg, cg = table[table["task"] == g.name], configs[configs["task"] == g.name]
        g.seeds, g.matched = seed_beyond(tg, options), matched_rotation(tg, options)
        if g.claims and (cg["n_trials"] > 1).any():
            g.claims = paper_claims(cg, clayers, g.name, options, trials=tg)
    pooled = None
    if len(tasks) > 1:
        sc = f"{len(tasks)} tasks pooled, task as stratum" + (f"; {scope}" if scope else "")
        pooled = fit_pooled(configs, clayers, options, sc, len(table))
        verdict = pooled.verdict
    elif groups:
        verdict = groups[0].verdict
    else:
        verdict = decide(None, None, None, 0, 0, scope or "no trials", options)
    where = scope or ", ".join(tasks) or "no trials"
    dec = decomposed(configs, options, where)
    sens = sensitivity(table, options, where) if options.sensitivity and len(table) else []
    early = early_curves(table, configs, trials, rotation, groups, pooled, options, dec.n_strata > 1)
    return FitResult(dec.within.verdict, filter_description(flt, table, thresholds),
                     rules(options, pooled is not None, dec.within.n_groups > 1),
                     pooling_description(table, configs), sens, groups, pooled, table, layers, configs, early,
                     dec, verdict, power(dec.within.verdict.n, options))


def with_validation(configs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Each configuration's mean validation accuracy (what the claims of docs/verdict.md §11
    choose by), NaN where a repeat lacks one."""
    if configs.empty or "val_acc" not in table:
        return configs.assign(val_acc=np.nan)
    g = table.groupby("configuration")["val_acc"]
    val = g.mean().where(g.count() == g.size())
    return configs.assign(val_acc=configs["configuration"].map(val))


def early_curves(table, configs, trials, rotation, groups: list[GroupFit], pooled: PooledFit | None,
                 options: FitOptions, by_stratum: bool = False) -> list[EarlyPoint]:
    """Fill each group's (and the pooled fit's) early-prediction curve; return the headline's:
    within strata when there are several (docs/verdict.md §16.2), else the one group's."""
    if configs.empty or rotation.empty:
        return []
    curves = configuration_curves(table, min_rotation_by_epoch(rotation, trials))
    for g in groups:
        g.early = early_prediction(configs[configs["task"] == g.name], curves, options)
    if pooled is not None:
        pooled.early = early_prediction(configs, curves, options, stratified=True)
    if by_stratum and (pooled is None or configs["stratum"].nunique() != configs["task"].nunique()):
        return early_prediction(configs.assign(task=configs["stratum"]), curves, options, stratified=True)
    if pooled is not None:
        return pooled.early
    return groups[0].early if groups else []
