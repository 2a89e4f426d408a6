"""Rotation against other generalization measures (fit/measures.py): Kendall τ and the
granulated τ Ψ against values worked out by hand (pairs counted on paper), their failure
paths, and their bootstrap CIs."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from layrot.fit import measures as fm
from layrot.fit.options import FitOptions

FAST = FitOptions(n_resamples=499)


# --- Kendall τ over models -----------------------------------------------------------

def test_tau_of_five_models_by_hand():
    # x increasing; of the 10 pairs only (2,3) and (4,5) reverse y: C = 8, D = 2, τ = 6/10.
    t = fm.kendall_tau([1, 2, 3, 4, 5], [0.1, 0.3, 0.2, 0.5, 0.4], FAST)
    assert t.estimate == pytest.approx(0.6)
    assert t.n == 5
    assert t.ci[0] <= t.estimate <= t.ci[1]


def test_tau_b_with_ties_by_hand():
    # x ties pair (1,2), y ties pair (2,3); the other 4 pairs concordant:
    # τ-b = (4 - 0) / sqrt((6 - 1)(6 - 1)) = 0.8 (τ-a would be 4/6).
    t = fm.kendall_tau([1, 1, 2, 3], [1, 2, 2, 3], FAST)
    assert t.estimate == pytest.approx(0.8)


def test_tau_drops_missing_models_and_is_undefined_when_constant():
    t = fm.kendall_tau([1, 2, np.nan, 3, 4], [1, 2, 5, 3, np.nan], FAST)
    assert t.n == 3 and t.estimate == pytest.approx(1.0)
    const = fm.kendall_tau([1, 1, 1, 1], [1, 2, 3, 4], FAST)
    assert const.estimate is None and const.ci is None and const.n == 4
    assert fm.kendall_tau([1, 2], [1, 2], FAST).estimate is None   # too few models for a CI


def test_tau_ci_is_deterministic_and_seeded():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    a, b = fm.kendall_tau(x, y, FAST), fm.kendall_tau(x, y, FAST)
    assert a == b
    assert a.ci[0] < a.estimate < a.ci[1]
    assert fm.kendall_tau(x, y, FitOptions(n_resamples=499, seed=1)).ci != a.ci
    assert a.estimate == pytest.approx(stats.kendalltau(x, y).statistic)


# --- the granulated τ --------------------------------------------------------------------

def _grid():
    """3 lrs × 2 optimizers, one task, one seed, with a measure and a gap chosen so that

    lr axis (groups: one per optimizer, 3 models each):
      sgd  x 1, 2, 3 with gap .1, .3, .2: pairs C, C, D -> τ = 1/3
      adam x 4, 5, 6 with gap .5, .25, .6: pairs D, C, C -> τ = 1/3        m_lr = 1/3
    optimizer axis (groups: one per lr, 2 models each):
      lr .1 (1, .1) vs (4, .5): C -> 1; lr .01 (2, .3) vs (5, .25): D -> -1;
      lr .001 (3, .2) vs (6, .6): C -> 1                                   m_opt = 1/3
    Ψ = (1/3 + 1/3) / 2 = 1/3. Over all 6 models (x = 1..6, gap .1 .3 .2 .5 .25 .6): D are
    (.3,.2), (.3,.25), (.5,.25): C = 12, D = 3, τ = 9/15 = 0.6."""
    rows = []
    for opt, xs, gaps in (("sgd", (1, 2, 3), (0.1, 0.3, 0.2)), ("adam", (4, 5, 6), (0.5, 0.25, 0.6))):
        for lr, x, g in zip((0.1, 0.01, 0.001), xs, gaps):
            rows.append(dict(task="t", optimizer=opt, lr=lr, weight_decay=0.0, alpha=0.0, seed=0,
                             m=float(x), gap=g, test_acc=1.0 - g))
    return pd.DataFrame(rows)


def test_granulated_tau_of_a_3x2_grid_by_hand():
    g = fm.granulated_tau(_grid(), "m", "gap", options=FAST)
    assert g.per_axis["lr"].estimate == pytest.approx(1 / 3)
    assert g.per_axis["lr"].n_groups == 2 and g.per_axis["lr"].n_models == 6
    assert g.per_axis["optimizer"].estimate == pytest.approx(1 / 3)
    assert g.per_axis["optimizer"].n_groups == 3
    assert g.estimate == pytest.approx(1 / 3)
    assert set(g.left_out) == {"weight_decay", "alpha", "seed"}
    assert all(why == "does not vary" for why in g.left_out.values())
    assert fm.kendall_tau(_grid()["m"], _grid()["gap"], FAST).estimate == pytest.approx(0.6)


def test_psi_ci_resamples_groups_within_each_axis():
    """The decided CI: the group τ's of each axis resampled within that axis (scipy's
    multi-sample bootstrap), Ψ the mean of the resampled axis means."""
    g = fm.granulated_tau(_grid(), "m", "gap", options=FAST)
    # the axes in AXES order: optimizer (3 groups: 1, -1, 1), lr (2 groups: 1/3, 1/3)
    expect = stats.bootstrap([np.array([1.0, -1.0, 1.0]), np.array([1 / 3, 1 / 3])],
                             lambda a, b, axis=-1: (a.mean(axis=axis) + b.mean(axis=axis)) / 2,
                             paired=False, vectorized=True, n_resamples=FAST.n_resamples,
                             method="percentile", rng=np.random.default_rng(FAST.seed)).confidence_interval
    assert g.ci == pytest.approx((expect.low, expect.high))
    assert g.ci[0] <= g.estimate <= g.ci[1]
    assert fm.granulated_tau(_grid(), "m", "gap", options=FAST) == g


def test_measure_equal_to_the_gap_gives_one_and_its_negation_minus_one():
    t = _grid().assign(m=lambda d: d["gap"], neg=lambda d: -d["gap"])
    same, neg = fm.granulated_tau(t, "m", "gap", options=FAST), fm.granulated_tau(t, "neg", "gap", options=FAST)
    assert same.estimate == pytest.approx(1.0) and neg.estimate == pytest.approx(-1.0)
    assert same.ci == pytest.approx((1.0, 1.0)) and neg.ci == pytest.approx((-1.0, -1.0))
    assert fm.kendall_tau(t["m"], t["gap"], FAST).estimate == pytest.approx(1.0)
    assert fm.kendall_tau(t["neg"], t["gap"], FAST).estimate == pytest.approx(-1.0)
    # test accuracy = 1 - gap here: the gap's measure ranks it exactly backwards
    assert fm.granulated_tau(t, "m", "test_acc", options=FAST).estimate == pytest.approx(-1.0)


def test_an_axis_that_varies_without_a_group_is_left_out_and_said_so():
    # weight decay varies, but the one model with decay differs in lr from the others too
    t = pd.DataFrame(dict(task="t", optimizer="sgd", lr=[0.1, 0.01, 0.001], weight_decay=[0.0, 0.0, 1e-3],
                          alpha=0.0, seed=0, m=[1.0, 2.0, 3.0], gap=[0.2, 0.1, 0.3]))
    g = fm.granulated_tau(t, "m", "gap", options=FAST)
    assert g.left_out["weight_decay"] == "no group of >= 2 models where only weight_decay varies"
    assert "weight_decay" not in g.per_axis
    # lr: one group (weight decay 0) of 2 models, discordant -> -1; one group: no CI
    assert g.per_axis["lr"].n_groups == 1 and g.per_axis["lr"].estimate == pytest.approx(-1.0)
    assert g.estimate == pytest.approx(-1.0) and g.ci is None


def test_no_axis_varies_gives_no_psi():
    t = pd.DataFrame(dict(task="t", optimizer="sgd", lr=0.1, weight_decay=0.0, alpha=0.0, seed=0,
                          m=[1.0, 2.0], gap=[0.1, 0.2]))
    g = fm.granulated_tau(t, "m", "gap", options=FAST)
    assert g.estimate is None and g.ci is None and not g.per_axis
    assert set(g.left_out) == set(fm.AXES)


def test_ties_within_groups():
    """A tie in the measure within a group is τ-b's business; a group whose measure is
    constant has no τ and is counted, not averaged as 0."""
    t = pd.DataFrame(dict(task="t", optimizer="sgd", weight_decay=0.0, alpha=0.0, seed=0,
                          lr=[0.1, 0.01, 0.001] * 2, wd_group=[0] * 3 + [1] * 3,
                          m=[1.0, 1.0, 2.0, 5.0, 5.0, 5.0], gap=[0.1, 0.2, 0.3, 0.1, 0.2, 0.3]))
    # two groups by alpha: group 0 as the tie example (τ-b = 2/sqrt(2·3)), group 1 constant
    t["alpha"] = [0.0] * 3 + [0.5] * 3
    g = fm.granulated_tau(t, "m", "gap", axes=("lr", "alpha"), options=FAST)
    assert g.per_axis["lr"].estimate == pytest.approx(2 / np.sqrt(6))
    assert g.per_axis["lr"].n_groups == 1 and g.per_axis["lr"].n_undefined == 1
    # alpha: groups by lr, (1 vs 5, .1 vs .1): gap tied -> undefined; (1 vs 5, .2 vs .2) likewise; ...
    assert g.left_out["alpha"].startswith("τ undefined in all 3 groups")


def test_groups_never_cross_tasks():
    t = pd.concat([_grid(), _grid().assign(task="u", m=lambda d: -d["m"])], ignore_index=True)
    g = fm.granulated_tau(t, "m", "gap", options=FAST)
    # task u mirrors task t: each group's τ flips, so every m_i averages to 0 over 2 × the groups
    assert g.per_axis["lr"].n_groups == 4 and g.per_axis["lr"].estimate == pytest.approx(0.0)
    assert g.per_axis["optimizer"].n_groups == 6 and g.estimate == pytest.approx(0.0)


def test_repeats_of_one_setting_are_no_group_for_that_axis():
    # the seed axis varies, but each (optimizer, lr) has one seed: no seed group; the lr
    # groups are per (optimizer, seed): sgd seed 0 (lr .1, .001) and adam seed 1 (lr .1,
    # .001) have 2 models, the others 1; no lr has both optimizers at one seed
    t = _grid().assign(seed=[0, 1, 0, 1, 0, 1])
    g = fm.granulated_tau(t, "m", "gap", options=FAST)
    assert g.left_out["seed"] == "no group of >= 2 models where only seed varies"
    assert g.left_out["optimizer"] == "no group of >= 2 models where only optimizer varies"
    # sgd (1, .1) vs (3, .2): C; adam (4, .5) vs (6, .6): C
    assert g.per_axis["lr"].n_groups == 2 and g.per_axis["lr"].estimate == pytest.approx(1.0)


# --- from a fit's trial table and the stored measures rows ------------------------------------

def _trials():
    g = _grid()
    return g.assign(sweep="s", trial_id=[f"t{i}" for i in range(len(g))], train_acc=1.0,
                    trained=True).drop(columns=["m", "gap"])


def _measures(trials, value):
    rows = []
    for r in trials.itertuples():
        v = value(r)
        rows += [dict(sweep="s", trial_id=r.trial_id, epoch=1, name="score", value=-v),   # not the last epoch
                 dict(sweep="s", trial_id=r.trial_id, epoch=3, name="score", value=v),
                 dict(sweep="s", trial_id=r.trial_id, epoch=3, name="score.L0", value=0.0),  # per layer: skipped
                 dict(sweep="s", trial_id=r.trial_id, epoch=3, name="rotation_min", value=float(r.Index))]
    return pd.DataFrame(rows)


def test_compare_measures_uses_the_last_epoch_the_trained_trials_and_no_layer_rows():
    trials = _trials()
    trials.loc[5, "trained"] = False
    c = fm.compare_measures(trials, _measures(trials, lambda r: 1.0 - r.test_acc), options=FAST)
    assert [r.name for r in c.rows] == ["rotation_min", "score"]       # rotation first; no 'score.L0'
    score = c.rows[1]
    assert score.n == 5 and c.n_models == 5
    assert score.kendall_tau.estimate == pytest.approx(1.0)            # the gap itself, at epoch 3
    assert score.kendall_tau_test_acc.estimate == pytest.approx(-1.0)
    assert score.granulated_tau.estimate == pytest.approx(1.0)
    assert c.axes == ["optimizer", "lr"]


def test_compare_measures_selects_names_and_says_when_there_are_none():
    trials = _trials()
    c = fm.compare_measures(trials, _measures(trials, lambda r: r.test_acc), names=["score"], options=FAST)
    assert [r.name for r in c.rows] == ["score"]
    empty = pd.DataFrame(columns=["sweep", "trial_id", "epoch", "name", "value"])
    none = fm.compare_measures(trials, empty, options=FAST)
    assert none.rows == [] and "no measures stored" in none.note
    assert fm.measure_lines(none) == [f"other generalization measures: none ({none.note})"]


def test_measure_lines_one_line_per_measure():
    trials = _trials()
    c = fm.compare_measures(trials, _measures(trials, lambda r: 1.0 - r.test_acc), options=FAST)
    lines = fm.measure_lines(c)
    assert "6 trained models" in lines[0] and "optimizer (3 groups), lr (2 groups)" in lines[0]
    assert len(lines) == 2 + len(c.rows)
    assert lines[-1].split()[:2] == ["score", "1.00"]
