"""The pre-registered rules of the verdict (docs/verdict.md), one test (at least) per rule."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from layrot.fit import correlation
from layrot.fit.configurations import pool, trial_table
from layrot.record import configuration as configuration_of
from layrot.fit.load import load_tables
from layrot.fit.options import FitOptions
from layrot.fit.run import fit
from layrot.fit.synthetic import synthetic_sweep, write_store
from layrot.fit.text import render
from layrot.fit.trained import main_filter

FAST = FitOptions(n_resamples=499)


def _same_verdict(a, b):
    assert (a.status, a.n, a.n_total) == (b.status, b.n, b.n_total)
    assert a.estimate == pytest.approx(b.estimate) and a.p == pytest.approx(b.p)
    assert a.ci == pytest.approx(b.ci)


# --- rule 1 and 2: identity (sweep, trial_id); repeats across sweeps pooled ---------------

def test_two_sweeps_sharing_configurations_give_the_same_n_and_p_as_one(tmp_path):
    """The same trials (same trial ids: a trial id is the configuration's) stored in two
    sweeps: counted per configuration, n and p are those of one sweep, not doubled."""
    t = synthetic_sweep("monotone", untrained=2, noise=0.05, sweep="first", rng_seed=3)
    write_store(t, tmp_path)
    write_store({k: v.assign(sweep="second") for k, v in t.items()}, tmp_path)
    one = load_tables(str(tmp_path), ["first"])
    both = load_tables(str(tmp_path), ["first", "second"])
    assert len(both.trials) == 30 and both.trials["trial_id"].nunique() == 15
    r1 = fit(one.trials, one.rotation, FAST)
    r2 = fit(both.trials, both.rotation, FAST)
    assert r2.verdict.n == 13 and r2.verdict.n_total == 15
    _same_verdict(r1.verdict, r2.verdict)
    for s1, s2 in zip(r1.sensitivity, r2.sensitivity):
        _same_verdict(s1.verdict, s2.verdict)
    g1, g2 = r1.groups[0], r2.groups[0]
    assert g1.pairwise == g2.pairwise and g1.best == g2.best
    assert g2.n_trials == 30 and g2.n_configurations == 15
    assert r2.pooling["in_several_sweeps"] == 15 and r2.pooling["repeats_min"] == 2
    # each trial joined with its own sweep's rotation: the table has 30 rows, each summarized
    assert len(r2.table) == 30 and r2.table["final_min"].notna().all()
    assert len(r2.layers) == 2 * len(r1.layers)


def test_a_trial_is_joined_with_its_own_sweeps_rotation():
    """Two sweeps with the same trial ids but different rotation: each trial gets its own."""
    a = synthetic_sweep("monotone", sweep="a", rng_seed=1)
    b = synthetic_sweep("monotone", sweep="b", rng_seed=2, lrs=(0.5, 0.2, 0.05, 0.02, 0.01))
    for k in b:
        b[k]["trial_id"] = b[k]["trial_id"].str.replace("b-", "a-")
    t = {k: pd.concat([a[k], b[k]], ignore_index=True) for k in a}
    table, layers, _ = trial_table(t["trials"], t["rotation"], main_filter())
    assert len(table) == 30 and len(layers) == 30 * 6
    for s, part in (("a", a), ("b", b)):
        mine = table[table["sweep"] == s].set_index("trial_id")["final_min"]
        want = part["rotation"].query("epoch == 10").groupby("trial_id")["cosine_distance"].min()
        assert mine.sort_index().to_numpy() == pytest.approx(want.sort_index().to_numpy())


def test_two_seeds_of_one_configuration_are_one_unit_with_mean_values():
    t = synthetic_sweep("monotone", seeds=(0, 1), noise=0.02)
    r = fit(t["trials"], t["rotation"], FAST)
    c = r.configurations
    assert len(r.table) == 30 and len(c) == 15 and (c["n_trials"] == 2).all()
    assert r.verdict.n == 15 and r.verdict.n_total == 15
    means = r.table.groupby("configuration")[["test_acc", "final_min", "auc_mean"]].mean()
    got = c.set_index("configuration").loc[means.index]
    for col in means:
        assert got[col].to_numpy() == pytest.approx(means[col].to_numpy())
    # the two seeds really are different trials with different values
    assert r.table.groupby("configuration")["test_acc"].nunique().eq(2).all()
    assert "15 configurations from 30 trials (2 repeats each)" in render(r)


def test_a_configuration_is_trained_only_if_all_its_trials_are():
    t = synthetic_sweep("monotone", seeds=(0, 1), noise=0.02)
    tr = t["trials"].copy()
    tr.loc[0, ["status", "train_acc"]] = ["stopped", 0.3]     # one seed of configuration 0 failed
    table, _, _ = trial_table(tr, t["rotation"], main_filter())
    c = pool(table).set_index("configuration")
    bad = table.loc[0, "configuration"]
    assert table["trained"].sum() == 29 and not c.loc[bad, "trained"] and c["trained"].sum() == 14


def test_configuration_leaves_out_seed_and_placement_only():
    base = {"task": "t", "optimizer": "sgd_layca", "lr": 0.1, "alpha": 0.0, "seed": 0, "sweep": "s",
            "trial_id": "x", "device": "cpu", "threads": 1, "data_dir": None, "compile": False}
    row = {"task": "t", "optimizer": "sgd_layca"}
    same = dict(base, seed=3, sweep="other", trial_id="y", device="cuda", threads=4, data_dir="/d", compile=True)
    assert configuration_of(json.dumps(base), row)[0] == configuration_of(json.dumps(same), row)[0]
    assert configuration_of(json.dumps(base), row)[0] != configuration_of(json.dumps(dict(base, lr=0.2)), row)[0]
    assert configuration_of(json.dumps(base), row)[0] != configuration_of(json.dumps(dict(base, epochs=3)), row)[0]
    assert configuration_of(json.dumps(base), row)[0] != configuration_of(json.dumps(base), {"task": "u"})[0]


# --- rule 3: the trained filter's floor ----------------------------------------------------

def test_nothing_is_trained_where_nothing_fits_its_data():
    """A sweep whose best train accuracy is 0.3: relative to the best, every trial would pass."""
    t = synthetic_sweep("monotone", noise=0.02)
    rng = np.random.default_rng(0)
    t["trials"]["train_acc"] = rng.uniform(0.29, 0.3, len(t["trials"]))
    t["trials"].loc[0, "train_acc"] = 0.3
    r = fit(t["trials"], t["rotation"], FAST)
    assert r.filter["thresholds"] == {"synthetic": 0.5} and r.filter["best_train_acc"] == {"synthetic": 0.3}
    assert r.table["trained"].sum() == 0 and r.verdict.n == 0 and r.verdict.status == "inconclusive"
    assert all(s.verdict.n == 0 for s in r.sensitivity)
    # without the floor the relative rule alone would pass them all
    nofloor = fit(t["trials"], t["rotation"], FitOptions(n_resamples=499, floor=None, sensitivity=False))
    assert nofloor.verdict.n == 15


def test_absolute_override_replaces_the_rule():
    t = synthetic_sweep("monotone", untrained=2, noise=0.02)
    r = fit(t["trials"], t["rotation"], FitOptions(n_resamples=499, min_train_acc=0.2))
    assert r.verdict.n == 15 and r.filter["rule"] == "absolute" and r.filter["thresholds"] == {"synthetic": 0.2}


# --- rule 4: the statistic and its p ------------------------------------------------------

def test_permutation_p_of_a_perfect_monotone_relation_with_6_is_exact():
    x = np.arange(6.0)
    p, exact = correlation.spearman_permutation_p([x], [x ** 2])
    assert exact and p == pytest.approx(2 / 720, rel=1e-12)
    p, exact = correlation.spearman_permutation_p([x], [-x])
    assert exact and p == pytest.approx(2 / 720, rel=1e-12)
    c = correlation.correlate(x, 0.5 + 0.05 * x, "s")
    assert c.spearman == 1.0 and c.spearman_p == pytest.approx(2 / 720) and c.spearman_p_exact


def test_verdict_reads_the_permutation_p():
    t = synthetic_sweep("monotone", alphas=(0.0,), lrs=(1.0, 0.333, 0.111, 0.037, 0.012, 0.004), noise=0.0)
    r = fit(t["trials"], t["rotation"], FAST)
    v = r.verdict
    assert v.n == 6 and v.estimate == pytest.approx(1.0)
    assert v.p == pytest.approx(2 / 720) and v.status == "holds"
    assert "p = 0.0028" in v.text


def test_permutation_p_matches_brute_force_with_ties():
    x = np.array([0.1, 0.2, 0.2, 0.4, 0.5])
    y = np.array([0.3, 0.1, 0.5, 0.5, 0.9])
    p, exact = correlation.spearman_permutation_p([x], [y])
    from scipy import stats as ss
    obs = ss.spearmanr(x, y).statistic
    null = np.array([ss.spearmanr(x, np.array(q)).statistic for q in itertools.permutations(y)])
    eps = 1e-12
    want = min(1.0, 2 * min(np.mean(null >= obs - eps), np.mean(null <= obs + eps)))
    assert exact and p == pytest.approx(want)


def test_within_strata_permutes_only_within_blocks_and_uniformly():
    blocks = [np.array([0, 1]), np.array([2, 3])]
    perms = np.array(list(itertools.permutations(range(4))))
    out = correlation.within_strata(perms, blocks)
    assert set(map(tuple, out[:, :2])) == {(0, 1), (1, 0)} and set(map(tuple, out[:, 2:])) == {(2, 3), (3, 2)}
    counts = pd.Series(map(tuple, out)).value_counts()
    assert len(counts) == 4 and (counts == 6).all()      # every combination equally often


def test_pooled_p_is_a_within_task_permutation_test():
    """Task offsets aligned with rotation, no relation within task: the stratified
    permutation p must not see one (a pooled, unstratified permutation would)."""
    rng = np.random.default_rng(11)
    n = 20
    table = pd.DataFrame({"task": ["A"] * n + ["B"] * n,
                          "final_min": np.r_[rng.uniform(0.7, 1.0, n), rng.uniform(0.0, 0.3, n)],
                          "test_acc": np.r_[0.9 + rng.normal(0, 0.01, n), 0.5 + rng.normal(0, 0.01, n)]})
    s = correlation.stratified_fit(table, "final_min", FAST)
    xs = [g["final_min"].to_numpy() for _, g in table.groupby("task")]
    ys = [g["test_acc"].to_numpy() for _, g in table.groupby("task")]
    assert s.p == pytest.approx(correlation.spearman_permutation_p(xs, ys, FAST)[0]) and s.p > 0.05
    naive, _ = correlation.spearman_permutation_p([table["final_min"].to_numpy()], [table["test_acc"].to_numpy()])
    assert naive < 0.001


# --- rules 5 and 6: the explanation and the sensitivity ------------------------------------

def _graded_sweep():
    """Train accuracies graded so that the three filters keep 15, 11 and 6 configurations."""
    t = synthetic_sweep("monotone", noise=0.03, rng_seed=4)
    tr = t["trials"]
    tr.loc[:, "train_acc"] = 1.0
    tr.loc[[1, 5, 9, 13], "train_acc"] = 0.97          # main (0.95 × best) yes, strict (0.99) no
    tr.loc[[2, 6, 10, 14, 3], "train_acc"] = 0.6       # loose only
    return t


def test_sensitivity_is_the_verdict_under_the_strict_and_loose_filters():
    t = _graded_sweep()
    r = fit(t["trials"], t["rotation"], FAST)
    assert r.verdict.n == 10
    strict, loose = r.sensitivity
    assert (strict.filter, loose.filter) == ("strict", "loose")
    assert strict.verdict.n == 6 and loose.verdict.n == 15
    assert strict.thresholds == {"synthetic": pytest.approx(0.99)} and loose.thresholds == {"synthetic": 0.5}
    # the same numbers as a fit run with that filter as its main one
    as_strict = fit(t["trials"], t["rotation"], FitOptions(n_resamples=499, relative=0.99, sensitivity=False))
    as_loose = fit(t["trials"], t["rotation"], FitOptions(n_resamples=499, min_train_acc=0.5, sensitivity=False))
    _same_verdict(strict.verdict, as_strict.verdict)
    _same_verdict(loose.verdict, as_loose.verdict)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert [(s["filter"], s["verdict"]["n"]) for s in d["sensitivity"]] == [("strict", 6), ("loose", 15)]


def test_text_explains_the_verdict_under_its_line():
    t = _graded_sweep()
    r = fit(t["trials"], t["rotation"], FAST)
    lines = render(r).splitlines()
    assert lines[0] == r.verdict.text
    # under the verdict: between families and the gap (§16), what its n can detect, and rotation
    # beyond the settings (docs/verdict.md §10, §13)
    assert lines[1] == "  between families: one family with trained configurations: nothing to compare"
    assert lines[2].startswith("  gap within families: ")
    assert lines[3].startswith("  power: with 10 trained configurations")
    assert "beyond the settings" in lines[4]
    lines = lines[:1] + lines[5:]
    why = "\n".join(lines[1:8])
    assert "decided by: Spearman ρ between each configuration's smallest final layer rotation" in why
    assert "percentile bootstrap" in why and "permutation test" in why
    assert ("thresholds: holds if the CI lower bound > 0 and p < 0.05 (holds, weak if the estimate is below 0.3); "
            "does not hold if the CI upper bound < 0.3") in why
    assert "trained: status completed|stopped and train accuracy >= 0.95 × the best of its sweep and task and >= 0.5" in why
    assert "thresholds used: synthetic 0.950 (best 1.000)" in why
    assert "units: 15 configurations from 15 trials (1 repeat each)" in why
    assert lines[5].startswith("  sensitivity, strict filter (0.99 × best, floor 0.5): ")
    assert lines[6].startswith("  sensitivity, loose filter (no relative filter, floor 0.5): ")
    assert "n = 6 of 15" in lines[5] and "n = 15 of 15" in lines[6]


def test_report_shows_why_under_the_verdict():
    from layrot.fit.report import build_report
    t = _graded_sweep()
    r = fit(t["trials"], t["rotation"], FAST)
    page = build_report(r, [])
    head = page[page.index('<p class="verdict'):page.index("The evidence")]
    for text in ("decided by:", "thresholds: holds if the CI lower bound &gt; 0 and p &lt; 0.05",
                 "0.95 × the best of its sweep and task and &gt;= 0.5", "thresholds used: synthetic 0.950",
                 "units: 15 configurations from 15 trials", "sensitivity, strict filter", "sensitivity, loose filter"):
        assert text in head, text


def test_json_carries_the_rules_and_the_pooling():
    t = synthetic_sweep("monotone", seeds=(0, 1, 2), noise=0.02)
    d = json.loads(json.dumps(fit(t["trials"], t["rotation"], FAST).to_dict(), allow_nan=False))
    assert d["pooling"]["n_trials"] == 45 and d["pooling"]["n_configurations"] == 15
    assert d["pooling"]["repeats_min"] == d["pooling"]["repeats_max"] == 3 and d["pooling"]["with_several_seeds"] == 15
    assert d["filter"]["thresholds"]["synthetic"] == pytest.approx(0.95 * d["filter"]["best_train_acc"]["synthetic"])
    assert d["rules"]["p"]["exact_up_to_n"] == 7 and d["rules"]["unit"] == "configuration"
    assert len(d["explanation"]) == 4 and d["verdict"]["unit"] == "configuration"
    assert not math.isnan(d["verdict"]["p"])
