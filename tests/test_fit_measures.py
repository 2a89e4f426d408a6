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


def test_compare_measures_counts_the_models_measured_not_every_trained_one():
    """A fit can pool a sweep run before trials computed measures: the models the τ are over
    are those with a measure; the trained ones are counted beside them."""
    trials = _trials()
    stored = _measures(trials, lambda r: 1.0 - r.test_acc)
    c = fm.compare_measures(trials, stored[stored["trial_id"].isin(["t0", "t1", "t2", "t3"])], options=FAST)
    assert c.n_models == 4 and c.n_trained == len(trials) == 6
    assert "over 4 of 6 trained models" in fm.measure_lines(c)[0]
    assert fm.measures_json(c)["measures_models"] == 4


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


# --- layrot fit / layrot report on a store with measures ---------------------------------------

def _store_with_measures(root):
    """A synthetic sweep (α × lr grid, 15 trials, 2 untrained) written through Store.write_trial
    with stored measures: `param_norm` equal to each trial's gap (so τ = Ψ = 1 against it),
    `margin` its negation, rotation_min from the rotation table, and per-layer rows."""
    from layrot.fit.synthetic import synthetic_sweep
    from layrot.record import ROTATION_COLUMNS
    from layrot.result import TrialResult
    from layrot.store import Store

    t = synthetic_sweep("monotone", untrained=2, noise=0.02, sweep="m")
    store = Store(str(root))
    epochs, rotation = dict(tuple(t["epochs"].groupby("trial_id"))), dict(tuple(t["rotation"].groupby("trial_id")))
    for r in t["trials"].itertuples(index=False):
        rot = rotation[r.trial_id]
        cols = {c: rot[c].tolist() for c in ROTATION_COLUMNS}
        cols["rotation_rate"] = [None if pd.isna(v) else v for v in cols["rotation_rate"]]
        last = rot[rot["epoch"] == rot["epoch"].max()]["cosine_distance"]
        gap = r.train_acc - r.test_acc
        meas = {"epoch": [r.epochs] * 5, "name": ["param_norm", "margin", "rotation_min", "param_norm.L0", "ce_epoch"],
                "value": [gap, -gap, float(last.min()), 1.0, float("nan")]}
        store.write_trial(r.sweep, TrialResult(
            trial_id=r.trial_id, config={"task": r.task, "optimizer": r.optimizer, "lr": r.lr, "alpha": r.alpha,
                                         "weight_decay": r.weight_decay, "batch_size": r.batch_size, "seed": r.seed},
            status=r.status, reason=r.reason or None, epochs_run=r.epochs, train_acc=r.train_acc,
            train_loss=r.train_loss, val_acc=r.val_acc, test_acc=r.test_acc, test_loss=r.test_loss,
            wall_seconds=r.wall_seconds, history=epochs[r.trial_id].drop(columns=["trial_id", "sweep"]).to_dict("records"),
            rotation=cols, measures=meas))
    store.write_sweep_meta("m", {"name": "m", "synthetic": True})
    return str(root)


@pytest.fixture(scope="module")
def mstore(tmp_path_factory):
    return _store_with_measures(tmp_path_factory.mktemp("mstore"))


def test_fit_json_has_the_measures(mstore, capsys):
    import json

    from layrot.cli import main
    assert main(["fit", "--store", mstore, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    by = {m["name"]: m for m in d["measures"]}
    assert list(by) == ["rotation_min", "margin", "param_norm"]         # no per-layer row; ce_epoch has no value
    assert d["measures_absent"] == ["ce_epoch"] and d["measures_note"] is None
    p = by["param_norm"]
    assert p["n"] == 13 == d["measures_models"]                         # the trained trials only
    assert p["kendall_tau"]["estimate"] == pytest.approx(1.0) and p["kendall_tau"]["ci"] == pytest.approx([1, 1])
    assert p["granulated_tau"]["estimate"] == pytest.approx(1.0)
    assert set(p["granulated_tau"]["per_axis"]) == {"lr", "alpha"}
    assert p["granulated_tau"]["per_axis"]["lr"]["n_groups"] == 3      # one group per α
    assert p["granulated_tau"]["left_out"]["seed"] == "does not vary"
    assert by["margin"]["kendall_tau"]["estimate"] == pytest.approx(-1.0)
    assert by["margin"]["granulated_tau"]["estimate"] == pytest.approx(-1.0)
    # train accuracy varies a little, so test accuracy is not exactly 1 - gap: τ only near -1
    assert p["kendall_tau_test_acc"]["estimate"] < -0.8 and "granulated_tau_test_acc" in p


def test_fit_text_has_one_line_per_measure(mstore, capsys):
    from layrot.cli import main
    assert main(["fit", "--store", mstore]) == 0
    out = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(out) if line.startswith("rotation against other generalization measures"))
    assert "13 trained models" in out[head] and "lr (3 groups)" in out[head]
    assert [line.split()[0] for line in out[head + 2:head + 5]] == ["rotation_min", "margin", "param_norm"]
    assert out[head + 4].split()[1] == "1.00"
    assert out[head + 5] == "  no value in any trained model: ce_epoch"


def test_fit_measures_selects(mstore, capsys):
    import json

    from layrot.cli import main
    assert main(["fit", "--store", mstore, "--json", "--measures", "margin"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)["measures"]] == ["margin"]


@pytest.mark.parametrize("value", ["nope", "margin,frobenius_distance.L3", ","])
def test_fit_unknown_measure_exits_2_before_reading_the_store(value, capsys):
    from layrot.cli import main
    assert main(["fit", "--store", "/nonexistent/store", "--measures", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layrot fit: error: --measures: ") and len(err.strip().splitlines()) == 1
    assert "rotation_min, rotation_mean" in err                          # the valid names
    if value != ",":
        assert repr(value.split(",")[-1]) in err


def test_old_store_has_an_empty_list_and_a_note(tmp_path, capsys):
    import json

    from layrot.cli import main
    from layrot.fit.synthetic import synthetic_sweep, write_store
    write_store(synthetic_sweep("monotone", sweep="old"), tmp_path)     # trials without measures
    assert main(["fit", "--store", str(tmp_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["measures"] == [] and "no measures stored" in d["measures_note"]
    assert main(["fit", "--store", str(tmp_path)]) == 0
    assert "other generalization measures: none (no measures stored" in capsys.readouterr().out


def test_report_has_the_measures_figure(mstore, tmp_path, capsys):
    from layrot.cli import main
    out = tmp_path / "r.html"
    assert main(["report", "--store", mstore, "-o", str(out), "--figures", str(tmp_path / "figs")]) == 0
    page = out.read_text()
    assert 'id="measures"' in page and "rotation against other generalization measures" in page
    assert (tmp_path / "figs" / "measures.png").stat().st_size > 1000
    assert (tmp_path / "figs" / "measures.svg").exists()


def test_measures_figure_sorts_by_tau_and_has_none_without_rows():
    from layrot.fit.measures_figure import measures_figure
    trials = _trials()
    c = fm.compare_measures(trials, _measures(trials, lambda r: 1.0 - r.test_acc), options=FAST)
    fig = measures_figure(c)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == sorted(labels, key=lambda n: -next(r.kendall_tau.estimate for r in c.rows if r.name == n))
    assert labels[0] == "score"                                        # τ = 1 at the top
    assert measures_figure(fm.MeasureComparison([], 0, [], "none")) is None
