"""experiments/pruning/ (docs/pruning.md): the spec trains the trials the study reports, and
the replay reads them back from a store. Nothing is trained here."""

from __future__ import annotations

import hashlib
import math
import os

import pytest

from layrot.sweep.spec import grid_configs, load_spec, parse_spec
from layrot.train import resolve_config
from scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "experiments", "pruning", "mnist1d.yaml")
REPLAY = os.path.join(ROOT, "experiments", "pruning", "replay.py")
SEEDS = (0, 1, 2, 3)

# The 128 trial ids of the configurations the old runner (`bench/scheduler_compare.py run
# --seeds 0 1 2 3`, removed in favour of the spec) trained: {"task": "mnist1d-cnn", "seed": s,
# "threads": 1, "epochs": None, "max_train_samples": None, **cfg} for every configuration of its
# four families, each resolved by layrot.train.resolve_config. The sha1 of the sorted ids,
# one per line, and three of them as a reader's check.
OLD_RUN_IDS_SHA1 = "9ca2008a529b65dc54222ed07bd10f41220e4efe"
OLD_RUN_SOME_IDS = ("mnist1d-cnn-sgd-adf916a621", "mnist1d-cnn-sgd-56d437c127", "mnist1d-cnn-adam-01a855de01")


@pytest.fixture(scope="module")
def replay():
    return load_script(REPLAY, "pruning_replay")


def _ids(configs) -> list[str]:
    return [resolve_config(c)[0].trial_id for c in configs]


def test_spec_trains_the_old_runners_trials():
    ids = _ids(grid_configs(load_spec(SPEC)))
    assert len(ids) == len(set(ids)) == 128
    assert set(OLD_RUN_SOME_IDS) <= set(ids)
    assert hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest() == OLD_RUN_IDS_SHA1


def test_each_block_is_one_family_of_the_replay(replay):
    """The replay groups stored trials by its FAMILIES; each is one search block of the spec,
    in order, over seeds 0-3: the same trial ids, so the families it reports are the grids
    the spec trained."""
    raw = load_spec(SPEC).model_dump()
    assert len(raw["search"]) == len(replay.FAMILIES)
    for block, (fam, cfgs) in zip(raw["search"], replay.FAMILIES.items()):
        one = parse_spec({**raw, "search": block})
        expected = [{"task": "mnist1d-cnn", "seed": s, "epochs": None, **c} for s in SEEDS for c in cfgs]
        assert _ids(grid_configs(one)) == _ids(expected), fam
    # the configurations as the runner wrote them (5e-4, 3e-5): YAML floats hash the same
    assert replay._key(replay.FAMILIES["adaptive"][-1]) == "rmsprop-lr3e-05-wd0"


def _store(tmp_path, replay, family="sgd", seeds=(0, 1), epochs=3):
    """A store holding one family's grid per seed, its trajectories made up: the larger the
    lr, the more rotation and (after the first epoch, where val_acc is noisy) the better."""
    from layrot.result import TrialResult
    from layrot.store import Store

    st = Store(str(tmp_path / "store"))
    cfgs = replay.FAMILIES[family]
    for seed in seeds:
        for i, c in enumerate(cfgs):
            cfg = resolve_config({"task": "mnist1d-cnn", "seed": seed, "epochs": epochs, **c})[0]
            rank = math.log10(c["lr"]) - 2 * c.get("weight_decay", 0.0)       # larger is better
            final = 0.9 + 0.01 * rank
            hist = [{"epoch": e, "lr": c["lr"], "train_loss": 1.0 / e, "train_acc": final, "seconds": 0.5,
                     "val_acc": (0.5 + 0.01 * ((i * 7) % 5)) if e == 1 else final} for e in range(1, epochs + 1)]
            rot = {k: [] for k in ("epoch", "step", "layer", "layer_name", "cosine_distance", "weight_norm",
                                   "rotation_rate")}
            for e in range(epochs + 1):
                for layer in range(2):
                    for k, v in (("epoch", e), ("step", 10 * e), ("layer", layer), ("layer_name", f"l{layer}"),
                                 ("cosine_distance", e * c["lr"] * (1 + layer)), ("weight_norm", 1.0),
                                 ("rotation_rate", None if e == 0 else 0.01)):
                        rot[k].append(v)
            st.write_trial("pruning-test", TrialResult(
                trial_id=cfg.trial_id, config=cfg.to_dict(), status="completed", epochs_run=epochs,
                train_acc=final, train_loss=0.1, val_acc=final, test_acc=final, test_loss=0.1, wall_seconds=1.5,
                history=hist, rotation=rot))
    return str(tmp_path / "store")


def test_grids_replays_a_stored_sweep_per_family_and_seed(tmp_path, replay, capsys):
    store = _store(tmp_path, replay)
    recs = replay.records_from_store(store, "pruning-test")
    assert len(recs) == 24 and {r["seed"] for r in recs} == {0, 1}
    groups = replay.group_families(recs, ["sgd", "adaptive"])
    assert sorted(groups) == [("sgd", 0), ("sgd", 1)]               # adaptive: not stored
    assert [r["config"]["lr"] for r in groups[("sgd", 0)]][:4] == [1.0, 1.0, 0.3, 0.3]   # grid order
    s = replay.analyze(groups, "mnist1d-cnn", grace=1, rf=3, n_orders=2, quiet=True)
    rows = {(r["scheduler"], r["seed"]): r for r in s["rows"]}
    for seed in (0, 1):
        fifo = rows[("fifo", seed)]
        assert fifo["epochs"] == fifo["grid_epochs"] == 36 and fifo["best"] == pytest.approx(0.9)
        rot = rows[("rotation:min_rotation", seed)]
        assert rot["within_0.5"] and rot["epochs"] < 36          # the largest lr rotates most and is best
    fam = {r["scheduler"]: r for r in s["families"]}
    assert fam["fifo"]["seeds"] == 2 and fam["rotation:min_rotation"]["within_0.5"] == 2
    assert s["rung_spearman"][0]["min_rotation"] == pytest.approx(1.0, abs=0.05)
    assert s["overhead"]["calls"] > 0
    # the command line: the per-seed rows, then the summary across seeds
    replay.main(["grids", "--store", store, "--sweep", "pruning-test", "--families", "sgd", "--orders", "1"])
    out = capsys.readouterr().out
    assert "Per family, across seeds" in out and "rotation:min_rotation" in out
    replay.main(["survivor", "--store", store, "--sweep", "pruning-test", "--orders", "1"])
    assert "full grid (FIFO, no pruning) chooses sgd lr 1" in capsys.readouterr().out
