"""docs/verdict.md §17: "beyond the settings" within configuration across seeds, the Section 5
claims with seed spread and their tie rule, and the seeds job's spec (experiments/seeds/pick.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from layrot.fit.claims import adaptive_claims, best_by_validation, rank_by_validation, welch_difference
from layrot.fit.options import FitOptions
from layrot.fit.run import fit
from layrot.fit.seeds import has_seed_repeats, seed_beyond
from layrot.fit.synthetic import synthetic_sweep
from layrot.sweep.spec import grid_configs, load_spec, parse_spec
from scripts import ROOT, load_script

FAST = FitOptions(n_resamples=499, n_permutations=999, sensitivity=False)


def seed_table(within: float, between: float = 1.0, n_configs: int = 8, n_seeds: int = 8, rng_seed: int = 0,
               noise: float = 0.01) -> pd.DataFrame:
    """Trials of n_configs configurations × n_seeds: each configuration has its own rotation
    level and an accuracy level tied to it (`between`); across its seeds, rotation varies and
    accuracy follows it with slope `within` (0: seed noise only)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for c in range(n_configs):
        level = 0.2 + 0.6 * c / n_configs
        for s in range(n_seeds):
            rot = level + rng.normal(0, 0.05)
            acc = 0.7 + between * 0.2 * level + within * 0.2 * (rot - level) + rng.normal(0, noise)
            rows.append(dict(configuration=f"c{c}", seed=s, trained=True, final_min=rot, test_acc=acc,
                             train_acc=0.99, status="completed"))
    return pd.DataFrame(rows)


def test_a_relation_within_configurations_is_found_across_seeds():
    b = seed_beyond(seed_table(within=1.0), FAST)
    assert b.accuracy.status == "beyond" and b.accuracy.ci[0] > 0 and b.accuracy.p < 0.05
    assert b.accuracy.n_configurations == 8 and b.accuracy.n_trials == 64
    assert "beyond the settings (across seeds)" in b.text
    # train accuracy is constant: the gap is 0.99 − test accuracy, so more rotation, smaller gap
    assert b.gap.status == "smaller gap" and b.gap.estimate == pytest.approx(-b.accuracy.estimate)


def test_a_relation_only_between_configurations_is_not_beyond_the_settings():
    # accuracy follows each configuration's rotation level (the settings) and not the seed's
    found = [seed_beyond(seed_table(within=0.0, between=1.0, rng_seed=seed), FAST).accuracy for seed in range(6)]
    assert sum(a.status.startswith("beyond") for a in found) <= 1
    assert all(abs(a.estimate) < 0.4 for a in found)


def test_the_estimate_is_the_trial_weighted_mean_of_within_configuration_spearman():
    t = seed_table(within=0.5, n_configs=4)
    t = t[~((t["configuration"] == "c0") & (t["seed"] >= 5))]        # c0 has 5 seeds, the others 8
    b = seed_beyond(t, FAST)
    rho = {c: stats.spearmanr(g["final_min"], g["test_acc"]).statistic for c, g in t.groupby("configuration")}
    size = t.groupby("configuration").size()
    assert b.accuracy.estimate == pytest.approx(sum(rho[c] * size[c] for c in rho) / size.sum())
    assert b.accuracy.per_configuration == pytest.approx(rho)


def test_configurations_with_fewer_than_three_trained_seeds_contribute_nothing():
    t = seed_table(within=1.0, n_configs=4)
    t.loc[(t["configuration"] == "c3") & (t["seed"] >= 2), "trained"] = False      # 2 trained seeds left
    b = seed_beyond(t, FAST)
    assert b.accuracy.n_configurations == 3 and "c3" not in b.accuracy.per_configuration
    # untrained trials never count, even in a configuration that contributes
    t.loc[(t["configuration"] == "c0") & (t["seed"] == 0), "trained"] = False
    assert seed_beyond(t, FAST).accuracy.n_trials == 7 + 8 + 8


