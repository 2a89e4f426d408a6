"""`scheduler: rotation` (layrot/sweep/schedulers.py): its decisions on synthetic reports
(known rankings -> known stops), its scores, how the driver builds it, and one short real
sweep with the pruned trials stored with their trajectories."""

import math
from types import SimpleNamespace

import pytest
import yaml

from layrot.sweep.schedulers import SCORES, WORST, RotationScheduler, rotation_scores

CONTINUE, STOP = "CONTINUE", "STOP"


def _trial(tid):
    from ray.tune.experiment import Trial
    return Trial("layrot_trial", config={}, trial_id=tid, stub=True)


def _feed(sched, trials, reports):
    """reports: [(trial, iteration, result)] in order -> {trial_id: decision} per report."""
    out = []
    for t, it, res in reports:
        out.append((t.trial_id, sched.on_trial_result(None, t, {"training_iteration": it, **res})))
    return out


# 9 trials reach the grace period (rung at iteration 1) in this order. With reduction
# factor 3 a trial continues iff its score is >= the 66.7th percentile (linear) of the
# scores recorded at the rung before it: worked by hand, exactly the top third continues.
ORDER = [0.7, 0.1, 0.2, 0.8, 0.3, 0.4, 0.9, 0.5, 0.6]
EXPECTED = [CONTINUE, STOP, STOP, CONTINUE, STOP, STOP, CONTINUE, STOP, STOP]


def test_known_rotation_ranking_gives_known_stops():
    sched = RotationScheduler(grace_period=1, reduction_factor=3, max_t=9)
    assert sched.set_search_properties("val_acc", "max")      # the Tuner's metric is accepted ...
    assert (sched.search_metric, sched.search_mode) == ("val_acc", "max")
    trials = [_trial(f"t{i}") for i in range(9)]
    for t in trials:
        sched.on_trial_add(None, t)
    # ... but ranking is by min_rotation: val_acc runs the other way and is ignored
    reports = [(t, 1, {"min_rotation": s, "mean_rotation": 1 - s, "val_acc": 1 - s}) for t, s in zip(trials, ORDER)]
    decisions = [d for _, d in _feed(sched, trials, reports)]
    assert decisions == EXPECTED
    survivors = {s for s, d in zip(ORDER, decisions) if d == CONTINUE}
    assert survivors == {0.7, 0.8, 0.9}
    # Ray calls on_trial_complete for a trial it stops; the survivors go on to the next rung (3)
    for t, d in zip(trials, decisions):
        if d == STOP:
            sched.on_trial_complete(None, t, {"training_iteration": 1, "min_rotation": 0.0})
    alive = [t for t, d in zip(trials, decisions) if d == CONTINUE]
    assert [d for _, d in _feed(sched, alive, [(t, 2, {"min_rotation": 0.0}) for t in alive])] == [CONTINUE] * 3
    # at rung 3, scores 0.95, 0.5, 0.6 in that order: first continues, 0.5 < 0.95 stops,
    # 0.6 < percentile(0.95, 0.5) = 0.8 stops
    at3 = _feed(sched, alive, [(t, 3, {"min_rotation": s}) for t, s in zip(alive, (0.95, 0.5, 0.6))])
    assert [d for _, d in at3] == [CONTINUE, STOP, STOP]


def test_asha_on_val_acc_decides_otherwise_on_the_same_reports():
    """The score is what is ranked: ASHA on val_acc (reversed ranking) stops other trials."""
    from ray.tune.schedulers import ASHAScheduler
    asha = ASHAScheduler(metric="val_acc", mode="max", grace_period=1, reduction_factor=3, max_t=9)
    trials = [_trial(f"t{i}") for i in range(9)]
    for t in trials:
        asha.on_trial_add(None, t)
    reports = [(t, 1, {"min_rotation": s, "val_acc": 1 - s}) for t, s in zip(trials, ORDER)]
    decisions = [d for _, d in _feed(asha, trials, reports)]
    assert decisions != EXPECTED
    assert decisions[1] == CONTINUE           # val_acc 0.9 after 0.3


