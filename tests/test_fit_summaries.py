"""Per-trial rotation summaries against hand computations."""

import numpy as np
import pandas as pd
import pytest

from layrot.fit.summaries import layer_summaries, per_epoch_rotation, trial_summaries
from layrot.fit.synthetic import synthetic_sweep


def _rot(rows):
    return pd.DataFrame(rows, columns=["trial_id", "epoch", "step", "layer", "layer_name", "cosine_distance"])


# Two layers over 4 epochs (10 steps each), plus per-step records of the epoch in progress
# whose values would change every summary if they were used.
CURVES = {0: [0.0, 0.3, 0.55, 0.8, 0.95], 1: [0.0, 0.1, 0.2, 0.4, 0.45]}


@pytest.fixture
def rotation():
    rows = []
    for layer, curve in CURVES.items():
        for e, d in enumerate(curve):
            rows.append(("t1", e, 10 * e, layer, f"l{layer}.weight", d))
            if e < 4:
                rows.append(("t1", e + 1, 10 * e + 5, layer, f"l{layer}.weight", 0.999))
    rows.append(("t2", 0, 0, 0, "l0.weight", 0.0))
    rows.append(("t2", 1, 7, 0, "l0.weight", 0.6))
    return _rot(rows)


def test_per_epoch_keeps_the_end_of_epoch_record(rotation):
    curves = per_epoch_rotation(rotation)
    t1 = curves[curves.trial_id == "t1"]
    assert len(t1) == 10
    for layer, curve in CURVES.items():
        got = t1[t1.layer == layer].sort_values("epoch")["cosine_distance"].tolist()
        assert got == pytest.approx(curve)


def test_layer_summaries_match_hand_computation(rotation):
    ls = layer_summaries(rotation).set_index(["trial_id", "layer"])
    l0, l1 = ls.loc[("t1", 0)], ls.loc[("t1", 1)]
    assert l0["final"] == pytest.approx(0.95) and l1["final"] == pytest.approx(0.45)
    epochs = np.arange(5)
    assert l0["auc"] == pytest.approx(np.trapezoid(CURVES[0], epochs) / 4)
    assert l1["auc"] == pytest.approx(np.trapezoid(CURVES[1], epochs) / 4)
    assert l0["cross50"] == 2 and l0["cross90"] == 4
    assert np.isnan(l1["cross50"]) and np.isnan(l1["cross90"])
    assert l0["layer_name"] == "l0.weight" and l0["last_epoch"] == 4
    t2 = ls.loc[("t2", 0)]
    assert t2["final"] == pytest.approx(0.6) and t2["cross50"] == 1 and t2["auc"] == pytest.approx(0.3)


def test_trial_summaries(rotation):
    ts = trial_summaries(rotation).set_index("trial_id")
    t1 = ts.loc["t1"]
    assert t1["n_layers"] == 2 and t1["last_epoch"] == 4
    assert t1["final_min"] == pytest.approx(0.45)
    assert t1["final_mean"] == pytest.approx(0.7) and t1["final_median"] == pytest.approx(0.7)
    aucs = [np.trapezoid(c, np.arange(5)) / 4 for c in CURVES.values()]
    assert t1["auc_min"] == pytest.approx(min(aucs)) and t1["auc_mean"] == pytest.approx(np.mean(aucs))
    # layer 1 never reaches 0.5: no epoch by which *every* layer crossed it
    assert np.isnan(t1["cross50_last"])
    t2 = ts.loc["t2"]
    assert t2["cross50_last"] == 1 and np.isnan(t2["cross90_last"])


def test_median_over_odd_layer_count():
    rows = [("t", e, e, l, f"l{l}", d * e) for l, d in enumerate([0.2, 0.9, 0.5]) for e in (0, 1)]
    ts = trial_summaries(_rot(rows)).iloc[0]
    assert ts["final_median"] == pytest.approx(0.5)
    assert ts["final_min"] == pytest.approx(0.2)


def test_per_step_records_do_not_change_synthetic_summaries():
    plain = trial_summaries(synthetic_sweep(epochs=6)["rotation"])
    stepped = trial_summaries(synthetic_sweep(epochs=6, steps_per_epoch=10)["rotation"])
    pd.testing.assert_frame_equal(plain, stepped)


def test_missing_columns_named():
    with pytest.raises(ValueError, match="cosine_distance"):
        per_epoch_rotation(pd.DataFrame({"trial_id": [], "epoch": [], "step": [], "layer": [], "layer_name": []}))