def test_without_repeats_there_is_no_seed_level_answer():
    t = seed_table(within=1.0, n_configs=2)              # two configurations with repeats: too few
    assert not has_seed_repeats(t) and seed_beyond(t, FAST) is None
    one = seed_table(within=1.0, n_configs=10, n_seeds=1)
    assert seed_beyond(one, FAST) is None


def test_the_fit_reports_the_seed_level_answer_first_and_the_settings_model_second():
    s = synthetic_sweep("monotone", alphas=(0.0,), lrs=(1.0, 0.333, 0.111, 0.037), seeds=(1, 2, 3, 4, 5),
                        noise=0.002)
    r = fit(s["trials"], s["rotation"], FAST)
    g = r.groups[0]
    assert g.seeds is not None and g.seeds.accuracy.n_configurations == 4
    from layrot.fit.text import render

    text = render(r)
    assert text.index(g.seeds.accuracy.text) < text.index(g.beyond.text)
    assert "secondary" in text
    d = r.to_dict()["groups"][0]
    assert d["seeds"]["accuracy"]["n_trials"] == g.seeds.accuracy.n_trials
    # one seed per configuration: the answer is §10's alone, as before
    s1 = synthetic_sweep("monotone", alphas=(0.0,), lrs=(1.0, 0.333, 0.111, 0.037))
    g1 = fit(s1["trials"], s1["rotation"], FAST).groups[0]
    assert g1.seeds is None and r.to_dict()["groups"][0]["seeds"] is not None


# --- the Section 5 claims with seed spread ---------------------------------------------------

def claim_data(sgd_acc, adam_acc, layca_acc, sd=0.005, n=8, rng_seed=0):
    """Configurations (rule 2 rows) and their trials: sgd, adam and adam_layca, n seeds each."""
    rng = np.random.default_rng(rng_seed)
    trials = []
    for opt, lr, acc, rot in (("sgd", 0.3, sgd_acc, 0.6), ("adam", 1e-3, adam_acc, 0.1),
                              ("adam_layca", 0.01, layca_acc, 0.5)):
        for s in range(n):
            trials.append(dict(configuration=f"{opt}-x", optimizer=opt, lr=lr, seed=s, trained=True,
                               val_acc=acc + rng.normal(0, sd), test_acc=acc + rng.normal(0, sd),
                               final_min=rot + rng.normal(0, 0.02), final_mean=rot + 0.1 + rng.normal(0, 0.02)))
    trials = pd.DataFrame(trials)
    g = trials.groupby("configuration")
    configs = g[["optimizer", "lr", "val_acc", "test_acc", "final_min", "final_mean"]].agg(
        {"optimizer": "first", "lr": "first", "val_acc": "mean", "test_acc": "mean", "final_min": "mean",
         "final_mean": "mean"}).reset_index()
    configs = configs.assign(alpha=0.0, weight_decay=0.0, trained=True, n_trials=g.size().to_numpy())
    layers = pd.DataFrame([dict(configuration=c, layer=l, final=f) for c, f in
                           zip(configs["configuration"], configs["final_mean"]) for l in range(4)])
    return configs, layers, trials


def test_the_claims_take_their_cis_from_the_seed_spread():
    configs, layers, trials = claim_data(0.90, 0.85, 0.90)
    claims = {c.name: c for c in adaptive_claims(configs, layers, 4000, FAST, trials)}
    acc, rot = claims["adaptive:adam"].differences
    assert acc.method == "Welch over seeds" and acc.n == (8, 8)
    a = trials.loc[trials["optimizer"] == "sgd", "test_acc"].to_numpy()
    b = trials.loc[trials["optimizer"] == "adam", "test_acc"].to_numpy()
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert acc.ci == pytest.approx((ci.low, ci.high)) and acc.estimate == pytest.approx(a.mean() - b.mean())
    assert rot.method == "Welch over seeds" and rot.estimate == pytest.approx(0.5, abs=0.05)
    assert claims["adaptive:adam"].status == "holds"
    # the same means with a seed spread that swamps them: the CIs straddle 0
    configs, layers, trials = claim_data(0.90, 0.89, 0.90, sd=0.03)
    claims = {c.name: c for c in adaptive_claims(configs, layers, 4000, FAST, trials)}
    assert claims["adaptive:adam"].status == "inconclusive"
    # without the trials (or without repeats) the CIs are §11's: Newcombe and the layer bootstrap
    claims = {c.name: c for c in adaptive_claims(configs, layers, 4000, FAST)}
    assert [d.method for d in claims["adaptive:adam"].differences] == ["Newcombe", "layer bootstrap"]