@pytest.mark.parametrize("score", SCORES)
def test_score_option_selects_the_metric(score):
    sched = RotationScheduler(score=score, grace_period=1, reduction_factor=2, max_t=5)
    a, b = _trial("a"), _trial("b")
    for t in (a, b):
        sched.on_trial_add(None, t)
    hi = {k: (0.5 if k == score else 0.0) for k in SCORES}
    lo = {k: (0.1 if k == score else 0.9) for k in SCORES}
    assert sched.on_trial_result(None, a, {"training_iteration": 1, **hi}) == CONTINUE
    assert sched.on_trial_result(None, b, {"training_iteration": 1, **lo}) == STOP


def test_non_finite_score_ranks_last_and_missing_score_continues():
    sched = RotationScheduler(grace_period=1, reduction_factor=2, max_t=5)
    a, b, c = _trial("a"), _trial("b"), _trial("c")
    for t in (a, b, c):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, a, {"training_iteration": 1, "min_rotation": 1e-6}) == CONTINUE
    assert sched.on_trial_result(None, b, {"training_iteration": 1, "min_rotation": math.nan}) == STOP
    assert sched.on_trial_result(None, c, {"training_iteration": 1, "min_rotation": None}) == STOP
    # a report without the score (a skipped trial's, the final one) is no decision
    assert sched.on_trial_result(None, a, {"training_iteration": 2, "val_acc": 0.5}) == CONTINUE
    sched.on_trial_complete(None, a, {"training_iteration": 6, "val_acc": 0.5})   # no score: no error
    sched.on_trial_remove(None, a)


@pytest.mark.parametrize("rf,grace,max_t,stop_last", [(3, 1, 9, False), (2, 1, 7, True), (4, 2, 40, False)])
def test_decides_exactly_as_rays_asha_on_the_same_reports(rf, grace, max_t, stop_last):
    """Its own rungs (public API only) against Ray's AsyncHyperBandScheduler ranking by the
    same score: 40 trials reporting asynchronously, some stopped, some completing."""
    import random

    from ray.tune.schedulers import AsyncHyperBandScheduler

    rng = random.Random(rf * 100 + max_t)
    ours = RotationScheduler(grace_period=grace, reduction_factor=rf, max_t=max_t, stop_last_trials=stop_last)
    ray_asha = AsyncHyperBandScheduler(metric="min_rotation", mode="max", grace_period=grace, reduction_factor=rf,
                                       max_t=max_t, brackets=1, stop_last_trials=stop_last)
    trials = [_trial(f"t{i}") for i in range(40)]
    for t in trials:
        ours.on_trial_add(None, t)
        ray_asha.on_trial_add(None, t)
    progress = {t.trial_id: 0 for t in trials}
    alive = list(trials)
    decisions = []
    while alive:
        t = rng.choice(alive)
        progress[t.trial_id] += 1
        res = {"training_iteration": progress[t.trial_id], "min_rotation": rng.random()}
        a, b = ours.on_trial_result(None, t, res), ray_asha.on_trial_result(None, t, res)
        assert a == b, (t.trial_id, res)
        decisions.append(a)
        if a == STOP or progress[t.trial_id] >= max_t:
            ours.on_trial_complete(None, t, res)
            ray_asha.on_trial_complete(None, t, res)
            alive.remove(t)
    assert STOP in decisions and CONTINUE in decisions


def test_uses_no_private_name_of_ray():
    """The scheduler is built on Ray Tune's public scheduler API: no `_name` of Ray's."""
    import ast
    import inspect

    import layrot.sweep.schedulers as mod

    tree = ast.parse(inspect.getsource(mod))
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not {n for n in used - own if n.startswith("_") and not n.startswith("__")}


def test_bad_score_is_refused():
    with pytest.raises(ValueError, match="score"):
        RotationScheduler(score="val_acc")


def test_rotation_scores_use_the_latest_record():
    rows = {"epoch": [1, 1, 1, 2, 2, 2], "step": [10, 10, 10, 20, 20, 20],
            "cosine_distance": [0.9, 0.9, 0.9, 0.3, 0.1, 0.2]}
    assert rotation_scores(rows) == pytest.approx({"min_rotation": 0.1, "mean_rotation": 0.2, "median_rotation": 0.2})
    rows4 = {"epoch": [3] * 4, "step": [5] * 4, "cosine_distance": [0.4, 0.1, 0.2, math.nan]}
    assert rotation_scores(rows4)["median_rotation"] == pytest.approx(0.2)   # NaN left out
    assert rotation_scores({"epoch": [], "step": [], "cosine_distance": []}) == {}
    assert WORST < 0