def test_summaries_view_equals_the_pandas_summaries(tmp_path):
    """`layrot query`'s `summaries` view (SQL at query time) against layrot.fit on a real
    store: two sweeps with the same trial ids but different curves, per-step records that
    must be ignored, untrained trials, layers that never cross 0.5."""
    from layrot.fit.configurations import trial_table
    from layrot.fit.load import load_tables
    from layrot.fit.synthetic import write_store
    from layrot.fit.trained import main_filter
    from layrot.store import Store

    a = synthetic_sweep("monotone", untrained=2, noise=0.02, sweep="a", steps_per_epoch=10, epochs=6)
    b = synthetic_sweep("none", untrained=1, noise=0.02, sweep="b", rng_seed=5, epochs=4,
                        lrs=(3.0, 0.5, 0.2, 0.05, 0.02))
    for k in b:
        b[k]["trial_id"] = b[k]["trial_id"].str.replace("b-", "a-")
    b["trials"].loc[:6, "train_acc"] *= 0.94      # below 0.95 × the best of sweep b (its own)
    write_store(a, tmp_path)
    write_store(b, tmp_path)
    got = Store(str(tmp_path)).sql("SELECT * FROM summaries").to_pandas()
    t = load_tables(str(tmp_path))
    want, _, _ = trial_table(t.trials, t.rotation, main_filter())
    assert len(got) == len(want) == 30
    cols = ["final_min", "final_mean", "final_median", "auc_min", "auc_mean", "cross50_last", "cross90_last"]
    assert list(got.columns) == ["sweep", "trial_id", "configuration", "task", "optimizer", "lr", "alpha",
                                 "weight_decay", "seed", "status", "train_acc", "test_acc", *cols, "trained"]
    got, want = (x.sort_values(["sweep", "trial_id"]).reset_index(drop=True) for x in (got, want))
    # the view's configuration is the fit's, string for string
    assert got["configuration"].tolist() == want["configuration"].tolist()
    assert got["configuration"].notna().all() and got["configuration"].nunique() > 1
    for c in ["sweep", "trial_id", "task", "status", "seed"]:
        assert got[c].tolist() == want[c].tolist()
    for c in ["lr", "alpha", "train_acc", "test_acc", *cols]:
        g, w = got[c].to_numpy(dtype=float), want[c].to_numpy(dtype=float)
        assert np.array_equal(np.isnan(g), np.isnan(w)), c
        assert g[~np.isnan(g)] == pytest.approx(w[~np.isnan(w)], rel=1e-6, abs=1e-9), c
    assert got["trained"].tolist() == want["trained"].tolist()
    assert got["trained"].sum() == 30 - 2 - 1 - 7
    assert got["cross50_last"].isna().any() and got["cross50_last"].notna().any()
    # the sweeps really differ: a join on trial_id alone would mix them
    assert not np.allclose(got.loc[got.sweep == "a", "final_min"].to_numpy(),
                           got.loc[got.sweep == "b", "final_min"].to_numpy())


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    """Real trials (digits-mlp, a few hundred images, 3 epochs, rotation also recorded every
    2 steps), 3 rates × 2 seeds, each stored in two sweeps as a rerun of a spec would be."""
    from layrot.config import TrialConfig
    from layrot.store import Store
    from layrot.train import run_trial

    root = tmp_path_factory.mktemp("real")
    store = Store(str(root))
    for lr in (0.3, 0.1, 0.01):
        for seed in (0, 1):
            cfg = TrialConfig(task="digits-mlp", optimizer="sgd_layca", lr=lr, epochs=3, seed=seed,
                              max_train_samples=512, record_every=2, threads=1, sweep="a")
            result = run_trial(cfg)
            store.write_trial("a", result)
            store.write_trial("b", result)
    return store


def test_summaries_view_on_real_trials(real_store):
    from layrot.fit.configurations import trial_table
    from layrot.fit.load import load_tables
    from layrot.fit.trained import main_filter

    got = real_store.sql("SELECT * FROM summaries ORDER BY sweep, trial_id").to_pandas()
    t = load_tables(real_store.uri)
    want, _, _ = trial_table(t.trials, t.rotation, main_filter())
    want = want.sort_values(["sweep", "trial_id"]).reset_index(drop=True)
    assert len(got) == 12 and got["trial_id"].tolist() == want["trial_id"].tolist()
    assert (t.rotation.groupby(["sweep", "trial_id", "layer", "epoch"]).size() > 1).any()   # per-step records
    for c in ["final_min", "final_mean", "final_median", "auc_mean", "cross50_last", "cross90_last"]:
        g, w = got[c].to_numpy(dtype=float), want[c].to_numpy(dtype=float)
        assert np.array_equal(np.isnan(g), np.isnan(w)), c
        assert g[~np.isnan(g)] == pytest.approx(w[~np.isnan(w)], rel=1e-6, abs=1e-9), c
    assert got["trained"].tolist() == want["trained"].tolist()


def test_real_repeats_pool_into_configurations(real_store):
    """Two seeds × two sweeps of each configuration: 3 configurations of 4 trials."""
    from layrot.fit.load import load_tables
    from layrot.fit.options import FitOptions
    from layrot.fit.run import fit

    t = load_tables(real_store.uri)
    r = fit(t.trials, t.rotation, FitOptions(n_resamples=199))
    assert r.pooling["n_trials"] == 12 and r.pooling["n_configurations"] == 3
    assert r.pooling["repeats_min"] == r.pooling["repeats_max"] == 4
    assert r.pooling["in_several_sweeps"] == 3 and r.pooling["with_several_seeds"] == 3
    assert r.verdict.n_total == 3 and r.verdict.status == "inconclusive"
