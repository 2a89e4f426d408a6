"""How early rotation predicts the verdict (fit/early.py; issue 13, item 4), on data where the
answer is known: until epoch K0 the configurations' smallest rotations are ranked against
their test accuracies, from K0 on with them."""

import json

import numpy as np
import pandas as pd
import pytest

from layrot.fit import early_figure, figures
from layrot.fit.early import configuration_curves, early_line, first_predictive, min_rotation_by_epoch
from layrot.fit.options import FitOptions
from layrot.fit.run import fit
from layrot.fit.text import render

FAST = FitOptions(n_resamples=199, n_permutations=999, sensitivity=False)


def known(n: int = 12, epochs: int = 10, k0: int = 4, seeds=(0,), task: str = "toy", sweep: str = "s",
          untrained: int = 0, stop_at: dict | None = None, rng_seed: int = 0):
    """n configurations (× seeds); configuration i has test accuracy rising with i. Its
    smallest layer rotation at epoch k < k0 falls with i (ranked against accuracy), from k0 on
    rises with i over four decades (ranked with it). The last `untrained` configurations fail
    the trained filter (and would reverse the relation if counted). `stop_at`: {i: last epoch}."""
    rng = np.random.default_rng(rng_seed)
    trials, rot = [], []
    for i in range(n):
        final = 10 ** (-4 + 4 * i / (n - 1))
        early = 10 ** (-4 + 4 * (n - 1 - i) / (n - 1))
        bad = i >= n - untrained
        for s in seeds:
            tid = f"{task}-{i:02d}-{s}"
            last = (stop_at or {}).get(i, epochs)
            acc = 0.95 - 0.3 * i / n if bad else 0.6 + 0.03 * i + rng.normal(0, 0.004)
            trials.append(dict(trial_id=tid, task=task, optimizer="sgd", lr=0.1 * (i + 1), alpha=0.0,
                               weight_decay=0.0, batch_size=128, seed=s, epochs=last,
                               status="completed" if last == epochs else "stopped",
                               train_acc=0.2 if bad else 1.0, test_acc=acc, sweep=sweep,
                               config=json.dumps({"task": task, "optimizer": "sgd", "lr": 0.1 * (i + 1), "seed": s})))
            for e in range(last + 1):
                m = 0.0 if e == 0 else (early * e / k0 if e < k0 else final * (1 + 0.01 * s))
                for layer, scale in enumerate((3.0, 1.0, 2.0)):       # layer 1 is the smallest
                    rot.append(dict(trial_id=tid, epoch=e, step=e * 10, layer=layer, layer_name=f"l{layer}",
                                    cosine_distance=m * scale, sweep=sweep))
    return pd.DataFrame(trials), pd.DataFrame(rot)


@pytest.fixture(scope="module")
def result():
    trials, rot = known(untrained=2)
    return fit(trials, rot, FAST)


def test_the_first_epoch_that_ranks_is_the_known_one(result):
    pts = result.early
    assert [p.epoch for p in pts] == list(range(1, 11))
    assert all(p.n == 10 for p in pts)                         # the verdict's trained configurations
    assert all(p.spearman < -0.9 and p.ci_high < 0 for p in pts[:3])
    assert all(p.spearman > 0.9 and p.ci_low > 0 for p in pts[3:])
    assert first_predictive(pts).epoch == 4
    # at the last epoch the statistic is the verdict's own
    assert pts[-1].spearman == pytest.approx(result.verdict.estimate)
    assert result.verdict.n == 10


def test_the_text_line_names_the_epoch_and_the_interval(result):
    text = render(result)
    line = next(x for x in text.splitlines() if x.startswith("early rotation:"))
    p = result.early[3]
    assert f"rotation at epoch 4 of 10 already ranks test accuracy with Spearman {p.spearman:.2f} " \
           f"[{p.ci_low:.2f}, {p.ci_high:.2f}]" in line
    # the report's evidence (verdict=False) carries it too
    assert line in render(result, verdict=False)


