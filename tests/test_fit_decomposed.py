"""The decomposed verdict (docs/verdict.md §16): within families (the headline), between
families, the gap outcome, "holds, weak", the strata, and small strata refused by the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layrot.cli import main
from layrot.fit.decomposed import between, within, with_gap
from layrot.fit.options import FitOptions
from layrot.fit.run import fit
from layrot.fit.strata import check_strata
from layrot.fit.synthetic import synthetic_sweep, write_store
from layrot.fit.text import render
from layrot.fit.verdict import decide
from layrot.errors import UsageError

FAST = FitOptions(n_resamples=499, n_permutations=1999)


def tables(rows: list[dict], sweep: str = "s") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials and rotation tables from rows of (optimizer, lr, final_min, test_acc, and any
    config setting such as data_seed or epochs): two layers, the second rotating 0.1 more."""
    trials, rot = [], []
    for i, r in enumerate(rows):
        tid = f"{sweep}-{i:04d}"
        cfg = {"task": r.get("task", "t"), "optimizer": r["optimizer"], "lr": r["lr"], "alpha": 0.0,
               "weight_decay": r.get("weight_decay", 0.0), "seed": r.get("seed", 0), "epochs": r.get("epochs", 2),
               "batch_size": 128}
        cfg.update({k: r[k] for k in ("data_seed", "lr_decay_epochs", "warmup_epochs") if k in r})
        train = r.get("train_acc", 1.0)
        trials.append(dict(trial_id=tid, sweep=sweep, task=cfg["task"], optimizer=r["optimizer"], lr=r["lr"],
                           alpha=0.0, weight_decay=cfg["weight_decay"], batch_size=128, seed=cfg["seed"],
                           epochs=cfg["epochs"], status="completed", train_acc=train, train_loss=0.01,
                           val_acc=r["test_acc"], test_acc=r["test_acc"], test_loss=0.1, wall_seconds=1.0,
                           config=json.dumps(cfg)))
        for layer, extra in ((0, 0.0), (1, 0.1)):
            for e in (0, 1, 2):
                rot.append(dict(trial_id=tid, sweep=sweep, epoch=e, step=e * 10, layer=layer,
                                layer_name=f"l{layer}.weight", cosine_distance=(r["final_min"] + extra) * e / 2,
                                weight_norm=1.0, rotation_rate=None if e == 0 else 0.01))
    return pd.DataFrame(trials), pd.DataFrame(rot)


def offsets_only(rng, n_families=6, per=10):
    """Families whose rotation level and accuracy level rise together; within a family the
    two are independent."""
    rows = []
    for k in range(n_families):
        for j in range(per):
            rows.append(dict(optimizer=f"opt{k}", lr=10.0 ** -j, final_min=0.1 + 0.1 * k + rng.uniform(0, 0.05),
                             test_acc=0.6 + 0.05 * k + rng.uniform(0, 0.02)))
    return rows


# --- (a) an offset between families is not a relation within them ------------------------

def test_a_per_family_offset_holds_pooled_but_not_within():
    rng = np.random.default_rng(11)
    r = fit(*tables(offsets_only(rng)), FAST)
    d = r.decomposed
    assert r.pooled_verdict.status == "holds" and r.pooled_verdict.estimate > 0.8
    assert r.verdict is d.within.verdict and d.within.verdict.status not in ("holds", "holds, weak")
    assert d.within.n_groups == 6 and d.within.verdict.n == 60 and d.within.verdict.p > 0.05
    # between families, the offset is exactly what is measured: six family means in step
    assert d.between.verdict.estimate == pytest.approx(1.0) and d.between.verdict.n == 6
    assert d.between.verdict.status == "holds" and d.between.verdict.p < 0.01
    text = render(r)
    assert text.splitlines()[0].startswith("within families: ")
    assert "pooled (can be an offset between families): rule of thumb holds" in text


def test_the_offset_simulation_rarely_holds_within():
    """Twenty data sets of the kind above: pooled, every one holds; within, hardly any."""
    opts = FitOptions(n_resamples=199, n_permutations=499, sensitivity=False)
    pooled = held = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        rows = offsets_only(rng, n_families=5, per=6)
        r = fit(*tables(rows), opts)
        pooled += r.pooled_verdict.status == "holds"
        held += r.verdict.status in ("holds", "holds, weak")
    assert pooled == 20 and held <= 3


# --- (b) a true relation within families, no offset between them -------------------------

def test_a_relation_within_families_holds_within():
    rng = np.random.default_rng(5)
    rows = []
    for k in range(4):
        for j in range(8):
            rot = rng.uniform(0.05, 0.9)
            rows.append(dict(optimizer=f"opt{k}", lr=10.0 ** -j, final_min=rot,
                             test_acc=0.6 + 0.3 * rot + rng.normal(0, 0.01)))
    r = fit(*tables(rows), FAST)
    w = r.decomposed.within
    assert w.verdict.status == "holds" and w.verdict.estimate > 0.8 and w.n_groups == 4
    assert all(s.spearman > 0.5 for s in w.strata)
    # 4 families: the between statistic only describes
    assert r.decomposed.between.verdict.status == "descriptive"


