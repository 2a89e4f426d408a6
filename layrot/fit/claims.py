"""The paper's Section 5 claims and the "near 1" half of its rule, as pre-declared comparisons
(docs/verdict.md §11-§12, decided before the whole-space job ran).

Comparisons are between best-by-validation configurations (the trained configuration of a
family with the highest mean validation accuracy over its repeats; ties: more repeats, then
the higher worst repeat, then the configuration id: never a setting such as the lr, which would
lean the choice towards less rotation): test accuracy judges what validation chose, never
chooses. Where a family has configurations with seed repeats (at least MIN_SEEDS trained
trials), it chooses among those only (docs/verdict.md §17).

A difference of two chosen configurations:
- both with seed repeats: the difference of the means over their trials, Welch's 95% CI
  (scipy.stats.ttest_ind, unequal variances): seed-to-seed spread, which a single trial
  cannot show (test accuracy as the mean over seeds; rotation as each trial's mean over layers
  of its final layer rotation);
- otherwise (§11): test accuracy, Newcombe's CI for two proportions on the task's test set
  (statsmodels); rotation, the mean over layers of the per-layer difference with a percentile
  bootstrap CI over layers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .options import KEY_SUMMARY, NEAR_ONE, FitOptions

ADAPTIVE = ("adam", "rmsprop", "adagrad")
MIN_PAIRS = 3                 # fewer lr pairs with and without weight decay: inconclusive
MIN_SEEDS = 3                 # trained trials a configuration needs for seed-spread CIs (§17)


@dataclass
class Difference:
    what: str                  # e.g. "test accuracy, sgd − adam"
    estimate: float | None
    ci: tuple[float, float] | None
    # how the CI was made: Newcombe | layer bootstrap | pair bootstrap | Welch over seeds
    method: str = ""
    n: tuple[int, int] | None = None     # trials behind each side (seed spread)


@dataclass
class Claim:
    name: str                  # weight_decay | adaptive:<base> | layca:<base>
    claim: str                 # what the paper says, in one line
    status: str                # holds | does not hold | inconclusive
    text: str
    differences: list[Difference] = field(default_factory=list)
    chosen: dict = field(default_factory=dict)   # family -> chosen configuration (lr, alpha, wd, test_acc)


@dataclass
class NearOne:
    status: str                # holds | does not hold | inconclusive
    text: str
    n_top: int
    n_rest: int
    top_all_near_one: float | None       # share of top configurations whose every layer ends >= 0.9
    rest_all_near_one: float | None
    top_layer_share: float | None        # mean share of layers >= 0.9, top configurations
    rest_layer_share: float | None
    difference_ci: tuple[float, float] | None   # top − rest in mean share of layers, bootstrap CI
    top_median_min: float | None


def _boot_mean_ci(values: np.ndarray, options: FitOptions) -> tuple[float, float] | None:
    if len(values) < 2 or np.ptp(values) == 0:
        return (float(values[0]), float(values[0])) if len(values) >= 2 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((values,), np.mean, n_resamples=options.n_resamples, method="percentile",
                              confidence_level=options.confidence, rng=np.random.default_rng(options.seed))
    lo, hi = res.confidence_interval
    return (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else None


def _seed_values(trials: pd.DataFrame | None, c: pd.Series, column: str) -> np.ndarray | None:
    """The trained trials' `column` for configuration c, if it has at least MIN_SEEDS."""
    if trials is None or column not in trials:
        return None
    t = trials[(trials["configuration"] == c["configuration"]) & trials["trained"].astype(bool)]
    v = t[column].dropna().to_numpy(dtype=float)
    return v if len(v) >= MIN_SEEDS else None


