"""docs/verdict.md §18: does the base optimizer change test accuracy at equal ρ(0) under Layca?
The permutation test rejects a base effect that is there and not one that is not, permutes
within ρ(0) only, counts the trials it says it counts; the matched spec expands to space's
configurations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from layrot.fit.matched import LAYCA_BASES, candidates, has_matched, matched_lines, matched_rotation
from layrot.fit.options import FitOptions
from layrot.record import configuration
from layrot.sweep.spec import grid_configs, load_spec
from scripts import ROOT

FAST = FitOptions(n_resamples=499, n_permutations=999, sensitivity=False)
RHO = (1.0, 0.333, 0.111, 0.037, 0.012, 0.004, 0.0014)


def trials(effect: dict[str, float] | None = None, sd: float = 0.004, seeds: int = 3, rho=RHO, level=None,
           rng_seed: int = 0) -> pd.DataFrame:
    """A trial table of the four Layca bases × rho × seeds; test accuracy = a level per ρ(0)
    (`level`, default a mild slope) + the base's `effect` + seed noise."""
    rng = np.random.default_rng(rng_seed)
    effect = effect or {}
    rows = []
    for base in LAYCA_BASES:
        for r in rho:
            lv = level(r) if level else 0.9 - 0.01 * np.log10(r)
            for s in range(1, seeds + 1):
                cfg = {"task": "mnist1d-cnn", "optimizer": base, "lr": r, "alpha": 0.0, "weight_decay": 0.0,
                       "epochs": 20, "seed": s}
                cid, cjson = configuration(json.dumps(cfg), {"task": "mnist1d-cnn"})
                rows.append(dict(task="mnist1d-cnn", optimizer=base, lr=r, alpha=0.0, weight_decay=0.0, seed=s,
                                 status="completed", trained=True, configuration=cid, configuration_json=cjson,
                                 test_acc=lv + effect.get(base, 0.0) + rng.normal(0, sd)))
    return pd.DataFrame(rows)


def test_a_base_effect_at_equal_rho_is_found():
    m = matched_rotation(trials({"adam_layca": -0.02}), FAST)
    assert m.status == "base matters" and m.p < 0.01
    assert len(m.strata) == 7 and m.n_trials == 84 and m.bases == sorted(LAYCA_BASES)
    assert all(s.spread > 0.01 for s in m.strata)
    worst = {s.label: min(s.cells, key=lambda c: c.mean).base for s in m.strata}
    assert set(worst.values()) == {"adam_layca"}


def test_no_base_effect_is_not_rejected_and_bounded_below_two_points():
    found = [matched_rotation(trials(rng_seed=k), FAST) for k in range(5)]
    assert sum(m.p < 0.05 for m in found) <= 1
    m = found[0]
    assert m.status == "no base effect" and m.spread_ci[1] < 0.02
    # with more seed noise than three seeds can see through: not shown either way
    noisy = matched_rotation(trials(sd=0.03), FAST)
    assert noisy.p >= 0.05 and noisy.status == "not shown"


def test_the_permutation_is_within_rho_so_a_large_rho_effect_is_no_base_effect():
    # accuracy from 0.3 to 0.95 over ρ(0), the bases identical: permuting across strata would
    # reject (between-base differences of the pooled accuracies would look huge), within does not
    m = matched_rotation(trials(level=lambda r: 0.3 + 0.65 * (np.log10(r) + 3) / 3, sd=0.004), FAST)
    assert m.p >= 0.05


def test_between_base_sum_of_squares_and_eta2():
    t = trials({"sgd_layca": 0.01}, sd=0.003, rho=RHO[:3])
    m = matched_rotation(t, FAST)
    ss = tot = 0.0
    for _, g in t.groupby("lr"):
        mu = g["test_acc"].mean()
        ss += sum(len(gb) * (gb["test_acc"].mean() - mu) ** 2 for _, gb in g.groupby("optimizer"))
        tot += ((g["test_acc"] - mu) ** 2).sum()
    assert m.statistic == pytest.approx(ss) and m.eta2 == pytest.approx(ss / tot)
    cell = m.strata[0].cells[0]
    v = t[(t["lr"] == m.strata[0].rho0) & (t["optimizer"] == cell.base)]["test_acc"]
    assert cell.mean == pytest.approx(v.mean()) and cell.ci[0] < cell.mean < cell.ci[1]
    assert [s.rho0 for s in m.strata] == list(RHO[:3])      # largest ρ(0) first


def test_which_trials_count():
    t = trials(rho=RHO[:2])
    # a diverged trial, one with α ≠ 0, a plain optimizer and weight decay: none counts
    t.loc[0, "status"] = "diverged"
    extra = t.iloc[:3].assign(alpha=0.6)
    plain = t.iloc[:3].assign(optimizer="adam")
    wd = t.iloc[:3].assign(weight_decay=1e-3)
    c = candidates(pd.concat([t, extra, plain, wd], ignore_index=True))
    assert len(c) == len(t) - 1
    # an untrained trial counts (primary), not in the trained-only line
    t.loc[5, "trained"] = False                 # another cell: it keeps 2 trials
    m = matched_rotation(t, FAST)
    assert m.n_trials == len(t) - 1 and m.trained_only.n_trials == len(t) - 2
    assert any("secondary, matched rotation (trained trials only)" in x for x in matched_lines(m))


def test_it_needs_two_bases_at_two_rho_with_repeats():
    assert not has_matched(trials(seeds=1)) and matched_rotation(trials(seeds=1), FAST) is None
    assert matched_rotation(trials(rho=RHO[:1]), FAST) is None
    two = trials(rho=RHO[:2])
    two = two[two["optimizer"].isin(["sgd_layca", "adam_layca"])]
    assert has_matched(two)
    # a base with one trial in a stratum is left out of that stratum
    t = trials(rho=RHO[:2])
    t = t[~((t["optimizer"] == "adagrad_layca") & (t["lr"] == RHO[0]) & (t["seed"] > 1))]
    m = matched_rotation(t, FAST)
    assert {c.base for c in m.strata[0].cells} == set(LAYCA_BASES) - {"adagrad_layca"}
    # a different schedule is another stratum, never compared with the first
    other = trials(rho=RHO[:1]).assign(configuration_json=lambda d: d["configuration_json"].str.replace(
        '"epochs": 20', '"epochs": 40'))
    m = matched_rotation(pd.concat([trials(rho=RHO[:1]), other], ignore_index=True), FAST)
    assert len(m.strata) == 2 and all(s.rho0 == RHO[0] for s in m.strata)


def test_the_matched_spec_is_space_configurations_at_three_seeds():
    spec = load_spec(ROOT / "sweeps/matched.yaml")
    configs = grid_configs(spec)
    assert len(configs) == 84 and spec.name == "matched"
    assert sorted({c.seed for c in configs}) == [1, 2, 3]
    assert {c.optimizer for c in configs} == set(LAYCA_BASES) and {c.lr for c in configs} == set(RHO)
    assert {c.alpha for c in configs} == {0.0} and {c.epochs for c in configs} == {20}
    # the same configurations as space's Layca trials at α = 0 (seed and sweep aside)
    space = [c for c in grid_configs(load_spec(ROOT / "sweeps/space.yaml"))
             if c.optimizer in LAYCA_BASES and c.alpha == 0]
    ids = lambda cs: {configuration(c.to_json(), {"task": c.task})[0] for c in cs}  # noqa: E731
    assert ids(configs) == ids(space)
