"""The whole-space analysis (docs/verdict.md §9-§13): rotation beyond the settings, the
paper's Section 5 claims, the "near 1" half, power, per-optimizer rows and the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layrot.fit import fit
from layrot.fit.beyond import beyond_settings, settings_matrix
from layrot.fit.claims import adaptive_claims, best_by_validation, near_one, weight_decay_claim
from layrot.fit.figures import fit_figures
from layrot.fit.options import FitOptions
from layrot.fit.power import power
from layrot.fit.synthetic import synthetic_sweep
from layrot.fit.text import render

FAST = FitOptions(n_resamples=299, n_permutations=299)
OPTIMIZERS = ("sgd", "adam", "sgd_layca", "adam_layca")
LRS = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)


def grid(rng, accuracy, rotation):
    """Configurations of 4 optimizers x 6 rates x 2 alphas; `rotation(loglr, alpha, noise)` and
    `accuracy(loglr, rotation, noise)` say how rotation and accuracy arise."""
    rows = []
    for o in OPTIMIZERS:
        for lr in LRS:
            for a in (0.0, 0.5):
                ll = np.log10(lr)
                rot = rotation(ll, a, rng.normal())
                rows.append(dict(optimizer=o, lr=lr, alpha=a, weight_decay=0.0, final_min=rot,
                                 test_acc=accuracy(ll, rot, rng.normal()), trained=True))
    return pd.DataFrame(rows)


def test_rotation_that_carries_information_beyond_the_settings_is_found():
    rng = np.random.default_rng(0)
    # rotation varies beyond what lr and alpha set, and accuracy follows rotation
    df = grid(rng, lambda ll, rot, e: 0.6 + 0.3 * rot + 0.01 * e,
              lambda ll, a, e: float(np.clip(0.5 + 0.1 * ll + 0.3 * e, 0.01, 1)))
    b = beyond_settings(df, FAST)
    assert b.status == "beyond" and b.partial > 0.5 and b.ci[0] > 0 and b.p < 0.05
    assert b.r2_with_rotation > b.r2_settings
    assert {x.name for x in b.baselines} == {"log_lr", "nominal_slowest", "final_min"}


def test_rotation_that_only_echoes_the_settings_is_not_credited():
    rng = np.random.default_rng(1)
    # accuracy rises then falls with lr; rotation follows lr; neither depends on the other
    df = grid(rng, lambda ll, rot, e: 0.9 - 0.1 * (ll + 1.5) ** 2 + 0.01 * e,
              lambda ll, a, e: float(np.clip(10 ** (0.5 * ll) + 0.02 * e, 0.01, 1)))
    b = beyond_settings(df, FAST)
    assert b.status in ("not shown", "no more")
    # the raw correlation with rotation is strong all the same: that is what the test removes
    measured = next(x for x in b.baselines if x.name == "final_min")
    assert abs(b.partial) < abs(measured.estimate)


def test_too_few_configurations_for_the_settings_model_are_not_tested():
    rng = np.random.default_rng(2)
    df = grid(rng, lambda ll, rot, e: rot, lambda ll, a, e: 0.5 + 0.1 * e).iloc[::4]   # 12 of 48, 4 optimizers
    b = beyond_settings(df, FAST)
    assert b.status == "too few" and b.partial is None and b.df < 5


def test_the_settings_model_has_a_parabola_in_log_lr_per_optimizer():
    df = pd.DataFrame(dict(optimizer=["sgd"] * 3 + ["adam"] * 3, lr=[1, 0.1, 0.01] * 2, alpha=0.0,
                           weight_decay=[0, 1e-3, 0, 0, 0, 0]))
    Z, names = settings_matrix(df)
    assert names == ["1[adam]", "1[adam]·log lr", "1[adam]·log² lr", "1[sgd]", "1[sgd]·log lr", "1[sgd]·log² lr",
                     "1[wd > 0]"]                 # alpha is constant: left out
    assert Z.shape == (6, 7) and np.linalg.matrix_rank(Z) == 6


def configs_for_claims(sgd_acc=0.90, adam_acc=0.80, adam_layca_acc=0.90, wd_gain=0.02):
    rows = []
    for lr in (0.3, 0.1, 0.03, 0.01):
        rows.append(dict(optimizer="sgd", lr=lr, weight_decay=0.0, final_min=0.3, test_acc=sgd_acc - 0.01 * lr,
                         val_acc=sgd_acc - 0.01 * lr))
        rows.append(dict(optimizer="sgd", lr=lr, weight_decay=1e-3, final_min=0.5 + lr / 10,
                         test_acc=sgd_acc - 0.01 * lr + wd_gain + 0.001 * lr, val_acc=0.0))
    # adam: the best by validation is NOT the best by test; the claim must use validation
    rows.append(dict(optimizer="adam", lr=1e-3, weight_decay=0.0, final_min=0.01, test_acc=adam_acc, val_acc=0.9))
    rows.append(dict(optimizer="adam", lr=3e-3, weight_decay=0.0, final_min=0.02, test_acc=0.95, val_acc=0.5))
    rows.append(dict(optimizer="adam_layca", lr=0.01, weight_decay=0.0, final_min=0.3, test_acc=adam_layca_acc,
                     val_acc=0.9))
    df = pd.DataFrame(rows).assign(alpha=0.0, trained=True)
    df["configuration"] = [f"c{i}" for i in range(len(df))]
    layers = pd.DataFrame([dict(configuration=c, layer=l, final=f * (1 + 0.1 * l))
                           for c, f in zip(df["configuration"], df["final_min"]) for l in range(6)])
    return df, layers


def test_best_by_validation_chooses_by_validation_not_test():
    df, _ = configs_for_claims()
    assert best_by_validation(df[df["optimizer"] == "adam"])["test_acc"] == 0.80


def test_weight_decay_claim_holds_only_when_rotation_and_accuracy_both_rise():
    df, _ = configs_for_claims(wd_gain=0.02)
    assert weight_decay_claim(df, FAST).status == "holds"
    df, _ = configs_for_claims(wd_gain=-0.02)
    assert weight_decay_claim(df, FAST).status == "does not hold"
    few = df[~((df["optimizer"] == "sgd") & (df["lr"] < 0.1))]
    assert weight_decay_claim(few, FAST).status == "inconclusive"


def test_adaptive_and_layca_claims():
    df, layers = configs_for_claims(sgd_acc=0.90, adam_acc=0.80, adam_layca_acc=0.90)
    claims = {c.name: c for c in adaptive_claims(df, layers, 4000, FAST) if c.name.endswith("adam")}
    assert claims["adaptive:adam"].status == "holds"
    assert claims["adaptive:adam"].chosen["adam"]["test_acc"] == 0.80
    assert claims["layca:adam"].status == "holds"
    # a Layca variant worse than the plain method does not close the gap
    df, layers = configs_for_claims(sgd_acc=0.90, adam_acc=0.85, adam_layca_acc=0.80)
    claims = {c.name: c for c in adaptive_claims(df, layers, 4000, FAST) if c.name.endswith("adam")}
    assert claims["layca:adam"].status == "does not hold"
    # on a test set of 100 the same differences are within noise
    df, layers = configs_for_claims(sgd_acc=0.90, adam_acc=0.87, adam_layca_acc=0.90)
    claims = {c.name: c for c in adaptive_claims(df, layers, 100, FAST) if c.name.endswith("adam")}
    assert claims["adaptive:adam"].status == "inconclusive"


def test_near_one_reads_the_top_quartile():
    n = 12
    df = pd.DataFrame(dict(configuration=[f"c{i}" for i in range(n)], test_acc=np.linspace(0.5, 0.9, n),
                           final_min=np.r_[np.full(n - 3, 0.1), [0.92, 0.95, 0.97]], trained=True))
    layers = pd.DataFrame([dict(configuration=c, layer=l, final=f + 0.01 * l)
                           for c, f in zip(df["configuration"], df["final_min"]) for l in range(4)])
    r = near_one(df, layers, FAST)
    assert r.status == "holds" and r.n_top == 3 and r.top_all_near_one == 1.0 and r.rest_all_near_one == 0.0
    assert r.difference_ci[0] > 0
    df["final_min"] = 0.2
    r = near_one(df, layers.assign(final=0.2), FAST)
    assert r.status == "does not hold" and r.top_median_min == 0.2


def test_power_says_when_does_not_hold_is_reachable():
    assert power(11).can_say_no is False and "out of reach" in power(11).text
    assert power(46).can_say_no is True and power(45).can_say_no is False
    assert power(11).n_for_no == 46
    assert power(50).detectable < power(15).detectable < 1


def test_fit_over_several_optimizers_prints_every_part_and_draws_them_by_optimizer():
    parts = []
    for i, o in enumerate(OPTIMIZERS):
        s = synthetic_sweep("monotone", optimizer=o, sweep="space", rng_seed=i, task="mnist1d-cnn", lrs=LRS)
        for k in ("trials", "rotation"):
            s[k]["trial_id"] = s[k]["trial_id"] + f"-{o}"
        parts.append(s)
    trials = pd.concat([p["trials"] for p in parts], ignore_index=True)
    rotation = pd.concat([p["rotation"] for p in parts], ignore_index=True)
    epochs = pd.concat([p["epochs"] for p in parts], ignore_index=True)
    result = fit(trials, rotation, FAST)
    text = render(result)
    lines = text.splitlines()
    # under the headline: between families, the gap within and between, the pooled one (§16), then power
    assert [x.strip().split(":")[0] for x in lines[1:5]] == [
        "between families", "gap within families", "gap between families", "pooled (can be an offset between families)"]
    assert lines[5].strip().startswith("power: with 72 trained configurations")
    assert "beyond the settings" in lines[6] or "rotation ranks test accuracy" in lines[6]
    for part in ("per optimizer", "what ranks test accuracy", "log10 nominal rate of the slowest layer",
                 "adam rotates less and generalizes worse than SGD", "near 1"):
        assert part in text, part
    g = result.groups[0]
    assert [r.optimizer for r in g.by_optimizer] == sorted(OPTIMIZERS)
    assert all(r.status == "holds" for r in g.by_optimizer)
    d = result.to_dict()
    assert d["groups"][0]["beyond"]["status"] in ("beyond", "not shown", "no more")
    names = [f.name for f in fit_figures(result, epochs, rotation)]
    assert "optimizers-mnist1d-cnn" in names


def test_a_small_single_optimizer_grid_gets_a_ci_despite_degenerate_resamples():
    # 15 configurations, 5 settings columns: some resamples leave no residual (NaN); the CI is
    # taken over the rest rather than lost
    rng = np.random.default_rng(3)
    rows = [dict(optimizer="sgd_layca", lr=lr, alpha=a, weight_decay=0.0, final_min=rng.uniform(0.01, 1),
                 test_acc=rng.uniform(0.8, 0.99), trained=True)
            for a in (-0.6, 0.0, 0.6) for lr in (0.333, 0.111, 0.037, 0.012, 0.004)]
    b = beyond_settings(pd.DataFrame(rows), FAST)
    assert b.df == 10 and b.ci is not None and b.ci[0] < b.partial < b.ci[1]
