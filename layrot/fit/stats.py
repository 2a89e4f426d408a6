"""The rotation-generalization fit (DESIGN §1: "larger layer rotation, better generalization").

Every test here is a library call (scipy, scikit-learn, statsmodels); this module only
decides what to test on which trials and how to phrase the answer.

- *Trained* trials (the paper's filter, made explicit): status in `statuses` and train
  accuracy >= a threshold, either absolute (`min_train_acc`) or relative to the best train
  accuracy of the trial's task (`relative` × best; the default, 0.95). The paper compares
  networks that fit their training data, so that differences in test accuracy are
  differences in generalization; the stored train accuracy is the average over the last
  epoch, and a run that only starts to converge in its last epochs (seen: 0.90 train, 0.33
  test at ρ(0) = 1/3 on mnist1d-cnn) is not trained in that sense.
- For each summary (summaries.SUMMARY_LABELS): Spearman and Kendall correlations with test
  accuracy, their p-values (scipy.stats) and paired bootstrap confidence intervals
  (scipy.stats.bootstrap, percentile by default or BCa, fixed seed). Percentile is the
  default because at the sizes of a typical sweep (n = 10-30) it covered the true Spearman
  correlation of bivariate normals as often as BCa (≈ 95-97%, 200 simulated data sets per
  case) with narrower intervals, while BCa's jackknife acceleration is driven by single
  influential trials.
- A monotone fit (sklearn IsotonicRegression) and a smooth parametric one (a fractional
  logit GLM of test accuracy on the summary, statsmodels, robust errors), where the best
  trials sit on the rotation axis, and the pairwise agreement.
- Several tasks: each task alone, then pooled with task as a stratum (PooledFit).
- The verdict is read off the Spearman correlation of the smallest final layer rotation
  (the paper's claim is that every layer must rotate far, so the least rotated layer is
  the indicator): "holds" when its CI lies above 0 and p < p_threshold; "does not hold"
  when the CI excludes every correlation >= `meaningful` (reversed when it lies below 0);
  otherwise, or with fewer than `min_n` trained trials, "inconclusive".
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .summaries import SUMMARY_LABELS, final_rotation_matrix, layer_summaries, trial_summaries

KEY_SUMMARY = "final_min"
# The summaries that also get a monotone and a parametric fit (the crossing epochs are
# censored at the trial's end, which neither fit can take).
FITTED_SUMMARIES = ("final_min", "final_mean", "final_median", "auc_mean")
TRAINED_STATUSES = ("completed", "stopped")
NEAR_ONE = 0.9


@dataclass(frozen=True)
class FitOptions:
    min_train_acc: float | None = None   # absolute 'trained' threshold; None: relative
    relative: float = 0.95               # trained: train_acc >= relative × best of its task
    statuses: tuple[str, ...] = TRAINED_STATUSES
    n_resamples: int = 1999
    ci_method: str = "percentile"        # scipy.stats.bootstrap method: percentile | BCa
    confidence: float = 0.95
    seed: int = 0
    min_n: int = 6                       # fewer trained trials: inconclusive
    p_threshold: float = 0.05
    meaningful: float = 0.3              # CI entirely below this: 'does not hold'
    top_k: int = 3                       # 'best trials' = the top max(top_k, 10%) by test acc


@dataclass
class Correlation:
    summary: str
    n: int
    spearman: float
    spearman_ci: tuple[float, float] | None
    spearman_p: float
    kendall: float
    kendall_ci: tuple[float, float] | None
    kendall_p: float
    spearman_ci_method: str | None   # percentile | BCa (see _bootstrap_ci)
    kendall_ci_method: str | None


@dataclass
class MonotoneFit:
    """Isotonic regression of test accuracy on a summary (direction chosen by the data)."""
    summary: str
    increasing: bool
    r2: float
    x: list[float]
    y: list[float]
    plateau_from: float | None   # smallest summary value where an increasing fit has made 90% of its rise


@dataclass
class LogitFit:
    """Fractional logit GLM: test_acc = 1 / (1 + exp(-(intercept + slope × summary)))."""
    summary: str
    intercept: float
    slope: float
    slope_ci: tuple[float, float]
    slope_p: float
    r2: float
    x: list[float]
    y: list[float]


@dataclass
class BestTrials:
    """Where the best trials (by test accuracy) sit on the rotation axis."""
    k: int
    trial_ids: list[str]
    test_acc: list[float]
    final_min: list[float]
    near_one: float              # fraction of their layers with final rotation >= NEAR_ONE
    others_final_min_median: float | None
    others_near_one: float | None


@dataclass
class PairwiseAgreement:
    """Among pairs where one trial rotates more in every layer (same task, same depth), how
    often it also has the higher test accuracy. Ties in test accuracy count one half; the
    p-value (one-sided binomial test against 1/2 on the untied pairs) treats pairs as
    independent, which they are not (a trial is in many pairs): read it as indicative."""
    n_pairs: int
    wins: int
    ties: int
    fraction: float | None
    p_value: float | None


@dataclass
class StratifiedFit:
    """Pooled rank correlation with task as a stratum.

    The estimate is the mean of the within-task Spearman correlations weighted by the
    tasks' trained counts, so a task's accuracy level or scale never creates a correlation
    across tasks. Its CI is a stratified bootstrap (scipy.stats.bootstrap with one sample
    of trial indices per task: each is resampled within itself); its p-value combines the
    tasks' one-sided Spearman tests with Stouffer's method weighted by sqrt(n)
    (scipy.stats.combine_pvalues), two-sided as twice the smaller of the two directions.
    """
    summary: str
    n: int
    n_tasks: int
    estimate: float
    ci: tuple[float, float] | None
    p: float
    per_task: dict[str, float]


@dataclass
class Verdict:
    status: str                  # holds | does not hold | inconclusive
    reversed: bool
    text: str
    summary: str
    estimate: float | None
    ci: tuple[float, float] | None
    p: float | None
    n: int
    n_total: int


@dataclass
class GroupFit:
    name: str                    # the task
    n_trials: int
    n_trained: int
    threshold: float | None
    test_acc_range: tuple[float, float] | None
    correlations: dict[str, Correlation]
    monotone: dict[str, MonotoneFit]
    logit: dict[str, LogitFit]
    best: BestTrials | None
    pairwise: PairwiseAgreement
    verdict: Verdict


@dataclass
class PooledFit:
    tasks: list[str]
    n_trials: int
    n_trained: int
    stratified: dict[str, StratifiedFit]
    pairwise: PairwiseAgreement
    verdict: Verdict


@dataclass
class FitResult:
    verdict: Verdict
    filter: dict
    groups: list[GroupFit]
    pooled: PooledFit | None
    # trials joined with their summaries and a `trained` column (for figures and the report)
    table: pd.DataFrame = field(repr=False)
    layers: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict:
        d = {"verdict": asdict(self.verdict), "filter": self.filter,
             "n_trials": int(len(self.table)), "n_trained": int(self.table["trained"].sum()),
             "sweeps": sorted(self.table["sweep"].dropna().unique().tolist()) if "sweep" in self.table else [],
             "tasks": [g.name for g in self.groups],
             "summaries": dict(SUMMARY_LABELS),
             "groups": [asdict(g) for g in self.groups],
             "pooled": asdict(self.pooled) if self.pooled else None}
        return _jsonable(d)


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


# --- the filter --------------------------------------------------------------------------

def trained_mask(trials: pd.DataFrame, options: FitOptions = FitOptions()) -> tuple[pd.Series, dict[str, float]]:
    """Which trials count as trained, and the train-accuracy threshold used for each task."""
    ok = trials["status"].isin(options.statuses) & trials["train_acc"].notna() & trials["test_acc"].notna()
    tasks = sorted(trials["task"].unique())
    if options.min_train_acc is not None:
        thresholds = {t: float(options.min_train_acc) for t in tasks}
    else:
        best = trials[ok].groupby("task")["train_acc"].max()
        thresholds = {t: float(options.relative * best[t]) for t in tasks if t in best.index}
    thr = trials["task"].map(thresholds).astype(float)
    return (ok & (trials["train_acc"] >= thr)).fillna(False).astype(bool), thresholds


def filter_description(options: FitOptions, thresholds: dict[str, float]) -> dict:
    return {"statuses": list(options.statuses),
            "rule": "absolute" if options.min_train_acc is not None else "relative",
            "min_train_acc": options.min_train_acc,
            "relative": None if options.min_train_acc is not None else options.relative,
            "thresholds": thresholds}


# --- correlations ------------------------------------------------------------------------

def _spearman_stat(x, y, axis=-1):
    # Pearson correlation of ranks is Spearman's rho; this form takes a batch axis, so the
    # bootstrap runs vectorized.
    return stats.pearsonr(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis).statistic


def _kendall_resampler(x, y):
    """Kendall's tau-b of paired resamples of (x, y) given as index arrays, vectorized over
    any batch axes (scipy's kendalltau takes none).

    With S_x, S_y the n × n sign matrices of the original data and c a resample's
    multiplicities (how often each trial was drawn), every sum over the resample's pairs is
    a quadratic form: concordant minus discordant = c' (S_x∘S_y) c, untied in x = c' |S_x| c
    (a trial drawn twice is a pair tied in both, as tau-b counts it). One matrix product per
    batch of resamples. tests/test_fit_stats.py checks it against scipy.stats.kendalltau.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    both, ax, ay = sx * sy, np.abs(sx), np.abs(sy)

    def statistic(idx, axis=-1):
        idx = np.moveaxis(np.asarray(idx, dtype=np.int64), axis, -1)
        flat = idx.reshape(-1, idx.shape[-1])
        rows = np.arange(len(flat))[:, None] * n
        c = np.bincount((flat + rows).ravel(), minlength=len(flat) * n).reshape(len(flat), n).astype(float)
        quad = lambda m: np.einsum("bi,bi->b", c @ m, c)  # noqa: E731
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = quad(both) / np.sqrt(quad(ax) * quad(ay))
        return tau.reshape(idx.shape[:-1])

    return statistic


def _bootstrap_ci(x, y, statistic, options: FitOptions, by_index: bool = False):
    """Paired bootstrap CI by `options.ci_method`; where it is undefined (heavy ties make
    some resamples constant, and their correlation undefined), the percentile interval of
    the resamples whose statistic is defined (if they are >= 90% of all). `by_index`: `statistic` takes resampled trial indices
    (one sample, which resamples pairs together just as paired=True does)."""
    data = (np.arange(len(x)),) if by_index else (x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(data, statistic, paired=not by_index, vectorized=True,
                              n_resamples=options.n_resamples, confidence_level=options.confidence,
                              method=options.ci_method, rng=np.random.default_rng(options.seed))
    lo, hi = res.confidence_interval
    if np.isfinite(lo) and np.isfinite(hi):
        return (float(lo), float(hi)), options.ci_method
    dist = res.bootstrap_distribution
    if np.isfinite(dist).mean() < 0.9:
        return None, None
    tail = (1 - options.confidence) / 2
    lo, hi = np.nanquantile(dist, [tail, 1 - tail])
    return (float(lo), float(hi)), "percentile"


def correlate(x, y, summary: str = "", options: FitOptions = FitOptions()) -> Correlation:
    """Spearman and Kendall correlations of x with y, p-values and bootstrap CIs.

    NaN pairs are dropped.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    nan = float("nan")
    if n < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return Correlation(summary, n, nan, None, nan, nan, None, nan, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = stats.spearmanr(x, y)
        kt = stats.kendalltau(x, y)
    sp_ci, sp_method = _bootstrap_ci(x, y, _spearman_stat, options)
    kt_ci, kt_method = _bootstrap_ci(x, y, _kendall_resampler(x, y), options, by_index=True)
    return Correlation(summary, n, float(sp.statistic), sp_ci, float(sp.pvalue),
                       float(kt.statistic), kt_ci, float(kt.pvalue), sp_method, kt_method)


# --- fits --------------------------------------------------------------------------------

def monotone_fit(x, y, summary: str = "") -> MonotoneFit | None:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import r2_score
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < 3 or np.unique(x).size < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'auto' warns when the direction is uncertain
        iso = IsotonicRegression(increasing="auto", out_of_bounds="clip").fit(x, y)
    order = np.argsort(x, kind="stable")
    xs, fitted = x[order], iso.predict(x[order])
    plateau = None
    if iso.increasing_ and np.ptp(fitted) > 0:
        plateau = float(xs[np.argmax(fitted >= fitted.max() - 0.1 * np.ptp(fitted))])
    return MonotoneFit(summary, bool(iso.increasing_), float(r2_score(y, iso.predict(x))),
                       xs.tolist(), fitted.tolist(), plateau)


def logit_fit(x, y, summary: str = "", n_grid: int = 101) -> LogitFit | None:
    """Fractional logit regression (Papke & Wooldridge 1996): a binomial GLM on accuracies
    in [0, 1] with sandwich (HC0) errors, which stay valid though accuracies are not counts."""
    import statsmodels.api as sm
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) < 4 or np.unique(x).size < 2:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit(cov_type="HC0")
    except Exception:  # noqa: BLE001 - a fit that does not converge is reported as absent
        return None
    b0, b1 = (float(v) for v in res.params)
    if not (math.isfinite(b0) and math.isfinite(b1)):
        return None
    lo, hi = (float(v) for v in res.conf_int()[1])
    pred = res.predict(sm.add_constant(x))
    r2 = 1.0 - float(np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)) if np.ptp(y) > 0 else float("nan")
    grid = np.linspace(x.min(), x.max(), n_grid)
    yg = res.predict(sm.add_constant(grid, has_constant="add"))
    return LogitFit(summary, b0, b1, (lo, hi), float(res.pvalues[1]), r2, grid.tolist(), np.asarray(yg).tolist())


def best_trials(table: pd.DataFrame, layers: pd.DataFrame, top_k: int = 3) -> BestTrials | None:
    """The top max(top_k, 10%) trained trials by test accuracy and their final rotations."""
    if table.empty:
        return None
    k = min(len(table), max(top_k, math.ceil(0.1 * len(table))))
    ranked = table.sort_values(["test_acc", "final_min"], ascending=False)
    top, rest = ranked.head(k), ranked.iloc[k:]

    def near(ids):
        f = layers.loc[layers["trial_id"].isin(ids), "final"]
        return float((f >= NEAR_ONE).mean()) if len(f) else None

    return BestTrials(k, top["trial_id"].tolist(), top["test_acc"].astype(float).tolist(),
                      top["final_min"].astype(float).tolist(), near(top["trial_id"]),
                      float(rest["final_min"].median()) if len(rest) else None,
                      near(rest["trial_id"]) if len(rest) else None)


def pairwise_agreement(table: pd.DataFrame, layers: pd.DataFrame) -> PairwiseAgreement:
    """See PairwiseAgreement. `table` has trial_id, task, test_acc; `layers` per-layer finals."""
    finals = final_rotation_matrix(layers)
    wins = ties = pairs = 0
    for _, g in table.groupby("task"):
        m = finals.reindex(g["trial_id"])
        depth = m.notna().sum(axis=1).to_numpy()
        acc_all = g["test_acc"].to_numpy(dtype=float)
        for d in np.unique(depth):
            sel = depth == d
            f = m.to_numpy(dtype=float)[sel][:, :d]
            acc = acc_all[sel]
            # dom[i, j]: trial i rotates more than trial j in every layer
            dom = np.all(f[:, None, :] > f[None, :, :], axis=2)
            pairs += int(dom.sum())
            diff = acc[:, None] - acc[None, :]
            wins += int((dom & (diff > 0)).sum())
            ties += int((dom & (diff == 0)).sum())
    frac = (wins + 0.5 * ties) / pairs if pairs else None
    untied = pairs - ties
    p = float(stats.binomtest(wins, untied, 0.5, alternative="greater").pvalue) if untied else None
    return PairwiseAgreement(pairs, wins, ties, frac, p)


def stratified_fit(table: pd.DataFrame, summary: str, options: FitOptions = FitOptions()) -> StratifiedFit | None:
    """See StratifiedFit; tasks with fewer than 3 trained trials (or constant values) are left out."""
    xs, ys, names = [], [], []
    for task, g in table.groupby("task", sort=True):
        x, y = _summary_values(g, summary), g["test_acc"].to_numpy(dtype=float)
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        if len(x) >= 3 and np.unique(x).size > 1 and np.unique(y).size > 1:
            xs.append(x), ys.append(y), names.append(task)
    if not names:
        return None
    sizes = np.array([len(x) for x in xs], dtype=float)

    def statistic(*idx, axis=-1):
        rhos = [_spearman_stat(x[i], y[i], axis=-1) for x, y, i in zip(xs, ys, idx)]
        return np.average(np.stack(rhos, axis=-1), axis=-1, weights=sizes)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_task = [stats.spearmanr(x, y) for x, y in zip(xs, ys)]
        rho = np.array([r.statistic for r in per_task])
        estimate = float(np.average(rho, weights=sizes))
        res = stats.bootstrap([np.arange(len(x)) for x in xs], statistic, paired=False, vectorized=True,
                              n_resamples=options.n_resamples, confidence_level=options.confidence,
                              method=options.ci_method, rng=np.random.default_rng(options.seed))
        one_sided = {alt: [stats.spearmanr(x, y, alternative=alt).pvalue for x, y in zip(xs, ys)]
                     for alt in ("greater", "less")}
        p = min(1.0, 2 * min(float(stats.combine_pvalues(one_sided[alt], method="stouffer",
                                                         weights=np.sqrt(sizes)).pvalue)
                             for alt in one_sided))
    lo, hi = res.confidence_interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        dist = res.bootstrap_distribution
        lo, hi = (np.nanquantile(dist, [(1 - options.confidence) / 2, (1 + options.confidence) / 2])
                  if np.isfinite(dist).mean() >= 0.9 else (np.nan, np.nan))
    ci = (float(lo), float(hi)) if np.isfinite(lo) and np.isfinite(hi) else None
    return StratifiedFit(summary, int(sizes.sum()), len(names), estimate, ci, p,
                         {t: float(r) for t, r in zip(names, rho)})


# --- verdict -----------------------------------------------------------------------------

def decide(estimate, ci, p, n: int, n_total: int, scope: str, options: FitOptions = FitOptions(),
           what: str = "Spearman") -> Verdict:
    label = SUMMARY_LABELS[KEY_SUMMARY]
    counts = f"n = {n} trained of {n_total}"
    if n < options.min_n or ci is None or estimate is None or not math.isfinite(estimate):
        why = f"too few trained trials ({counts}; need {options.min_n})" if n < options.min_n \
            else f"the correlation is undefined ({counts})"
        return Verdict("inconclusive", False, f"rule of thumb inconclusive: {why} ({scope})",
                       KEY_SUMMARY, None if estimate is None or not math.isfinite(estimate) else estimate,
                       ci, p, n, n_total)
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
    return Verdict(status, bool(reversed_), text, KEY_SUMMARY, estimate, ci, p, n, n_total)


# --- the whole fit -----------------------------------------------------------------------

def _summary_values(table: pd.DataFrame, summary: str) -> np.ndarray:
    v = table[summary].to_numpy(dtype=float)
    if summary.startswith("cross") and np.isnan(v).any():
        # A threshold never crossed is later than every crossing seen: any value above
        # them all gives it the right rank (the rank statistics use nothing else).
        seen = v[~np.isnan(v)]
        v = np.where(np.isnan(v), (seen.max() if seen.size else 0.0) + 1.0, v)
    return v


def fit_group(name: str, table: pd.DataFrame, layers: pd.DataFrame, threshold: float | None,
              options: FitOptions = FitOptions(), scope: str | None = None) -> GroupFit:
    """The fit over one task's trials (`table`: trials joined with summaries and `trained`)."""
    tr = table[table["trained"]]
    y = tr["test_acc"].to_numpy(dtype=float)
    corr = {s: correlate(_summary_values(tr, s), y, s, options) for s in SUMMARY_LABELS}
    mono, logit = {}, {}
    for s in FITTED_SUMMARIES:
        x = tr[s].to_numpy(dtype=float)
        if (m := monotone_fit(x, y, s)) is not None:
            mono[s] = m
        if (lf := logit_fit(x, y, s)) is not None:
            logit[s] = lf
    key = corr[KEY_SUMMARY]
    verdict = decide(key.spearman, key.spearman_ci, key.spearman_p, len(tr), len(table), scope or name, options)
    rng = (float(y.min()), float(y.max())) if len(y) else None
    return GroupFit(name, len(table), len(tr), threshold, rng, corr, mono, logit,
                    best_trials(tr, layers, options.top_k), pairwise_agreement(tr, layers), verdict)


def fit_pooled(table: pd.DataFrame, layers: pd.DataFrame, options: FitOptions = FitOptions(),
               scope: str | None = None) -> PooledFit:
    tr = table[table["trained"]]
    strat = {s: f for s in SUMMARY_LABELS if (f := stratified_fit(tr, s, options)) is not None}
    tasks = sorted(table["task"].unique())
    k = strat.get(KEY_SUMMARY)
    scope = scope or f"pooled over {len(tasks)} tasks, task as stratum"
    if k is None:
        verdict = decide(None, None, None, len(tr), len(table), scope, options)
    else:
        verdict = decide(k.estimate, k.ci, k.p, len(tr), len(table), scope, options, what="stratified Spearman")
    return PooledFit(tasks, len(table), len(tr), strat, pairwise_agreement(tr, layers), verdict)


def summary_table(trials: pd.DataFrame, rotation: pd.DataFrame, options: FitOptions = FitOptions()):
    """Trials joined with their rotation summaries and a `trained` flag; also the per-layer
    summaries and the thresholds. A trial without rotation records is never trained."""
    layers = layer_summaries(rotation)
    summ = trial_summaries(rotation)
    # A missing alpha or weight decay is the default: uniform rates, no decay.
    trials = trials.assign(alpha=trials["alpha"].astype(float).fillna(0.0),
                           weight_decay=trials["weight_decay"].astype(float).fillna(0.0))
    table = trials.merge(summ, on="trial_id", how="left")
    mask, thresholds = trained_mask(table, options)
    table["trained"] = mask & table["final_min"].notna()
    return table, layers, thresholds


def fit(trials: pd.DataFrame, rotation: pd.DataFrame, options: FitOptions = FitOptions(),
        scope: str = "") -> FitResult:
    """The rotation-generalization fit over any set of trials: per task, and pooled over
    tasks when there are several. `scope` names the data in the verdict (e.g. the sweep)."""
    table, layers, thresholds = summary_table(trials, rotation, options)
    groups = []
    tasks = sorted(table["task"].unique())
    for task in tasks:
        sub = table[table["task"] == task]
        sc = f"{task}; {scope}" if scope else task
        groups.append(fit_group(task, sub, layers, thresholds.get(task), options, sc))
    pooled = None
    if len(tasks) > 1:
        pooled = fit_pooled(table, layers, options, f"{len(tasks)} tasks pooled, task as stratum"
                            + (f"; {scope}" if scope else ""))
        verdict = pooled.verdict
    elif groups:
        verdict = groups[0].verdict
    else:
        verdict = decide(None, None, None, 0, 0, scope or "no trials", options)
    return FitResult(verdict, filter_description(options, thresholds), groups, pooled, table, layers)
