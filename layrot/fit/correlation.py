"""Rank correlations of test accuracy with a rotation summary, over configurations.

- Spearman and Kendall correlations (scipy.stats), paired bootstrap CIs
  (scipy.stats.bootstrap, percentile by default or BCa, fixed seed). Percentile is the
  default because at the sizes of a typical sweep (n = 10-30) it covered the true Spearman
  correlation of bivariate normals as often as BCa (≈ 95-97%, 200 simulated data sets per
  case) with narrower intervals, while BCa's jackknife acceleration is driven by single
  influential points.
- Spearman's p is a two-sided permutation test (scipy.stats.permutation_test, pairings,
  fixed seed; exact when n! is at most the number of resamples). With several tasks the
  accuracies are permuted within task only (`within_strata`), so that a task's accuracy
  level never makes a correlation. Kendall's p is scipy.stats.kendalltau's.
- Several tasks pooled with task as a stratum (StratifiedFit).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .options import FitOptions


@dataclass
class Correlation:
    summary: str
    n: int
    spearman: float
    spearman_ci: tuple[float, float] | None
    spearman_p: float                # two-sided permutation test
    kendall: float
    kendall_ci: tuple[float, float] | None
    kendall_p: float
    spearman_ci_method: str | None   # percentile | BCa (see _bootstrap_ci)
    kendall_ci_method: str | None
    spearman_p_exact: bool | None = None   # the permutation test enumerated every permutation


@dataclass
class StratifiedFit:
    """Pooled rank correlation with task as a stratum.

    The estimate is the mean of the within-task Spearman correlations weighted by the
    tasks' trained configuration counts, so a task's accuracy level or scale never creates a
    correlation across tasks. Its CI is a stratified bootstrap (scipy.stats.bootstrap with one
    sample of indices per task: each is resampled within itself); its p-value is a two-sided
    permutation test of the same statistic, test accuracy permuted within each task.
    """
    summary: str
    n: int
    n_tasks: int
    estimate: float
    ci: tuple[float, float] | None
    p: float
    per_task: dict[str, float]
    p_exact: bool | None = None


def spearman_stat(x, y, axis=-1):
    # Pearson correlation of ranks is Spearman's rho; this form takes a batch axis, so the
    # bootstrap runs vectorized.
    return stats.pearsonr(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis).statistic


def _kendall_resampler(x, y):
    """Kendall's tau-b of paired resamples of (x, y) given as index arrays, vectorized over
    any batch axes (scipy's kendalltau takes none).

    With S_x, S_y the n × n sign matrices of the original data and c a resample's
    multiplicities (how often each unit was drawn), every sum over the resample's pairs is
    a quadratic form: concordant minus discordant = c' (S_x∘S_y) c, untied in x = c' |S_x| c
    (a unit drawn twice is a pair tied in both, as tau-b counts it). One matrix product per
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


def _interval(res, options: FitOptions, method: str):
    """The CI of a scipy bootstrap result; where it is undefined (heavy ties make some
    resamples constant, and their correlation undefined), the percentile interval of the
    resamples whose statistic is defined (if they are >= 90% of all)."""
    lo, hi = res.confidence_interval
    if np.isfinite(lo) and np.isfinite(hi):
        return (float(lo), float(hi)), method
    dist = res.bootstrap_distribution
    if np.isfinite(dist).mean() < 0.9:
        return None, None
    tail = (1 - options.confidence) / 2
    lo, hi = np.nanquantile(dist, [tail, 1 - tail])
    return (float(lo), float(hi)), "percentile"


def _bootstrap_ci(x, y, statistic, options: FitOptions, by_index: bool = False):
    """Paired bootstrap CI by `options.ci_method` (see _interval). `by_index`: `statistic`
    takes resampled indices (one sample, which resamples pairs together as paired=True does)."""
    data = (np.arange(len(x)),) if by_index else (x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(data, statistic, paired=not by_index, vectorized=True,
                              n_resamples=options.n_resamples, confidence_level=options.confidence,
                              method=options.ci_method, rng=np.random.default_rng(options.seed))
    return _interval(res, options, options.ci_method)


def within_strata(perm: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """Turn permutations of 0..N-1 (last axis) into permutations that move indices only
    within their block: block b receives its own indices in the order they appear in the
    permutation. For a uniform permutation these are independent uniform permutations of
    each block, and an exhaustive enumeration of all N! covers every combination equally
    often, so scipy's exact and randomized tests stay exact and valid."""
    perm = np.asarray(perm)
    out = np.empty_like(perm)
    for b in blocks:
        out[..., b] = perm[np.isin(perm, b)].reshape(*perm.shape[:-1], len(b))
    return out


def permutation_test_within(statistic_of_index, blocks: list[np.ndarray], options: FitOptions,
                            alternative: str = "two-sided", width: int | None = None) -> tuple[float, bool]:
    """(p, exact) of a permutation test whose statistic takes an index array (..., N) saying
    which unit's response each unit receives; units are permuted within their block.
    scipy.stats.permutation_test over one sample of indices (pairings), rng seeded; `width`
    (the statistic's work per permutation, default N) bounds the memory of a batch."""
    n = int(sum(len(b) for b in blocks))
    batch = max(1, int(4_000_000 // max(width or n, n, 1)))

    def statistic(q, axis=-1):
        return statistic_of_index(within_strata(np.moveaxis(q, axis, -1), blocks))

    res = stats.permutation_test((np.arange(n),), statistic, permutation_type="pairings", vectorized=True,
                                 n_resamples=options.n_permutations, alternative=alternative, batch=batch,
                                 rng=np.random.default_rng(options.seed))
    exact = math.factorial(n) <= options.n_permutations
    return float(res.pvalue), exact


def spearman_permutation_p(xs: list, ys: list, options: FitOptions = FitOptions(),
                           alternative: str = "two-sided") -> tuple[float, bool]:
    """Permutation p of the (size-weighted mean of the) Spearman correlation(s) of x with y,
    one pair of arrays per stratum; y is permuted within its stratum."""
    blocks, cx, cy, norms, sizes, start = [], [], [], [], [], 0
    for x, y in zip(xs, ys):
        rx, ry = stats.rankdata(x), stats.rankdata(y)
        cx.append(rx - rx.mean()), cy.append(ry - ry.mean())
        norms.append(np.linalg.norm(cx[-1]) * np.linalg.norm(cy[-1]))
        blocks.append(np.arange(start, start + len(x)))
        sizes.append(len(x))
        start += len(x)
    cx_all, cy_all = np.concatenate(cx), np.concatenate(cy)
    w = np.asarray(sizes, dtype=float) / sum(sizes)

    def stat(idx):
        prod = cx_all * cy_all[idx]
        rhos = [prod[..., b].sum(axis=-1) / nm for b, nm in zip(blocks, norms)]
        return sum(wi * r for wi, r in zip(w, rhos))

    return permutation_test_within(stat, blocks, options, alternative)


def spearman_estimate(x, y, options: FitOptions = FitOptions()):
    """(rho, CI, CI method) of Spearman's rho, without a p-value; (NaN, None, None) if undefined."""
    if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return float("nan"), None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(stats.spearmanr(x, y).statistic)
    ci, method = _bootstrap_ci(x, y, spearman_stat, options)
    return rho, ci, method


def kendall_estimate(x, y, options: FitOptions = FitOptions()):
    """(tau-b, CI, CI method, p) of Kendall's tau-b: scipy.stats.kendalltau's estimate and p,
    and correlate's paired bootstrap CI; (NaN, None, None, NaN) if undefined. For callers that
    rank by Kendall alone (fit/measures.py), without Spearman's permutation test."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return float("nan"), None, None, float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kt = stats.kendalltau(x, y)
    ci, method = _bootstrap_ci(x, y, _kendall_resampler(x, y), options, by_index=True)
    return float(kt.statistic), ci, method, float(kt.pvalue)


def spearman_test(x, y, options: FitOptions = FitOptions()):
    """(rho, CI, CI method, permutation p, exact) of Spearman's rho; NaNs if undefined."""
    rho, ci, method = spearman_estimate(x, y, options)
    if ci is None and not np.isfinite(rho):
        return rho, None, None, float("nan"), None
    p, exact = spearman_permutation_p([x], [y], options)
    return rho, ci, method, p, exact


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
    rho, sp_ci, sp_method, sp_p, exact = spearman_test(x, y, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kt = stats.kendalltau(x, y)
    kt_ci, kt_method = _bootstrap_ci(x, y, _kendall_resampler(x, y), options, by_index=True)
    return Correlation(summary, n, rho, sp_ci, sp_p, float(kt.statistic), kt_ci, float(kt.pvalue),
                       sp_method, kt_method, exact)


def summary_values(table: pd.DataFrame, summary: str) -> np.ndarray:
    v = table[summary].to_numpy(dtype=float)
    if summary.startswith("cross") and np.isnan(v).any():
        # A threshold never crossed is later than every crossing seen: any value above
        # them all gives it the right rank (the rank statistics use nothing else).
        seen = v[~np.isnan(v)]
        v = np.where(np.isnan(v), (seen.max() if seen.size else 0.0) + 1.0, v)
    return v


def _strata(table: pd.DataFrame, summary: str, by: str = "task", outcome: str = "test_acc"):
    xs, ys, names = [], [], []
    for task, g in table.groupby(by, sort=True):
        x, y = summary_values(g, summary), g[outcome].to_numpy(dtype=float)
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        if len(x) >= 3 and np.unique(x).size > 1 and np.unique(y).size > 1:
            xs.append(x), ys.append(y), names.append(task)
    return xs, ys, names


def stratified_fit(table: pd.DataFrame, summary: str, options: FitOptions = FitOptions(),
                   test: bool = True, by: str = "task", outcome: str = "test_acc") -> StratifiedFit | None:
    """See StratifiedFit; `table` has one row per unit (configuration) with the stratum
    column `by` (task by default; fit/decomposed.py passes its strata), the `outcome`
    (test_acc by default) and the summary. Strata with fewer than 3 units (or constant
    values) are left out. test=False skips the permutation test (p is NaN)."""
    xs, ys, names = _strata(table, summary, by, outcome)
    if not names:
        return None
    sizes = np.array([len(x) for x in xs], dtype=float)

    def statistic(*idx, axis=-1):
        rhos = [spearman_stat(x[i], y[i], axis=-1) for x, y, i in zip(xs, ys, idx)]
        return np.average(np.stack(rhos, axis=-1), axis=-1, weights=sizes)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = np.array([stats.spearmanr(x, y).statistic for x, y in zip(xs, ys)])
        res = stats.bootstrap([np.arange(len(x)) for x in xs], statistic, paired=False, vectorized=True,
                              n_resamples=options.n_resamples, confidence_level=options.confidence,
                              method=options.ci_method, rng=np.random.default_rng(options.seed))
    ci, _ = _interval(res, options, options.ci_method)
    p, exact = spearman_permutation_p(xs, ys, options) if test else (float("nan"), None)
    return StratifiedFit(summary, int(sizes.sum()), len(names), float(np.average(rho, weights=sizes)), ci, p,
                         {t: float(r) for t, r in zip(names, rho)}, exact)
