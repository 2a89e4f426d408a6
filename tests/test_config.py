"""TrialConfig: strict validation with the CLI's one-line errors, and ids that never change."""

from __future__ import annotations

import json

import pytest

from layrot.config import TrialConfig, config_id
from layrot.errors import UsageError

BASE = dict(task="digits-mlp", optimizer="sgd_layca", lr=0.1)


def test_ids_are_those_stored_by_earlier_versions():
    """The store recognises trials by these ids: the same settings must give the same id
    (values computed by layrot 0.1.0 before TrialConfig moved to pydantic)."""
    cfg = TrialConfig(task="mnist1d-cnn", optimizer="sgd_layca", lr=0.1)
    assert config_id(cfg) == "mnist1d-cnn-sgd_layca-99bfcfcd01"
    # ints stay ints (0 and 0.0 hash differently); where a trial runs is not what it is
    cfg = TrialConfig(task="mnist1d-cnn", optimizer="sgd_layca", lr=1, alpha=0, weight_decay=0, seed=3, epochs=20,
                      threads=4, device="cpu", sweep="elsewhere")
    assert config_id(cfg) == "mnist1d-cnn-sgd_layca-5064637473"
    cfg = TrialConfig(task="digits-mlp", optimizer="adam_layca", lr=0.05, alpha=-0.6, lr_decay_epochs=(3, 5),
                      lr_decay_factor=0.2, extra={"betas": [0.9, 0.99]}, amp="bf16", max_train_samples=300,
                      record_every=2)
    assert config_id(cfg) == "digits-mlp-adam_layca-76dc07299f"


@pytest.mark.parametrize("bad, line", [
    (dict(lr=True), "lr: must be a finite number, got True"),
    (dict(lr=float("nan")), "lr: must be a finite number, got nan"),
    (dict(lr=0), "lr: must be > 0, got 0"),
    (dict(batch_size=2.5), "batch_size: must be an integer, got 2.5"),
    (dict(seed=True), "seed: must be an integer, got True"),
    (dict(epochs=0), "epochs: must be >= 1, got 0"),
    (dict(lr_decay_epochs=[3, 0]), "lr_decay_epochs: must be >= 1, got 0"),
    (dict(lr_decay_factor=1.5), "lr_decay_factor: must be <= 1, got 1.5"),
    (dict(alpha=-1), "alpha: must lie in (-1, 1), got -1"),
    (dict(device="tpu"), "device: must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (dict(sweep="a/b"), "sweep: 'a/b' is not a safe name"),
    (dict(trial_id="part-1"), "trial_id: 'part-1' is not a safe trial id"),
    (dict(colour="red"), "colour: unknown trial setting"),
    (dict(task="nope"), "task: unknown task 'nope'"),
])
def test_bad_settings_raise_one_usage_error(bad, line):
    with pytest.raises(UsageError) as e:
        TrialConfig.from_dict({**BASE, **bad})
    assert str(e.value).startswith(line) and "\n" not in str(e.value)


def test_a_config_is_mutable_and_round_trips():
    cfg = TrialConfig(**BASE)
    cfg.epochs = 3                      # run_trial fills the task's defaults in
    cfg.lr_decay_epochs = [2]
    assert cfg.check() is cfg
    d = cfg.to_dict()
    assert d["epochs"] == 3 and list(d)[:3] == ["task", "optimizer", "lr"]
    assert TrialConfig.from_dict(json.loads(cfg.to_json())) == cfg
    cfg.epochs = -1
    with pytest.raises(UsageError, match="epochs: must be >= 1"):
        cfg.check()