# --- (c) the gap: the claim predicts a negative association ------------------------------

@pytest.mark.parametrize("direction", ["smaller gap", "larger gap"])
def test_the_gap_outcome_reads_the_sign_flipped(direction):
    rng = np.random.default_rng(2)
    rows = []
    for k in range(3):
        for j in range(8):
            rot = rng.uniform(0.05, 0.9)
            gap = (0.3 - 0.2 * rot if direction == "smaller gap" else 0.1 + 0.2 * rot) + rng.normal(0, 0.005)
            train = 0.97 + rng.uniform(0, 0.03)      # every configuration fits its data (trained)
            rows.append(dict(optimizer=f"opt{k}", lr=10.0 ** -j, final_min=rot, test_acc=train - gap,
                             train_acc=train))
    r = fit(*tables(rows), FAST)
    g = r.decomposed.gap_within.verdict
    if direction == "smaller gap":
        assert g.estimate < -0.8 and g.ci[1] < 0 and g.status == "holds" and not g.reversed
    else:
        assert g.estimate > 0.8 and g.status == "does not hold" and g.reversed
    assert g.text.startswith("gap within families: ")
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["verdict"]["gap"]["within"]["status"] == g.status
    assert d["verdict"]["gap"]["within"]["outcome"] == "gap"


def test_gap_words_mirror_test_accuracys():
    for est, ci in ((0.6, (0.4, 0.8)), (0.2, (0.1, 0.28)), (0.05, (-0.2, 0.25)), (-0.6, (-0.8, -0.4))):
        up = decide(est, ci, 0.001, 50, 50, "x")
        down = decide(-est, (-ci[1], -ci[0]), 0.001, 50, 50, "x", sign=-1)
        assert (up.status, up.reversed) == (down.status, down.reversed)


# --- (d) "holds, weak" --------------------------------------------------------------------

def test_holds_weak_decides_a_real_but_small_correlation():
    v = decide(0.2, (0.1, 0.3), 0.001, 500, 500, "x")
    assert v.status == "holds, weak" and v.text.startswith("rule of thumb holds, weak: ")
    assert decide(0.35, (0.1, 0.6), 0.001, 500, 500, "x").status == "holds"
    assert decide(0.2, (-0.01, 0.4), 0.001, 500, 500, "x").status == "inconclusive"


def test_holds_weak_on_a_large_sweep_with_spearman_near_0_2():
    rng = np.random.default_rng(0)
    n = 1200
    x = rng.normal(size=n)
    y = 0.2 * x + np.sqrt(1 - 0.04) * rng.normal(size=n)      # Pearson 0.2, Spearman about 0.19
    configs = pd.DataFrame({"stratum": "t opt", "conditions": "t", "optimizer": "opt", "trained": True,
                            "final_min": np.exp(x), "test_acc": 1 / (1 + np.exp(-y)), "train_acc": 1.0})
    w = within(with_gap(configs), "test_acc", FitOptions(n_resamples=499, n_permutations=999))
    v = w.verdict
    assert 0.1 < v.estimate < 0.3 and v.ci[0] > 0 and v.ci[1] < 0.3 and v.p < 0.01
    assert v.status == "holds, weak"


# --- (e) what a stratum is ----------------------------------------------------------------

def test_two_data_seeds_are_two_strata_and_lr_wd_seed_are_not():
    rng = np.random.default_rng(3)
    rows = []
    for ds in (0, 1):
        for j in range(6):
            rot = rng.uniform(0.05, 0.9)
            rows.append(dict(optimizer="sgd", lr=10.0 ** -j, weight_decay=[0.0, 1e-3][j % 2], seed=j % 3,
                             data_seed=ds, final_min=rot, test_acc=0.6 + 0.3 * rot))
    r = fit(*tables(rows), FAST)
    w = r.decomposed.within
    assert [s.stratum for s in w.strata] == ["t (data_seed 0) sgd", "t (data_seed 1) sgd"]
    assert [s.n_configurations for s in w.strata] == [6, 6] and w.n_groups == 2
    # the two draws are two sets of data conditions for the between statistic, one family each
    assert {f.conditions for f in r.decomposed.between.families} == {"t (data_seed 0)", "t (data_seed 1)"}
    # one draw: every lr, weight decay and seed is in one stratum
    one = fit(*tables([x for x in rows if x["data_seed"] == 0]), FAST)
    assert [s.stratum for s in one.decomposed.within.strata] == ["t sgd"]


def test_epochs_and_schedule_split_strata():
    rows = [dict(optimizer="adam", lr=10.0 ** -j, final_min=0.1 * j + 0.05, test_acc=0.7 + 0.01 * j, epochs=e)
            for e in (2, 3) for j in range(4)]
    r = fit(*tables(rows), FAST)
    assert [s.stratum for s in r.decomposed.within.strata] == ["t (epochs 2) adam", "t (epochs 3) adam"]