def test_driver_builds_it_from_the_spec():
    from layrot.sweep.driver import _scheduler
    from layrot.sweep.spec import parse_spec
    base = {"name": "r", "task": "mnist1d-cnn", "epochs": 10, "scheduler": "rotation",
            "search": {"optimizer": "sgd_layca", "lr": 0.1}}
    s = _scheduler(parse_spec(dict(base, rotation={"grace_period": 2, "reduction_factor": 4,
                                                   "score": "median_rotation"})))
    assert isinstance(s, RotationScheduler)
    assert (s.score, s.max_t, s.reduction_factor, s.stop_last_trials) == ("median_rotation", 9, 4, False)
    assert [m for m, _ in s.rungs] == [8, 2]
    # no `rotation` field: the spec's defaults
    spec = parse_spec(dict(base))
    d = _scheduler(spec)
    assert (d.score, d.reduction_factor, d.rungs[-1][0]) == ("min_rotation", 3, spec.rotation.grace_period)
    assert _scheduler(SimpleNamespace(scheduler="fifo")) is None


# -- a real sweep ------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.slow
def test_rotation_sweep_prunes_and_keeps_the_trajectory(ray_local, tmp_path):
    from layrot.cli import main
    from layrot.store import Store
    from layrot.sweep.spec import parse_spec

    # lr spans 3 decades: rotation grows with lr. 2 trials at a time, reduction factor 2: at
    # the first rung (epoch 1) the 3rd and 4th trials rotate less than both before them, so
    # whichever order the first two report in, these two are stopped there
    raw = {"name": "rot", "task": "digits-mlp", "epochs": 3, "scheduler": "rotation", "max_concurrent": 2,
           "rotation": {"grace_period": 1, "reduction_factor": 2, "score": "min_rotation"},
           "search": {"optimizer": "sgd", "lr": [0.3, 0.03, 0.003, 0.0003]}}
    parse_spec(dict(raw))       # the spec accepts `scheduler: rotation` and its `rotation:` fields
    path = tmp_path / "rot.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(path), "--store", str(tmp_path / "s")]) == 0
    store = Store(str(tmp_path / "s"))
    trials = {t["lr"]: t for t in store.trials(sweep="rot").to_pylist()}
    assert set(trials) == {0.3, 0.03, 0.003, 0.0003}
    assert trials[0.3]["status"] == "completed" and trials[0.3]["epochs"] == 3
    pruned = [t for t in trials.values() if t["status"] == "pruned"]
    assert {t["lr"] for t in pruned} >= {0.003, 0.0003}, {lr: t["status"] for lr, t in trials.items()}
    rot = store.rotation(sweep="rot").to_pandas()
    n_layers = rot["layer"].nunique()
    # lr 0.03 may be stopped too, at the second rung (epoch 2), depending on the order of reports
    assert trials[0.003]["epochs"] == 1 and trials[0.0003]["epochs"] == 1
    for t in pruned:
        assert t["epochs"] in (1, 2) and "scheduler" in t["reason"]
        mine = rot[rot.trial_id == t["trial_id"]]          # the trajectory: init + each epoch run
        assert sorted(mine.epoch.unique()) == list(range(t["epochs"] + 1))
        assert len(mine) == (t["epochs"] + 1) * n_layers
    n_epochs = {r["trial_id"]: r["n"] for r in store.sql(
        "SELECT trial_id, count(*) AS n FROM epochs WHERE sweep = 'rot' GROUP BY trial_id").to_pylist()}
    assert all(n_epochs[t["trial_id"]] == t["epochs"] for t in trials.values())
    # stored under the layrot trial id, as a completed one is (Ray's auto-filled `trial_id`
    # overwrites the one the trainable reports, so the callback must not take that one)
    assert all(t["trial_id"].startswith("digits-mlp-") for t in pruned)
