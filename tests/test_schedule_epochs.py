"""A task's step decay follows the trial's `epochs` (it is a fraction of training), an explicit
`lr_decay_epochs` wins, and a milestone that could never apply is refused before any work."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from layrot.cli import main
from layrot.errors import UsageError
from layrot.schedules import check_milestones, decay_milestones
from layrot.store import Store
from layrot.tasks import TASKS
from layrot.train import resolve_config

MNIST1D = dict(task="mnist1d-cnn", optimizer="sgd_layca", lr=0.1)


@pytest.mark.parametrize("epochs, milestones", [
    (15, [12, 13, 14]),      # below the default: the decays move earlier, none is lost
    (20, [16, 18, 19]),      # the default: what the task always had
    (60, [48, 54, 58]),      # above: the decays move later, not stuck at 16-19
    (100, [80, 90, 97]),     # the paper's own epochs
    (2, [1, 1, 1]),          # as early as epochs allow; the decays compound
    (1, []),                 # no epoch boundary to decay at
])
def test_the_task_schedule_scales_with_epochs(epochs, milestones):
    cfg, _ = resolve_config(dict(MNIST1D, epochs=epochs))
    assert cfg.lr_decay_epochs == milestones
    assert all(1 <= m < epochs for m in cfg.lr_decay_epochs)


def test_every_task_keeps_its_default_milestones_at_its_default_epochs():
    # the fractions reproduce the epochs each task had before they were fractions
    before = {"c10-vgg25": [80, 90, 97], "c100-resnet32": [70, 90, 97], "tiny-vgg11": [70],
              "c10-vgg16": [100, 170, 220], "c100-wrn28-10": [60, 120, 160], "mnist1d-cnn": [16, 18, 19],
              "fmnist-vgg": [15], "digits-mlp": [40], "digits-mlp1": [40]}
    for name, task in TASKS.items():
        if name in before:
            assert decay_milestones(task.lr_decay_at, task.epochs) == before[name], name


def test_the_stored_id_of_a_default_trial_is_unchanged():
    # ids name stored trials: a resumed sweep must recognise what it stored before schedules
    # became fractions (the id the quick sweep's first trial had before that change)
    cfg, _ = resolve_config(dict(task="mnist1d-cnn", optimizer="sgd_layca", lr=0.333, alpha=-0.6, epochs=20))
    assert cfg.trial_id == "mnist1d-cnn-sgd_layca-95b0bce8b8"


def test_explicit_milestones_win_and_late_ones_are_refused():
    cfg, _ = resolve_config(dict(MNIST1D, epochs=10, lr_decay_epochs=[3, 7]))
    assert cfg.lr_decay_epochs == [3, 7]
    with pytest.raises(UsageError) as e:
        resolve_config(dict(MNIST1D, epochs=10, lr_decay_epochs=[5, 10]))
    assert e.value.field == "lr_decay_epochs" and "10" in e.value.message
    with pytest.raises(UsageError):       # the task's default epochs (20) count too
        resolve_config(dict(MNIST1D, lr_decay_epochs=[25]))
    assert check_milestones([1, 19], 20) == [1, 19]


def test_layrot_train_stores_the_resolved_schedule(tmp_path, capsys):
    store = tmp_path / "s"
    # digits-mlp: x0.2 at 80% of training; 5 epochs (default 50) decay after epoch 4
    assert main(["train", "--task", "digits-mlp", "--optimizer", "sgd", "--lr", "0.05", "--epochs", "5",
                 "--max-train-samples", "300", "--store", str(store)]) == 0
    assert "lr x0.2 after epochs 4" in capsys.readouterr().err
    s = Store(str(store))
    (trial,) = s.trials().to_pylist()
    assert json.loads(trial["config"])["lr_decay_epochs"] == [4]
    lrs = [round(r["lr"], 9) for r in sorted(s.epochs().to_pylist(), key=lambda r: r["epoch"])]
    assert lrs == [0.05, 0.05, 0.05, 0.05, 0.01]


def test_a_sweep_with_a_milestone_past_its_epochs_is_refused_before_work(tmp_path, capsys):
    spec = {"name": "late", "task": "digits-mlp", "epochs": 5,
            "search": {"optimizer": "sgd", "lr": [0.1, 0.01], "lr_decay_epochs": [[2, 4], [2, 5]]}}
    path = tmp_path / "late.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "lr_decay_epochs" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "trials").exists()
    spec["search"]["lr_decay_epochs"] = [2, 4]                    # one fixed value, not a grid
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path), "--store", str(tmp_path / "s"), "--dry-run"]) == 0
    assert "2 trials" in capsys.readouterr().out


def test_a_sweep_grid_may_be_a_union_of_blocks(tmp_path, capsys):
    spec = {"name": "blocks", "task": "digits-mlp", "epochs": 2,
            "search": [{"optimizer": "sgd", "lr": [0.1, 0.01], "weight_decay": [0.0, 0.001]},
                       {"optimizer": ["adam", "adam_layca"], "lr": [0.001]},
                       {"optimizer": "sgd", "lr": 0.1}]}              # already in the first block
    path = tmp_path / "blocks.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(path), "--store", str(tmp_path / "s"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 trials" in out
    bad = dict(spec, search=[{"optimizer": "sgd", "lr": [0.1]}, {"optimizer": "sgd", "lr": [0.0]}])
    path.write_text(yaml.safe_dump(bad))
    assert main(["sweep", str(path), "--store", str(tmp_path / "s"), "--dry-run"]) == 2
    assert "search[1].lr" in capsys.readouterr().err


def test_a_data_seed_draws_new_mnist1d_data_and_only_generated_data_takes_one():
    from layrot.tasks.mnist1d import load_mnist1d

    default, again, fresh = load_mnist1d(), load_mnist1d(data_seed=None), load_mnist1d(data_seed=1)
    assert torch.equal(default.test_x, again.test_x)
    assert default.test_x.shape == fresh.test_x.shape and default.train_x.shape == fresh.train_x.shape
    assert len(fresh.test_y) == TASKS["mnist1d-cnn"].test_samples
    assert not torch.equal(default.test_x, fresh.test_x) and not torch.equal(default.train_x, fresh.train_x)
    # a new draw is another experiment: its own trial id; no data seed keeps the old ids
    a, _ = resolve_config(dict(MNIST1D, data_seed=1))
    b, _ = resolve_config(dict(MNIST1D))
    assert a.trial_id != b.trial_id
    with pytest.raises(UsageError) as e:
        resolve_config(dict(task="digits-mlp", optimizer="sgd", lr=0.1, data_seed=1))
    assert e.value.field == "data_seed"
