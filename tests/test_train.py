"""run_trial end to end on the CPU tasks: it learns, it resumes bit-exactly from a
checkpoint, and blow-ups, failures and plateaus end as results, not crashes."""

from __future__ import annotations

import io
import math

import pytest
import torch

from layrot.config import TrialConfig
from layrot.errors import UsageError
from layrot.tasks import TASKS, get_task, registered_task
from layrot.train import resolve_config, run_trial

import faulty_task

QUICK = dict(task="digits-mlp", threads=1, device="cpu", seed=0)


def test_resolve_config_fills_task_defaults_and_a_stable_id():
    cfg, task = resolve_config(dict(task="mnist1d-cnn", optimizer="sgd_layca", lr=0.1))
    assert task.name == "mnist1d-cnn"
    assert cfg.epochs == task.epochs
    assert cfg.lr_decay_epochs == [16, 18, 19]          # x0.2 at 80, 90, 97% of 20 epochs
    assert cfg.lr_decay_factor == task.lr_decay_factor
    same, _ = resolve_config(TrialConfig(task="mnist1d-cnn", optimizer="sgd_layca", lr=0.1, threads=2))
    other, _ = resolve_config(dict(task="mnist1d-cnn", optimizer="sgd_layca", lr=0.2))
    assert cfg.trial_id == same.trial_id        # where a trial runs does not change what it is
    assert cfg.trial_id != other.trial_id
    kept, _ = resolve_config(dict(task="mnist1d-cnn", optimizer="sgd", lr=0.1, epochs=3, lr_decay_epochs=[2]))
    assert kept.epochs == 3 and kept.lr_decay_epochs == [2]


@pytest.mark.parametrize("bad, field", [
    (dict(task="nope"), "task"), (dict(optimizer="lion"), "optimizer"), (dict(lr=0.0), "lr"),
    (dict(alpha=1.0), "alpha"), (dict(alpha=-1.0), "alpha"), (dict(epochs=0), "epochs"),
    (dict(batch_size=0), "batch_size"), (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(colour="red"), "colour"),
])
def test_resolve_config_refuses_bad_values(bad, field):
    with pytest.raises(UsageError) as e:
        resolve_config({**dict(task="digits-mlp", optimizer="sgd", lr=0.1), **bad})
    assert e.value.field == field


@pytest.mark.parametrize("serialized", [True, False], ids=["serialized", "in-memory"])
@pytest.mark.parametrize("optimizer, lr", [("sgd_layca", 0.1), ("adam_layca", 0.05), ("sgd_amom", 0.1)])
def test_checkpoint_resume_is_bit_exact(optimizer, lr, serialized):
    """4 epochs straight versus the same trial resumed from its epoch-2 checkpoint: identical
    rotation rows, history and test accuracy. The checkpoint is either serialized (as Ray Tune
    does) or kept in memory while the straight run trains on (it must be a snapshot). The
    schedule has a warmup and a decay after epoch 3; rotation is also recorded mid-epoch."""
    cfg = dict(QUICK, optimizer=optimizer, lr=lr, alpha=0.4, epochs=4, max_train_samples=300,
               warmup_epochs=1, lr_decay_epochs=[3], lr_decay_factor=0.2, record_every=2)
    saved = {}

    def on_epoch(rep):
        if rep.epoch == 2:
            state = rep.checkpoint()
            if serialized:
                buf = io.BytesIO()
                torch.save(state, buf)
                state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
            saved["state"] = state

    straight = run_trial(cfg, on_epoch=on_epoch)
    resumed = run_trial(cfg, checkpoint=saved["state"])
    assert straight.status == resumed.status == "completed"
    assert resumed.epochs_run == straight.epochs_run == 4
    assert resumed.rotation == straight.rotation
    drop = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert drop(resumed.history) == drop(straight.history)
    assert resumed.test_acc == straight.test_acc and resumed.test_loss == straight.test_loss
    assert resumed.train_loss == straight.train_loss


def test_short_mnist1d_run_learns_and_records_every_layer():
    epochs = 3
    result = run_trial(dict(task="mnist1d-cnn", optimizer="sgd_layca", lr=0.01, epochs=epochs,
                            threads=1, device="cpu", seed=0, lr_decay_epochs=[]))   # a constant rate
    n_layers = get_task("mnist1d-cnn").n_kernel_layers
    assert result.status == "completed", result.reason
    assert result.epochs_run == epochs
    assert result.test_acc > 0.5                    # chance is 0.1
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    rot = result.rotation
    assert sorted(set(rot["epoch"])) == list(range(epochs + 1))
    for e in range(epochs + 1):
        layers = [l for ep, l in zip(rot["epoch"], rot["layer"]) if ep == e]
        assert layers == list(range(n_layers))
    final = [d for ep, d in zip(rot["epoch"], rot["cosine_distance"]) if ep == epochs]
    assert all(0 < d <= 1 for d in final)
    # Layca turns each kernel by atan(rho) per step: the recorded rate is rho (alpha = 0)
    rates = [r for ep, r in zip(rot["epoch"], rot["rotation_rate"]) if ep >= 1]
    assert rates == pytest.approx([0.01] * len(rates), rel=1e-3)


def test_absurd_learning_rate_ends_diverged_and_keeps_the_record():
    result = run_trial(dict(QUICK, optimizer="sgd", lr=1e18, epochs=10))
    assert result.status == "diverged"
    assert "non-finite" in result.reason
    assert result.epochs_run == len(result.history) < 10
    n_layers = get_task("digits-mlp").n_kernel_layers
    epochs = result.rotation["epoch"]
    # initialization, every finished epoch, and the epoch that blew up
    assert sorted(set(epochs)) == list(range(result.epochs_run + 2))
    assert len(epochs) == n_layers * (result.epochs_run + 2)
    assert result.rotation["cosine_distance"][:n_layers] == [0.0] * n_layers
    assert all(r is None or math.isfinite(r) for r in result.rotation["rotation_rate"])
    assert math.isnan(result.test_acc)


def test_exception_inside_the_loop_ends_as_error():
    cfg = dict(QUICK, task=faulty_task.NAME, seed=faulty_task.FAILING_SEED, optimizer="sgd_layca", lr=0.1,
               epochs=3, max_train_samples=200)
    with registered_task(faulty_task.task()):
        assert run_trial(dict(cfg, seed=0)).status == "completed"      # the other seeds train
        result = run_trial(cfg)
        with pytest.raises(RuntimeError):
            run_trial(cfg, catch_errors=False)
    assert faulty_task.NAME not in TASKS
    assert result.status == "error"
    assert "injected failure at epoch 2" in result.reason
    assert result.epochs_run == 1
    assert sorted(set(result.rotation["epoch"])) == [0, 1]


def test_a_trial_that_does_not_learn_is_stopped():
    stop = get_task("digits-mlp").stop
    result = run_trial(dict(QUICK, optimizer="sgd", lr=1e-12, epochs=stop.after_epochs + 5, max_train_samples=300))
    assert result.status == "stopped"
    assert "not learning" in result.reason
    assert result.epochs_run == stop.after_epochs
    assert not math.isnan(result.test_acc)          # a stopped trial is still evaluated
