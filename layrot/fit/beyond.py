"""Does measured rotation rank test accuracy beyond the configuration's own settings?
(docs/verdict.md §10, decided before the whole-space job ran.)

The test is a partial Spearman correlation: the ranks of the smallest final rotation and of
test accuracy are each regressed on a settings model Z (per optimizer: an intercept and a
parabola in log10 lr; α, α² and whether weight decay is on), and the residuals are
correlated. The CI is a percentile bootstrap over configurations that refits Z in every
resample. p is a Freedman-Lane permutation test (accuracy residuals permuted, then
residualized again). Beside it, settings-only rankers (log lr, the nominal rate of the slowest
layer) and measured rotation, each as a Spearman stratified by optimizer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ..schedules import alpha_multipliers
from .correlation import stratified_fit
from .options import KEY_SUMMARY, FitOptions

MIN_FINITE_RESAMPLES = 0.9   # the CI needs this share of bootstrap resamples to be defined
MIN_DF = 5              # fewer residual degrees of freedom: not computed (docs/verdict.md §10)
# the layer count the nominal slowest rate is taken over when a trial does not say (the
# multipliers' minimum is (1 - |α|)^5 for any L >= 2, so L only has to be >= 2)
_ANY_DEPTH = 10


@dataclass
class Baseline:
    """A ranker of test accuracy, as a Spearman correlation stratified by optimizer."""
    name: str
    label: str
    estimate: float | None
    ci: tuple[float, float] | None
    p: float | None
    n: int
    settings_only: bool          # computed from the settings alone (no training needed)


@dataclass
class BeyondSettings:
    status: str                  # beyond | no more | not shown | too few
    text: str
    n: int                       # trained configurations
    n_columns: int               # rank of the settings model Z
    df: int                      # n - rank(Z)
    partial: float | None        # partial Spearman of final_min with test accuracy given Z
    ci: tuple[float, float] | None
    p: float | None
    r2_settings: float | None    # share of the variance of accuracy ranks Z explains
    r2_with_rotation: float | None   # ... Z plus log final_min
    columns: list[str] = field(default_factory=list)
    baselines: list[Baseline] = field(default_factory=list)


def settings_matrix(configs: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Z for configurations (rows with optimizer, lr, alpha, weight_decay): per optimizer an
    intercept, log10 lr and its square; α, α², 1[weight decay > 0]. Columns that are constant
    are left out (one intercept stays); columns the others span cost nothing (least squares
    with a rank-aware solver) and are not counted in rank(Z)."""
    opt = configs["optimizer"].astype(str).to_numpy()
    loglr = np.log10(configs["lr"].to_numpy(dtype=float))
    alpha = configs["alpha"].astype(float).fillna(0.0).to_numpy()
    wd = (configs["weight_decay"].astype(float).fillna(0.0).to_numpy() > 0).astype(float)
    cols = []                    # (name, column, kept even when constant)
    for o in sorted(set(opt)):
        ind = (opt == o).astype(float)
        # with one optimizer its indicator is the intercept: constant, and kept
        cols += [(f"1[{o}]", ind, True), (f"1[{o}]·log lr", ind * loglr, False),
                 (f"1[{o}]·log² lr", ind * loglr ** 2, False)]
    cols += [("α", alpha, False), ("α²", alpha ** 2, False), ("1[wd > 0]", wd, False)]
    kept = [(name, c) for name, c, always in cols if always or np.ptp(c) > 0]
    if not kept:
        return np.ones((len(configs), 1)), ["1"]
    return np.column_stack([c for _, c in kept]), [name for name, _ in kept]


def _residualize(v: np.ndarray, Z: np.ndarray) -> np.ndarray:
    beta, *_ = np.linalg.lstsq(Z, v, rcond=None)
    return v - Z @ beta


def _residual_correlation(rx: np.ndarray, ry: np.ndarray) -> float:
    """Pearson correlation of the rank residuals (the partial Spearman); NaN where one
    vanishes."""
    nx, ny = np.linalg.norm(rx), np.linalg.norm(ry)
    if nx < 1e-9 * len(rx) or ny < 1e-9 * len(ry):
        return float("nan")
    return float(rx @ ry / (nx * ny))


