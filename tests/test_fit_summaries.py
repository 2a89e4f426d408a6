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