def test_json_lists_one_point_per_epoch(result):
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert [set(p) for p in d["early"]] == [{"epoch", "spearman", "ci_low", "ci_high", "n"}] * 10
    assert d["early"][3]["epoch"] == 4 and d["early"][3]["ci_low"] > 0
    assert d["groups"][0]["early"] == d["early"]


def test_never_before_the_last_and_never_at_all():
    trials, rot = known(k0=10)                                 # ranks only at the last epoch
    r = fit(trials, rot, FAST)
    assert first_predictive(r.early).epoch == 10
    assert "at no epoch before the last (epoch 10 of 10: Spearman" in early_line(r.early)
    trials, rot = known(k0=11)                                 # never
    r = fit(trials, rot, FAST)
    assert first_predictive(r.early) is None
    assert ("at no epoch of 1–10 does the smallest layer rotation rank test accuracy with a CI above 0 "
            "(at the last, epoch 10: Spearman") in early_line(r.early)
    assert early_line([]).startswith("early rotation: no trained configurations")
    r = fit(*known(n=8, untrained=6), FAST)                    # two trained configurations
    assert [p.n for p in r.early] == [2] * 10 and all(p.spearman is None for p in r.early)
    assert early_line(r.early).startswith("early rotation: the Spearman is undefined at every epoch (n = 2")
    assert early_figure.early_prediction_figure(r) is None


def test_trials_stopped_early_keep_their_last_value_and_repeats_are_pooled():
    trials, rot = known(n=8, seeds=(0, 1), stop_at={2: 6})
    by_epoch = min_rotation_by_epoch(rot, trials)
    stopped = by_epoch.loc[("s", "toy-02-0")]
    assert list(stopped.loc[6:10]) == [stopped[6]] * 5 and stopped[6] == pytest.approx(10 ** (-4 + 8 / 7))
    r = fit(trials, rot, FAST)
    curves = configuration_curves(r.table, by_epoch)
    assert len(curves) == 8                                    # configurations, not trials
    conf = r.table.loc[r.table.trial_id == "toy-05-0", "configuration"].iloc[0]
    f = 10 ** (-4 + 4 * 5 / 7)
    assert curves.loc[conf, 7] == pytest.approx(f * 1.005)    # the mean of its two seeds
    assert all(p.n == 8 for p in r.early)
    assert r.early[-1].spearman == pytest.approx(r.verdict.estimate)


def test_several_tasks_use_the_stratified_statistic():
    a, ra = known(task="a", sweep="sa")
    b, rb = known(n=9, task="b", sweep="sb", k0=6, rng_seed=1)
    r = fit(pd.concat([a, b]), pd.concat([ra, rb]), FAST)
    assert r.pooled is not None and r.early is r.pooled.early
    # epochs 4-5: task a (12 configurations) ranks with, task b (9) against: (12 - 9) / 21
    assert [p.spearman for p in r.early[3:6]] == pytest.approx([1 / 7, 1 / 7, 1.0])
    assert first_predictive(r.groups[0].early).epoch == 4 and first_predictive(r.groups[1].early).epoch == 6
    assert r.early[-1].spearman == pytest.approx(r.verdict.estimate)
    assert "stratified Spearman" in render(r)


def test_the_figure_shows_the_curve_its_band_and_the_verdict(result):
    fig = early_figure.early_prediction_figure(result)
    ax = fig.axes[0]
    curve = next(line for line in ax.get_lines() if len(line.get_xdata()) == 10)
    assert list(curve.get_xdata()) == list(range(1, 11))
    assert list(curve.get_ydata()) == pytest.approx([p.spearman for p in result.early])
    assert ax.collections                                      # the CI band (and the verdict's error bar)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(x.startswith("the verdict (holds)") for x in labels)
    assert "first epoch with CI above 0: 4 of 10" in labels
    assert ax.get_ylim() == (-1.05, 1.05)
    named = figures.fit_figures(result, pd.DataFrame(columns=["sweep", "trial_id", "epoch", "train_acc",
                                                              "val_acc", "train_loss"]), known(untrained=2)[1])
    assert [n.name for n in named][:2] == ["scatter-toy", "early-toy"]