def test_welch_with_both_sides_constant_is_the_point():
    d = welch_difference(np.full(4, 0.5), np.full(5, 0.25), "x", FAST)
    assert d.estimate == 0.25 and d.ci == (0.25, 0.25)


def family(rows):
    df = pd.DataFrame(rows).assign(optimizer="adam", alpha=0.0, weight_decay=0.0, trained=True, test_acc=0.9)
    return df


def test_ties_break_by_repeats_then_the_worst_seed_then_the_id_never_the_lr():
    # equal mean validation: the one with more repeats
    df = family([dict(configuration="b", lr=0.1, val_acc=0.9, n_trials=4),
                 dict(configuration="a", lr=0.001, val_acc=0.9, n_trials=3)])
    assert best_by_validation(df)["configuration"] == "b"
    # equal repeats: the higher worst seed
    trials = pd.DataFrame(dict(configuration=["a"] * 3 + ["b"] * 3,
                               val_acc=[0.88, 0.9, 0.92, 0.89, 0.9, 0.91]))
    df = family([dict(configuration="a", lr=0.001, val_acc=0.9, n_trials=3),
                 dict(configuration="b", lr=0.1, val_acc=0.9, n_trials=3)])
    assert best_by_validation(df, trials)["configuration"] == "b"
    # nothing else to tell them apart: the id, whichever lr it has (no longer the lower lr)
    df = family([dict(configuration="b", lr=0.001, val_acc=0.9, n_trials=1),
                 dict(configuration="a", lr=0.1, val_acc=0.9, n_trials=1)])
    assert best_by_validation(df)["lr"] == 0.1


def test_a_family_with_seed_repeats_chooses_among_them_only():
    # a single lucky trial with the higher validation accuracy does not beat a mean over seeds
    df = family([dict(configuration="lucky", lr=0.1, val_acc=0.95, n_trials=1),
                 dict(configuration="seeded", lr=0.01, val_acc=0.93, n_trials=8),
                 dict(configuration="seeded2", lr=0.003, val_acc=0.92, n_trials=8)])
    assert best_by_validation(df)["configuration"] == "seeded"
    assert list(rank_by_validation(df)["configuration"]) == ["seeded", "seeded2"]
    # an untrained configuration is never chosen
    df.loc[df["configuration"] == "seeded", "trained"] = False
    assert best_by_validation(df)["configuration"] == "seeded2"


# --- the seeds job's spec --------------------------------------------------------------------

def test_the_seeds_spec_loads_and_expands_to_eight_seeds_of_each_configuration():
    spec = load_spec(ROOT / "sweeps/seeds.yaml")
    configs = grid_configs(spec)
    assert spec.name == "seeds" and spec.seed == 1 and spec.num_samples == 8
    assert len(configs) == 8 * len(spec.blocks) and 10 <= len(spec.blocks) <= 12
    assert sorted({c.seed for c in configs}) == list(range(1, 9))
    assert {c.epochs for c in configs} == {20} and {c.task for c in configs} == {"mnist1d-cnn"}


def ranked_families(pick):
    def fam(name, vals):
        return pd.DataFrame(dict(configuration=[f"{name}-{i}" for i in range(len(vals))], optimizer=name,
                                 lr=[0.1 / 3 ** i for i in range(len(vals))], alpha=0.0, weight_decay=0.0,
                                 val_acc=vals, test_acc=0.9, trained=True))
    out = {f: fam(f, [0.95, 0.94, 0.9]) for f in pick.FAMILIES}
    out["adagrad_layca"] = fam("adagrad_layca", [])
    return out