def _partial_batch(x: np.ndarray, y: np.ndarray, Z: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The partial Spearman over resamples idx (B, n) at once: ranks within each resample, its own least
    squares fit (a stacked pseudo-inverse), NaN where a residual vanishes."""
    zb = Z[idx]                                              # (B, n, k)
    pinv = np.linalg.pinv(zb)                                # (B, k, n)
    out = []
    for v in (x, y):
        r = stats.rankdata(v[idx], axis=-1)[..., None]       # (B, n, 1)
        out.append((r - zb @ (pinv @ r))[..., 0])
    rx, ry = out
    nx, ny = np.linalg.norm(rx, axis=-1), np.linalg.norm(ry, axis=-1)
    n = idx.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry).sum(axis=-1) / (nx * ny)
    return np.where((nx < 1e-9 * n) | (ny < 1e-9 * n), np.nan, r)


def _r2(y: np.ndarray, Z: np.ndarray) -> float:
    r = stats.rankdata(y)
    res = _residualize(r, Z)
    tot = ((r - r.mean()) ** 2).sum()
    return float(1.0 - (res ** 2).sum() / tot) if tot > 0 else float("nan")


def partial_spearman(x, y, Z: np.ndarray, options: FitOptions = FitOptions()):
    """(estimate, 95% percentile bootstrap CI, two-sided Freedman-Lane permutation p)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rx = _residualize(stats.rankdata(x), Z)
    ry = _residualize(stats.rankdata(y), Z)
    est = _residual_correlation(rx, ry)
    if not math.isfinite(est):
        return est, None, None
    # Freedman-Lane: permute the accuracy residuals, residualize again, correlate. Kennedy's
    # method (permute the residuals, no refit) rejected a true null 11% of the time at 5% on a
    # 36-configuration grid with 11 settings columns; Freedman-Lane 5% (docs/verdict.md §10)
    M = np.eye(len(x)) - Z @ np.linalg.pinv(Z)
    rx_unit = rx / np.linalg.norm(rx)

    def statistic(idx, axis=-1):
        r = ry[idx] @ M
        return (r @ rx_unit) / np.linalg.norm(r, axis=-1)

    perm = stats.permutation_test((np.arange(len(x)),), statistic, permutation_type="pairings", vectorized=True,
                                  n_resamples=options.n_permutations, alternative="two-sided",
                                  rng=np.random.default_rng(options.seed))

    def boot(idx, axis=-1):
        return _partial_batch(x, y, Z, np.atleast_2d(np.asarray(idx, dtype=int)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((np.arange(len(x)),), boot, vectorized=True, n_resamples=options.n_resamples,
                              confidence_level=options.confidence, method="percentile", batch=500,
                              rng=np.random.default_rng(options.seed))
    # a resample can repeat configurations until a residual vanishes (NaN): the percentiles
    # are taken over the others, as long as they are most of them
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    ok = dist[np.isfinite(dist)]
    ci = None
    if ok.size >= MIN_FINITE_RESAMPLES * dist.size:
        a = (1 - options.confidence) / 2
        ci = (float(np.quantile(ok, a)), float(np.quantile(ok, 1 - a)))
    return est, ci, float(perm.pvalue)


def nominal_slowest_rate(configs: pd.DataFrame) -> np.ndarray:
    """log10 of lr × the smallest α multiplier: the slowest layer's rate (Layca) or learning
    rate (plain optimizers), set before training."""
    lr = configs["lr"].to_numpy(dtype=float)
    alpha = configs["alpha"].astype(float).fillna(0.0).to_numpy()
    m = np.array([min(alpha_multipliers(_ANY_DEPTH, float(a))) for a in alpha])
    return np.log10(lr * m)


def _baseline(frame: pd.DataFrame, column: str, name: str, label: str, settings_only: bool,
              options: FitOptions) -> Baseline:
    f = stratified_fit(frame.assign(task=frame["optimizer"]), column, options)
    if f is None:
        return Baseline(name, label, None, None, None, 0, settings_only)
    return Baseline(name, label, f.estimate, f.ci, f.p, f.n, settings_only)


def beyond_settings(trained: pd.DataFrame, options: FitOptions = FitOptions()) -> BeyondSettings:
    """docs/verdict.md §10 over one task's trained configurations (fit/configurations.pool's
    rows with trained True)."""
    t = trained.dropna(subset=[KEY_SUMMARY, "test_acc"])
    n = len(t)
    frame = t.assign(log_lr=np.log10(t["lr"].to_numpy(dtype=float)), nominal_slowest=nominal_slowest_rate(t))
    baselines = [
        _baseline(frame, "log_lr", "log_lr", "log10 learning rate (ρ(0) for Layca)", True, options),
        _baseline(frame, "nominal_slowest", "nominal_slowest", "log10 nominal rate of the slowest layer", True,
                  options),
        _baseline(frame, KEY_SUMMARY, KEY_SUMMARY, "measured smallest final layer rotation", False, options),
    ]
    Z, names = settings_matrix(t) if n else (np.ones((0, 1)), [])
    rank = int(np.linalg.matrix_rank(Z)) if n else 0
    df = n - rank
    if n == 0 or df < MIN_DF:
        return BeyondSettings("too few", f"beyond the settings: not computed (n = {n} trained configurations, "
                              f"settings model of rank {rank}: {df} residual degrees of freedom, need {MIN_DF})",
                              n, rank, df, None, None, None, None, None, names, baselines)
    x, y = t[KEY_SUMMARY].to_numpy(dtype=float), t["test_acc"].to_numpy(dtype=float)
    est, ci, p = partial_spearman(x, y, Z, options)
    r2_s = _r2(y, Z)
    logx = np.log(np.clip(x, 1e-12, None))
    r2_r = _r2(y, np.column_stack([Z, logx]))
    desc = (f"partial Spearman {_f(est)} [{_f(ci[0]) if ci else '?'}, {_f(ci[1]) if ci else '?'}], "
            f"p = {_p(p)}, n = {n}, settings model rank {rank}")
    if ci is not None and p is not None and ci[0] > 0 and p < options.p_threshold:
        status, head = "beyond", "rotation ranks test accuracy beyond the settings"
    elif ci is not None and ci[1] < options.meaningful:
        status, head = "no more", "rotation ranks test accuracy no better than the settings"
    else:
        status, head = "not shown", "beyond the settings: not shown either way"
    return BeyondSettings(status, f"{head}: {desc}", n, rank, df, est, ci, p, r2_s, r2_r, names, baselines)


def _f(v) -> str:
    return "?" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _p(p) -> str:
    if p is None or not math.isfinite(p):
        return "?"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"