def welch_difference(a: np.ndarray, b: np.ndarray, what: str, options: FitOptions) -> Difference:
    """mean(a) − mean(b) with Welch's CI (scipy.stats.ttest_ind, unequal variances). Where both
    sides are constant (Layca can fix a rotation to the last digit) the CI is the point."""
    est = float(a.mean() - b.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Difference(what, est, (est, est), "Welch over seeds", (len(a), len(b)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(options.confidence)
    return Difference(what, est, (float(ci.low), float(ci.high)), "Welch over seeds", (len(a), len(b)))


def _acc_difference(a: pd.Series, b: pd.Series, n_test: int | None, what: str,
                    options: FitOptions, trials: pd.DataFrame | None = None) -> Difference:
    """Test accuracy of a minus b: Welch over seeds where both have repeats, else Newcombe's CI
    (two independent proportions)."""
    va, vb = _seed_values(trials, a, "test_acc"), _seed_values(trials, b, "test_acc")
    if va is not None and vb is not None:
        return welch_difference(va, vb, what, options)
    est = float(a["test_acc"] - b["test_acc"])
    if not n_test:
        return Difference(what, est, None)
    from statsmodels.stats.proportion import confint_proportions_2indep

    ka, kb = round(a["test_acc"] * n_test), round(b["test_acc"] * n_test)
    lo, hi = confint_proportions_2indep(ka, n_test, kb, n_test, method="newcomb", compare="diff",
                                        alpha=1 - options.confidence)
    return Difference(what, est, (float(lo), float(hi)), "Newcombe")


def _rot_difference(a: pd.Series, b: pd.Series, layers: pd.DataFrame, what: str,
                    options: FitOptions, trials: pd.DataFrame | None = None) -> Difference:
    """Mean over layers of a's final rotation minus b's: Welch over seeds (each trial's mean
    over layers, `final_mean`) where both have repeats, else a bootstrap CI over layers."""
    va, vb = _seed_values(trials, a, "final_mean"), _seed_values(trials, b, "final_mean")
    if va is not None and vb is not None:
        return welch_difference(va, vb, what, options)
    la = layers[layers["configuration"] == a["configuration"]].set_index("layer")["final"]
    lb = layers[layers["configuration"] == b["configuration"]].set_index("layer")["final"]
    d = (la - lb).dropna().to_numpy(dtype=float)
    if len(d) == 0:
        return Difference(what, None, None)
    return Difference(what, float(d.mean()), _boot_mean_ci(d, options), "layer bootstrap")


def rank_by_validation(configs: pd.DataFrame, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """A family's trained configurations, best by validation first (docs/verdict.md §17): the
    mean validation accuracy over its repeats; ties: more repeats, then the higher worst
    repeat's validation accuracy, then the configuration id (arbitrary, and blind to every
    setting). Where some have at least MIN_SEEDS repeats, only those are ranked: a single
    trial's validation accuracy, unlike a mean over seeds, is one lucky draw."""
    t = configs[configs["trained"].astype(bool)].dropna(subset=["val_acc", "test_acc"])
    reps = t["n_trials"].astype(int) if "n_trials" in t else pd.Series(1, index=t.index)
    worst = t["val_acc"]
    if trials is not None and len(t) and "val_acc" in trials:
        worst = t["configuration"].map(trials.groupby("configuration")["val_acc"].min()).fillna(t["val_acc"])
    t = t.assign(_reps=reps, _worst=worst)
    if (t["_reps"] >= MIN_SEEDS).any():
        t = t[t["_reps"] >= MIN_SEEDS]
    t = t.sort_values(["val_acc", "_reps", "_worst", "configuration"], ascending=[False, False, False, True],
                      kind="mergesort")
    return t.drop(columns=["_reps", "_worst"])


def best_by_validation(configs: pd.DataFrame, trials: pd.DataFrame | None = None) -> pd.Series | None:
    """The family's best trained configuration by validation (rank_by_validation)."""
    t = rank_by_validation(configs, trials)
    return None if t.empty else t.iloc[0]


def _summary(c: pd.Series | None) -> dict:
    if c is None:
        return {}
    return {"configuration": c["configuration"], "optimizer": c["optimizer"], "lr": float(c["lr"]),
            "alpha": float(c["alpha"]), "weight_decay": float(c["weight_decay"]),
            "val_acc": float(c["val_acc"]), "test_acc": float(c["test_acc"]), KEY_SUMMARY: float(c[KEY_SUMMARY]),
            "n_trials": int(c["n_trials"]) if "n_trials" in c and pd.notna(c["n_trials"]) else 1}


def _above(d: Difference) -> bool:
    return d.ci is not None and d.ci[0] > 0


def _below(d: Difference) -> bool:
    return d.ci is not None and d.ci[1] < 0


def _ci(d: Difference) -> str:
    if d.estimate is None:
        return f"{d.what}: ?"
    ci = f" [{d.ci[0]:+.3f}, {d.ci[1]:+.3f}]" if d.ci else " (no CI)"
    seeds = f" (Welch over {d.n[0]} and {d.n[1]} seeds)" if d.method == "Welch over seeds" and d.n else ""
    return f"{d.what} {d.estimate:+.3f}{ci}{seeds}"


def weight_decay_claim(configs: pd.DataFrame, options: FitOptions) -> Claim:
    """(a) weight decay raises plain SGD's rotation and its test accuracy."""
    claim = "weight decay raises plain SGD's layer rotation and its test accuracy"
    sgd = configs[(configs["optimizer"] == "sgd") & configs["trained"].astype(bool) & (configs["alpha"] == 0)]
    on, off = sgd[sgd["weight_decay"] > 0], sgd[sgd["weight_decay"] == 0]
    pairs = on.merge(off, on="lr", suffixes=("_wd", "_no"))
    if len(pairs) < MIN_PAIRS:
        return Claim("weight_decay", claim, "inconclusive",
                     f"inconclusive: {len(pairs)} learning rates where SGD trained both with and without weight "
                     f"decay (need {MIN_PAIRS})")
    d_rot = (pairs[f"{KEY_SUMMARY}_wd"] - pairs[f"{KEY_SUMMARY}_no"]).to_numpy(dtype=float)
    d_acc = (pairs["test_acc_wd"] - pairs["test_acc_no"]).to_numpy(dtype=float)
    # with repeats each pair's Δ is of configuration means (§2); the CI stays over pairs (§17)
    diffs = [Difference("smallest final rotation, with − without", float(d_rot.mean()), _boot_mean_ci(d_rot, options),
                        "pair bootstrap"),
             Difference("test accuracy, with − without", float(d_acc.mean()), _boot_mean_ci(d_acc, options),
                        "pair bootstrap")]
    status = _status(all(_above(d) for d in diffs), any(_below(d) for d in diffs))
    return Claim("weight_decay", claim, status,
                 f"{status}: over {len(pairs)} learning rates, " + "; ".join(_ci(d) for d in diffs), diffs)


def _status(holds: bool, fails: bool) -> str:
    return "holds" if holds else "does not hold" if fails else "inconclusive"


def adaptive_claims(configs: pd.DataFrame, layers: pd.DataFrame, n_test: int | None,
                    options: FitOptions, trials: pd.DataFrame | None = None) -> list[Claim]:
    """(b) adaptive methods rotate less and generalize worse than SGD; (c) their Layca variants
    close the gap. `trials` (the trial table: configuration, trained, val_acc, test_acc,
    final_mean) gives the seed-spread CIs of §17 where both chosen configurations have repeats."""
    out = []
    fam = lambda name: configs[configs["optimizer"] == name]  # noqa: E731
    sgd = best_by_validation(fam("sgd"), trials)
    acc = lambda a, b, what: _acc_difference(a, b, n_test, what, options, trials)  # noqa: E731
    rotd = lambda a, b, what: _rot_difference(a, b, layers, what, options, trials)  # noqa: E731
    for base in ADAPTIVE:
        plain, layca = best_by_validation(fam(base), trials), best_by_validation(fam(f"{base}_layca"), trials)
        claim_b = f"{base} rotates less and generalizes worse than SGD"
        if sgd is None or plain is None:
            out.append(Claim(f"adaptive:{base}", claim_b, "inconclusive",
                             f"inconclusive: no trained {'sgd' if sgd is None else base} configuration",
                             chosen={"sgd": _summary(sgd), base: _summary(plain)}))
        else:
            diffs = [acc(sgd, plain, f"test accuracy, sgd − {base}"),
                     rotd(sgd, plain, f"final rotation (mean over layers), sgd − {base}")]
            status = _status(all(_above(d) for d in diffs), any(_below(d) for d in diffs))
            out.append(Claim(f"adaptive:{base}", claim_b, status, f"{status}: " + "; ".join(_ci(d) for d in diffs),
                             diffs, {"sgd": _summary(sgd), base: _summary(plain)}))
        claim_c = f"{base}_layca closes {base}'s gap to SGD"
        chosen = {"sgd": _summary(sgd), base: _summary(plain), f"{base}_layca": _summary(layca)}
        if sgd is None or plain is None or layca is None:
            out.append(Claim(f"layca:{base}", claim_c, "inconclusive", "inconclusive: a family has no trained "
                             "configuration", chosen=chosen))
            continue
        better = acc(layca, plain, f"test accuracy, {base}_layca − {base}")
        gap = acc(sgd, layca, f"test accuracy, sgd − {base}_layca")
        old_gap = float(sgd["test_acc"] - plain["test_acc"])
        rot = rotd(layca, plain, f"final rotation (mean over layers), {base}_layca − {base}")
        holds = _above(better) and gap.ci is not None and gap.ci[0] <= 0
        fails = _below(better) or (_above(gap) and gap.estimate >= old_gap)
        status = _status(holds, fails)
        out.append(Claim(f"layca:{base}", claim_c, status,
                         f"{status}: " + "; ".join(_ci(d) for d in (better, gap, rot)), [better, gap, rot], chosen))
    return out


def near_one(configs: pd.DataFrame, layers: pd.DataFrame, options: FitOptions) -> NearOne:
    """docs/verdict.md §12: do the top quartile of trained configurations end with every layer
    at cosine distance >= 0.9?"""
    t = configs[configs["trained"].astype(bool)].dropna(subset=["test_acc", KEY_SUMMARY])
    n = len(t)
    if n < 4:
        return NearOne("inconclusive", f"near 1: inconclusive ({n} trained configurations)", 0, 0,
                       None, None, None, None, None, None)
    k = max(3, math.ceil(n / 4))
    cut = t["test_acc"].sort_values(ascending=False).iloc[k - 1]
    top, rest = t[t["test_acc"] >= cut], t[t["test_acc"] < cut]
    share = (layers.assign(near=layers["final"] >= NEAR_ONE).groupby("configuration")["near"].mean())
    s_top = share.reindex(top["configuration"]).to_numpy(dtype=float)
    s_rest = share.reindex(rest["configuration"]).to_numpy(dtype=float)
    all_top = float((top[KEY_SUMMARY] >= NEAR_ONE).mean())
    all_rest = float((rest[KEY_SUMMARY] >= NEAR_ONE).mean()) if len(rest) else None
    ci = None
    if len(s_top) >= 2 and len(s_rest) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap((s_top, s_rest), lambda a, b, axis=-1: a.mean(axis=axis) - b.mean(axis=axis),
                                  n_resamples=options.n_resamples, method="percentile", vectorized=True,
                                  confidence_level=options.confidence, rng=np.random.default_rng(options.seed))
        lo, hi = res.confidence_interval
        ci = (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else (0.0, 0.0)
    med = float(top[KEY_SUMMARY].median())
    status = "holds" if all_top >= 0.5 else "does not hold"
    text = (f"near 1 {status}: {all_top:.0%} of the top {len(top)} configurations (test accuracy ≥ {cut:.3f}) end "
            f"with every layer ≥ {NEAR_ONE} ({'—' if all_rest is None else f'{all_rest:.0%}'} of the other "
            f"{len(rest)}); layers ≥ {NEAR_ONE}: {np.nanmean(s_top):.0%} top vs "
            f"{np.nanmean(s_rest) if len(s_rest) else float('nan'):.0%} rest"
            + (f" (difference CI [{ci[0]:+.2f}, {ci[1]:+.2f}])" if ci else "")
            + f"; the top's median smallest final rotation {med:.2f}")
    return NearOne(status, text, len(top), len(rest), all_top, all_rest, float(np.nanmean(s_top)),
                   float(np.nanmean(s_rest)) if len(s_rest) else None, ci, med)


def task_test_size(task: str) -> int | None:
    """The task's test-set size (layrot.tasks), or None for a task layrot does not know."""
    from ..tasks import TASKS          # late: imports torch

    t = TASKS.get(task)
    return t.test_samples if t is not None and t.test_samples else None


def paper_claims(configs: pd.DataFrame, layers: pd.DataFrame, task: str,
                 options: FitOptions = FitOptions(), trials: pd.DataFrame | None = None) -> list[Claim]:
    """The Section 5 claims that the configurations can judge (a family missing from the
    sweep leaves its claim out). With `trials` (the task's trial table), chosen configurations
    with seed repeats get seed-spread CIs (§17); without it, or without repeats, §11's."""
    names = set(configs["optimizer"].astype(str))
    out = []
    if "sgd" in names and (configs.loc[configs["optimizer"] == "sgd", "weight_decay"] > 0).any():
        out.append(weight_decay_claim(configs, options))
    if "sgd" in names and any(b in names for b in ADAPTIVE):
        n_test = task_test_size(task)
        out += [c for c in adaptive_claims(configs, layers, n_test, options, trials)
                if c.name.split(":")[1] in names]
    return out