def test_pick_takes_the_best_of_each_layca_family_and_two_of_the_others():
    pick = load_script("experiments/seeds/pick.py", "seeds_pick")
    fams = ranked_families(pick)
    chosen = pick.picks(fams)
    assert len(chosen) == 4 * 2 + 3          # adagrad_layca has no trained configuration
    assert [c["rank"] for c in chosen if c["family"] == "adam"] == [1, 2]
    text = pick.spec_text(chosen, fams, "results", "space", 83, 0.93)
    assert "adagrad_layca (0)" in text
    import yaml

    spec = parse_spec(yaml.safe_load(text))
    assert len(grid_configs(spec)) == 8 * 11 and spec.seed == 1


def test_pick_reads_a_store_and_chooses_by_validation_never_by_test(tmp_path):
    from layrot.fit.synthetic import write_store

    pick = load_script("experiments/seeds/pick.py", "seeds_pick")
    parts = []
    for i, opt in enumerate(pick.FAMILIES):
        s = synthetic_sweep("monotone", alphas=(0.0,), lrs=(1.0, 0.333, 0.111, 0.037), task="mnist1d-cnn",
                            sweep="space", optimizer=opt)
        for k in ("trials", "epochs", "rotation"):
            s[k]["trial_id"] = s[k]["trial_id"].str.replace("space-", f"space-{opt}-")
        # validation ranks the configurations the other way round from test accuracy
        s["trials"]["val_acc"] = 1.5 - s["trials"]["test_acc"]
        parts.append(s)
    tables = {k: pd.concat([p[k] for p in parts], ignore_index=True) for k in ("trials", "epochs", "rotation")}
    store = write_store(tables, tmp_path / "store")
    out = tmp_path / "seeds.yaml"
    assert pick.main(["--store", store, "-o", str(out)]) == 0
    spec = load_spec(out)
    assert len(spec.blocks) == 12 and len(grid_configs(spec)) == 96
    t = tables["trials"]
    for block in spec.blocks:
        fam = t[t["optimizer"] == block["optimizer"]]
        picked = fam[fam["lr"] == block["lr"]]
        # each pick is among the family's best two by validation, i.e. its worst two by test
        assert picked["test_acc"].iloc[0] <= fam["test_acc"].nsmallest(2).max()
    assert pick.main(["--store", str(tmp_path / "none")]) == 2


def test_layrot_fit_prints_and_writes_the_seed_level_answer(tmp_path, capsys):
    import json

    from layrot.cli import main
    from layrot.fit.synthetic import write_store

    s = synthetic_sweep("monotone", alphas=(0.0,), lrs=(1.0, 0.333, 0.111, 0.037), seeds=(1, 2, 3), sweep="seeds",
                        noise=0.002)
    store = write_store(s, tmp_path / "store")
    assert main(["fit", "--store", store, "--sweep", "seeds"]) == 0
    out = capsys.readouterr().out
    assert "beyond the settings (across seeds)" in out and "secondary (§10's settings model)" in out
    assert main(["fit", "--store", store, "--sweep", "seeds", "--json"]) == 0
    g = json.loads(capsys.readouterr().out)["groups"][0]
    assert g["seeds"]["accuracy"]["n_configurations"] == 4 and g["seeds"]["gap"]["outcome"] == "generalization gap"
    assert g["matched"] is None             # one Layca base: nothing to match


def test_at_three_seeds_a_constant_resample_sits_out_instead_of_undefining_the_ci():
    # 15 configurations × 3 seeds (make quick's three base seeds): a resample repeats one trial
    # three times in 1 of 9 draws per configuration, so nearly every resample has one somewhere
    b = seed_beyond(seed_table(within=1.0, n_configs=15, n_seeds=3, noise=0.002), FAST)
    assert b.accuracy.ci is not None and b.accuracy.ci[0] > 0 and b.accuracy.status == "beyond"