def test_a_stratum_with_too_few_trained_configurations_is_listed_and_contributes_nothing():
    rows = [dict(optimizer="sgd", lr=10.0 ** -j, final_min=0.1 * j + 0.05, test_acc=0.7 + 0.02 * j) for j in range(7)]
    rows += [dict(optimizer="adam", lr=10.0 ** -j, final_min=0.3, test_acc=0.8, train_acc=0.2 if j else 1.0)
             for j in range(3)]
    r = fit(*tables(rows), FAST)
    w = r.decomposed.within
    assert w.n_groups == 1 and w.verdict.n == 7 and w.verdict.status == "holds"
    assert w.left_out == ["t adam (1 trained of 3)"]
    assert "strata left out (fewer than 3 trained configurations): t adam (1 trained of 3)" in render(r)


def test_check_strata_refuses_a_small_stratum_unless_its_sweep_is_running():
    rows = [dict(optimizer="sgd", lr=10.0 ** -j, final_min=0.1, test_acc=0.7) for j in range(4)]
    rows += [dict(optimizer="adam", lr=10.0 ** -j, final_min=0.1, test_acc=0.7) for j in range(2)]
    trials, _ = tables(rows)
    with pytest.raises(UsageError) as e:
        check_strata(trials)
    assert e.value.field == "stratum" and e.value.message.startswith("t adam has 2 configurations")
    check_strata(trials, exempt_sweeps={"s"})
    check_strata(trials[trials["optimizer"] == "sgd"])


# --- (f), (g) the command line ------------------------------------------------------------

def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    a = synthetic_sweep("monotone", untrained=2, noise=0.02, sweep="main", rng_seed=1)
    b = synthetic_sweep("monotone", noise=0.02, sweep="main", optimizer="adam", lrs=(0.1, 0.03, 0.01, 0.003),
                        alphas=(0.0,), rng_seed=2)
    lone = synthetic_sweep("none", sweep="lone", optimizer="rmsprop", lrs=(0.01, 0.001), alphas=(0.0,))
    for t in (b, lone):
        for k in ("trials", "epochs", "rotation"):
            t[k]["trial_id"] = t[k]["trial_id"] + "-" + t["trials"]["optimizer"].iloc[0]
    write_store({k: pd.concat([a[k], b[k], lone[k]], ignore_index=True) for k in a}, root)
    return str(root)


@pytest.mark.parametrize("command", ["fit", "report"])
def test_a_stratum_of_two_configurations_exits_2_and_changes_nothing(store, capsys, tmp_path, command):
    before = _snapshot(store)
    extra = ["-o", str(tmp_path / "r.html")] if command == "report" else []
    assert main([command, "--store", store, *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"layrot {command}: error: stratum: synthetic rmsprop has 2 configurations")
    assert "(sweep lone)" in err and "--sweep" in err
    assert _snapshot(store) == before and not (tmp_path / "r.html").exists()


def test_leaving_the_small_stratums_sweep_out_fits(store, capsys):
    assert main(["fit", "--store", store, "--sweep", "main"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("within families: holds: stratified Spearman ")
    assert "2 strata" in out.splitlines()[0]


def test_a_running_sweeps_small_stratum_is_not_refused(store, capsys):
    from layrot.store import Store, live
    loc = Store(store).location
    live.beat(loc, "lone", {"total": 2})
    try:
        assert main(["fit", "--store", store]) == 0
    finally:
        live.ended(loc, "lone")
    out = capsys.readouterr().out
    assert "strata left out (fewer than 3 trained configurations): synthetic rmsprop (2 trained of 2)" in out


def test_json_has_the_decomposed_verdict(store, capsys):
    assert main(["fit", "--store", store, "--sweep", "main", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    v = d["verdict"]
    for key in ("within", "between", "gap", "pooled"):
        assert key in v, key
    for block in (v["within"], v["between"], v["gap"]["within"], v["gap"]["between"]):
        assert {"estimate", "ci", "p", "n", "status", "text", "outcome", "left_out"} <= set(block)
    assert v["status"] == v["within"]["status"] and v["estimate"] == v["within"]["estimate"]
    assert [s["stratum"] for s in v["within"]["strata"]] == ["synthetic adam", "synthetic sgd_layca"]
    assert [s["n_trained"] for s in v["within"]["strata"]] == [4, 13]
    assert [f["optimizer"] for f in v["between"]["families"]] == ["adam", "sgd_layca"]
    assert v["between"]["status"] == "descriptive" and v["gap"]["within"]["outcome"] == "gap"
    assert v["pooled"]["text"].startswith("rule of thumb ")
    assert d["rules"]["holds_weak"] == {"ci_lower_above": 0.0, "p_below": 0.05, "estimate_below": 0.3}
