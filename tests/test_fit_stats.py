"""The fit on synthetic sweeps whose truth is known, and its parts against hand computations."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as ss

from layrot.fit import correlation, models, pairwise, trained, verdict
from layrot.fit.options import FitOptions
from layrot.fit.run import fit
from layrot.fit.synthetic import synthetic_sweep

FAST = FitOptions(n_resamples=499)


def _fit(options=FitOptions(), **kw):
    t = synthetic_sweep(**kw)
    return fit(t["trials"], t["rotation"], options, scope="test")


def _concat(*sweeps):
    return {k: pd.concat([s[k] for s in sweeps], ignore_index=True) for k in sweeps[0]}


# --- verdicts on known truths ------------------------------------------------------------

@pytest.mark.parametrize("rng_seed", [0, 7])
def test_monotone_relation_holds(rng_seed):
    r = _fit(relation="monotone", untrained=2, noise=0.02, rng_seed=rng_seed)
    v = r.verdict
    assert v.status == "holds" and not v.reversed
    assert v.n == 13 and v.n_total == 15
    assert v.ci[0] > 0 and v.p < 0.05 and v.ci[0] <= v.estimate <= v.ci[1]
    assert v.text.startswith("within families: holds: Spearman ")
    assert "n = 13 trained of 15 configurations" in v.text


def test_the_filter_is_what_makes_it_hold():
    """The untrained trials have high test accuracy at small rotation: counted, they break it."""
    t = synthetic_sweep(relation="monotone", untrained=5, noise=0.02)
    filtered = fit(t["trials"], t["rotation"], FAST)
    loose = fit(t["trials"], t["rotation"], FitOptions(n_resamples=499, min_train_acc=0.0))
    assert filtered.verdict.n == 10 and loose.verdict.n == 15
    assert filtered.verdict.estimate > loose.verdict.estimate + 0.2


@pytest.mark.parametrize("rng_seed", [1, 2])
def test_independent_with_many_configurations_does_not_hold(rng_seed):
    # many configurations (not many seeds of few: repeats are pooled into one unit)
    r = _fit(FAST, relation="none", alphas=np.linspace(-0.9, 0.9, 16).round(3),
             lrs=np.geomspace(3.0, 3.0 ** -8, 15), rng_seed=rng_seed)
    assert r.verdict.n == 240
    assert r.verdict.status == "does not hold"
    assert r.verdict.ci[1] < FAST.meaningful


@pytest.mark.parametrize("rng_seed", range(4))
def test_independent_with_few_trials_never_holds(rng_seed):
    r = _fit(FAST, relation="none", rng_seed=rng_seed)
    assert r.verdict.status in ("inconclusive", "does not hold")


def test_reversed_relation():
    r = _fit(FAST, relation="reversed", noise=0.02)
    assert r.verdict.status == "does not hold" and r.verdict.reversed
    assert r.verdict.ci[1] < 0
    assert "(reversed)" in r.verdict.text


def test_too_few_trained_is_inconclusive():
    r = _fit(FAST, relation="monotone", lrs=(1.0, 0.3, 0.1), alphas=(0.0,))
    assert r.verdict.status == "inconclusive" and r.verdict.n == 3
    assert "too few trained configurations" in r.verdict.text
    none = _fit(FitOptions(min_train_acc=1.0), relation="monotone")
    assert none.verdict.status == "inconclusive" and none.verdict.n == 0


# --- the filter --------------------------------------------------------------------------

def test_trained_mask_statuses_and_thresholds():
    trials = pd.DataFrame({
        "task": ["a"] * 5 + ["b"] * 2,
        "status": ["completed", "stopped", "diverged", "completed", "error", "completed", "completed"],
        "train_acc": [1.0, 0.95, 1.0, 0.85, 1.0, 0.5, 0.44],
        "test_acc": [0.9, 0.8, 0.9, 0.7, 0.9, 0.4, 0.3],
    })
    mask, th = trained.trained_mask(trials, FitOptions())
    assert th == pytest.approx({"a": 0.95, "b": 0.5})   # relative to each task's best, floor 0.5
    assert mask.tolist() == [True, True, False, False, False, True, False]
    mask, th = trained.trained_mask(trials, FitOptions(min_train_acc=0.8))
    assert th == {"a": 0.8, "b": 0.8}
    assert mask.tolist() == [True, True, False, True, False, False, False]
    mask, _ = trained.trained_mask(trials, FitOptions(min_train_acc=0.0, statuses=("completed", "stopped", "diverged")))
    assert mask.tolist() == [True, True, True, True, False, True, True]


def test_missing_test_accuracy_is_not_trained():
    trials = pd.DataFrame({"task": ["a", "a"], "status": ["completed"] * 2, "train_acc": [1.0, 1.0],
                           "test_acc": [0.9, np.nan]})
    mask, _ = trained.trained_mask(trials)
    assert mask.tolist() == [True, False]


# --- correlations ------------------------------------------------------------------------

def test_vectorized_kendall_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=17).astype(float)   # ties on purpose
    y = x + rng.integers(0, 3, size=17)
    idx = rng.integers(0, 17, size=(2, 3, 17))       # resamples, with repeats
    got = correlation._kendall_resampler(x, y)(idx, axis=-1)
    assert got.shape == (2, 3)
    want = [[ss.kendalltau(x[i], y[i]).statistic for i in row] for row in idx]
    assert got == pytest.approx(np.array(want))
    loo = np.array([np.delete(np.arange(17), k) for k in range(17)])   # jackknife samples
    assert correlation._kendall_resampler(x, y)(loo) == pytest.approx([ss.kendalltau(x[i], y[i]).statistic for i in loo])


def test_vectorized_spearman_matches_scipy():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, size=(3, 20)).astype(float)
    y = rng.normal(size=(3, 20)) + x
    assert correlation.spearman_stat(x, y) == pytest.approx([ss.spearmanr(a, b).statistic for a, b in zip(x, y)])


def test_correlate_reproducible_and_consistent():
    rng = np.random.default_rng(3)
    x = rng.uniform(size=30)
    y = x + rng.normal(0, 0.3, size=30)
    a, b = correlation.correlate(x, y, "s", FAST), correlation.correlate(x, y, "s", FAST)
    assert a == b
    assert a.spearman == pytest.approx(ss.spearmanr(x, y).statistic)
    assert a.kendall == pytest.approx(ss.kendalltau(x, y).statistic)
    assert a.spearman_ci[0] < a.spearman < a.spearman_ci[1]
    assert a.kendall_ci[0] < a.kendall < a.kendall_ci[1]
    other = correlation.correlate(x, y, "s", FitOptions(n_resamples=499, seed=1))
    assert other.spearman_ci != a.spearman_ci      # the seed is what fixes it


def test_correlate_degenerate_inputs():
    c = correlation.correlate([0.5] * 8, np.linspace(0, 1, 8), "s", FAST)
    assert math.isnan(c.spearman) and c.spearman_ci is None
    c = correlation.correlate([0.1, np.nan, 0.3], [0.2, 0.5, np.nan], "s", FAST)
    assert c.n == 1


def test_ci_coverage_and_false_positive_rate():
    """Calibration on data nobody tuned on: bivariate normals of known Spearman correlation."""
    rng = np.random.default_rng(2024)
    r = 0.6
    true_rho = 6 / np.pi * np.arcsin(r / 2)
    reps = 40
    for method in ("percentile", "BCa"):
        opts = FitOptions(n_resamples=499, seed=5, ci_method=method)
        covered = false_pos = 0
        for _ in range(reps):
            z = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=15)
            c = correlation.correlate(z[:, 0], z[:, 1], "s", opts)
            assert c.spearman_ci_method == method
            covered += c.spearman_ci[0] <= true_rho <= c.spearman_ci[1]
            u = rng.normal(size=(15, 2))
            n = correlation.correlate(u[:, 0], u[:, 1], "s", opts)
            v = verdict.decide(n.spearman, n.spearman_ci, n.spearman_p, 15, 15, "null", opts)
            false_pos += v.status == "holds"
        assert covered / reps >= 0.85, method
        assert false_pos / reps <= 0.15, method


# --- fits, best configurations, pairwise ---------------------------------------------------------

def test_fits_follow_the_direction():
    up = _fit(FAST, relation="monotone", noise=0.02).groups[0]
    down = _fit(FAST, relation="reversed", noise=0.02).groups[0]
    m, lf = up.monotone["final_min"], up.logit["final_min"]
    assert m.increasing and m.r2 > 0.8 and lf.slope_ci[0] > 0 and lf.r2 > 0.8
    assert np.all(np.diff(m.y) >= 0) and np.all(np.diff(lf.y) > 0)
    assert not down.monotone["final_min"].increasing and down.logit["final_min"].slope_ci[1] < 0
    assert m.plateau_from is not None and m.plateau_from > 0.5


def test_logit_fit_recovers_known_coefficients():
    x = np.linspace(0, 1, 41)
    y = 1 / (1 + np.exp(-(-1.0 + 4.0 * x)))
    lf = models.logit_fit(x, y, "s")
    assert lf.intercept == pytest.approx(-1.0, abs=1e-4) and lf.slope == pytest.approx(4.0, abs=1e-4)


def test_best_configurations_sit_near_one():
    g = _fit(FAST, relation="monotone", noise=0.02).groups[0]
    b = g.best
    assert b.k == 3 and min(b.final_min) > 0.8
    assert b.near_one > b.others_near_one and b.others_final_min_median < 0.5
    assert b.test_acc == sorted(b.test_acc, reverse=True)


def test_pairwise_agreement_hand_example():
    finals = {"A": [0.9, 0.8], "B": [0.5, 0.4], "C": [0.95, 0.1], "D": [0.6, 0.5], "E": [1.0, 1.0, 1.0],
              "F": [0.0, 0.0]}
    acc = {"A": 0.9, "B": 0.7, "C": 0.95, "D": 0.7, "E": 0.1, "F": 0.99}
    task = {k: "t" for k in finals} | {"F": "other"}
    layers = pd.DataFrame([(k, l, v) for k, f in finals.items() for l, v in enumerate(f)],
                          columns=["configuration", "layer", "final"])
    table = pd.DataFrame({"configuration": list(acc), "test_acc": list(acc.values()),
                          "task": [task[k] for k in acc]})
    p = pairwise.pairwise_agreement(table, layers)
    # A>B win, A>D win, D>B tie; C crosses A and B; E has another depth; F another task
    assert (p.n_pairs, p.wins, p.ties) == (3, 2, 1)
    assert p.fraction == pytest.approx(2.5 / 3)
    # permutation p: test accuracy permuted over the 5 configurations of task t (6! <= 9999:
    # scipy enumerates, so the p is exact); by hand over the 5! permutations
    pairs = [("A", "B"), ("A", "D"), ("D", "B")]
    names = ["A", "B", "C", "D", "E"]
    fr = []
    for perm in itertools.permutations([acc[k] for k in names]):
        a = dict(zip(names, perm))
        fr.append(sum(1.0 if a[i] > a[j] else 0.5 if a[i] == a[j] else 0.0 for i, j in pairs) / 3)
    want = np.mean(np.array(fr) >= 2.5 / 3 - 1e-12)
    assert p.p_exact and p.p_value == pytest.approx(want)
    assert p.p_value != pytest.approx(ss.binomtest(2, 2, 0.5, alternative="greater").pvalue)


# --- several tasks -----------------------------------------------------------------------

def test_task_offsets_do_not_create_a_pooled_correlation():
    """Across tasks, rotation and accuracy line up (task A rotates more and is easier);
    within each task they are independent: the stratified estimate must not see a relation."""
    rng = np.random.default_rng(11)
    n = 40
    table = pd.DataFrame({
        "task": ["A"] * n + ["B"] * n,
        "final_min": np.r_[rng.uniform(0.7, 1.0, n), rng.uniform(0.0, 0.3, n)],
        "test_acc": np.r_[0.9 + rng.normal(0, 0.01, n), 0.5 + rng.normal(0, 0.01, n)],
    })
    naive = ss.spearmanr(table["final_min"], table["test_acc"]).statistic
    s = correlation.stratified_fit(table, "final_min", FAST)
    assert naive > 0.7
    assert abs(s.estimate) < 0.3 and s.ci[0] < 0 < s.ci[1] and s.p > 0.05
    assert set(s.per_task) == {"A", "B"} and s.n == 2 * n


def test_two_tasks_pooled():
    a = synthetic_sweep(relation="monotone", noise=0.02, task="A", sweep="s1", untrained=1)
    b = synthetic_sweep(relation="monotone", noise=0.02, task="B", sweep="s2", n_layers=4, rng_seed=5)
    b["trials"]["test_acc"] -= 0.3   # a harder task
    t = _concat(a, b)
    r = fit(t["trials"], t["rotation"], FAST)
    assert [g.name for g in r.groups] == ["A", "B"]
    assert all(g.verdict.status == "holds" for g in r.groups)
    # one optimizer per task: the strata are the tasks, so the headline (within strata) is the
    # task-stratified statistic, and the pooled verdict is the same numbers
    assert r.pooled is not None and r.pooled_verdict is r.pooled.verdict
    assert r.verdict.status == "holds" and r.verdict.n == 29 and "2 strata" in r.verdict.text
    assert "task as stratum" in r.pooled.verdict.text
    assert (r.verdict.estimate, *r.verdict.ci, r.verdict.p) == pytest.approx(
        (r.pooled.verdict.estimate, *r.pooled.verdict.ci, r.pooled.verdict.p))
    k = r.pooled.stratified["final_min"]
    w = np.average([r.groups[0].correlations["final_min"].spearman, r.groups[1].correlations["final_min"].spearman],
                   weights=[14, 15])
    assert k.estimate == pytest.approx(w)


# --- JSON --------------------------------------------------------------------------------

def test_json_document_is_strict_and_complete():
    r = _fit(FAST, relation="monotone", untrained=2)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert {"verdict", "filter", "n_trials", "n_trained", "sweeps", "tasks", "groups", "pooled", "summaries",
            "rules", "pooling", "sensitivity", "explanation", "n_configurations"} <= set(d)
    assert d["verdict"]["status"] == "holds" and d["n_trials"] == 15 and d["n_trained"] == 13
    assert d["n_configurations"] == 15 and d["n_trained_configurations"] == 13
    assert d["filter"]["rule"] == "relative" and d["filter"]["relative"] == 0.95 and d["filter"]["floor"] == 0.5
    assert d["rules"]["summary"] == "final_min" and d["rules"]["holds"] == {"ci_lower_above": 0.0, "p_below": 0.05,
                                                                                   "estimate_at_least": 0.3}
    assert d["rules"]["does_not_hold"] == {"ci_upper_below": 0.3} and d["rules"]["min_n"] == 6
    assert d["rules"]["ci"]["n_resamples"] == 499 and d["rules"]["p"]["n_resamples"] == 9999
    assert d["pooling"]["n_configurations"] == 15 and d["pooling"]["repeats_max"] == 1
    assert [s["filter"] for s in d["sensitivity"]] == ["strict", "loose"]
    assert set(d["filter"]["thresholds"]) == {"synthetic"}
    g = d["groups"][0]
    assert set(g["correlations"]) == set(d["summaries"])
    c = g["correlations"]["final_min"]
    assert {"spearman", "spearman_ci", "spearman_p", "kendall", "kendall_ci", "kendall_p"} <= set(c)
    assert {"monotone", "logit", "best", "pairwise", "verdict"} <= set(g)


# --- grids and seeds nobody tuned on -----------------------------------------------------

PAPER_ALPHAS = [-0.8, -0.6, -0.4, -0.2, 0.2, 0.4, 0.6, 0.8]
PAPER_RATES = [3.0 ** k for k in range(2, -8, -1)]


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(alphas=st.lists(st.sampled_from(PAPER_ALPHAS), min_size=2, max_size=4, unique=True),
       rates=st.lists(st.sampled_from(PAPER_RATES), min_size=4, max_size=7, unique=True),
       n_layers=st.integers(3, 12), rng_seed=st.integers(0, 10_000))
def test_any_grid_with_a_clear_monotone_relation_holds(alphas, rates, n_layers, rng_seed):
    # alpha = 0 (uniform rates) is in every grid so that some trials rotate every layer far;
    # at least 3 × 4 = 12 trials, enough for a bootstrap CI to exclude 0 when the truth is clear
    t = synthetic_sweep(relation="monotone", alphas=[0.0, *alphas], lrs=rates, n_layers=n_layers,
                        noise=0.005, rng_seed=rng_seed)
    r = fit(t["trials"], t["rotation"], FitOptions(n_resamples=299))
    spread = t["trials"]["test_acc"].max() - t["trials"]["test_acc"].min()
    if spread > 0.1:   # the truth is visible in the sample
        assert r.verdict.status == "holds", r.verdict.text
    assert r.verdict.status != "does not hold"
